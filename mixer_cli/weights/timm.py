"""timm's safetensors files: state dicts read and written, with what runs them.

A file holds a PyTorch state dict ('blocks.0.norm1.weight', [out, in] Linear weights);
which family it is and how its names map to ours is the models' to say
(`models.timm_state`). Besides the arrays a file carries how to run them: the GELU form
(timm runs its models with the exact, erf, GELU: a file read here runs with
``gelu='exact'`` unless its metadata says otherwise; files we write record theirs) and
the input normalisation timm feeds it (its ``pretrained_cfg`` mean/std: 0.5/0.5 for
Google's weights, 0/1 for miil's, ImageNet's for Facebook's), from the metadata, else
from a timm ``config.json`` beside the file (the hub's layout), else timm's 0.5/0.5.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mixer_cli.core import files
from mixer_cli.core.atomic import atomic_write
from mixer_cli.core.errors import CheckpointError, CheckpointNotFound

DEFAULT_NORMALISATION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # timm's default for Google's

# What a safetensors file's metadata may say (timm writes {'format': 'pt'}; mixer adds the
# GELU form, models.mixer.GELU_FORMS, the 0.5/0.5 normalisation as JSON lists and, for a
# ViT, its attention heads, which timm takes from the model's config), and what mixer
# reads of a hub repository's config.json.
METADATA = {"gelu?": {"tanh", "exact"}, "mean?": list, "mean.*?": files.NUMBER,
            "std?": list, "std.*?": files.NUMBER, "attention_heads?": int}  # fmt: skip
JSON_METADATA = ("mean", "std", "attention_heads")  # metadata values stored as JSON
HUB_CONFIG = {"pretrained_cfg?": dict, "pretrained_cfg.mean?": list,
              "pretrained_cfg.mean.*?": files.NUMBER, "pretrained_cfg.std?": list,
              "pretrained_cfg.std.*?": files.NUMBER}  # fmt: skip


def read(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """A .safetensors file -> (its arrays as saved, its settings: ``gelu``, and a ViT's
    ``attention_heads`` when recorded).

    A timm file's arrays keep timm's names ('blocks.0.norm1.weight'); a file in our own
    '/'-joined layout is ours as it is.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFound(f"checkpoint {str(path)!r} does not exist")
    try:
        with safe_open(path, framework="numpy") as f:
            metadata = read_metadata(path, f.metadata())
            state = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, TypeError) as err:
        raise CheckpointError(f"cannot read {str(path)!r} as a safetensors file: {err}") from err
    if not state:
        raise CheckpointError(f"checkpoint {str(path)!r} contains no arrays")
    return state, _settings(metadata)


def read_settings(path: str | os.PathLike) -> dict[str, Any]:
    """A .safetensors file's settings (see `read`) from its header alone."""
    return _settings(_header(Path(path)))


def _settings(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """What runs a file's arrays: its GELU form (timm's exact unless it says otherwise) and
    what else it records (a ViT's `attention_heads`)."""
    heads = (
        {"attention_heads": metadata["attention_heads"]} if "attention_heads" in metadata else {}
    )
    return {"gelu": metadata.get("gelu", "exact"), **heads}


def normalisation(path: str | os.PathLike) -> tuple[Sequence[float], Sequence[float]]:
    """(mean, std) of the inputs the file's weights expect, on [0, 1] images."""
    path = Path(path)
    metadata = _header(path)
    if "mean" in metadata and "std" in metadata:
        return metadata["mean"], metadata["std"]
    config = path.parent / "config.json"
    if config.is_file():
        cfg = files.read_json(config, "a timm model config", HUB_CONFIG, CheckpointError)
        cfg = cfg.get("pretrained_cfg", {})
        if "mean" in cfg and "std" in cfg:
            return cfg["mean"], cfg["std"]
    return DEFAULT_NORMALISATION


def _header(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="numpy") as f:
            return read_metadata(path, f.metadata())
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"cannot read {str(path)!r} as a safetensors file: {err}") from err


def read_metadata(path: Path, metadata: Mapping[str, str] | None) -> dict[str, Any]:
    """A safetensors header's metadata, its JSON entries parsed, checked against what timm
    and mixer write (`METADATA`)."""
    where = f"the metadata of {path}"
    parsed = {
        key: files.parse_json(value, f"{where}: {key!r}", CheckpointError)
        if key in JSON_METADATA
        else value
        for key, value in (metadata or {}).items()
    }
    return files.check(parsed, METADATA, where, "what timm or mixer writes", CheckpointError)


def write_state(
    state: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    *,
    gelu: str,
    mean: Sequence[float],
    std: Sequence[float],
    recorded: Mapping[str, Any] | None = None,
) -> Path:
    """A state dict written as safetensors, atomically, its metadata saying how it runs
    (`recorded`: what the state dict cannot hold, e.g. ``attention_heads``)."""
    from safetensors.numpy import save

    metadata = {
        "format": "pt",
        "gelu": gelu,
        "mean": json.dumps(list(mean)),
        "std": json.dumps(list(std)),
        **{key: json.dumps(value) for key, value in (recorded or {}).items()},
    }
    path = Path(path)
    with atomic_write(path, "wb") as f:
        f.write(save(dict(state), metadata=metadata))
    return path
