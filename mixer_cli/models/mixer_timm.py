"""The Mixer in timm's state dicts (`timm/models/mlp_mixer.py`'s MlpMixer with MixerBlock).

timm publishes the strongest Mixer-B/16 weights (``mixer_b16_224.miil_in21k_ft_in1k``)
and Google's converted ones: ``stem.proj`` (a PxP/stride-P conv, OIHW), ``blocks.N.{norm1,
mlp_tokens.fc1/fc2, norm2, mlp_channels.fc1/fc2}`` (Linear weights [out, in]), ``norm``,
``head``. Reading maps each key to Google's name and transposes the kernels, so the rest
of mixer sees an ordinary official-layout checkpoint (run with timm's exact GELU unless
the file says otherwise: `weights.timm`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np

from mixer_cli.models.timm_state import ModuleNames, TimmLayout, renamed_from_timm, renamed_to_timm

LAYOUT = "stem.proj.*, blocks.N.{norm1,mlp_tokens,norm2,mlp_channels}.*, norm.*, head.*"

# timm module inside a block -> Google's; then weight/bias -> kernel|scale / bias.
NAMES = ModuleNames(
    block="MixerBlock",
    in_block={
        "norm1": "LayerNorm_0",
        "mlp_tokens.fc1": "token_mixing/Dense_0",
        "mlp_tokens.fc2": "token_mixing/Dense_1",
        "norm2": "LayerNorm_1",
        "mlp_channels.fc1": "channel_mixing/Dense_0",
        "mlp_channels.fc2": "channel_mixing/Dense_1",
    },
    top={"stem.proj": "stem", "norm": "pre_head_layer_norm", "head": "head"},
    norms=("LayerNorm_0", "LayerNorm_1", "pre_head_layer_norm"),
    what="an MLP-Mixer",
)
official_name, timm_name = NAMES.ours, NAMES.timm


def owns(keys: Collection[str]) -> bool:
    """A timm Mixer's keys: token-mixing MLPs in its blocks."""
    return any(".mlp_tokens." in key for key in keys)


def from_timm(state: Mapping[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """A timm Mixer state dict -> official flat parameters (for timm's normalisation),
    naming the first key (in file order) that has no place in timm's Mixer layout."""
    return renamed_from_timm(
        state, source, design="MLP-Mixer", layout=LAYOUT, our_name=official_name
    )


def to_timm(flat: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Official flat parameters -> a timm Mixer state dict."""
    return renamed_to_timm(flat, timm_name)


LAYOUT_OF_MIXER = TimmLayout(
    design="MLP-Mixer", keys=LAYOUT, owns=owns, from_timm=from_timm, to_timm=to_timm
)
