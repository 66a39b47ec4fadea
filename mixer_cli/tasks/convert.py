"""`mixer convert`: one checkpoint's weights written in another layout (Google's npz,
timm's state dict)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mixer_cli.core.errors import ConfigError
from mixer_cli.models.registry import Loaded

FORMATS = (".npz", ".safetensors")


def convert_checkpoint(source: Any, output: Path, overwrite: bool = False) -> Loaded:
    """Write `source` (any form --init takes) to `output` in the layout its suffix names
    (an existing `output` only when `overwrite`); returns the checkpoint as read (its GELU
    form in `details`, default tanh)."""
    from mixer_cli.models.registry import load_checkpoint
    from mixer_cli.models.timm_state import save
    from mixer_cli.weights.arrays import write_npz

    if output.suffix not in FORMATS:
        raise ConfigError(f"{output}: the output's suffix must be one of {', '.join(FORMATS)}")
    if output.is_dir():
        raise ConfigError(f"{output} is a directory: name the file to write")
    if output.exists() and not overwrite:
        raise ConfigError(f"{output} exists: choose another output or pass --overwrite")
    loaded = load_checkpoint(source)
    if output.suffix == ".safetensors":
        save(loaded.family, loaded.params, output, gelu=gelu_of(loaded))
    else:
        write_npz(loaded.params, output)
    return loaded


def gelu_of(loaded: Loaded) -> str:
    """The GELU form a checkpoint's weights run with (tanh unless it says otherwise)."""
    return loaded.details.get("gelu", "tanh")
