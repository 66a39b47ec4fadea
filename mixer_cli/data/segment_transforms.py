"""Augmentation that keeps an image and its label mask aligned.

One crop window (area [min_area, 1], aspect [3/4, 4/3], as the classification pipeline's
inception crop) and one flip decision are drawn per example and applied to both; the
image is resized bilinearly, the mask with nearest neighbour (labels are not numbers to
interpolate). Evaluation resizes only the image: the mask keeps the image's own size and
the prediction is resized back to it before it is scored.
"""

from __future__ import annotations

from mixer_cli.core.tf_cpu import no_autograph, tf
from mixer_cli.data.preprocess import (
    Preprocessing,
    crop_window,
    decode,
    resize,
    to_model_input,
)
from mixer_cli.data.sources import IGNORE, DataSource


def resize_mask(mask: tf.Tensor, height: tf.Tensor | int, width: tf.Tensor | int) -> tf.Tensor:
    """Nearest-neighbour resize of a [h, w] label map, labels unchanged."""
    resized = tf.image.resize(mask[..., None], [height, width], method="nearest")
    return tf.cast(resized[..., 0], mask.dtype)


def train_pair(
    image: tf.Tensor,
    mask: tf.Tensor,
    key: tf.Tensor,
    resolution: int,
    min_area: float = 0.35,
    flip: bool = True,
) -> tuple[tf.Tensor, tf.Tensor]:
    """uint8 image [h, w, 3] and mask [h, w] -> both cropped alike, flipped alike,
    [R, R, 3] (bilinear) and [R, R] (nearest)."""
    crop_key, flip_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
    begin, size = crop_window(tf.shape(image), crop_key, min_area)
    image = tf.slice(image, begin, size)
    mask = tf.slice(mask, begin[:2], size[:2])
    image = resize(image, resolution, resolution)
    mask = resize_mask(mask, resolution, resolution)
    if flip:
        mirror = tf.random.stateless_uniform([], flip_key) < 0.5
        image = tf.cond(mirror, lambda: image[:, ::-1], lambda: image)
        mask = tf.cond(mirror, lambda: mask[:, ::-1], lambda: mask)
    return tf.ensure_shape(image, [resolution, resolution, 3]), tf.ensure_shape(
        mask, [resolution, resolution]
    )


def eval_image(image: tf.Tensor, resolution: int) -> tf.Tensor:
    """The whole image at the model's resolution (no crop: every pixel gets scored)."""
    return tf.ensure_shape(resize(image, resolution, resolution), [resolution, resolution, 3])


def to_image_size(scores: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """Per-pixel class scores [R, R, K] back at the image's own size (bilinear on scores)."""
    return tf.image.resize(scores, [height, width], method="bilinear")


def checked_pair(
    image: tf.Tensor, mask: tf.Tensor, label: tf.Tensor, classes: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """The pair, once its sizes agree and every mask value is a class or IGNORE; else the
    pipeline fails with one line naming the problem (and the mask's file, where it has one)."""
    where = [label] if label.dtype == tf.string else []
    same = tf.reduce_all(tf.shape(mask) == tf.shape(image)[:2])
    sized = tf.debugging.Assert(
        same,
        ["a mask's size", tf.shape(mask), "differs from its image's", tf.shape(image)[:2], *where],
    )
    known = tf.reduce_all((mask < classes) | (mask == IGNORE))
    valued = tf.debugging.Assert(
        known,
        [
            f"mask values must be class indices 0..{classes - 1} or {IGNORE} (ignore); found",
            tf.reduce_max(tf.where(mask == IGNORE, tf.zeros_like(mask), mask)),
            *where,
        ],
    )
    with tf.control_dependencies([sized, valued]):
        return tf.identity(image), tf.identity(mask)


class SegmentTransforms:
    """The functions `TrainBatches` and `EvalBatches` map for a source whose labels are
    masks: the same per-example keys as classification's `Transforms`, so streams resume
    alike. Training labels leave as one-hot maps [R, R, K] (an ignored pixel's row all
    zeros); evaluation keeps the true mask at the image's own size for the host to score."""

    def __init__(self, source: DataSource, pre: Preprocessing, seed: int) -> None:
        self.source, self.pre, self.seed = source, pre, seed
        self.flip = pre.flip and source.flip

    def pair(self, raw: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The decoded image [h, w, 3] and its checked mask [h, w]."""
        image = decode(self.source.read(raw), self.source.encoded)
        mask = self.source.read_mask(label)
        return checked_pair(image, mask, label, self.source.num_classes)

    @no_autograph
    def train_example(
        self, raw: tf.Tensor, mask: tf.Tensor, position: tf.Tensor, epoch: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        start = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(epoch, tf.int64)])
        key = tf.random.experimental.stateless_fold_in(start, position)
        min_area = self.pre.crop_min_area if self.pre.crop == "inception" else 1.0
        image, mask = self.pair(raw, mask)
        image, mask = train_pair(image, mask, key, self.pre.resolution, min_area, self.flip)
        return to_model_input(image, None), mask, position, epoch

    @no_autograph
    def train_batch(
        self, images: tf.Tensor, masks: tf.Tensor, positions: tf.Tensor, epochs: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        del positions, epochs
        return {"image": images, "label": tf.one_hot(masks, self.source.num_classes)}

    @no_autograph
    def eval_example(self, raw: tf.Tensor, label: tf.Tensor) -> dict[str, tf.Tensor]:
        image, mask = self.pair(raw, label)
        return {
            "image": to_model_input(eval_image(image, self.pre.resolution), None),
            "mask": tf.constant(True),
            "truth": mask,
            "size": tf.shape(mask),
        }

    def eval_padding(self) -> dict[str, tf.Tensor]:
        """A padding example (masked out): what `eval_example` returns, for no image."""
        r = self.pre.resolution
        return {
            "image": tf.zeros([r, r, 3], tf.float32),
            "mask": tf.constant(False),
            "truth": tf.fill([1, 1], tf.constant(IGNORE, tf.uint8)),
            "size": tf.zeros([2], tf.int32),
        }
