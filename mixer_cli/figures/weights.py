"""The paper's Fig. 5: the first token-mixing layer's hidden units, as images on the grid.

Each hidden unit of a block's first token-mixing Dense (kernel [S, D_S]) is a vector over
the S tokens: shown as a side x side image in the tokens' raster order. Every all-MLP
family has such weights (gMLP's spatial gating, ResMLP's token Linear: [S, S]); the
family says where they are (`Family.token_weights`). A model adapted
to K times its resolution (Appendix C) has block-diagonal kernels, so each of its units
lights one of the K x K parts of the grid.

Ordering, as in the paper ("we pair the units to highlight the emergence of kernels of
opposing phase; pairs are sorted by filter frequency"): units are paired greedily by the
most negative correlation (pairs only below -0.5), each pair shown side by side; pairs,
then the units left unpaired, are sorted by spatial frequency (the power-weighted mean
radial frequency of the unit's 2-D Fourier transform, constant removed), low first.
Each unit is scaled by its own largest |weight| to [-1, 1] (blue negative, red positive).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mixer_cli.core.errors import ConfigError

PAIR_BELOW = -0.5  # correlation under which two units count as opposite in phase


@dataclass(frozen=True)
class Units:
    """One block's units in display order."""

    block: int
    images: np.ndarray  # [units, side, side], each scaled to [-1, 1]
    order: list[int]  # the kernel columns shown, in order
    pairs: int  # leading pairs of opposite phase (units 2i, 2i+1 of `order`)
    frequency: np.ndarray  # per shown unit, cycles per grid side


def spatial_frequency(images: np.ndarray) -> np.ndarray:
    """Power-weighted mean radial frequency (cycles per side) of each [side, side] image."""
    side = images.shape[-1]
    power = np.abs(np.fft.fft2(images - images.mean(axis=(-2, -1), keepdims=True))) ** 2
    f = np.fft.fftfreq(side) * side
    radius = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    total = power.sum(axis=(-2, -1))
    return (power * radius).sum(axis=(-2, -1)) / np.where(total > 0, total, 1)


def opposite_pairs(kernel: np.ndarray) -> tuple[list[tuple[int, int]], list[int]]:
    """Greedy pairs of columns by most negative correlation, and the unpaired columns."""
    units = kernel.shape[1]
    centred = kernel - kernel.mean(axis=0)
    norms = np.linalg.norm(centred, axis=0)
    corr = (centred.T @ centred) / np.outer(norms, norms).clip(min=1e-12)
    i, j = np.triu_indices(units, k=1)
    pairs, used = [], np.zeros(units, bool)
    for a, b in sorted(zip(i, j, strict=True), key=lambda ab: corr[ab]):
        if corr[a, b] >= PAIR_BELOW:
            break
        if not (used[a] or used[b]):
            pairs.append((int(a), int(b)))
            used[a] = used[b] = True
    return pairs, [int(u) for u in np.flatnonzero(~used)]


def block_units(block: int, kernel: np.ndarray, count: int) -> Units:
    """The first `count` units of one block in the paper's order."""
    seq = kernel.shape[0]
    side = math.isqrt(seq)
    if side * side != seq:
        raise ConfigError(f"block {block}'s {seq} tokens are not a square grid")
    images = kernel.T.reshape(-1, side, side)
    freq = spatial_frequency(images)
    pairs, single = opposite_pairs(kernel)
    pairs.sort(key=lambda ab: freq[list(ab)].mean())
    single.sort(key=lambda u: freq[u])
    order = [u for pair in pairs for u in pair] + single
    order = order[:count]
    shown = images[order]
    scale = np.abs(shown).max(axis=(1, 2), keepdims=True)
    return Units(
        block=block,
        images=shown / np.where(scale > 0, scale, 1),
        order=order,
        pairs=min(len(pairs), len(order) // 2),
        frequency=freq[order],
    )


def choose_blocks(kernels: Mapping[int, np.ndarray], blocks: Sequence[int] | None) -> list[int]:
    """The blocks to show (default: the first three Mixer blocks); refuses others."""
    if not kernels:
        raise ConfigError("no token-mixing weights in this checkpoint")
    if blocks is None:
        return list(kernels)[:3]
    depth = max(kernels) + 1
    for b in blocks:
        if b < 0 or b >= depth:
            raise ConfigError(f"block {b}: the model has {depth} blocks (0-{depth - 1})")
        if b not in kernels:
            raise ConfigError(f"block {b} mixes tokens by attention: it has no token-mixing MLP")
    return list(blocks)


def mosaic(images: np.ndarray, columns: int) -> np.ndarray:
    """Units tiled into rows of `columns`, one NaN pixel between them (drawn as white)."""
    count, side, _ = images.shape
    rows = math.ceil(count / columns)
    out = np.full((rows * (side + 1) - 1, columns * (side + 1) - 1), np.nan)
    for n, image in enumerate(images):
        r, c = divmod(n, columns)
        out[r * (side + 1) : r * (side + 1) + side, c * (side + 1) : c * (side + 1) + side] = image
    return out


def tile(picture: np.ndarray, side: int, columns: int, n: int) -> np.ndarray:
    """Unit n's image back out of a mosaic (for checking what was drawn)."""
    r, c = divmod(n, columns)
    return picture[r * (side + 1) : r * (side + 1) + side, c * (side + 1) : c * (side + 1) + side]


def columns_for(count: int) -> int:
    """An even number of columns (pairs stay on one row), about square."""
    columns = max(2, math.ceil(math.sqrt(count)))
    return columns + columns % 2


def draw_weights(units: Sequence[Units], title: str) -> Any:
    """One panel per block: its units' mosaic, pairs side by side."""
    from mixer_cli.figures import pyplot

    plt = pyplot()
    figure, axes = plt.subplots(1, len(units), figsize=(4.2 * len(units), 4.6), squeeze=False)
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="white")
    for ax, u in zip(axes[0], units, strict=True):
        ax.imshow(mosaic(u.images, columns_for(len(u.order))), cmap=cmap, vmin=-1, vmax=1,
                  interpolation="nearest")  # fmt: skip
        ax.set_title(f"block {u.block}: {len(u.order)} units, {u.pairs} opposite pairs", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    figure.suptitle(title, fontsize=10)
    return figure
