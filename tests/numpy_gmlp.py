"""An independent NumPy (float64) statement of timm's gMLP forward on its state dict.

Written from timm's `mlp_mixer.py` (MlpMixer with `SpatialGatingBlock`, `GatedMlp` from
`layers/mlp.py`, `SpatialGatingUnit`): PatchEmbed conv OIHW; per block
x + fc2(gate(GELU(fc1(LN x)))), LayerNorm eps 1e-6; the gate chunks its input into u, v
(u first), v = proj(LN(v)^T)^T with nn.LayerNorm's default eps 1e-5, and returns u * v;
`nn.Linear` y = x W^T + b; `nn.GELU` the exact erf form; final LayerNorm, mean over tokens,
head. PyTorch's layout throughout: it shares no code or key mapping with mixer_cli.
"""

from __future__ import annotations

import numpy as np
from numpy_timm import gelu_exact, layer_norm, linear, patch_embed, random_arrays


def timm_gmlp(sd: dict, images_nchw: np.ndarray) -> np.ndarray:
    """Logits of timm's gMLP for images [B, 3, H, W], already normalised as timm does."""
    sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
    x = patch_embed(sd, np.asarray(images_nchw, np.float64))  # [B, S, D]
    n = 0
    while f"blocks.{n}.norm.weight" in sd:
        mlp = f"blocks.{n}.mlp_channels"
        y = gelu_exact(linear(layer_norm(x, sd, f"blocks.{n}.norm", 1e-6), sd, f"{mlp}.fc1"))
        u, v = np.split(y, 2, axis=-1)
        v = layer_norm(v, sd, f"{mlp}.gate.norm", 1e-5)
        v = linear(v.transpose(0, 2, 1), sd, f"{mlp}.gate.proj").transpose(0, 2, 1)
        x = x + linear(u * v, sd, f"{mlp}.fc2")
        n += 1
    x = layer_norm(x, sd, "norm", 1e-6).mean(axis=1)
    return linear(x, sd, "head")


def timm_gmlp_state(
    patch: int, blocks: int, dim: int, ratio: int, seq_len: int, classes: int, seed: int
) -> dict[str, np.ndarray]:
    """Random float32 tensors under timm's keys and shapes, typed out from its modules
    (in its state dict's order)."""
    arr = random_arrays(seed)

    hidden = dim * ratio
    sd = {"stem.proj.weight": arr(dim, 3, patch, patch), "stem.proj.bias": arr(dim)}
    for i in range(blocks):
        mlp = f"blocks.{i}.mlp_channels"
        sd[f"blocks.{i}.norm.weight"], sd[f"blocks.{i}.norm.bias"] = 1.0 + arr(dim), arr(dim)
        sd[f"{mlp}.fc1.weight"], sd[f"{mlp}.fc1.bias"] = arr(hidden, dim), arr(hidden)
        sd[f"{mlp}.gate.norm.weight"] = 1.0 + arr(hidden // 2)
        sd[f"{mlp}.gate.norm.bias"] = arr(hidden // 2)
        sd[f"{mlp}.gate.proj.weight"] = arr(seq_len, seq_len)
        sd[f"{mlp}.gate.proj.bias"] = 1.0 + arr(seq_len)
        sd[f"{mlp}.fc2.weight"], sd[f"{mlp}.fc2.bias"] = arr(dim, hidden // 2), arr(dim)
    sd["norm.weight"], sd["norm.bias"] = 1.0 + arr(dim), arr(dim)
    sd["head.weight"], sd["head.bias"] = arr(classes, dim), arr(classes)
    return sd
