"""From raw examples to model inputs: the paper's train and eval transforms, in tf.data.

Train: inception crop (random area in [min_area, 1], aspect ratio in [3/4, 4/3]; JPEGs
decode only the crop window) or a plain resize, horizontal flip (each only where the
dataset allows it: `source.random_crop`, `source.flip`), RandAugment(n, m),
the shuffle experiment's fixed permutation, values in [-1, 1]; then, per batch,
one-hot labels, mixup and CutMix. With `augment_on = "device"` (the default) the host
stops after the crop: uint8 images and integer labels, the rest in the train step
(`device_augment.py`). Eval: an image already at the model's resolution is left
untouched; larger ones are resized so the shorter side is 256/224 of the resolution
and centre-cropped (the reference evaluation crop); smaller ones, and every image of a
dataset that allows no crop, are resized.
All randomness is stateless, keyed by (seed, epoch, position): the stream is a pure
function of the step, which is what makes exact resumption possible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mixer_cli.core.errors import ConfigError
from mixer_cli.core.tf_cpu import no_autograph, tf
from mixer_cli.data.permutations import PERMUTATION_MODES, make_permutation
from mixer_cli.data.randaugment import randaugment
from mixer_cli.data.sources import DataSource

TRAIN_CROPS = ("inception", "resize")
AUGMENT_PLACES = ("device", "host")
EVAL_CROP_RATIO = 256 / 224


@dataclass(frozen=True)
class Preprocessing:
    """How examples become inputs; every default lives here."""

    resolution: int
    crop: str = "inception"
    crop_min_area: float = 0.05
    flip: bool = True
    randaug_layers: int = 0
    randaug_magnitude: float = 0.0
    mixup: float = 0.0  # Beta(p, p) strength; 0 = off
    cutmix: float = 0.0  # Beta(a, a) of the kept area; 0 = off (with mixup: one of them per batch)
    permutation: str = "none"  # the shuffle experiment: none, patch or global
    permutation_patch: int = 16
    permutation_seed: int = 0
    # Where the flip, RandAugment, the permutation, mixup and CutMix run: "device" (in the
    # train step, `device_augment.py`; the host sends uint8 crops and integer labels) or
    # "host" (here, in tf.data: the earlier pipeline, bit for bit).
    augment_on: str = "device"

    def __post_init__(self) -> None:
        if self.resolution <= 0:
            raise ConfigError(f"resolution must be positive, got {self.resolution}")
        if self.crop not in TRAIN_CROPS:
            raise ConfigError(
                f"unknown crop {self.crop!r}: expected one of {', '.join(TRAIN_CROPS)}"
            )
        if not 0 < self.crop_min_area <= 1:
            raise ConfigError(f"crop minimum area must be in (0, 1], got {self.crop_min_area}")
        if min(self.randaug_layers, self.randaug_magnitude, self.mixup, self.cutmix) < 0:
            raise ConfigError("RandAugment layers and magnitude, mixup and cutmix must be >= 0")
        if self.augment_on not in AUGMENT_PLACES:
            raise ConfigError(
                f"augment_on must be one of {', '.join(AUGMENT_PLACES)}, got {self.augment_on!r}"
            )
        if self.permutation not in PERMUTATION_MODES:
            raise ConfigError(
                f"unknown permutation {self.permutation!r}: expected one of "
                f"{', '.join(PERMUTATION_MODES)}"
            )

    def permutation_index(self) -> np.ndarray | None:
        return make_permutation(
            self.permutation, self.resolution, self.permutation_patch, self.permutation_seed
        )


def to_uint8(image: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def resize(image: tf.Tensor, height: tf.Tensor | int, width: tf.Tensor | int) -> tf.Tensor:
    """Bilinear, antialiased when shrinking, back to uint8."""
    return to_uint8(tf.image.resize(image, [height, width], method="bilinear", antialias=True))


def decode(data: tf.Tensor, encoded: bool) -> tf.Tensor:
    if not encoded:
        return data
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def crop_window(shape: tf.Tensor, seed: tf.Tensor, min_area: float) -> tuple[tf.Tensor, tf.Tensor]:
    """(begin, size) over [h, w, c] of a random window of area [min_area, 1] of an image of
    `shape`, aspect [3/4, 4/3]: the inception crop's window (segmentation's too)."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=tf.zeros([0, 0, 4], tf.float32),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(min_area, 1.0),
        use_image_if_no_bounding_boxes=True,
    )
    return begin, size


def inception_crop(
    data: tf.Tensor, encoded: bool, seed: tf.Tensor, min_area: float, resolution: int
) -> tf.Tensor:
    """A random crop of area [min_area, 1] and aspect [3/4, 4/3], resized to the resolution."""

    def window(shape: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return crop_window(shape, seed, min_area)

    def decoded_then_cropped() -> tf.Tensor:
        image = decode(data, encoded)
        begin, size = window(tf.shape(image))
        return tf.slice(image, begin, size)

    def jpeg_crop_decoded() -> tf.Tensor:  # decode only the window: much faster for big JPEGs
        begin, size = window(tf.image.extract_jpeg_shape(data))
        return tf.image.decode_and_crop_jpeg(
            data, tf.stack([begin[0], begin[1], size[0], size[1]]), channels=3
        )

    if encoded:
        image = tf.cond(tf.io.is_jpeg(data), jpeg_crop_decoded, decoded_then_cropped)
    else:
        image = decoded_then_cropped()
    return resize(image, resolution, resolution)


def eval_resize(image: tf.Tensor, resolution: int) -> tf.Tensor:
    """Same size: untouched; larger: shorter side to 256/224 R, centre crop; smaller: resize."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    small_side = round(resolution * EVAL_CROP_RATIO)

    def crop_centre() -> tf.Tensor:
        scale = small_side / tf.cast(tf.minimum(height, width), tf.float32)
        new_h = tf.cast(tf.round(tf.cast(height, tf.float32) * scale), tf.int32)
        new_w = tf.cast(tf.round(tf.cast(width, tf.float32) * scale), tf.int32)
        resized = resize(image, new_h, new_w)
        top, left = (new_h - resolution) // 2, (new_w - resolution) // 2
        return tf.slice(resized, [top, left, 0], [resolution, resolution, 3])

    return tf.case(
        [
            (tf.logical_and(height == resolution, width == resolution), lambda: image),
            (tf.minimum(height, width) > resolution, crop_centre),
        ],
        default=lambda: resize(image, resolution, resolution),
    )


def to_model_input(image: tf.Tensor, permutation: np.ndarray | None) -> tf.Tensor:
    """uint8 [R, R, 3] -> float32 in [-1, 1], pixels permuted if the experiment asks."""
    if permutation is not None:
        r = image.shape[0]
        image = tf.reshape(tf.gather(tf.reshape(image, [r * r, 3]), permutation), [r, r, 3])
    return tf.cast(image, tf.float32) / 127.5 - 1.0


class Transforms:
    """The per-example and per-batch functions for one source and one Preprocessing."""

    def __init__(self, source: DataSource, pre: Preprocessing, seed: int) -> None:
        self.source, self.pre, self.seed = source, pre, seed
        self.permutation = pre.permutation_index()
        # What the run asks for, where the dataset allows it: a source whose labels a flip
        # or a crop would change (a VTAB task counting objects) says so, and is resized.
        self.flip = pre.flip and source.flip
        self.crop = pre.crop if source.random_crop else "resize"
        # Augmenting on the device: the host only decodes, crops and resizes, and sends
        # uint8 images with integer labels (device_augment.DeviceAugment does the rest).
        self.on_device = pre.augment_on == "device"

    def _key(self, epoch: tf.Tensor) -> tf.Tensor:
        return tf.stack([tf.constant(self.seed, tf.int64), tf.cast(epoch, tf.int64)])

    @no_autograph
    def train_example(
        self, raw: tf.Tensor, label: tf.Tensor, position: tf.Tensor, epoch: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        pre, r = self.pre, self.pre.resolution
        key = tf.random.experimental.stateless_fold_in(self._key(epoch), position)
        crop_key, flip_key, augment_key = tf.unstack(tf.random.experimental.stateless_split(key, 3))
        data = self.source.read(raw)
        if self.crop == "inception":
            image = inception_crop(data, self.source.encoded, crop_key, pre.crop_min_area, r)
        else:
            image = decode(data, self.source.encoded)
            image = resize(image, r, r) if image.shape[:2] != (r, r) else image
        image = tf.ensure_shape(image, [r, r, 3])
        if self.on_device:
            return image, label, position, epoch
        if self.flip:
            image = tf.image.stateless_random_flip_left_right(image, flip_key)
        if pre.randaug_layers and pre.randaug_magnitude:
            image = randaugment(image, pre.randaug_layers, pre.randaug_magnitude, augment_key)
        return to_model_input(image, self.permutation), label, position, epoch

    @no_autograph
    def train_batch(
        self, images: tf.Tensor, labels: tf.Tensor, positions: tf.Tensor, epochs: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        if self.on_device:
            return {"image": images, "label": tf.cast(labels, tf.int32)}
        onehot = tf.one_hot(labels, self.source.num_classes, dtype=tf.float32)
        pre = self.pre
        if (
            pre.mixup > 0 or pre.cutmix > 0
        ):  # one draw per global batch, keyed by its first position
            key = tf.random.experimental.stateless_fold_in(self._key(epochs[0]), -1 - positions[0])
            if pre.cutmix <= 0:
                images, onehot = mixup(images, onehot, key, pre.mixup)
            else:
                coin, box = tf.unstack(tf.random.experimental.stateless_split(key, 2))

                def cut() -> tuple[tf.Tensor, tf.Tensor]:
                    return cutmix(images, onehot, box, pre.cutmix)

                def blend() -> tuple[tf.Tensor, tf.Tensor]:
                    return mixup(images, onehot, key, pre.mixup)

                # With both, timm's batch mode: either one, with probability 1/2 each.
                heads = tf.random.stateless_uniform([], coin) < 0.5
                images, onehot = tf.cond(heads, cut, blend) if pre.mixup > 0 else cut()
        return {"image": images, "label": onehot}

    @no_autograph
    def eval_example(
        self, raw: tf.Tensor, label: tf.Tensor, *label_set: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        """The evaluation input; with a label set (a list of classes, from a source's
        `eval_stream(..., label_set=...)`) also `label_set`, its multi-hot row (zeros for
        an empty set)."""
        r, k = self.pre.resolution, self.source.num_classes
        image = decode(self.source.read(raw), self.source.encoded)
        # No centre crop where it would cut off what the label counts or measures.
        image = eval_resize(image, r) if self.source.random_crop else resize(image, r, r)
        image = tf.ensure_shape(image, [r, r, 3])
        example = {
            "image": to_model_input(image, self.permutation),
            "label": tf.one_hot(label, k, dtype=tf.float32),
            "mask": tf.constant(True),
        }
        for classes in label_set:
            rows = tf.one_hot(tf.reshape(classes, [-1]), k, dtype=tf.float32)
            example["label_set"] = tf.minimum(tf.reduce_sum(rows, 0), 1.0)
        return example

    def eval_padding(self, label_set: bool = False) -> dict[str, tf.Tensor]:
        """A padding example (masked out): what `eval_example` returns, for no image."""
        r, k = self.pre.resolution, self.source.num_classes
        padding = {
            "image": tf.zeros([r, r, 3], tf.float32),
            "label": tf.zeros([k], tf.float32),
            "mask": tf.constant(False),
        }
        return {**padding, "label_set": tf.zeros([k], tf.float32)} if label_set else padding


def cutmix(
    images: tf.Tensor, labels: tf.Tensor, key: tf.Tensor, strength: float
) -> tuple[tf.Tensor, tf.Tensor]:
    """Paste one box of each example's neighbour in the batch into it (one box for the
    batch, timm's batch mode): the box's side is sqrt(1 - lam) of the image's, lam ~
    Beta(a, a), centred uniformly and clipped at the border; labels mix by the pasted
    box's actual area."""
    keys = tf.random.experimental.stateless_split(key, 3)
    a = tf.random.stateless_gamma([], keys[0], alpha=strength)
    b = tf.random.stateless_gamma([], keys[1], alpha=strength)
    lam = a / (a + b)
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    size = tf.cast(tf.stack([height, width]), tf.float32)
    half = tf.cast(tf.floor(size * tf.sqrt(1.0 - lam)), tf.int32) // 2
    centre = tf.cast(tf.floor(tf.random.stateless_uniform([2], keys[2]) * size), tf.int32)
    low = tf.clip_by_value(centre - half, 0, tf.stack([height, width]))
    high = tf.clip_by_value(centre + half, 0, tf.stack([height, width]))
    rows, cols = tf.range(height), tf.range(width)
    inside = ((rows >= low[0]) & (rows < high[0]))[:, None] & ((cols >= low[1]) & (cols < high[1]))
    images = tf.where(inside[None, :, :, None], tf.roll(images, 1, axis=0), images)
    pasted = tf.cast(tf.reduce_prod(high - low), tf.float32) / tf.reduce_prod(size)
    labels = (1.0 - pasted) * labels + pasted * tf.roll(labels, 1, axis=0)
    return images, labels


def mixup(
    images: tf.Tensor, labels: tf.Tensor, key: tf.Tensor, strength: float
) -> tuple[tf.Tensor, tf.Tensor]:
    """Blend each example with its neighbour in the batch by a Beta(p, p) ratio (>= 0.5)."""
    keys = tf.random.experimental.stateless_split(key, 2)
    a = tf.random.stateless_gamma([], keys[0], alpha=strength)
    b = tf.random.stateless_gamma([], keys[1], alpha=strength)
    ratio = tf.maximum(a / (a + b), b / (a + b))

    def mix(x: tf.Tensor) -> tf.Tensor:
        return ratio * x + (1.0 - ratio) * tf.roll(x, 1, axis=0)

    return mix(images), mix(labels)
