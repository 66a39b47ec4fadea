"""ResMLP in timm's state dicts (`timm/models/mlp_mixer.py`: MlpMixer with ResBlock and
Affine), and in Facebook's original ones (the deit repository's `resmlp_models.py`).

timm: ``stem.proj`` (a PxP/stride-P conv, OIHW), ``blocks.N.{norm1.alpha|beta [1, 1, D],
linear_tokens [S, S], ls1 [D], norm2, mlp_channels.fc1|fc2, ls2}``, ``norm.alpha|beta``,
``head`` (Linear weights [out, in]). Facebook's files name the same tensors
``patch_embed.proj``, ``attn`` (the token Linear), ``mlp``, ``gamma_1|2``, with Affine
parameters shaped [D]: read by timm's own renaming (its ``checkpoint_filter_fn``), so both
read to the same arrays; what we write carries timm's names.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

import numpy as np

from mixer_cli.core.errors import CheckpointMismatch
from mixer_cli.models.timm_state import TimmLayout, renamed_from_timm, renamed_to_timm

LAYOUT = (
    "stem.proj.*, blocks.N.{norm1,linear_tokens,ls1,norm2,mlp_channels,ls2}.*, norm.*, head.* "
    "(or Facebook's patch_embed, attn, gamma_1, mlp, gamma_2)"
)
# timm's checkpoint_filter_fn: Facebook's names -> timm's, applied to every key in turn.
FACEBOOK_RENAMES = (
    ("patch_embed.", "stem."),
    ("attn.", "linear_tokens."),
    ("mlp.", "mlp_channels."),
    ("gamma_", "ls"),
)
_IN_BLOCK = {
    "norm1.alpha": "affine_tokens/scale",
    "norm1.beta": "affine_tokens/bias",
    "linear_tokens.weight": "token_mixing/kernel",
    "linear_tokens.bias": "token_mixing/bias",
    "ls1": "layer_scale_tokens",
    "norm2.alpha": "affine_channels/scale",
    "norm2.beta": "affine_channels/bias",
    "mlp_channels.fc1.weight": "channel_mixing/Dense_0/kernel",
    "mlp_channels.fc1.bias": "channel_mixing/Dense_0/bias",
    "mlp_channels.fc2.weight": "channel_mixing/Dense_1/kernel",
    "mlp_channels.fc2.bias": "channel_mixing/Dense_1/bias",
    "ls2": "layer_scale_channels",
}
_TOP = {
    "stem.proj.weight": "stem/kernel",
    "stem.proj.bias": "stem/bias",
    "norm.alpha": "pre_head_affine/scale",
    "norm.beta": "pre_head_affine/bias",
    "head.weight": "head/kernel",
    "head.bias": "head/bias",
}
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_OURS_BLOCK = re.compile(r"^ResBlock_(\d+)/(.+)$")
_AFFINE = re.compile(r"^(?:blocks\.\d+\.norm[12]|norm)\.(?:alpha|beta)$")
_OUR_AFFINE = re.compile(r"^(?:ResBlock_\d+/affine_(?:tokens|channels)|pre_head_affine)/")


def our_name(key: str) -> str | None:
    """Our name for one timm key, or None if the key is no part of a timm ResMLP."""
    block = _BLOCK.match(key)
    if block:
        inner = _IN_BLOCK.get(block.group(2))
        return f"ResBlock_{int(block.group(1))}/{inner}" if inner else None
    return _TOP.get(key)


def timm_name(key: str) -> str:
    """timm's name for one of our keys (the inverse of `our_name`)."""
    block = _OURS_BLOCK.match(key)
    if block:
        inner = {v: k for k, v in _IN_BLOCK.items()}.get(block.group(2))
        name = f"blocks.{block.group(1)}.{inner}" if inner else None
    else:
        name = {v: k for k, v in _TOP.items()}.get(key)
    if name is None:
        raise CheckpointMismatch(f"{key!r} is not a parameter of a ResMLP: timm has no name for it")
    return name


def timm_key(key: str, facebook: bool) -> str:
    """timm's name for a key of a state dict; a Facebook one's renamed as timm's
    checkpoint_filter_fn does."""
    if facebook:
        for old, new in FACEBOOK_RENAMES:
            key = key.replace(old, new)
    return key


def is_facebook(keys: Collection[str]) -> bool:
    """Facebook's names, recognised as timm's checkpoint_filter_fn does."""
    return "patch_embed.proj.weight" in keys


def owns(keys: Collection[str]) -> bool:
    """A ResMLP's keys, timm's or Facebook's: Affine parameters (`alpha`, `beta`), which no
    other design timm has."""
    return any(_AFFINE.match(key) for key in keys)


def from_timm(state: Mapping[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """A timm (or Facebook) ResMLP state dict -> our flat parameters (for its input
    normalisation), naming the first key (in file order) with no place in the layout."""
    facebook = is_facebook(state.keys())
    flat = renamed_from_timm(
        state,
        source,
        design="ResMLP",
        layout=LAYOUT,
        our_name=lambda key: our_name(timm_key(key, facebook)),
    )
    for name, value in flat.items():
        if _OUR_AFFINE.match(name) and value.ndim == 3 and value.shape[:2] == (1, 1):
            flat[name] = value.reshape(-1)  # timm's [1, 1, D] (Facebook's are [D] already)
    return flat


def to_timm(flat: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Our flat parameters -> a timm ResMLP state dict (timm's names and shapes)."""
    state = renamed_to_timm(flat, timm_name)
    for name, value in state.items():
        if _AFFINE.match(name):
            state[name] = value.reshape(1, 1, -1)
    return state


LAYOUT_OF_RESMLP = TimmLayout(
    design="ResMLP", keys=LAYOUT, owns=owns, from_timm=from_timm, to_timm=to_timm
)
