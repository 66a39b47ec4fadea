"""timm's MLP-Mixer state dicts (safetensors) <-> our official-layout parameters.

timm publishes the strongest Mixer-B/16 weights (``mixer_b16_224.miil_in21k_ft_in1k``)
and Google's converted ones on the Hugging Face hub as PyTorch state dicts:
``stem.proj`` (a PxP/stride-P conv, OIHW), ``blocks.N.{norm1, mlp_tokens.fc1/fc2, norm2,
mlp_channels.fc1/fc2}`` (Linear weights [out, in]), ``norm``, ``head``. Reading maps each
key to Google's name and transposes the kernels, so the rest of mixer (family detection,
architecture inference, warm starts) sees an ordinary official-layout checkpoint.

Two things differ besides names. timm runs its Mixers with the exact (erf) GELU: a
file read here runs with ``gelu='exact'`` unless its metadata says otherwise (files we
write record theirs). And timm's weights expect inputs normalised by their
``pretrained_cfg`` mean/std (0.5/0.5, i.e. [-1, 1], for Google's; 0/1, i.e. [0, 1], for
miil's): the stem is linear, so reading folds that normalisation into the stem's kernel
and bias, exactly, and every timm checkpoint takes mixer's [-1, 1] inputs like Google's.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mixer_cli.core import files
from mixer_cli.core.atomic import atomic_write
from mixer_cli.core.errors import CheckpointError, CheckpointMismatch, CheckpointNotFound

# Inputs in [-1, 1] are (x01 - 0.5) / 0.5: what mixer feeds every model.
MIXER_MEAN = MIXER_STD = (0.5, 0.5, 0.5)
LAYOUT = "stem.proj.*, blocks.N.{norm1,mlp_tokens,norm2,mlp_channels}.*, norm.*, head.*"

# What a safetensors file's metadata may say (timm writes {'format': 'pt'}; mixer adds the
# GELU form, models.mixer.GELU_FORMS, and the 0.5/0.5 normalisation as JSON lists), and
# what mixer reads of a hub repository's config.json.
METADATA = {"gelu?": {"tanh", "exact"}, "mean?": list, "mean.*?": files.NUMBER,
            "std?": list, "std.*?": files.NUMBER}  # fmt: skip
HUB_CONFIG = {"pretrained_cfg?": dict, "pretrained_cfg.mean?": list,
              "pretrained_cfg.mean.*?": files.NUMBER, "pretrained_cfg.std?": list,
              "pretrained_cfg.std.*?": files.NUMBER}  # fmt: skip

_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
# timm module inside a block -> Google's; then weight/bias -> kernel|scale / bias.
_IN_BLOCK = {
    "norm1": "LayerNorm_0",
    "mlp_tokens.fc1": "token_mixing/Dense_0",
    "mlp_tokens.fc2": "token_mixing/Dense_1",
    "norm2": "LayerNorm_1",
    "mlp_channels.fc1": "channel_mixing/Dense_0",
    "mlp_channels.fc2": "channel_mixing/Dense_1",
}
_TOP = {"stem.proj": "stem", "norm": "pre_head_layer_norm", "head": "head"}


def official_name(key: str) -> str | None:
    """Google's name for one timm key, or None if the key is no part of a timm Mixer."""
    module, _, leaf = key.rpartition(".")
    if leaf not in ("weight", "bias"):
        return None
    block = _BLOCK.match(module)
    if block:
        inner = _IN_BLOCK.get(block.group(2))
        prefix = f"MixerBlock_{int(block.group(1))}/{inner}" if inner else None
    else:
        prefix = _TOP.get(module)
    if prefix is None:
        return None
    if leaf == "bias":
        return f"{prefix}/bias"
    is_norm = "LayerNorm" in prefix or prefix == "pre_head_layer_norm"
    return f"{prefix}/{'scale' if is_norm else 'kernel'}"


def timm_name(key: str) -> str:
    """timm's name for one official key (the inverse of `official_name`)."""
    module, _, leaf = key.rpartition("/")
    block = re.match(r"^MixerBlock_(\d+)/(.+)$", module)
    inner = {v: k for k, v in _IN_BLOCK.items()}.get(block.group(2)) if block else None
    prefix = (
        f"blocks.{block.group(1)}.{inner}" if inner else {v: k for k, v in _TOP.items()}.get(module)
    )
    if prefix is None or leaf not in ("kernel", "scale", "bias"):
        raise CheckpointMismatch(
            f"{key!r} is not a parameter of an MLP-Mixer: timm has no name for it"
        )
    return f"{prefix}.{'bias' if leaf == 'bias' else 'weight'}"


def from_timm(
    state: Mapping[str, np.ndarray],
    source: str,
    mean: Sequence[float] = MIXER_MEAN,
    std: Sequence[float] = MIXER_STD,
) -> dict[str, np.ndarray]:
    """A timm Mixer state dict -> official flat parameters taking [-1, 1] inputs.

    Refuses a state dict that is not a Mixer, naming the first key (in file order)
    that has no place in timm's Mixer layout.
    """
    flat: dict[str, np.ndarray] = {}
    for key, value in state.items():
        name = official_name(key)
        if name is None:
            raise CheckpointMismatch(
                f"{source} is not a timm MLP-Mixer state dict: key {key!r} does not fit its "
                f"layout ({LAYOUT})"
            )
        value = np.asarray(value, dtype=np.float32)
        if name == "stem/kernel":
            if value.ndim != 4:
                raise CheckpointMismatch(
                    f"{source}: {key!r} has shape {value.shape}, expected [C, 3, P, P]"
                )
            value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        elif name.endswith("/kernel"):
            value = value.T  # Linear [out, in] -> Dense [in, out]
        flat[name] = np.ascontiguousarray(value)
    if "stem/kernel" not in flat or "stem/bias" not in flat:
        raise CheckpointMismatch(f"{source} has no 'stem.proj.weight': not a timm MLP-Mixer")
    flat["stem/kernel"], flat["stem/bias"] = fold_normalisation(
        flat["stem/kernel"], flat["stem/bias"], mean, std, source
    )
    return flat


def fold_normalisation(
    kernel: np.ndarray,
    bias: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    source: str = "input normalisation",
) -> tuple[np.ndarray, np.ndarray]:
    """A stem for [-1, 1] inputs x from one for (x01 - mean) / std, x01 = (x + 1) / 2.

    stem((x01 - m) / s) = sum W (x + 1 - 2m) / (2s) + b: the kernel scaled by 1 / (2s)
    per input channel, the bias shifted by the kernel's response to (1 - 2m) / (2s).
    """
    mean64, std64 = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    if mean64.shape != (3,) or std64.shape != (3,) or np.any(std64 <= 0):
        raise CheckpointError(
            f"{source}: input normalisation mean={mean} std={std}: need 3 values each, std > 0"
        )
    if np.allclose(mean64, MIXER_MEAN) and np.allclose(std64, MIXER_STD):
        return kernel, bias
    k64 = kernel.astype(np.float64)  # [P, P, 3, C]
    shift = np.einsum("pqcd,c->d", k64, (1 - 2 * mean64) / (2 * std64))
    folded = k64 / (2 * std64)[None, None, :, None]
    return folded.astype(np.float32), (bias.astype(np.float64) + shift).astype(np.float32)


def to_timm(flat: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Official flat parameters -> a timm Mixer state dict for inputs normalised 0.5/0.5."""
    state = {}
    for key, value in flat.items():
        value = np.asarray(value, dtype=np.float32)
        if key == "stem/kernel":
            value = value.transpose(3, 2, 0, 1)  # HWIO -> OIHW
        elif key.endswith("/kernel"):
            value = value.T
        state[timm_name(key)] = np.ascontiguousarray(value)
    return state


def read(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """A .safetensors Mixer -> (official flat parameters for [-1, 1] inputs, its settings).

    Settings are what the file says about how to run it: ``gelu`` (metadata, else timm's
    exact form). The input normalisation comes from the metadata, else from a timm
    ``config.json`` beside the file (the hub's layout), else timm's Mixer default 0.5/0.5.
    A file in our own '/'-joined layout is read as it is.
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
    settings = {"gelu": metadata.get("gelu", "exact")}
    if all("/" in key for key in state):
        return dict(state), settings
    mean, std = _normalisation(path, metadata)
    return from_timm(state, str(path), mean, std), settings


def read_settings(path: str | os.PathLike) -> dict[str, str]:
    """A .safetensors file's settings (see `read`) from its header alone."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="numpy") as f:
            return {"gelu": read_metadata(Path(path), f.metadata()).get("gelu", "exact")}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"cannot read {str(path)!r} as a safetensors file: {err}") from err


def read_metadata(path: Path, metadata: Mapping[str, str] | None) -> dict[str, Any]:
    """A safetensors header's metadata, its JSON entries parsed, checked against what timm
    and mixer write (`METADATA`)."""
    where = f"the metadata of {path}"
    parsed = {
        key: files.parse_json(value, f"{where}: {key!r}", CheckpointError)
        if key in ("mean", "std")
        else value
        for key, value in (metadata or {}).items()
    }
    return files.check(parsed, METADATA, where, "what timm or mixer writes", CheckpointError)


def _normalisation(path: Path, metadata: Mapping[str, Any]) -> tuple[Any, Any]:
    if "mean" in metadata and "std" in metadata:
        return metadata["mean"], metadata["std"]
    config = path.parent / "config.json"
    if config.is_file():
        cfg = files.read_json(config, "a timm model config", HUB_CONFIG, CheckpointError)
        cfg = cfg.get("pretrained_cfg", {})
        if "mean" in cfg and "std" in cfg:
            return cfg["mean"], cfg["std"]
    return MIXER_MEAN, MIXER_STD


def write(params: Mapping[str, Any], path: str | os.PathLike, *, gelu: str = "tanh") -> Path:
    """Write parameters (a tree or official flat arrays) as a timm state dict, atomically.

    The metadata records the GELU form and the 0.5/0.5 normalisation, so mixer reads the
    file back exactly; timm's ``mixer_*`` models load its tensors as they are (they run
    the exact GELU: weights trained with tanh differ there by that approximation).
    """
    from flax import traverse_util
    from safetensors.numpy import save

    flat = {
        "/".join(k) if isinstance(k, tuple) else k: np.asarray(v)
        for k, v in (
            traverse_util.flatten_dict(params).items()
            if any(isinstance(v, Mapping) for v in params.values())
            else params.items()
        )
    }
    metadata = {
        "format": "pt",
        "gelu": gelu,
        "mean": json.dumps(list(MIXER_MEAN)),
        "std": json.dumps(list(MIXER_STD)),
    }
    path = Path(path)
    with atomic_write(path, "wb") as f:
        f.write(save(to_timm(flat), metadata=metadata))
    return path
