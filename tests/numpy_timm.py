"""An independent NumPy (float64) statement of timm's MLP-Mixer forward on its state dict.

Written from timm's `mlp_mixer.py` (PatchEmbed conv OIHW, `nn.Linear` y = x W^T + b,
LayerNorm eps 1e-6, `nn.GELU` = the exact erf form, token MLP on the transposed tokens,
mean pool, head), in PyTorch's layout: it shares no code or key mapping with mixer_cli.
"""

from __future__ import annotations

import math

import numpy as np

_erf = np.vectorize(math.erf)


def gelu_exact(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def linear(x: np.ndarray, sd: dict, name: str) -> np.ndarray:
    return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]


def layer_norm(x: np.ndarray, sd: dict, name: str) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-6) * sd[f"{name}.weight"] + sd[f"{name}.bias"]


def mlp(x: np.ndarray, sd: dict, name: str) -> np.ndarray:
    return linear(gelu_exact(linear(x, sd, f"{name}.fc1")), sd, f"{name}.fc2")


def timm_mixer(sd: dict, images_nchw: np.ndarray) -> np.ndarray:
    """Logits of timm's MlpMixer for images [B, 3, H, W], already normalised as timm does."""
    sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
    x = np.asarray(images_nchw, np.float64)
    weight = sd["stem.proj.weight"]  # [C, 3, P, P]
    c, _, p, _ = weight.shape
    b, _, h, w = x.shape
    patches = x.reshape(b, 3, h // p, p, w // p, p)  # [B, 3, gy, P, gx, P]
    tokens = np.einsum("bkyixj,ckij->byxc", patches, weight).reshape(b, -1, c)
    x = tokens + sd["stem.proj.bias"]  # [B, N, C], tokens in raster order (flatten(2))
    n = 0
    while f"blocks.{n}.norm1.weight" in sd:
        blk = f"blocks.{n}"
        y = layer_norm(x, sd, f"{blk}.norm1").transpose(0, 2, 1)
        x = x + mlp(y, sd, f"{blk}.mlp_tokens").transpose(0, 2, 1)
        x = x + mlp(layer_norm(x, sd, f"{blk}.norm2"), sd, f"{blk}.mlp_channels")
        n += 1
    x = layer_norm(x, sd, "norm").mean(axis=1)
    return linear(x, sd, "head")


def timm_state_dict(
    patch: int,
    num_blocks: int,
    hidden: int,
    seq_len: int,
    tokens_mlp: int,
    channels_mlp: int,
    num_classes: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """Random float32 tensors under timm's keys and shapes, typed out from its module."""
    rng = np.random.default_rng(seed)

    def arr(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    sd = {"stem.proj.weight": arr(hidden, 3, patch, patch), "stem.proj.bias": arr(hidden)}
    for i in range(num_blocks):
        blk = f"blocks.{i}"
        for norm in ("norm1", "norm2"):
            sd[f"{blk}.{norm}.weight"] = 1.0 + arr(hidden)
            sd[f"{blk}.{norm}.bias"] = arr(hidden)
        for name, width, mlp_dim in (
            ("mlp_tokens", seq_len, tokens_mlp),
            ("mlp_channels", hidden, channels_mlp),
        ):
            sd[f"{blk}.{name}.fc1.weight"] = arr(mlp_dim, width)
            sd[f"{blk}.{name}.fc1.bias"] = arr(mlp_dim)
            sd[f"{blk}.{name}.fc2.weight"] = arr(width, mlp_dim)
            sd[f"{blk}.{name}.fc2.bias"] = arr(width)
    sd["norm.weight"], sd["norm.bias"] = 1.0 + arr(hidden), arr(hidden)
    sd["head.weight"], sd["head.bias"] = arr(num_classes, hidden), arr(num_classes)
    return sd
