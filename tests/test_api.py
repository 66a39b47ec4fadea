"""The Python API survives the redesign: the package's names, and the old module's
names with a warning that says where they went."""

from __future__ import annotations

import pytest

import mixer_cli
from mixer_cli.models.mixer_checkpoint import load_pretrained
from mixer_cli.weights.arrays import write_npz


def test_the_package_names_resolve_to_their_homes() -> None:
    assert mixer_cli.load_pretrained is load_pretrained
    assert mixer_cli.write_npz is write_npz
    assert callable(mixer_cli.write_safetensors) and callable(mixer_cli.create_model)


def test_the_old_checkpoints_module_forwards_with_a_deprecation_warning() -> None:
    from mixer_cli import checkpoints

    for name, module in checkpoints.MOVED.items():
        with pytest.warns(DeprecationWarning, match=f"moved to {module}.{name}"):
            assert getattr(checkpoints, name) is not None
    with pytest.raises(AttributeError):
        checkpoints.no_such_name  # noqa: B018
