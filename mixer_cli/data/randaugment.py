"""RandAugment (Cubuk et al., 2019), the augmentation in MLP-Mixer's ImageNet recipe.

Follows the TF reference the paper trained with (big_vision `randaug(2, 15)`, a fork of
tensorflow/tpu `distort_image_with_randaugment`): the same 16 ops in the same order, levels
`magnitude / 10` that extrapolate linearly past 10, a random sign for the geometric ops, fill
value 128, and every layer applies one uniformly chosen op (the reference samples a probability
per op but discards it). Contrast blends towards the true grayscale mean, not the reference's
H*W/256 (big_vision#109, fixed upstream in tensorflow/models#11219).

All randomness is stateless and comes from an explicit seed, so an augmented example depends on
(image, seed) alone: the training stream is exactly reproducible across runs, parallel map
workers and a resume from a checkpoint. For the same reason the maths is integer or fixed point
(within 2 levels of the reference's float32; rotations within 0.1 px at 224 px): graph-mode
rewrites of float expressions could otherwise round differently from eager execution.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from mixer_cli.core.tf_cpu import no_autograph, tf

_MAX_LEVEL = 10.0
FILL = 128
_TRANSLATE_CONST = 100.0  # pixels at level 10
_CUTOUT_CONST = 40.0  # half-size of the cutout square at level 10
ONE = 1024  # fixed-point unit for blend factors and rotation matrices

# An op takes (uint8 image [H, W, 3], its argument, a stateless seed) and returns a uint8 image.
Op = Callable[[tf.Tensor, "tf.Tensor | float", tf.Tensor], tf.Tensor]


def _blend(image1: tf.Tensor, image2: tf.Tensor, factor: tf.Tensor | float) -> tf.Tensor:
    """PIL-style `image1 + factor * (image2 - image1)`, floored and clipped (extrapolates > 1).

    Fixed point (factor in 1/1024ths): integer maths gives bit-identical results whatever
    rewrites graph mode applies, where float could round differently from eager.
    """
    f = tf.cast(tf.round(tf.cast(factor, tf.float32) * ONE), tf.int32)
    a, b = tf.cast(image1, tf.int32), tf.cast(image2, tf.int32)
    return tf.cast(tf.clip_by_value((a * ONE + f * (b - a)) // ONE, 0, 255), tf.uint8)


def _gray(image: tf.Tensor) -> tf.Tensor:
    """PIL's integer "L" conversion (ITU-R 601-2 luma) as int32 [H, W, 1]."""
    x = tf.cast(image, tf.int32)
    luma = x[..., :1] * 19595 + x[..., 1:2] * 38470 + x[..., 2:] * 7471
    return (luma + 0x8000) // 0x10000


def _transform(image: tf.Tensor, matrix: Sequence[tf.Tensor | float]) -> tf.Tensor:
    """Projective transform (maps output to input coordinates), nearest neighbour, fill 128."""
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=tf.stack([tf.cast(v, tf.float32) for v in matrix])[None],
        output_shape=tf.shape(image)[:2],
        fill_value=float(FILL),
        interpolation="NEAREST",
        fill_mode="CONSTANT",
    )
    return out[0]


def autocontrast(image: tf.Tensor, arg: tf.Tensor | float, seed: tf.Tensor) -> tf.Tensor:
    """Stretch each channel to [0, 255]; constant channels are left alone."""
    x = tf.cast(image, tf.int32)
    lo, hi = tf.reduce_min(x, axis=[0, 1]), tf.reduce_max(x, axis=[0, 1])
    scaled = (x - lo) * 255 // tf.maximum(hi - lo, 1)
    return tf.where(hi > lo, tf.cast(scaled, tf.uint8), image)


def equalize(image: tf.Tensor, arg: tf.Tensor | float, seed: tf.Tensor) -> tf.Tensor:
    """PIL ImageOps.equalize with per-channel histograms (integer arithmetic, exact)."""
    x = tf.transpose(tf.reshape(tf.cast(image, tf.int32), [-1, 3]))  # [3, H*W]
    flat = x + tf.range(3)[:, None] * 256
    hist = tf.reshape(tf.math.bincount(flat, minlength=768, maxlength=768), [3, 256])
    top = tf.gather(hist, tf.reduce_max(x, axis=1), batch_dims=1)  # count of the last value
    step = (tf.reduce_sum(hist, axis=1) - top) // 255
    lut = (tf.cumsum(hist, axis=1) + step[:, None] // 2) // tf.maximum(step, 1)[:, None]
    lut = tf.clip_by_value(tf.concat([tf.zeros([3, 1], tf.int32), lut[:, :-1]], 1), 0, 255)
    out = tf.where(step[:, None] > 0, tf.gather(lut, x, batch_dims=1), x)
    return tf.reshape(tf.cast(tf.transpose(out), tf.uint8), tf.shape(image))


def invert(image: tf.Tensor, arg: tf.Tensor | float, seed: tf.Tensor) -> tf.Tensor:
    """255 - pixel."""
    return 255 - image


def rotate(image: tf.Tensor, degrees: tf.Tensor | float, seed: tf.Tensor) -> tf.Tensor:
    """Rotate about the centre by `degrees` (tfa.image.rotate's matrix).

    cos and sin are rounded to 1/1024ths so that the offsets below are exact in float32 (for
    sides up to 4096): graph-mode rewrites then cannot change a single sampled pixel.
    """
    radians = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    h = tf.cast(tf.shape(image)[0] - 1, tf.float32)
    w = tf.cast(tf.shape(image)[1] - 1, tf.float32)
    cos = tf.round(tf.cos(radians) * ONE) / ONE
    sin = tf.round(tf.sin(radians) * ONE) / ONE
    dx = (w - (cos * w - sin * h)) / 2.0
    dy = (h - (sin * w + cos * h)) / 2.0
    return _transform(image, [cos, -sin, dx, sin, cos, dy, 0.0, 0.0])


def posterize(image: tf.Tensor, bits: tf.Tensor | float, seed: tf.Tensor) -> tf.Tensor:
    """Keep the top `bits` bits of each pixel (clamped to [0, 8]; 0 gives black)."""
    shift = 8 - tf.clip_by_value(tf.cast(bits, tf.int32), 0, 8)
    x = tf.bitwise.left_shift(tf.bitwise.right_shift(tf.cast(image, tf.int32), shift), shift)
    return tf.cast(x, tf.uint8)


def solarize(image: tf.Tensor, threshold: tf.Tensor | float, seed: tf.Tensor) -> tf.Tensor:
    """Invert the pixels at or above `threshold` (>= 256: identity)."""
    below = tf.cast(image, tf.int32) < tf.cast(threshold, tf.int32)
    return tf.where(below, image, 255 - image)


def solarize_add(image: tf.Tensor, addition: tf.Tensor | float, seed: tf.Tensor) -> tf.Tensor:
    """Add `addition` (clipped) to the pixels below 128."""
    added = tf.clip_by_value(tf.cast(image, tf.int32) + tf.cast(addition, tf.int32), 0, 255)
    return tf.where(image < 128, tf.cast(added, tf.uint8), image)


def color(image: tf.Tensor, factor: tf.Tensor | float, seed: tf.Tensor) -> tf.Tensor:
    """PIL ImageEnhance.Color: blend from grayscale (factor 1 = identity)."""
    return _blend(_gray(image), image, factor)


def contrast(image: tf.Tensor, factor: tf.Tensor | float, seed: tf.Tensor) -> tf.Tensor:
    """PIL ImageEnhance.Contrast: blend from the rounded mean gray level."""
    gray = tf.cast(_gray(image), tf.int64)
    n = tf.maximum(tf.size(gray, out_type=tf.int64), 1)
    return _blend((tf.reduce_sum(gray) + n // 2) // n, image, factor)


def brightness(image: tf.Tensor, factor: tf.Tensor | float, seed: tf.Tensor) -> tf.Tensor:
    """PIL ImageEnhance.Brightness: blend from black."""
    return _blend(tf.zeros_like(image), image, factor)


def sharpness(image: tf.Tensor, factor: tf.Tensor | float, seed: tf.Tensor) -> tf.Tensor:
    """PIL ImageEnhance.Sharpness: blend from the SMOOTH-filtered image (border kept)."""
    x = tf.cast(image, tf.int32)
    h, w = tf.shape(x)[0] - 2, tf.shape(x)[1] - 2
    total = tf.add_n([x[i : i + h, j : j + w] for i in range(3) for j in range(3)])
    smooth = (total + 4 * x[1:-1, 1:-1]) // 13  # kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13
    pads = [[1, 1], [1, 1], [0, 0]]
    inner = tf.pad(tf.ones_like(smooth), pads) > 0
    return _blend(tf.where(inner, tf.pad(smooth, pads), x), image, factor)


def shear_x(image: tf.Tensor, level: tf.Tensor | float, seed: tf.Tensor) -> tf.Tensor:
    """Shear along x: input x = x + level * y."""
    return _transform(image, [1.0, level, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])


def shear_y(image: tf.Tensor, level: tf.Tensor | float, seed: tf.Tensor) -> tf.Tensor:
    """Shear along y: input y = level * x + y."""
    return _transform(image, [1.0, 0.0, 0.0, level, 1.0, 0.0, 0.0, 0.0])


def translate_x(image: tf.Tensor, pixels: tf.Tensor | float, seed: tf.Tensor) -> tf.Tensor:
    """Shift the content left by `pixels` (absolute pixels, as in the reference)."""
    return _transform(image, [1.0, 0.0, pixels, 0.0, 1.0, 0.0, 0.0, 0.0])


def translate_y(image: tf.Tensor, pixels: tf.Tensor | float, seed: tf.Tensor) -> tf.Tensor:
    """Shift the content up by `pixels`."""
    return _transform(image, [1.0, 0.0, 0.0, 0.0, 1.0, pixels, 0.0, 0.0])


def cutout(image: tf.Tensor, pad_size: tf.Tensor | float, seed: tf.Tensor) -> tf.Tensor:
    """Fill a (2 * pad_size)^2 square with 128 at a seed-chosen centre (clipped at edges)."""
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    seeds = tf.random.experimental.stateless_split(seed, 2)
    cy = tf.random.stateless_uniform([], seeds[0], maxval=h, dtype=tf.int32)
    cx = tf.random.stateless_uniform([], seeds[1], maxval=w, dtype=tf.int32)
    pad = tf.cast(pad_size, tf.int32)
    rows, cols = tf.range(h), tf.range(w)
    in_rows = (rows >= cy - pad) & (rows < cy + pad)
    in_cols = (cols >= cx - pad) & (cols < cx + pad)
    inside = in_rows[:, None, None] & in_cols[None, :, None]
    return tf.where(inside, tf.constant(FILL, tf.uint8), image)


# The reference's `available_ops`, in its order.
OPS: dict[str, Op] = {
    "AutoContrast": autocontrast,
    "Equalize": equalize,
    "Invert": invert,
    "Rotate": rotate,
    "Posterize": posterize,
    "Solarize": solarize,
    "Color": color,
    "Contrast": contrast,
    "Brightness": brightness,
    "Sharpness": sharpness,
    "ShearX": shear_x,
    "ShearY": shear_y,
    "TranslateX": translate_x,
    "TranslateY": translate_y,
    "Cutout": cutout,
    "SolarizeAdd": solarize_add,
}
SIGNED_OPS = frozenset({"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"})


def level_to_arg(magnitude: float) -> dict[str, float]:
    """Each op's (unsigned) argument at `magnitude`, the reference's `level_to_arg`."""
    r = magnitude / _MAX_LEVEL
    enhance = r * 1.8 + 0.1
    return {
        "AutoContrast": 0.0,
        "Equalize": 0.0,
        "Invert": 0.0,
        "Rotate": r * 30.0,
        "Posterize": float(int(r * 4)),
        "Solarize": float(int(r * 256)),
        "Color": enhance,
        "Contrast": enhance,
        "Brightness": enhance,
        "Sharpness": enhance,
        "ShearX": r * 0.3,
        "ShearY": r * 0.3,
        "TranslateX": r * _TRANSLATE_CONST,
        "TranslateY": r * _TRANSLATE_CONST,
        "Cutout": float(int(r * _CUTOUT_CONST)),
        "SolarizeAdd": float(int(r * 110)),
    }


def _layer(image: tf.Tensor, args: dict[str, float], seed: tf.Tensor) -> tf.Tensor:
    """One RandAugment layer: a uniformly chosen op, signed args negated half the time."""
    op_seed, sign_seed, op_rng = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    index = tf.random.stateless_uniform([], op_seed, maxval=len(OPS), dtype=tf.int32)
    negate = tf.random.stateless_uniform([], sign_seed) < 0.5

    def branch(name: str) -> Callable[[], tf.Tensor]:
        arg = tf.where(negate, -args[name], args[name]) if name in SIGNED_OPS else args[name]
        return lambda: OPS[name](image, arg, op_rng)

    return tf.switch_case(index, [branch(name) for name in OPS])


@no_autograph
def randaugment(image: tf.Tensor, num_layers: int, magnitude: float, seed: tf.Tensor) -> tf.Tensor:
    """Apply `num_layers` random ops at `magnitude` to a uint8 [H, W, 3] image.

    `seed` is a stateless seed of shape [2] (int32 or int64); the output depends only on
    (image, seed), eagerly or inside `tf.data` with parallel calls.
    """
    if num_layers < 0 or magnitude < 0:
        raise ValueError(f"need num_layers >= 0 and magnitude >= 0, got {num_layers}, {magnitude}")
    image = tf.convert_to_tensor(image)
    if num_layers == 0:
        return image
    args = level_to_arg(float(magnitude))
    seeds = tf.random.experimental.stateless_split(seed, num_layers)
    out = image
    for i in range(num_layers):
        out = _layer(out, args, seeds[i])
    return tf.ensure_shape(out, image.shape)
