"""RandAugment in JAX, for the accelerator: `randaugment.py`'s 16 ops, levels and fill, the
same pixels (its integer and fixed-point maths written in jnp; tests/test_randaugment.py
compares them op by op), and draws of the same distributions from a JAX key.

From dm-pix (DeepMind's JAX image ops): Solarize and the nearest-neighbour affine resampling
(fill 128) of Rotate, ShearX/Y and TranslateX/Y. Written here, where dm-pix has no op with
PIL's semantics (its brightness is additive, its contrast and saturation are not PIL's
blends): AutoContrast, Equalize, Invert, Posterize, SolarizeAdd, Color, Contrast,
Brightness, Sharpness and Cutout.

Vmapped over a batch, a layer's `lax.switch` runs every op on every image and each keeps its
own: so the five geometric ops share one resampling (the drawn op's matrix, the identity's
for the others), the costly part, instead of five.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np

from mixer_cli.data.randaugment import FILL, ONE, OPS, SIGNED_OPS, level_to_arg

# An op takes (uint8 image [H, W, 3], its argument, a key) and returns a uint8 image.
Op = Callable[[jax.Array, Any, jax.Array], jax.Array]
# A geometric op's matrix (a0, a1, a2, b0, b1, b2) from the image's shape and its argument.
Matrix = Callable[[tuple[int, ...], Any], list[Any]]


def _blend(image1: jax.Array, image2: jax.Array, factor: Any) -> jax.Array:
    """PIL-style `image1 + factor * (image2 - image1)`, floored and clipped, factor in
    1/1024ths (randaugment._blend's fixed point)."""
    f = jnp.round(jnp.asarray(factor, jnp.float32) * ONE).astype(jnp.int32)
    a, b = image1.astype(jnp.int32), image2.astype(jnp.int32)
    return jnp.clip((a * ONE + f * (b - a)) // ONE, 0, 255).astype(jnp.uint8)


def _gray(image: jax.Array) -> jax.Array:
    """PIL's integer "L" conversion as int32 [H, W, 1]."""
    x = image.astype(jnp.int32)
    luma = x[..., :1] * 19595 + x[..., 1:2] * 38470 + x[..., 2:] * 7471
    return (luma + 0x8000) // 0x10000


def transform(image: jax.Array, matrix: list[Any]) -> jax.Array:
    """randaugment._transform: (a0, a1, a2, b0, b1, b2) map an output pixel (x, y) to the
    input's (a0 x + a1 y + a2, b0 x + b1 y + b2), sampled nearest (half away from zero, as
    TF), fill 128. dm-pix indexes (row, column, channel); its coordinates are a matmul,
    kept in float32 (an accelerator's default TF32 would move pixels)."""
    a0, a1, a2, b0, b1, b2 = (jnp.asarray(v, jnp.float32) for v in matrix)
    zero, one = jnp.zeros((), jnp.float32), jnp.ones((), jnp.float32)
    rows = [[b1, b0, zero, b2], [a1, a0, zero, a2], [zero, zero, one, zero]]
    matrix_3x4 = jnp.stack([jnp.stack(row) for row in rows])
    with jax.default_matmul_precision("highest"):
        return pix.affine_transform(image, matrix_3x4, order=0, mode="constant", cval=FILL)


def rotation(shape: tuple[int, ...], degrees: Any) -> list[Any]:
    """About the centre, cos and sin in 1/1024ths (randaugment.rotate's matrix)."""
    radians = jnp.asarray(degrees, jnp.float32) * jnp.float32(math.pi / 180.0)
    h, w = jnp.float32(shape[0] - 1), jnp.float32(shape[1] - 1)
    cos = jnp.round(jnp.cos(radians) * ONE) / ONE
    sin = jnp.round(jnp.sin(radians) * ONE) / ONE
    dx = (w - (cos * w - sin * h)) / 2.0
    dy = (h - (sin * w + cos * h)) / 2.0
    return [cos, -sin, dx, sin, cos, dy]


MATRICES: dict[str, Matrix] = {
    "Rotate": rotation,
    "ShearX": lambda shape, level: [1.0, level, 0.0, 0.0, 1.0, 0.0],  # input x = x + level y
    "ShearY": lambda shape, level: [1.0, 0.0, 0.0, level, 1.0, 0.0],  # input y = level x + y
    "TranslateX": lambda shape, pixels: [1.0, 0.0, pixels, 0.0, 1.0, 0.0],  # content left
    "TranslateY": lambda shape, pixels: [1.0, 0.0, 0.0, 0.0, 1.0, pixels],  # content up
}
IDENTITY = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def autocontrast(image: jax.Array, arg: Any, key: jax.Array) -> jax.Array:
    x = image.astype(jnp.int32)
    lo, hi = x.min(axis=(0, 1)), x.max(axis=(0, 1))
    scaled = (x - lo) * 255 // jnp.maximum(hi - lo, 1)
    return jnp.where(hi > lo, scaled.astype(jnp.uint8), image)


def equalize(image: jax.Array, arg: Any, key: jax.Array) -> jax.Array:
    x = image.reshape(-1, 3).T.astype(jnp.int32)  # [3, H*W]
    hist = jnp.zeros((3, 256), jnp.int32).at[jnp.arange(3)[:, None], x].add(1)
    top = jnp.take_along_axis(hist, x.max(axis=1, keepdims=True), axis=1)[:, 0]
    step = (hist.sum(axis=1) - top) // 255
    lut = (jnp.cumsum(hist, axis=1) + step[:, None] // 2) // jnp.maximum(step, 1)[:, None]
    lut = jnp.clip(jnp.concatenate([jnp.zeros((3, 1), jnp.int32), lut[:, :-1]], 1), 0, 255)
    out = jnp.where(step[:, None] > 0, jnp.take_along_axis(lut, x, axis=1), x)
    return out.T.reshape(image.shape).astype(jnp.uint8)


def invert(image: jax.Array, arg: Any, key: jax.Array) -> jax.Array:
    return 255 - image


def posterize(image: jax.Array, bits: Any, key: jax.Array) -> jax.Array:
    shift = 8 - jnp.clip(jnp.asarray(bits).astype(jnp.int32), 0, 8)
    x = image.astype(jnp.int32)
    return jnp.left_shift(jnp.right_shift(x, shift), shift).astype(jnp.uint8)


def solarize(image: jax.Array, threshold: Any, key: jax.Array) -> jax.Array:
    """dm-pix's, on the [0, 1] scale it takes (exact: x < t iff x/255 < t/255 for integers)."""
    unit = pix.solarize(image.astype(jnp.float32) / 255.0, jnp.asarray(threshold) / 255.0)
    return jnp.round(unit * 255.0).astype(jnp.uint8)


def solarize_add(image: jax.Array, addition: Any, key: jax.Array) -> jax.Array:
    added = jnp.clip(image.astype(jnp.int32) + jnp.asarray(addition).astype(jnp.int32), 0, 255)
    return jnp.where(image < 128, added.astype(jnp.uint8), image)


def color(image: jax.Array, factor: Any, key: jax.Array) -> jax.Array:
    return _blend(_gray(image), image, factor)


def contrast(image: jax.Array, factor: Any, key: jax.Array) -> jax.Array:
    gray = _gray(image)
    n = max(gray.size, 1)
    return _blend((gray.sum() + n // 2) // n, image, factor)


def brightness(image: jax.Array, factor: Any, key: jax.Array) -> jax.Array:
    return _blend(jnp.zeros_like(image), image, factor)


def sharpness(image: jax.Array, factor: Any, key: jax.Array) -> jax.Array:
    """Blend from the image smoothed by [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13, border kept."""
    x = image.astype(jnp.int32)
    if min(x.shape[:2]) > 2:
        box = jax.lax.reduce_window(x, 0, jax.lax.add, (3, 3, 1), (1, 1, 1), "VALID")
        x = x.at[1:-1, 1:-1].set((box + 4 * x[1:-1, 1:-1]) // 13)
    return _blend(x, image, factor)


def cutout_at(image: jax.Array, pad_size: Any, cy: Any, cx: Any) -> jax.Array:
    """Fill the (2 * pad_size)^2 square centred at (cy, cx) with 128, clipped at the edges."""
    pad = jnp.asarray(pad_size).astype(jnp.int32)
    rows, cols = jnp.arange(image.shape[0]), jnp.arange(image.shape[1])
    in_rows = (rows >= cy - pad) & (rows < cy + pad)
    in_cols = (cols >= cx - pad) & (cols < cx + pad)
    inside = in_rows[:, None, None] & in_cols[None, :, None]
    return jnp.where(inside, jnp.uint8(FILL), image)


def cutout(image: jax.Array, pad_size: Any, key: jax.Array) -> jax.Array:
    """Cutout at a centre drawn uniformly over the image's pixels."""
    row_key, col_key = jax.random.split(key)
    cy = jax.random.randint(row_key, (), 0, image.shape[0])
    cx = jax.random.randint(col_key, (), 0, image.shape[1])
    return cutout_at(image, pad_size, cy, cx)


def _geometric(name: str) -> Op:
    return lambda image, arg, key: transform(image, MATRICES[name](image.shape, arg))


_OPS: dict[str, Op] = {
    **{name: _geometric(name) for name in MATRICES},
    "AutoContrast": autocontrast,
    "Equalize": equalize,
    "Invert": invert,
    "Posterize": posterize,
    "Solarize": solarize,
    "Color": color,
    "Contrast": contrast,
    "Brightness": brightness,
    "Sharpness": sharpness,
    "Cutout": cutout,
    "SolarizeAdd": solarize_add,
}
# The same ops as randaugment.OPS, in its order (an op's index is its draw).
DEVICE_OPS: dict[str, Op] = {name: _OPS[name] for name in OPS}
_SIGNED = np.array([name in SIGNED_OPS for name in OPS])


def draws(key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One layer's randomness: the op (uniform over the 16), whether a signed op's argument
    is negated (probability 1/2), and the op's own key (Cutout's centre)."""
    op_key, sign_key, op_rng = jax.random.split(key, 3)
    index = jax.random.randint(op_key, (), 0, len(DEVICE_OPS))
    negate = jax.random.uniform(sign_key) < 0.5
    return index, negate, op_rng


def _unchanged(image: jax.Array, arg: Any, key: jax.Array) -> jax.Array:
    return image


_BRANCHES = [_unchanged if name in MATRICES else op for name, op in DEVICE_OPS.items()]


def apply(image: jax.Array, index: jax.Array, arg: Any, key: jax.Array) -> jax.Array:
    """Op number `index` with its (signed) argument: the one resampling (the identity
    unless the op is geometric), then the op if it is not."""
    matrices = [
        jnp.stack([jnp.asarray(v, jnp.float32) for v in MATRICES[name](image.shape, arg)])
        if name in MATRICES
        else jnp.asarray(IDENTITY, jnp.float32)
        for name in DEVICE_OPS
    ]
    image = transform(image, list(jnp.stack(matrices)[index]))
    return jax.lax.switch(index, _BRANCHES, image, arg, key)


def randaugment(image: jax.Array, num_layers: int, magnitude: float, key: jax.Array) -> jax.Array:
    """`num_layers` random ops at `magnitude` on one uint8 [H, W, 3] image (vmap it)."""
    levels = level_to_arg(float(magnitude))
    args = jnp.asarray([levels[name] for name in DEVICE_OPS], jnp.float32)
    for layer_key in jax.random.split(key, num_layers):
        index, negate, op_rng = draws(layer_key)
        arg = jnp.where(negate & jnp.asarray(_SIGNED)[index], -args[index], args[index])
        image = apply(image, index, arg, op_rng)
    return image
