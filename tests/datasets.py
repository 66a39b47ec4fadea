"""Small real datasets that tests make on the fly: image folders, prepared TFDS, TFDS mocks."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mixer_cli.data.tf_cpu import tf


def write_image(path: Path, image: np.ndarray) -> None:
    """PNG or JPEG by suffix; a [H, W, 1] image is written as grayscale."""
    encode = tf.io.encode_png if path.suffix == ".png" else tf.io.encode_jpeg
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(tf.constant(image)).numpy())


def write_image_folder(
    root: Path, per_class: dict[str, int], classes: tuple[str, ...] = ("cat", "dog", "owl")
) -> Path:
    """ROOT/<split>/<class>/<i>.{png,jpg}: grayscale PNGs and RGB JPEGs of mixed sizes."""
    rng = np.random.default_rng(0)
    for split, count in per_class.items():
        for c, name in enumerate(classes):
            for i in range(count):
                h, w = [(20, 20), (37, 23), (12, 30)][i % 3]
                if i % 2:
                    image = rng.integers(0, 256, (h, w, 1), dtype=np.uint8)
                    write_image(root / split / name / f"{i}.png", image)
                else:
                    image = np.full((h, w, 3), 40 * c, np.uint8)
                    write_image(root / split / name / f"{i}.jpg", image)
    return root


def write_prepared_tfds(data_dir: Path, name: str, sizes: dict[str, int], num_classes: int = 4):
    """A genuinely prepared TFDS dataset (real files, real metadata) with no builder code."""
    import tensorflow_datasets as tfds

    rng = np.random.default_rng(1)
    features = tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=(None, None, 3)),
            "label": tfds.features.ClassLabel(num_classes=num_classes),
        }
    )
    splits = {
        split: [  # (key, example) pairs, as TFDS generators yield them
            (
                i,
                {
                    "image": rng.integers(0, 256, (24 + i % 5, 20 + i % 3, 3), dtype=np.uint8),
                    "label": i % num_classes,
                },
            )
            for i in range(n)
        ]
        for split, n in sizes.items()
    }
    tfds.dataset_builders.store_as_tfds_dataset(
        name=name, version="1.0.0", features=features, split_datasets=splits, data_dir=data_dir
    )


@contextlib.contextmanager
def mock_tfds(name: str, splits: tuple[str, ...], num_examples: int, tmp: Path) -> Iterator[Path]:
    """`tfds.testing.mock_data` with real metadata (split sizes) for a catalogue dataset.

    Yields the data directory to pass to `open_dataset`. Examples are random but
    shaped by the dataset's real features (e.g. CIFAR-10: 32x32 PNGs, 10 classes).
    """
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=str(tmp))
    builder.info.set_splits(
        tfds.core.SplitDict(
            [tfds.core.SplitInfo(name=s, shard_lengths=[num_examples], num_bytes=0) for s in splits]
        )
    )
    os.makedirs(builder.data_dir, exist_ok=True)
    builder.info.write_to_directory(builder.data_dir)
    with tfds.testing.mock_data(
        num_examples=num_examples, policy=tfds.testing.MockPolicy.USE_FILES, data_dir=str(tmp)
    ):
        yield tmp
