"""An independent NumPy (float64) statement of timm's ResMLP forward on its state dict.

Written from timm's `mlp_mixer.py` (MlpMixer with ResBlock and Affine: PatchEmbed conv
OIHW, Affine ``alpha * x + beta`` with alpha/beta [1, 1, D], ``linear_tokens`` on the
transposed tokens, layer scales ``ls1``/``ls2``, `nn.GELU` = the exact erf form, mean
pool, head), in PyTorch's layout: it shares no code or key mapping with mixer_cli. Also
the same tensors under Facebook's names (the deit repository's `resmlp_models.py`).
"""

from __future__ import annotations

import numpy as np
from numpy_timm import gelu_exact, linear, patch_embed, random_arrays


def affine(x: np.ndarray, sd: dict, name: str) -> np.ndarray:
    return sd[f"{name}.alpha"] * x + sd[f"{name}.beta"]


def timm_resmlp(sd: dict, images_nchw: np.ndarray) -> np.ndarray:
    """Logits of timm's ResMLP for images [B, 3, H, W], already normalised as timm does."""
    sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
    x = patch_embed(sd, np.asarray(images_nchw, np.float64))  # [B, S, D]
    n = 0
    while f"blocks.{n}.ls1" in sd:
        blk = f"blocks.{n}"
        y = affine(x, sd, f"{blk}.norm1").transpose(0, 2, 1)  # [B, D, S]
        x = x + sd[f"{blk}.ls1"] * linear(y, sd, f"{blk}.linear_tokens").transpose(0, 2, 1)
        y = affine(x, sd, f"{blk}.norm2")
        y = linear(
            gelu_exact(linear(y, sd, f"{blk}.mlp_channels.fc1")), sd, f"{blk}.mlp_channels.fc2"
        )
        x = x + sd[f"{blk}.ls2"] * y
        n += 1
    x = affine(x, sd, "norm").mean(axis=1)
    return linear(x, sd, "head")


def resmlp_state_dict(
    patch: int, num_blocks: int, hidden: int, seq_len: int, mlp: int, num_classes: int, seed: int
) -> dict[str, np.ndarray]:
    """Random float32 tensors under timm's keys and shapes, typed out from its module."""
    arr = random_arrays(seed)

    sd = {"stem.proj.weight": arr(hidden, 3, patch, patch), "stem.proj.bias": arr(hidden)}
    for i in range(num_blocks):
        blk = f"blocks.{i}"
        sd[f"{blk}.norm1.alpha"], sd[f"{blk}.norm1.beta"] = 1 + arr(1, 1, hidden), arr(1, 1, hidden)
        sd[f"{blk}.linear_tokens.weight"] = arr(seq_len, seq_len)
        sd[f"{blk}.linear_tokens.bias"] = arr(seq_len)
        sd[f"{blk}.ls1"] = 0.5 + arr(hidden)
        sd[f"{blk}.norm2.alpha"], sd[f"{blk}.norm2.beta"] = 1 + arr(1, 1, hidden), arr(1, 1, hidden)
        sd[f"{blk}.mlp_channels.fc1.weight"] = arr(mlp, hidden)
        sd[f"{blk}.mlp_channels.fc1.bias"] = arr(mlp)
        sd[f"{blk}.mlp_channels.fc2.weight"] = arr(hidden, mlp)
        sd[f"{blk}.mlp_channels.fc2.bias"] = arr(hidden)
        sd[f"{blk}.ls2"] = 0.5 + arr(hidden)
    sd["norm.alpha"], sd["norm.beta"] = 1 + arr(1, 1, hidden), arr(1, 1, hidden)
    sd["head.weight"], sd["head.bias"] = arr(num_classes, hidden), arr(num_classes)
    return sd


# timm's key parts -> Facebook's (resmlp_models.py: patch_embed, attn, mlp, gamma_1/2).
_FACEBOOK = {
    "stem.": "patch_embed.",
    ".linear_tokens.": ".attn.",
    ".mlp_channels.": ".mlp.",
    ".ls1": ".gamma_1",
    ".ls2": ".gamma_2",
}


def facebook_state_dict(timm_sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same tensors as Facebook's files hold them: its names, Affine parameters [D]."""
    out = {}
    for key, value in timm_sd.items():
        for timm_part, fb_part in _FACEBOOK.items():
            key = key.replace(timm_part, fb_part)
        out[key] = value.reshape(-1) if key.endswith((".alpha", ".beta")) else value
    return out
