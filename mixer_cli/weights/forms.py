"""Every form a checkpoint comes in, read as flat arrays and the settings it carries.

`--init` takes an npz (Google's or ours), a run directory (finished: params.npz;
unfinished: its newest intact training checkpoint), a released name
(``imagenet21k/Mixer-B_16``), timm's safetensors or ``hf-hub:timm/NAME``. Readers here
return arrays as saved; what they mean (which family, which head) is the models' to say.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from mixer_cli.core import files
from mixer_cli.core.errors import CheckpointError
from mixer_cli.weights.arrays import flatten, read_npz

# What readers of a run's config.yaml use before `config` validates the rest: sections
# (mappings), the model's family and resolution, the data's name and directory.
RUN_CONFIG = {"*": (dict, type(None)), "model.family?": str, "model.kind?": str,
              "model.resolution?": int, "model.gelu?": str, "data.name?": str,
              "data.data_dir?": (str, type(None))}  # fmt: skip


def read_arrays(path: str | os.PathLike, prefix: str = "") -> tuple[dict[str, np.ndarray], str]:
    """Flat parameters as saved (those whose names start with `prefix`) and a name for
    messages, from an .npz or a run directory.

    A finished run has params.npz; an unfinished one (or its checkpoints/ folder, or one
    step of it) gives the parameters of its newest complete training checkpoint. A
    released checkpoint's name (`imagenet21k/Mixer-B_16`) is its verified cached copy; a
    timm safetensors file keeps timm's names (`models.timm_state` maps them).
    """
    from mixer_cli.weights.released import locate

    path = locate(path)
    if path.suffix == ".safetensors":
        from mixer_cli.weights import timm as timm_layout

        state = timm_layout.read(path)[0]  # timm's names stay: the models map them
        return {k: v for k, v in state.items() if k.startswith(prefix)}, str(path)
    if not path.is_dir():
        return read_npz(path, prefix), str(path)
    if (path / "params.npz").is_file():
        return read_npz(path / "params.npz", prefix), str(path / "params.npz")
    from mixer_cli.weights.orbax_steps import UnreadableCheckpoints
    from mixer_cli.weights.orbax_steps import read_params as read_training_params

    try:
        found = read_training_params(path)
    except UnreadableCheckpoints as err:
        raise CheckpointError(str(err)) from err
    if found is None:
        raise CheckpointError(
            f"{str(path)!r} is a directory without params.npz or training checkpoints: "
            "not a mixer run"
        )
    params, where = found
    flat = flatten(params)
    return {key: np.asarray(flat[key]) for key in flat if key.startswith(prefix)}, where


def saved_settings(path: str | os.PathLike) -> dict[str, Any]:
    """The model settings a checkpoint carries besides its arrays: a run's config.yaml
    `model` section, a safetensors file's GELU form (timm's exact one unless its metadata
    says otherwise); {} for an npz, which runs as Google's code runs it."""
    from mixer_cli.weights.released import locate

    located = locate(path)
    if located.suffix == ".safetensors":
        from mixer_cli.weights import timm as timm_layout

        return timm_layout.read_settings(located)
    return dict(saved_run_config(located).get("model") or {})


def saved_run_config(path: str | os.PathLike) -> dict[str, Any]:
    """The config.yaml of a run directory as a dict of sections ({} for anything else):
    what readers of a run (eval, predict, the model registry) learn of it."""
    saved = Path(path) / "config.yaml"
    if not saved.is_file():
        return {}
    config = files.read_yaml(saved, "a mixer run's config", RUN_CONFIG, CheckpointError)
    return {section: values or {} for section, values in config.items()}
