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


def layer_norm(x: np.ndarray, sd: dict, name: str, eps: float = 1e-6) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * sd[f"{name}.weight"] + sd[f"{name}.bias"]


def mlp(x: np.ndarray, sd: dict, name: str) -> np.ndarray:
    return linear(gelu_exact(linear(x, sd, f"{name}.fc1")), sd, f"{name}.fc2")


def patch_embed(sd: dict, images_nchw: np.ndarray, name: str = "stem.proj") -> np.ndarray:
    """timm's PatchEmbed: a P x P stride-P conv (weight OIHW [D, 3, P, P]) on float64 images
    [B, 3, H, W] -> tokens [B, N, D] in raster order (its flatten(2).transpose(1, 2))."""
    weight = sd[f"{name}.weight"]
    d, _, p, _ = weight.shape
    b, _, h, w = images_nchw.shape
    patches = images_nchw.reshape(b, 3, h // p, p, w // p, p)  # [B, 3, gy, P, gx, P]
    tokens = np.einsum("bkyixj,dkij->byxd", patches, weight).reshape(b, -1, d)
    return tokens + sd[f"{name}.bias"]


def random_arrays(seed: int):
    """arr(*shape, scale=0.2): random float32 tensors N(0, scale^2), from one generator."""
    rng = np.random.default_rng(seed)

    def arr(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    return arr


def timm_mixer(sd: dict, images_nchw: np.ndarray) -> np.ndarray:
    """Logits of timm's MlpMixer for images [B, 3, H, W], already normalised as timm does."""
    sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
    x = patch_embed(sd, np.asarray(images_nchw, np.float64))  # [B, N, C]
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
    arr = random_arrays(seed)

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


def timm_vit(sd: dict, images_nchw: np.ndarray, heads: int) -> np.ndarray:
    """Logits of timm's VisionTransformer for images [B, 3, H, W] normalised as timm does:
    PatchEmbed conv, the class token (if any) prepended, ``pos_embed`` added, pre-LN blocks
    with ``qkv`` [3D, D] split as ``reshape(B, T, 3, heads, D / heads)``, softmax of
    q k^T / sqrt(D / heads), exact GELU MLPs, ``norm``, then the class token's output or
    (class_token=False, global_pool='avg', fc_norm=False) the tokens' mean, older timm's
    ``pre_logits.fc`` + tanh, ``head``."""
    sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
    x = patch_embed(sd, np.asarray(images_nchw, np.float64), "patch_embed.proj")  # [B, N, D]
    b, _, d = x.shape
    if "cls_token" in sd:
        x = np.concatenate([np.broadcast_to(sd["cls_token"], (b, 1, d)), x], axis=1)
    x = x + sd["pos_embed"]
    t, k = x.shape[1], d // heads
    n = 0
    while f"blocks.{n}.norm1.weight" in sd:
        blk = f"blocks.{n}"
        qkv = linear(layer_norm(x, sd, f"{blk}.norm1"), sd, f"{blk}.attn.qkv")
        q, key, v = qkv.reshape(b, t, 3, heads, k).transpose(2, 0, 3, 1, 4)  # [B, H, T, K]
        scores = q @ key.transpose(0, 1, 3, 2) / math.sqrt(k)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        attn = scores / scores.sum(-1, keepdims=True)
        mixed = (attn @ v).transpose(0, 2, 1, 3).reshape(b, t, d)
        x = x + linear(mixed, sd, f"{blk}.attn.proj")
        x = x + mlp(layer_norm(x, sd, f"{blk}.norm2"), sd, f"{blk}.mlp")
        n += 1
    x = layer_norm(x, sd, "norm")
    x = x[:, 0] if "cls_token" in sd else x.mean(axis=1)
    if "pre_logits.fc.weight" in sd:
        x = np.tanh(linear(x, sd, "pre_logits.fc"))
    return linear(x, sd, "head")


def timm_vit_state_dict(
    patch: int,
    num_blocks: int,
    hidden: int,
    mlp_dim: int,
    side: int,
    num_classes: int,
    *,
    class_token: bool = True,
    representation: int = 0,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Random float32 tensors under timm's VisionTransformer keys and shapes, typed out
    from its module (older timm's representation layer ``pre_logits.fc`` if asked)."""
    arr = random_arrays(seed)

    sd = {}
    if class_token:
        sd["cls_token"] = arr(1, 1, hidden)
    sd["pos_embed"] = arr(1, side * side + class_token, hidden)
    sd["patch_embed.proj.weight"] = arr(hidden, 3, patch, patch)
    sd["patch_embed.proj.bias"] = arr(hidden)
    for i in range(num_blocks):
        blk = f"blocks.{i}"
        for norm in ("norm1", "norm2"):
            sd[f"{blk}.{norm}.weight"] = 1.0 + arr(hidden)
            sd[f"{blk}.{norm}.bias"] = arr(hidden)
        sd[f"{blk}.attn.qkv.weight"], sd[f"{blk}.attn.qkv.bias"] = (
            arr(3 * hidden, hidden),
            arr(3 * hidden),
        )
        sd[f"{blk}.attn.proj.weight"], sd[f"{blk}.attn.proj.bias"] = (
            arr(hidden, hidden),
            arr(hidden),
        )
        sd[f"{blk}.mlp.fc1.weight"], sd[f"{blk}.mlp.fc1.bias"] = arr(mlp_dim, hidden), arr(mlp_dim)
        sd[f"{blk}.mlp.fc2.weight"], sd[f"{blk}.mlp.fc2.bias"] = arr(hidden, mlp_dim), arr(hidden)
    sd["norm.weight"], sd["norm.bias"] = 1.0 + arr(hidden), arr(hidden)
    features = hidden
    if representation:
        sd["pre_logits.fc.weight"] = arr(representation, hidden)
        sd["pre_logits.fc.bias"] = arr(representation)
        features = representation
    sd["head.weight"], sd["head.bias"] = arr(num_classes, features), arr(num_classes)
    return sd
