"""Small real datasets that tests make on the fly: image folders, prepared TFDS, TFDS mocks."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import numpy as np

from mixer_cli.core.tf_cpu import tf


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
                    image = np.full((h, w, 3), 40 * c % 256, np.uint8)
                    write_image(root / split / name / f"{i}.jpg", image)
    return root


def write_validation_images(
    root: Path, colours: list[tuple[int, int, int]], folders: list[str] | None = None
) -> Path:
    """ImageNet's validation images as files: ROOT/[<folder>/]ILSVRC2012_val_0000000K.JPEG,
    K = 1, 2, ..., image K an 8x8 JPEG of colours[K - 1], in folders[K - 1] (None: flat)."""
    for k, colour in enumerate(colours, 1):
        folder = root / folders[k - 1] if folders else root
        write_image(folder / f"ILSVRC2012_val_{k:08d}.JPEG", np.full((8, 8, 3), colour, np.uint8))
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


def write_catalog_tfds(data_dir: Path, name: str, sizes: dict[str, int], example: Rows) -> Path:
    """A catalogue dataset (`name`: TFDS NAME[/CONFIG]) genuinely prepared under its own name,
    version and features, in real files that any process reads (mock_data patches only
    this one): row i of split s holds `example(s, i)`, other features zeros."""
    import tensorflow_datasets as tfds

    info = tfds.builder(name, data_dir=str(data_dir)).info
    features = info.features

    def row(split: str, i: int) -> dict:
        zeros = {k: np.zeros(f.shape, f.np_dtype) for k, f in features.items()}
        return {**zeros, **example(split, i)}

    tfds.dataset_builders.store_as_tfds_dataset(
        name=name,
        version=str(info.version),
        features=features,
        split_datasets={s: [(i, row(s, i)) for i in range(n)] for s, n in sizes.items()},
        data_dir=data_dir,
    )
    return data_dir


def write_tfds_metadata(name: str, sizes: dict[str, int], tmp: Path) -> None:
    """The metadata of a prepared `name` (TFDS name[/config]) with these split sizes."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=str(tmp))
    builder.info.set_splits(
        tfds.core.SplitDict(
            [tfds.core.SplitInfo(name=s, shard_lengths=[n], num_bytes=0) for s, n in sizes.items()]
        )
    )
    os.makedirs(builder.data_dir, exist_ok=True)
    builder.info.write_to_directory(builder.data_dir)


@contextlib.contextmanager
def mock_tfds(
    name: str,
    splits: tuple[str, ...],
    num_examples: int,
    tmp: Path,
    sizes: dict[str, int] | None = None,
    num_sub_examples: int = 1,
) -> Iterator[Path]:
    """`tfds.testing.mock_data` with real metadata (split sizes) for a catalogue dataset.

    Yields the data directory to pass to `open_dataset`. Examples are random but
    shaped by the dataset's real features (e.g. CIFAR-10: 32x32 PNGs, 10 classes).
    The metadata says each split has `num_examples`, or `sizes[split]` (reading any split
    still yields `num_examples` examples, as mock_data does).
    """
    import tensorflow_datasets as tfds

    write_tfds_metadata(name, sizes or dict.fromkeys(splits, num_examples), tmp)
    with tfds.testing.mock_data(
        num_examples=num_examples,
        num_sub_examples=num_sub_examples,
        policy=tfds.testing.MockPolicy.USE_FILES,
        data_dir=str(tmp),
    ):
        yield tmp


def write_mask_folder(
    root: Path, sizes: dict[str, list[tuple[int, int]]], classes: int = 3, seed: int = 0
) -> dict[str, list[np.ndarray]]:
    """ROOT/<split>/images/<i>.{jpg,png} + ROOT/<split>/masks/<i>.png, one image per (h, w)
    in `sizes`: masks of random classes with a few ignored (255) pixels, images whose red
    channel says each pixel's class. Returns each split's masks in file order."""
    rng = np.random.default_rng(seed)
    masks: dict[str, list[np.ndarray]] = {}
    for split, shapes in sizes.items():
        masks[split] = []
        for i, (h, w) in enumerate(shapes):
            mask = rng.integers(0, classes, (h, w)).astype(np.uint8)
            mask[0, 0] = 255
            image = np.zeros((h, w, 3), np.uint8)
            image[..., 0] = mask * (255 // max(classes - 1, 1))
            write_image(root / split / "images" / f"{i}.{'png' if i % 2 else 'jpg'}", image)
            write_image(root / split / "masks" / f"{i}.png", mask[..., None])
            masks[split].append(mask)
    return masks


PET_TRIMAP = {1: "pet", 2: "background", 3: "border"}


def pet_example(i: int) -> dict[str, np.ndarray]:
    """An Oxford pets example as TFDS stores it: a JPEG, a trimap [H, W, 1] (1 pet, 2
    background, 3 border), a breed and a species label; sizes vary with `i`."""
    h, w = 24 + 4 * (i % 3), 20 + 6 * (i % 2)
    trimap = np.full((h, w, 1), 2, np.uint8)
    trimap[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 1
    trimap[h // 4, w // 4 : 3 * w // 4] = 3
    image = np.where(trimap == 1, 200, 30).astype(np.uint8).repeat(3, axis=-1)
    return {
        "image": tf.io.encode_jpeg(tf.constant(image)).numpy(),
        "segmentation_mask": trimap,
        "label": i % 37,
        "species": i % 2,
        "file_name": f"{i}.jpg".encode(),
    }


@contextlib.contextmanager
def mock_pets(tmp: Path, sizes: dict[str, int]) -> Iterator[Path]:
    """`tfds.testing.mock_data` for oxford_iiit_pet with trimaps that mean something (its
    random mock draws invalid bounding boxes and trimap values): the real builder's
    metadata, examples from `pet_example`, each split sliceable as TFDS's."""
    offsets = {s: 1000 * k for k, s in enumerate(sizes)}
    keys = ("image", "segmentation_mask", "label")

    def example(split: str, i: int) -> dict:
        row = pet_example(offsets[split] + i)
        return {k: row[k] for k in keys}

    with mock_rows(tmp, "oxford_iiit_pet", sizes, example):
        yield tmp


Rows = Callable[[str, int], dict]  # (split, i) -> that split's row i


@contextlib.contextmanager
def mock_rows(tmp: Path, name: str, sizes: dict[str, int], example: Rows) -> Iterator[Path]:
    """`tfds.testing.mock_data` whose row i of split s is `example(s, i)` (a dict of NumPy
    values or bytes; images as encoded bytes, as TFDS's undecoded images): the real
    builder's metadata with these split sizes, each split sliceable as TFDS's (its real
    file instructions decide the rows read), for datasets whose features mock_data cannot
    draw or whose examples must mean something."""
    with mock_datasets(tmp, {name: (sizes, example)}):
        yield tmp


@contextlib.contextmanager
def mock_datasets(
    tmp: Path,
    datasets: dict[str, tuple[dict[str, int], Rows]],
    signatures: dict[str, dict[str, tf.TensorSpec]] | None = None,
) -> Iterator[Path]:
    """`mock_rows` for several TFDS names (NAME[/CONFIG]) at once, each (split sizes, its
    rows); a dataset's signature is read off its first row unless `signatures` gives it
    (needed where a feature's shape varies between rows, e.g. a list of labels)."""
    import tensorflow_datasets as tfds

    for name, (sizes, _) in datasets.items():
        write_tfds_metadata(name, sizes, tmp)

    def spec(value: object) -> tf.TensorSpec:
        if isinstance(value, bytes):
            return tf.TensorSpec([], tf.string)
        value = np.asarray(value)  # sizes vary, an image's channels do not
        shape = [None] * value.ndim if value.ndim < 3 else [None, None, value.shape[-1]]
        return tf.TensorSpec(shape, tf.as_dtype(value.dtype))

    def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
        del decoders, read_config, kwargs
        name = self.info.full_name.rsplit("/", 1)[0]  # NAME[/CONFIG]
        sizes, example = datasets[name]
        parts = self.info.splits[split].file_instructions  # slices and process splits

        def rows() -> Iterator[dict]:
            for part in parts:
                split = re.search(r"-(\w+)\.tfrecord", part.filename)[1]
                yield from (example(split, i) for i in range(part.skip, part.skip + part.take))

        signature = (signatures or {}).get(name) or tf.nest.map_structure(
            spec, example(next(iter(sizes)), 0)
        )
        if all(s.shape.rank == 0 for s in tf.nest.flatten(signature)):  # one tensor per feature:
            # sliced in C++, not one Python call per row (suites read thousands of rows)
            table = {k: [] for k in signature}
            for row in rows():
                for k, column in table.items():
                    column.append(row[k])
            return tf.data.Dataset.from_tensor_slices(
                {k: tf.constant(v, signature[k].dtype, [len(v)]) for k, v in table.items()}
            )
        return tf.data.Dataset.from_generator(
            lambda: ({k: row[k] for k in signature} for row in rows()),
            output_signature=signature,
        )

    class NoFs:  # mock_data's MockFs patches tf.io.gfile process-wide while as_dataset runs,
        # which breaks orbax's checkpoint writes in their background thread; these
        # examples need no file system
        def __enter__(self) -> NoFs:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def add_file(self, path: str) -> None:
            del path

    with (
        tfds.testing.mock_data(as_dataset_fn=as_dataset, data_dir=str(tmp)),
        mock.patch("tensorflow_datasets.testing.test_utils.MockFs", NoFs),
    ):
        yield tmp
