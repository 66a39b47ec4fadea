"""scikit-learn's bundled 8x8 handwritten digits: a real dataset that needs no network.

1,797 grayscale images of 10 classes, split once and for all into 1,437 train and
360 test images, stratified by class (`train_test_split(..., test_size=360,
stratify=labels, random_state=0)`), so results are comparable across machines.
"""

from __future__ import annotations

import numpy as np

from mixer_cli.data.sources import IndexedSource

TEST_SIZE = 360
SPLIT_SEED = 0


class DigitsSource(IndexedSource):
    name = "digits"
    num_classes = 10
    image_shape = (8, 8, 3)
    encoded = False
    flip = False  # a mirrored 2 is not a 2

    def __init__(self) -> None:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        # Values 0..16 -> uint8 0..255, replicated to the model's 3 channels.
        images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
        images = np.repeat(images[..., None], 3, axis=-1)
        labels = digits.target.astype(np.int64)
        train, test = train_test_split(
            np.arange(len(labels)), test_size=TEST_SIZE, stratify=labels, random_state=SPLIT_SEED
        )
        train, test = np.sort(train), np.sort(test)
        super().__init__(
            raw={"train": images[train], "test": images[test]},
            labels={"train": labels[train], "test": labels[test]},
        )
