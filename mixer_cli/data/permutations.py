"""The fixed pixel permutations of the paper's shuffle experiment (§3.4), as index maps.

A permutation is an array `idx` over the R*R pixel positions of an image (raster
order): output pixel i takes input pixel idx[i], all channels together. One seeded
map serves every image, train and test.

- ``patch``: the order of the PxP patches is permuted, and the pixels inside every
  patch by one shared permutation. A Mixer can absorb this exactly (permute its stem
  kernel and token-mixing weights), so it should not care.
- ``global``: all pixel positions permuted; locality is gone for every model.
"""

from __future__ import annotations

import numpy as np

from mixer_cli.core.errors import ConfigError

PERMUTATION_MODES = ("none", "patch", "global")


def patch_permutation(resolution: int, patch: int, seed: int) -> np.ndarray:
    if patch <= 0 or resolution % patch:
        raise ConfigError(
            f"patch shuffling needs the patch size to divide the resolution: "
            f"{patch} does not divide {resolution}"
        )
    grid = resolution // patch
    rng = np.random.default_rng(seed)
    patch_order = rng.permutation(grid * grid)  # output patch q takes input patch patch_order[q]
    pixel_order = rng.permutation(patch * patch)  # the same within every patch
    src_pi, src_pj = np.divmod(patch_order, grid)  # [G*G]
    src_si, src_sj = np.divmod(pixel_order, patch)  # [P*P]
    rows = src_pi[:, None] * patch + src_si[None, :]  # [G*G, P*P]: source row of each output
    cols = src_pj[:, None] * patch + src_sj[None, :]
    source = (rows * resolution + cols).reshape(grid, grid, patch, patch)
    # Lay outputs in raster order: output patch (qi, qj), pixel (ri, rj) -> row qi*P+ri.
    return source.transpose(0, 2, 1, 3).reshape(-1)


def global_permutation(resolution: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(resolution * resolution)


def make_permutation(mode: str, resolution: int, patch: int, seed: int) -> np.ndarray | None:
    """The index map for a mode (None for 'none'), refusing unknown modes."""
    if mode == "none":
        return None
    if mode == "patch":
        return patch_permutation(resolution, patch, seed)
    if mode == "global":
        return global_permutation(resolution, seed)
    raise ConfigError(
        f"unknown permutation {mode!r}: expected one of {', '.join(PERMUTATION_MODES)}"
    )


def permute_numpy(images: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Apply an index map to images [..., R, R, C] with NumPy (tf.data uses `tf.gather`)."""
    *lead, r, _, c = images.shape
    flat = images.reshape(*lead, r * r, c)
    return np.take(flat, idx, axis=-2).reshape(images.shape)
