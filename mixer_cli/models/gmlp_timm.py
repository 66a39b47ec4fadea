"""gMLP in timm's state dicts (`timm/models/mlp_mixer.py`'s MlpMixer with SpatialGatingBlock).

timm's keys: ``stem.proj`` (a PxP/stride-P conv, OIHW), ``blocks.N.norm``,
``blocks.N.mlp_channels.{fc1, gate.norm, gate.proj, fc2}`` (Linear weights [out, in]; the
gate's proj is [S, S] across tokens), ``norm``, ``head``. Reading renames each key to ours
(`models/gmlp.py`) and transposes the kernels; writing is the inverse.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

import numpy as np

from mixer_cli.core.errors import CheckpointMismatch
from mixer_cli.models.timm_state import TimmLayout, renamed_from_timm, renamed_to_timm

LAYOUT = "stem.proj.*, blocks.N.{norm,mlp_channels.{fc1,gate.norm,gate.proj,fc2}}.*, norm.*, head.*"

_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_OUR_BLOCK = re.compile(r"^GatingBlock_(\d+)/(.+)$")
# timm module inside a block -> ours; then weight/bias -> kernel|scale / bias.
_IN_BLOCK = {
    "norm": "LayerNorm_0",
    "mlp_channels.fc1": "channel_in",
    "mlp_channels.gate.norm": "gate_norm",
    "mlp_channels.gate.proj": "gate_proj",
    "mlp_channels.fc2": "channel_out",
}
_TOP = {"stem.proj": "stem", "norm": "pre_head_layer_norm", "head": "head"}
_NORMS = ("LayerNorm_0", "gate_norm", "pre_head_layer_norm")


def our_name(key: str) -> str | None:
    """Our name for one timm key, or None if the key is no part of a timm gMLP."""
    module, _, leaf = key.rpartition(".")
    if leaf not in ("weight", "bias"):
        return None
    block = _BLOCK.match(module)
    if block:
        inner = _IN_BLOCK.get(block.group(2))
        prefix = f"GatingBlock_{int(block.group(1))}/{inner}" if inner else None
    else:
        prefix = _TOP.get(module)
    if prefix is None:
        return None
    if leaf == "bias":
        return f"{prefix}/bias"
    return f"{prefix}/{'scale' if prefix.rpartition('/')[2] in _NORMS else 'kernel'}"


def timm_name(key: str) -> str:
    """timm's name for one of our keys (the inverse of `our_name`)."""
    module, _, leaf = key.rpartition("/")
    block = _OUR_BLOCK.match(module)
    if block:
        inner = {v: k for k, v in _IN_BLOCK.items()}.get(block.group(2))
        prefix = f"blocks.{block.group(1)}.{inner}" if inner else None
    else:
        prefix = {v: k for k, v in _TOP.items()}.get(module)
    if prefix is None or leaf not in ("kernel", "scale", "bias"):
        raise CheckpointMismatch(f"{key!r} is not a parameter of a gMLP: timm has no name for it")
    return f"{prefix}.{'bias' if leaf == 'bias' else 'weight'}"


def owns(keys: Collection[str]) -> bool:
    """A timm gMLP's keys: spatial gating units in its blocks."""
    return any(".mlp_channels.gate." in key for key in keys)


def from_timm(state: Mapping[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """A timm gMLP state dict -> our flat parameters (for timm's normalisation), naming the
    first key (in file order) that has no place in timm's gMLP layout."""
    return renamed_from_timm(state, source, design="gMLP", layout=LAYOUT, our_name=our_name)


def to_timm(flat: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Our flat parameters -> a timm gMLP state dict."""
    return renamed_to_timm(flat, timm_name)


LAYOUT_OF_GMLP = TimmLayout(
    design="gMLP", keys=LAYOUT, owns=owns, from_timm=from_timm, to_timm=to_timm
)
