"""gMLP in timm's state dicts (`timm/models/mlp_mixer.py`'s MlpMixer with SpatialGatingBlock).

timm's keys: ``stem.proj`` (a PxP/stride-P conv, OIHW), ``blocks.N.norm``,
``blocks.N.mlp_channels.{fc1, gate.norm, gate.proj, fc2}`` (Linear weights [out, in]; the
gate's proj is [S, S] across tokens), ``norm``, ``head``. Reading renames each key to ours
(`models/gmlp.py`) and transposes the kernels; writing is the inverse.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np

from mixer_cli.models.timm_state import ModuleNames, TimmLayout, renamed_from_timm, renamed_to_timm

LAYOUT = "stem.proj.*, blocks.N.{norm,mlp_channels.{fc1,gate.norm,gate.proj,fc2}}.*, norm.*, head.*"

# timm module inside a block -> ours; then weight/bias -> kernel|scale / bias.
NAMES = ModuleNames(
    block="GatingBlock",
    in_block={
        "norm": "LayerNorm_0",
        "mlp_channels.fc1": "channel_in",
        "mlp_channels.gate.norm": "gate_norm",
        "mlp_channels.gate.proj": "gate_proj",
        "mlp_channels.fc2": "channel_out",
    },
    top={"stem.proj": "stem", "norm": "pre_head_layer_norm", "head": "head"},
    norms=("LayerNorm_0", "gate_norm", "pre_head_layer_norm"),
    what="a gMLP",
)
our_name, timm_name = NAMES.ours, NAMES.timm


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
