"""An independent NumPy (float64) statement of the Mixer's math and of the official key layout.

Written from the paper and DESIGN.md, sharing no code with `mixer_cli`, so the
tests compare two implementations rather than one with itself.
"""

from __future__ import annotations

import numpy as np


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def layer_norm(x: np.ndarray, flat: dict, prefix: str, eps: float = 1e-6) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * flat[f"{prefix}/scale"] + flat[f"{prefix}/bias"]


def mlp(x: np.ndarray, flat: dict, prefix: str) -> np.ndarray:
    h = x @ flat[f"{prefix}/Dense_0/kernel"] + flat[f"{prefix}/Dense_0/bias"]
    return gelu_tanh(h) @ flat[f"{prefix}/Dense_1/kernel"] + flat[f"{prefix}/Dense_1/bias"]


def numpy_mixer(flat: dict, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(logits, pre_logits) of a Mixer given its flat '/'-keyed parameters."""
    flat = {k: np.asarray(v, np.float64) for k, v in flat.items()}
    images = np.asarray(images, np.float64)
    kernel = flat["stem/kernel"]  # [P, P, 3, C]
    p, c = kernel.shape[0], kernel.shape[-1]
    b, h, w, _ = images.shape
    patches = images.reshape(b, h // p, p, w // p, p, 3).transpose(0, 1, 3, 2, 4, 5)
    x = patches.reshape(b, -1, p * p * 3) @ kernel.reshape(p * p * 3, c) + flat["stem/bias"]
    n = 0
    while f"MixerBlock_{n}/LayerNorm_0/scale" in flat:
        blk = f"MixerBlock_{n}"
        y = layer_norm(x, flat, f"{blk}/LayerNorm_0").transpose(0, 2, 1)
        x = x + mlp(y, flat, f"{blk}/token_mixing").transpose(0, 2, 1)
        x = x + mlp(layer_norm(x, flat, f"{blk}/LayerNorm_1"), flat, f"{blk}/channel_mixing")
        n += 1
    pre_logits = layer_norm(x, flat, "pre_head_layer_norm").mean(axis=1)
    if "head/kernel" in flat:
        return pre_logits @ flat["head/kernel"] + flat["head/bias"], pre_logits
    return pre_logits, pre_logits


def official_layout_params(
    patch: int,
    num_blocks: int,
    hidden: int,
    seq_len: int,
    tokens_mlp: int,
    channels_mlp: int,
    num_classes: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """Random float32 arrays under the official keys, typed out by hand from DESIGN.md."""
    rng = np.random.default_rng(seed)

    def arr(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    flat = {"stem/kernel": arr(patch, patch, 3, hidden), "stem/bias": arr(hidden)}
    for i in range(num_blocks):
        blk = f"MixerBlock_{i}"
        for ln in ("LayerNorm_0", "LayerNorm_1"):
            flat[f"{blk}/{ln}/scale"] = 1.0 + arr(hidden)
            flat[f"{blk}/{ln}/bias"] = arr(hidden)
        for name, width, mlp_dim in (
            ("token_mixing", seq_len, tokens_mlp),
            ("channel_mixing", hidden, channels_mlp),
        ):
            flat[f"{blk}/{name}/Dense_0/kernel"] = arr(width, mlp_dim)
            flat[f"{blk}/{name}/Dense_0/bias"] = arr(mlp_dim)
            flat[f"{blk}/{name}/Dense_1/kernel"] = arr(mlp_dim, width)
            flat[f"{blk}/{name}/Dense_1/bias"] = arr(width)
    flat["pre_head_layer_norm/scale"] = 1.0 + arr(hidden)
    flat["pre_head_layer_norm/bias"] = arr(hidden)
    if num_classes:
        flat["head/kernel"] = arr(hidden, num_classes)
        flat["head/bias"] = arr(num_classes)
    return flat
