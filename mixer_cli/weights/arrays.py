"""Parameters as flat arrays: Google's npz layout, read, checked and written.

Official MLP-Mixer releases are NumPy archives whose keys are the Flax parameter paths
joined by ``/`` (``MixerBlock_0/token_mixing/Dense_0/kernel``). They are read with
``allow_pickle=False`` (an archive cannot run code) and our parameters are written in
the same layout, so they load in the reference code too. Nothing here knows a model
family: a model's expected tree is always given.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flax import traverse_util

from mixer_cli.core.atomic import atomic_write
from mixer_cli.core.errors import CheckpointError, CheckpointMismatch, CheckpointNotFound

Params = dict[str, Any]


def read_npz(path: str | os.PathLike, prefix: str = "") -> dict[str, np.ndarray]:
    """The flat ``{'a/b/c': array}`` contents of an npz file (only the arrays whose names
    start with `prefix`: the others are not read), refusing anything unreadable."""
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFound(f"checkpoint {str(path)!r} does not exist")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is a directory, expected an .npz file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not archive.files:
                raise CheckpointError(f"checkpoint {str(path)!r} contains no arrays")
            return {key: archive[key] for key in archive.files if key.startswith(prefix)}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise CheckpointError(f"cannot read {str(path)!r} as an .npz checkpoint: {err}") from err


def flat_params(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A parameter tree as the official layout's flat arrays ('MixerBlock_0/.../kernel')."""
    return {
        "/".join(keys): np.asarray(value)
        for keys, value in traverse_util.flatten_dict(params).items()
    }


def write_npz(params: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write a parameter tree in the official layout, atomically (never a half-written file)."""
    path = Path(path)
    with atomic_write(path, "wb") as f:
        np.savez(f, **flat_params(params))
    return path


def as_tree(flat: Mapping[str, np.ndarray]) -> Params:
    """'/'-joined keys -> the nested parameter tree, float32."""
    return traverse_util.unflatten_dict(
        {tuple(k.split("/")): np.asarray(v, dtype=np.float32) for k, v in flat.items()}
    )


def flatten(tree: Mapping[str, Any]) -> dict[str, Any]:
    """A tree as {'a/b/c': leaf} (leaves as they are)."""
    return {"/".join(keys): leaf for keys, leaf in traverse_util.flatten_dict(tree).items()}


def array_shape(flat: Mapping[str, Any], key: str, ndim: int, source: str, kind: str) -> tuple:
    """The shape of `flat[key]`, refusing a missing key (not a `kind` checkpoint) or another
    number of dimensions: what reading an architecture off a checkpoint's arrays needs."""
    if key not in flat:
        raise CheckpointMismatch(f"{source} has no {key!r}: not {kind} checkpoint")
    if flat[key].ndim != ndim:
        raise CheckpointMismatch(
            f"{source}: {key!r} has shape {flat[key].shape}, expected {ndim} dimensions"
        )
    return tuple(flat[key].shape)


def check_compatible(
    expected: Mapping[str, Any], flat: Mapping[str, np.ndarray], source: str, model_name: str
) -> None:
    """Refuse shape mismatches, missing keys and unexpected keys, naming the first offender."""
    expected_flat = {
        "/".join(keys): tuple(leaf.shape)
        for keys, leaf in traverse_util.flatten_dict(expected).items()
    }
    for key, want in sorted(expected_flat.items(), key=lambda item: _input_to_output(item[0])):
        if key in flat and tuple(flat[key].shape) != want:
            raise CheckpointMismatch(
                f"{source}: {key!r} has shape {tuple(flat[key].shape)} but {model_name} "
                f"expects {want}"
            )
    missing = sorted(set(expected_flat) - set(flat))
    if missing:
        raise CheckpointMismatch(
            f"{source} lacks {len(missing)} parameter(s) of {model_name}, first {missing[0]!r}"
        )
    unexpected = sorted(set(flat) - set(expected_flat))
    if unexpected:
        raise CheckpointMismatch(
            f"{source} has {len(unexpected)} parameter(s) that {model_name} does not, "
            f"first {unexpected[0]!r}"
        )


def _input_to_output(key: str) -> tuple[int, bool, str]:
    """Order keys as data flows (stem, blocks by number, the rest; kernels first) so errors
    name the most telling difference."""
    top = key.split("/")[0]
    block = re.search(r"Block_(\d+)$", top)
    order = -1 if top == "stem" else int(block.group(1)) if block else 1 << 30
    return (order, not key.endswith("kernel"), key)


def with_fresh_head(
    flat: Mapping[str, np.ndarray], fresh: Mapping[str, Any], source: str
) -> Params:
    """A checkpoint's backbone (every array but `head/`) under the fresh model's head,
    checked against the fresh model's backbone: any family's transfer to new classes."""
    fresh_flat = flatten(fresh)
    backbone = {k: v for k, v in flat.items() if not k.startswith("head/")}
    expected = {k: v for k, v in fresh_flat.items() if not k.startswith("head/")}
    check_compatible(
        traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in expected.items()}),
        backbone,
        source,
        "the fine-tuned model",
    )
    head = {k: np.asarray(v) for k, v in fresh_flat.items() if k.startswith("head/")}
    return as_tree({**backbone, **head})
