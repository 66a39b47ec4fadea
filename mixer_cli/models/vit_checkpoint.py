"""A ViT from a checkpoint's arrays: Google's layout, the architecture read off the shapes,
the position embeddings resized to another token grid.

The released ViT files carry the pre-linen block names (`LayerNorm_0`,
`MultiHeadDotProductAttention_1`, `LayerNorm_2`, `MlpBlock_3`); files written by vit_jax's
linen code number them per type (`LayerNorm_0`, `MultiHeadDotProductAttention_0`,
`LayerNorm_1`, `MlpBlock_0`). Both are read; ours are written in the released form.

At another resolution the learned position embeddings are interpolated as vit_jax's
`checkpoint.load_pretrained` does: the grid rows bilinearly (`scipy.ndimage.zoom` of
order 1: corners onto corners), the class token's row kept as it is.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from mixer_cli.core.errors import CheckpointMismatch
from mixer_cli.models.vit import VisionTransformer, ViTSpec, create_vit, spec_from_dims
from mixer_cli.weights.arrays import array_shape

POSEMB = "Transformer/posembed_input/pos_embedding"
ATTENTION = "MultiHeadDotProductAttention_1"
_BLOCK0 = "Transformer/encoderblock_0"
# A linen-written block part -> its name in the released files.
LINEN_NAMES = {
    "MultiHeadDotProductAttention_0": "MultiHeadDotProductAttention_1",
    "LayerNorm_1": "LayerNorm_2",
    "MlpBlock_0": "MlpBlock_3",
}
_BLOCK_PART = re.compile(r"^(Transformer/encoderblock_\d+/)([^/]+)(/.*)$")


@dataclass(frozen=True)
class Architecture:
    """What a ViT checkpoint's shapes say about the model that made it."""

    spec: ViTSpec
    classifier: str  # token (it has `cls`) or gap
    representation_size: int  # the `pre_logits` layer's width; 0: none
    num_classes: int  # 0 when the checkpoint has no head
    resolution: int  # the input size its position embeddings fit

    def create_model(self, gelu: str = "tanh") -> VisionTransformer:
        return create_vit(
            self.spec,
            num_classes=self.num_classes,
            classifier=self.classifier,
            representation_size=self.representation_size,
            gelu=gelu,
        )


def released_names(flat: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A checkpoint's arrays under the released files' block names (linen names renamed)."""
    if not any("/MultiHeadDotProductAttention_0/" in key for key in flat):
        return dict(flat)
    renamed = {}
    for key, value in flat.items():
        part = _BLOCK_PART.match(key)
        if part and part.group(2) in LINEN_NAMES:
            key = part.group(1) + LINEN_NAMES[part.group(2)] + part.group(3)
        renamed[key] = value
    return renamed


def with_heads(flat: Mapping[str, np.ndarray], heads: int, source: str) -> dict[str, np.ndarray]:
    """The arrays with each block's attention split into `heads` heads. The query, key and
    value kernels [D, H, D/H] (biases [H, D/H]) and the out kernel [H, D/H, D] are one
    [D, D] map each with its output (input) axis cut into H contiguous blocks, so another
    split of the width is a reshape of the same arrays: how a state dict that does not
    record its heads (timm's) gets them from its file's metadata."""
    out = dict(flat)
    for key, value in flat.items():
        if f"/{ATTENTION}/" not in key or key.endswith("out/bias"):
            continue
        value = np.asarray(value)
        is_out = key.endswith("out/kernel")  # [H, K, D]; query, key, value: [D, H, K], [H, K]
        split = value.shape[:2] if is_out else value.shape[-2:]
        width = int(np.prod(split))
        if heads <= 0 or width % heads:
            raise CheckpointMismatch(
                f"{source}: {heads} attention heads do not divide the width {width} of {key!r}"
            )
        new = (heads, width // heads)
        out[key] = value.reshape(new + value.shape[2:] if is_out else value.shape[:-2] + new)
    return out


def infer_architecture(flat: Mapping[str, np.ndarray], source: str) -> Architecture:
    """Patch size, depth, widths, heads (from the query kernel [D, heads, D/heads]),
    classifier, resolution (from the position embeddings) and classes off the shapes."""

    def shape(key: str, ndim: int) -> tuple[int, ...]:
        return array_shape(flat, key, ndim, source, "a ViT")

    patch, patch_w, channels, width = shape("embedding/kernel", 4)
    if patch != patch_w or channels != 3:
        raise CheckpointMismatch(
            f"{source}: 'embedding/kernel' has shape {flat['embedding/kernel'].shape}, "
            "expected (P, P, 3, D) with square patches"
        )
    layers = sum(
        1 for key in flat if re.fullmatch(r"Transformer/encoderblock_\d+/LayerNorm_0/scale", key)
    )
    _, heads, _ = shape(f"{_BLOCK0}/MultiHeadDotProductAttention_1/query/kernel", 3)
    mlp = shape(f"{_BLOCK0}/MlpBlock_3/Dense_0/kernel", 2)[1]
    classifier = "token" if "cls" in flat else "gap"
    side = grid_side(flat, source)
    return Architecture(
        spec=spec_from_dims(patch, layers, width, mlp, heads),
        classifier=classifier,
        representation_size=shape("pre_logits/kernel", 2)[1] if "pre_logits/kernel" in flat else 0,
        num_classes=shape("head/kernel", 2)[1] if "head/kernel" in flat else 0,
        resolution=side * patch,
    )


def grid_side(flat: Mapping[str, np.ndarray], source: str) -> int:
    """Tokens per row of the position embeddings' grid (the class token's row left out)."""
    if POSEMB not in flat or flat[POSEMB].ndim != 3:
        raise CheckpointMismatch(f"{source} has no {POSEMB!r} of shape (1, tokens, D)")
    rows = flat[POSEMB].shape[1] - ("cls" in flat)
    side = math.isqrt(rows)
    if side * side != rows:
        raise CheckpointMismatch(
            f"{source}: {POSEMB!r} has {rows} grid rows, which is not a square number of patches"
        )
    return side


def at_resolution(
    arch: Architecture, flat: Mapping[str, np.ndarray], resolution: int, source: str
) -> tuple[Architecture, dict[str, np.ndarray]]:
    """(architecture, arrays) at another resolution: the position embeddings resized."""
    arch.spec.check_resolution(resolution)
    side = resolution // arch.spec.patch_size
    return dataclasses.replace(arch, resolution=resolution), with_grid(flat, side, source)


def with_grid(flat: Mapping[str, np.ndarray], side: int, source: str) -> dict[str, np.ndarray]:
    """The arrays with position embeddings for a side x side grid (the class token's row,
    if any, kept as it is); unchanged at the same grid."""
    old = grid_side(flat, source)
    if old == side:
        return dict(flat)
    posemb = np.asarray(flat[POSEMB])
    keep = int("cls" in flat)
    grid = posemb[0, keep:].reshape(old, old, -1)
    grid = zoom_linear(grid, side).reshape(1, side * side, -1)
    return {**flat, POSEMB: np.concatenate([posemb[:, :keep], grid], axis=1)}


def zoom_linear(grid: np.ndarray, size: int) -> np.ndarray:
    """A [n, n, D] grid resampled to [size, size, D] linearly along both grid axes, as
    `scipy.ndimage.zoom(grid, (size / n, size / n, 1), order=1)`: output i sits at input
    coordinate i * (n - 1) / (size - 1), so the corners map onto the corners."""
    out = np.asarray(grid, np.float64)
    for axis in (0, 1):
        n = out.shape[axis]
        coords = np.arange(size) * ((n - 1) / (size - 1)) if size > 1 else np.zeros(1)
        low = np.clip(np.floor(coords).astype(int), 0, n - 1)
        high = np.minimum(low + 1, n - 1)
        weight = (coords - low).reshape([-1 if a == axis else 1 for a in range(out.ndim)])
        out = np.take(out, low, axis) * (1 - weight) + np.take(out, high, axis) * weight
    return out.astype(grid.dtype)
