"""Digit scenes: the embedded digits pasted onto a larger canvas, with their pixel masks.

The offline segmentation set of `mixer segment` (no download). Each scene is a black
canvas with one to three digits, each scaled up 2x (nearest neighbour, so masks stay
exact) and pasted at a random position; a later digit covers an earlier one, mask
included. Mask values: 0 background, 1 + digit for a digit's bright pixels (above
THRESHOLD), IGNORE for its faint rim (the strokes' anti-aliased edge, where no label is
right), as the Oxford pets trimaps do.
Train scenes use digits' train split only and test scenes its test split, each from a
fixed seed, so the scenes are the same on every machine.
"""

from __future__ import annotations

import numpy as np

from mixer_cli.data.sources import IGNORE, IndexedSource

THRESHOLD = 96  # of 255: brighter digit pixels are labelled, fainter ones ignored
SCALE = 2
SCENES = {"train": 2000, "test": 500}
SEEDS = {"train": 1, "test": 2}
NUM_CLASSES = 11  # background + the ten digits


def compose(
    digits: np.ndarray,
    labels: np.ndarray,
    count: int,
    canvas: int = 32,
    per_scene: tuple[int, int] = (1, 3),
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(images [count, canvas, canvas, 3] uint8, masks [count, canvas, canvas] uint8) from
    grayscale digits [N, h, w] (uint8) and their labels [N]."""
    rng = np.random.default_rng(seed)
    size = digits.shape[1] * SCALE
    if size > canvas:
        raise ValueError(f"a {size} px digit does not fit a {canvas} px canvas")
    images = np.zeros((count, canvas, canvas), np.uint8)
    masks = np.zeros((count, canvas, canvas), np.uint8)
    for n in range(count):
        for _ in range(rng.integers(per_scene[0], per_scene[1] + 1)):
            pick = rng.integers(len(digits))
            digit = digits[pick].repeat(SCALE, axis=0).repeat(SCALE, axis=1)
            y, x = rng.integers(0, canvas - size + 1, size=2)
            ink = digit > 0
            region = (slice(y, y + size), slice(x, x + size))
            images[n][region] = np.where(ink, digit, images[n][region])
            label = np.where(digit > THRESHOLD, 1 + labels[pick], IGNORE).astype(np.uint8)
            masks[n][region] = np.where(ink, label, masks[n][region])
    return np.repeat(images[..., None], 3, axis=-1), masks


def scenes(split: str, canvas: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """A split's fixed scenes from the embedded digits of the same split."""
    from mixer_cli.data.digits import cached_arrays

    arrays = cached_arrays()
    gray = arrays[f"images_{split}"][..., 0]
    return compose(gray, arrays[f"labels_{split}"], SCENES[split], canvas, seed=SEEDS[split])


class DigitScenesSource(IndexedSource):
    """The scenes as a source: raw uint8 images with [32, 32] label masks for labels, so
    training streams resume exactly and split over processes as every indexed source's."""

    name = "digit-scenes"
    num_classes = NUM_CLASSES
    image_shape = (32, 32, 3)
    encoded = False
    flip = False  # a mirrored digit is no digit
    task = "segment"
    classes = ("background", *(str(d) for d in range(10)))  # mask value i: classes[i]

    def __init__(self) -> None:
        pairs = {split: scenes(split) for split in SCENES}
        super().__init__(
            raw={split: images for split, (images, _) in pairs.items()},
            labels={split: masks for split, (_, masks) in pairs.items()},
        )
