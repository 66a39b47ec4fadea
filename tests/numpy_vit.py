"""An independent NumPy (float64) statement of the Vision Transformer and of Google's layout.

Written from the ViT paper and vit_jax's `models_vit.py` (the released .npz keys: the
patch projection `embedding`, `cls`, `Transformer/posembed_input/pos_embedding`,
`encoderblock_i/{LayerNorm_0, MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3}`,
`encoder_norm`, optional `pre_logits` + tanh, `head`), sharing no code with `mixer_cli`.
"""

from __future__ import annotations

import numpy as np
from numpy_mixer import gelu_tanh, layer_norm

ATTENTION = "MultiHeadDotProductAttention_1"


def dense(x: np.ndarray, flat: dict, prefix: str) -> np.ndarray:
    return x @ flat[f"{prefix}/kernel"] + flat[f"{prefix}/bias"]


def attention(x: np.ndarray, flat: dict, prefix: str) -> np.ndarray:
    """Multi-head self-attention: q, k, v kernels [D, H, K], out kernel [H, K, D]."""
    q, k, v = (
        np.einsum("btd,dhk->bthk", x, flat[f"{prefix}/{p}/kernel"]) + flat[f"{prefix}/{p}/bias"]
        for p in ("query", "key", "value")
    )
    logits = np.einsum("bqhk,bthk->bhqt", q, k) / np.sqrt(q.shape[-1])
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    mixed = np.einsum("bhqt,bthk->bqhk", weights, v)
    out = np.einsum("bqhk,hkd->bqd", mixed, flat[f"{prefix}/out/kernel"])
    return out + flat[f"{prefix}/out/bias"]


def numpy_vit(flat: dict, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(logits, pre_logits) of a ViT given its flat '/'-keyed parameters (Google's names)."""
    flat = {k: np.asarray(v, np.float64) for k, v in flat.items()}
    images = np.asarray(images, np.float64)
    kernel = flat["embedding/kernel"]  # [P, P, 3, D]: a stride-P convolution
    p, d = kernel.shape[0], kernel.shape[-1]
    b, h, w, _ = images.shape
    patches = images.reshape(b, h // p, p, w // p, p, 3).transpose(0, 1, 3, 2, 4, 5)
    x = patches.reshape(b, -1, p * p * 3) @ kernel.reshape(p * p * 3, d) + flat["embedding/bias"]
    token = "cls" in flat
    if token:
        x = np.concatenate([np.broadcast_to(flat["cls"], (b, 1, d)), x], axis=1)
    x = x + flat["Transformer/posembed_input/pos_embedding"]
    n = 0
    while f"Transformer/encoderblock_{n}/LayerNorm_0/scale" in flat:
        blk = f"Transformer/encoderblock_{n}"
        x = x + attention(layer_norm(x, flat, f"{blk}/LayerNorm_0"), flat, f"{blk}/{ATTENTION}")
        y = layer_norm(x, flat, f"{blk}/LayerNorm_2")
        y = gelu_tanh(dense(y, flat, f"{blk}/MlpBlock_3/Dense_0"))
        x = x + dense(y, flat, f"{blk}/MlpBlock_3/Dense_1")
        n += 1
    x = layer_norm(x, flat, "Transformer/encoder_norm")
    x = x[:, 0] if token else x.mean(axis=1)
    if "pre_logits/kernel" in flat:
        x = np.tanh(dense(x, flat, "pre_logits"))
    if "head/kernel" in flat:
        return dense(x, flat, "head"), x
    return x, x


def google_vit_params(
    *,
    patch: int,
    layers: int,
    width: int,
    mlp: int,
    heads: int,
    side: int,
    num_classes: int,
    classifier: str = "token",
    representation: int = 0,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Random float32 arrays under the released files' keys, typed out by hand."""
    rng = np.random.default_rng(seed)

    def arr(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    k = width // heads
    tokens = side * side + (classifier == "token")
    flat = {
        "embedding/kernel": arr(patch, patch, 3, width),
        "embedding/bias": arr(width),
        "Transformer/posembed_input/pos_embedding": arr(1, tokens, width),
    }
    if classifier == "token":
        flat["cls"] = arr(1, 1, width)
    for i in range(layers):
        blk = f"Transformer/encoderblock_{i}"
        for ln in ("LayerNorm_0", "LayerNorm_2"):
            flat[f"{blk}/{ln}/scale"] = 1.0 + arr(width)
            flat[f"{blk}/{ln}/bias"] = arr(width)
        for name in ("query", "key", "value"):
            flat[f"{blk}/{ATTENTION}/{name}/kernel"] = arr(width, heads, k)
            flat[f"{blk}/{ATTENTION}/{name}/bias"] = arr(heads, k)
        flat[f"{blk}/{ATTENTION}/out/kernel"] = arr(heads, k, width)
        flat[f"{blk}/{ATTENTION}/out/bias"] = arr(width)
        flat[f"{blk}/MlpBlock_3/Dense_0/kernel"] = arr(width, mlp)
        flat[f"{blk}/MlpBlock_3/Dense_0/bias"] = arr(mlp)
        flat[f"{blk}/MlpBlock_3/Dense_1/kernel"] = arr(mlp, width)
        flat[f"{blk}/MlpBlock_3/Dense_1/bias"] = arr(width)
    flat["Transformer/encoder_norm/scale"] = 1.0 + arr(width)
    flat["Transformer/encoder_norm/bias"] = arr(width)
    features = width
    if representation:
        flat["pre_logits/kernel"] = arr(width, representation)
        flat["pre_logits/bias"] = arr(representation)
        features = representation
    if num_classes:
        flat["head/kernel"] = arr(features, num_classes)
        flat["head/bias"] = arr(num_classes)
    return flat


def linen_names(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same arrays as vit_jax's linen code writes them (parts numbered per type)."""
    renames = {
        f"/{ATTENTION}/": "/MultiHeadDotProductAttention_0/",
        "/LayerNorm_2/": "/LayerNorm_1/",
        "/MlpBlock_3/": "/MlpBlock_0/",
    }
    out = {}
    for key, value in flat.items():
        for old, new in renames.items():
            key = key.replace(old, new)
        out[key] = value
    return out
