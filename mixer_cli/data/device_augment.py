"""The training augmentation on the accelerator: the flip, RandAugment, mixup and CutMix as
one batch function that runs inside the jitted train step (`data.augment_on: device`).

The host then only decodes, crops and resizes: its batches travel as uint8 with integer
labels (a quarter of float32's bytes) and become the model's inputs here, in the host
pipeline's order (flip, RandAugment, the shuffle experiment's permutation, [-1, 1],
one-hot labels, mixup / CutMix), from the same distributions: RandAugment's ops give the
host's pixels (`device_randaugment.py`), the flip is dm-pix's, mixup and CutMix are
`preprocess.py`'s rules in jnp. The draws come from the step's key instead of tf's stateless
seeds, so a resumed run draws exactly what it would have drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np

from mixer_cli.data.device_randaugment import randaugment
from mixer_cli.data.preprocess import Preprocessing
from mixer_cli.data.sources import DataSource

# uint8 -> [-1, 1] as the host computes it, x / 127.5 - 1 with IEEE division, looked up:
# XLA multiplies by the reciprocal instead, a unit in the last place off for some values.
_UNIT_RANGE = np.arange(256, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)


@dataclass(frozen=True)
class DeviceAugment:
    """The device half of a run's training transform: a batch of uint8 images [B, R, R, 3]
    and integer labels [B] in, the model's inputs and one-hot (mixed) labels out. Called
    with the step's key inside the jitted step; hashable, so equal settings share traces."""

    pre: Preprocessing
    num_classes: int
    flip: bool  # the run's flip, where the dataset allows it

    def __call__(self, batch: dict[str, jax.Array], key: jax.Array) -> dict[str, jax.Array]:
        pre, images = self.pre, batch["image"]
        flip_key, augment_key, mix_key = jax.random.split(key, 3)
        if self.flip:
            heads = jax.random.bernoulli(flip_key, 0.5, images.shape[:1])
            images = jnp.where(heads[:, None, None, None], pix.flip_left_right(images), images)
        if pre.randaug_layers and pre.randaug_magnitude:
            layers, magnitude = pre.randaug_layers, pre.randaug_magnitude
            keys = jax.random.split(augment_key, images.shape[0])
            images = jax.vmap(lambda x, k: randaugment(x, layers, magnitude, k))(images, keys)
        images = to_model_input(images, pre.permutation_index())
        labels = jax.nn.one_hot(batch["label"], self.num_classes, dtype=jnp.float32)
        images, labels = mix(images, labels, mix_key, pre.mixup, pre.cutmix)
        return {**batch, "image": images, "label": labels}


def to_model_input(images: jax.Array, permutation: Any) -> jax.Array:
    """preprocess.to_model_input for a batch, the same floats: uint8 -> float32 in [-1, 1],
    pixels permuted if the shuffle experiment asks."""
    if permutation is not None:
        b, r = images.shape[:2]
        images = jnp.take(images.reshape(b, r * r, 3), jnp.asarray(permutation), axis=1)
        images = images.reshape(b, r, r, 3)
    return jnp.asarray(_UNIT_RANGE)[images]


def mix(
    images: jax.Array, labels: jax.Array, key: jax.Array, mixup_p: float, cutmix_a: float
) -> tuple[jax.Array, jax.Array]:
    """Mixup, CutMix, or with both one of them per batch, 50/50 (the host's rule)."""
    if mixup_p <= 0 and cutmix_a <= 0:
        return images, labels
    if cutmix_a <= 0:
        return mixup(images, labels, key, mixup_p)
    coin, box = jax.random.split(key)
    if mixup_p <= 0:
        return cutmix(images, labels, box, cutmix_a)
    return jax.lax.cond(
        jax.random.uniform(coin) < 0.5,
        lambda: cutmix(images, labels, box, cutmix_a),
        lambda: mixup(images, labels, box, mixup_p),
    )


def mixup(
    images: jax.Array, labels: jax.Array, key: jax.Array, strength: float
) -> tuple[jax.Array, jax.Array]:
    """preprocess.mixup: each example blended with its neighbour by a Beta(p, p) ratio
    (>= 0.5), one ratio for the batch."""
    lam = jax.random.beta(key, strength, strength)
    ratio = jnp.maximum(lam, 1.0 - lam)

    def blend(x: jax.Array) -> jax.Array:
        return ratio * x + (1.0 - ratio) * jnp.roll(x, 1, axis=0)

    return blend(images), blend(labels)


def cutmix(
    images: jax.Array, labels: jax.Array, key: jax.Array, strength: float
) -> tuple[jax.Array, jax.Array]:
    """preprocess.cutmix: one box of each example's neighbour pasted in (side sqrt(1 - lam)
    of the image's, lam ~ Beta(a, a), centred uniformly, clipped), labels mixed by its area."""
    lam_key, centre_key = jax.random.split(key)
    lam = jax.random.beta(lam_key, strength, strength)
    height, width = images.shape[1:3]
    size = jnp.array([height, width], jnp.float32)
    half = jnp.floor(size * jnp.sqrt(1.0 - lam)).astype(jnp.int32) // 2
    centre = jnp.floor(jax.random.uniform(centre_key, (2,)) * size).astype(jnp.int32)
    bound = jnp.array([height, width])
    low, high = jnp.clip(centre - half, 0, bound), jnp.clip(centre + half, 0, bound)
    rows, cols = jnp.arange(height), jnp.arange(width)
    in_rows, in_cols = (rows >= low[0]) & (rows < high[0]), (cols >= low[1]) & (cols < high[1])
    inside = in_rows[:, None] & in_cols[None, :]
    images = jnp.where(inside[None, :, :, None], jnp.roll(images, 1, axis=0), images)
    pasted = jnp.prod(high - low).astype(jnp.float32) / (height * width)
    labels = (1.0 - pasted) * labels + pasted * jnp.roll(labels, 1, axis=0)
    return images, labels


def device_augment(source: DataSource, pre: Preprocessing) -> DeviceAugment | None:
    """The run's device-side transform, or None where the host does it all: `augment_on`
    host, and a segmentation source (its image and mask are transformed together there)."""
    if pre.augment_on != "device" or source.task == "segment":
        return None
    return DeviceAugment(pre, source.num_classes, flip=pre.flip and source.flip)
