"""The tf.data pipeline: sharded global batches, exact resume, pad+mask, the transforms."""

from __future__ import annotations

import dataclasses
from itertools import islice
from pathlib import Path

import jax
import numpy as np
import pytest
from datasets import mock_tfds, write_image, write_image_folder, write_prepared_tfds

from mixer_cli.core.distributed import make_mesh
from mixer_cli.core.errors import ConfigError, DataError
from mixer_cli.core.tf_cpu import tf
from mixer_cli.data import EvalBatches, Preprocessing, TrainBatches, open_dataset
from mixer_cli.data.device_augment import DeviceAugment
from mixer_cli.data.preprocess import eval_resize, to_model_input

MESH = make_mesh()  # 8 forced host devices (conftest)
AUGMENTED = Preprocessing(
    resolution=16,
    crop="inception",
    randaug_layers=2,
    randaug_magnitude=10,
    mixup=0.5,
    augment_on="host",
)


def take(batches, n: int) -> list[dict[str, np.ndarray]]:
    return list(islice(batches.host_batches(), n))


def assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


def test_batches_are_global_arrays_sharded_over_8_devices() -> None:
    batches = TrainBatches(open_dataset("digits"), "train", AUGMENTED, 64, 0, MESH)
    batch = next(iter(batches))
    assert jax.device_count() == 8
    image, label = batch["image"], batch["label"]
    assert image.shape == (64, 16, 16, 3) and label.shape == (64, 10)
    assert len(image.addressable_shards) == 8
    assert {s.data.shape for s in image.addressable_shards} == {(8, 16, 16, 3)}
    assert image.sharding.spec == jax.sharding.PartitionSpec("data")
    assert float(image.min()) >= -1.0 and float(image.max()) <= 1.0
    np.testing.assert_allclose(np.asarray(label).sum(axis=1), 1.0, rtol=1e-6)  # mixup keeps mass


def test_batches_augmented_on_the_device_travel_as_uint8_crops_and_integer_labels() -> None:
    pre = dataclasses.replace(AUGMENTED, augment_on="device")
    batch = next(iter(TrainBatches(open_dataset("digits"), "train", pre, 64, 0, MESH)))
    image, label = batch["image"], batch["label"]
    assert (image.dtype, image.shape, label.dtype, label.shape) == (
        np.uint8, (64, 16, 16, 3), np.int32, (64,)
    )  # fmt: skip
    assert image.sharding.spec == label.sharding.spec == jax.sharding.PartitionSpec("data")
    assert set(np.unique(np.asarray(label))) <= set(range(10))


def test_the_device_half_flips_per_example_and_ends_as_the_host_half_does() -> None:
    """Flip, then the shuffle experiment's permutation and [-1, 1] (the host's
    `to_model_input`, exactly), one-hot labels; about half the examples mirrored."""
    pre = Preprocessing(resolution=8, permutation="global", permutation_seed=1)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 64).astype(np.int32)
    augment = jax.jit(DeviceAugment(pre, num_classes=10, flip=True))
    out = augment({"image": images, "label": labels}, jax.random.key(0))
    got, permutation = np.asarray(out["image"]), pre.permutation_index()
    flipped = 0
    for image, result in zip(images, got, strict=True):
        kept = to_model_input(tf.constant(image), permutation).numpy()
        mirrored = to_model_input(tf.constant(image[:, ::-1]), permutation).numpy()
        assert np.array_equal(result, kept) or np.array_equal(result, mirrored)
        flipped += np.array_equal(result, mirrored)
    assert 16 <= flipped <= 48
    np.testing.assert_array_equal(out["label"], np.eye(10, dtype=np.float32)[labels])


def test_batch_size_the_devices_do_not_divide_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"batch size 60 .* 8 devices; try 56 or 64"):
        TrainBatches(open_dataset("digits"), "train", AUGMENTED, 60, 0, MESH)


def test_same_seed_same_stream_other_seed_other_stream() -> None:
    src = open_dataset("digits")
    first = take(TrainBatches(src, "train", AUGMENTED, 64, 3, MESH), 2)
    assert_same(first, take(TrainBatches(src, "train", AUGMENTED, 64, 3, MESH), 2))
    other = take(TrainBatches(src, "train", AUGMENTED, 64, 4, MESH), 1)
    assert not np.array_equal(first[0]["image"], other[0]["image"])


@pytest.mark.parametrize("start", [3, 7])  # within the first epoch, and past its end
def test_resuming_at_step_k_gives_the_batches_of_an_uninterrupted_stream(start: int) -> None:
    src = open_dataset("digits")  # 1437 train examples: 5 steps of 256 per epoch
    through = take(TrainBatches(src, "train", AUGMENTED, 256, 0, MESH), start + 2)[start:]
    resumed = take(TrainBatches(src, "train", AUGMENTED, 256, 0, MESH, start_step=start), 2)
    assert_same(through, resumed)


def test_resume_through_tfds(tmp_path: Path) -> None:
    write_prepared_tfds(tmp_path, "tiny_prepared", {"train": 40, "test": 8})
    src = open_dataset("tiny_prepared", tmp_path)
    pre = Preprocessing(resolution=16, randaug_layers=1, randaug_magnitude=5, augment_on="host")
    through = take(TrainBatches(src, "train", pre, 16, 0, MESH), 4)[3:]
    resumed = take(TrainBatches(src, "train", pre, 16, 0, MESH, start_step=3), 1)
    assert_same(through, resumed)


def test_processes_read_their_own_rows_of_the_same_global_batches() -> None:
    src = open_dataset("digits")
    steps = src.steps_per_epoch("train", 64, 1)
    whole = src.train_stream("train", 2, 0, 64, 0, 1).dataset.take(steps * 64)
    single = list(whole.as_numpy_iterator())
    halves = [
        list(src.train_stream("train", 2, 0, 64, p, 2).dataset.take(steps * 32).as_numpy_iterator())
        for p in range(2)
    ]
    for step in range(steps):
        rows = slice(step * 32, (step + 1) * 32)
        merged = halves[0][rows] + halves[1][rows]
        for a, b in zip(single[2 * step * 32 :][:64], merged, strict=True):
            assert np.array_equal(a[0], b[0]) and a[1:] == b[1:]  # image; label, position, epoch


def test_eval_pads_the_last_batch_and_counts_every_example() -> None:
    src = open_dataset("digits")  # 360 test examples; 360 = 5 x 64 + 40
    pre = Preprocessing(resolution=8)
    batches = EvalBatches(src, "test", pre, 64, MESH)
    assert (batches.num_examples, batches.num_batches) == (360, 6)
    seen = list(batches)
    assert len(seen) == 6 and all(b["image"].shape == (64, 8, 8, 3) for b in seen)
    assert sum(int(b["mask"].sum()) for b in seen) == 360
    last = np.asarray(seen[-1]["mask"])
    assert last[:40].all() and not last[40:].any()
    # At the model's resolution the pixels are untouched: the input is exactly x/127.5 - 1.
    raw = next(src.eval_stream("test", 0, 1).as_numpy_iterator())[0]
    expected = raw.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    np.testing.assert_array_equal(np.asarray(seen[0]["image"][0]), expected)


def test_mocked_tfds_feeds_the_same_batches(tmp_path: Path) -> None:
    for name, splits in (("cifar10", ("train", "test")), ("imagenet2012", ("train", "validation"))):
        with mock_tfds(name, splits, 24, tmp_path / name) as data_dir:
            src = open_dataset(name, data_dir)
            pre = Preprocessing(resolution=32)
            batch = next(iter(TrainBatches(src, "train", pre, 16, 0, MESH)))
            assert batch["image"].shape == (16, 32, 32, 3)
            assert batch["label"].shape == (16,)  # integers: one-hot on the device
            evaluated = EvalBatches(src, src.eval_split, pre, 16, MESH)
            assert sum(int(b["mask"].sum()) for b in evaluated) == 24


def test_folder_of_mixed_images_feeds_batches(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "imgs", {"train": 8, "test": 3})
    src = open_dataset(f"folder:{root}")
    pre = Preprocessing(resolution=16)
    batch = next(iter(TrainBatches(src, "train", pre, 8, 0, MESH)))
    assert batch["image"].shape == (8, 16, 16, 3)
    evaluated = list(EvalBatches(src, "test", pre, 8, MESH))
    assert sum(int(b["mask"].sum()) for b in evaluated) == 9


def test_a_file_that_is_not_an_image_stops_the_run_naming_it(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "imgs", {"train": 8})
    bad = root / "train" / "dog" / "broken.jpg"
    bad.write_bytes(b"this is not a jpeg")
    src = open_dataset(f"folder:{root}")
    with pytest.raises(DataError, match=r"broken\.jpg"):
        list(EvalBatches(src, "train", Preprocessing(resolution=16), 8, MESH))


def test_grayscale_png_becomes_three_equal_channels(tmp_path: Path) -> None:
    gray = np.arange(256, dtype=np.uint8).reshape(16, 16, 1)
    write_image(tmp_path / "g" / "test" / "a" / "x.png", gray)
    write_image(tmp_path / "g" / "test" / "b" / "y.png", gray)
    src = open_dataset(f"folder:{tmp_path / 'g'}")
    (batch,) = list(EvalBatches(src, "test", Preprocessing(resolution=16), 8, MESH).host_batches())
    image = (batch["image"][0] + 1.0) * 127.5
    np.testing.assert_allclose(image, np.repeat(gray, 3, axis=-1), atol=1e-4)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [((16, 16), "same"), ((40, 30), "crop"), ((10, 12), "resize")],
)
def test_eval_resize_rule_eagerly_and_inside_tf_data(shape, expected) -> None:
    image = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    eager = eval_resize(tf.constant(image), 16).numpy()
    graph = next(iter(tf.data.Dataset.from_tensors(image).map(lambda x: eval_resize(x, 16))))
    np.testing.assert_array_equal(eager, graph.numpy())
    assert eager.shape == (16, 16, 3)
    if expected == "same":
        np.testing.assert_array_equal(eager, image)
    if expected == "crop":  # shorter side 30 -> 18 (= 16 * 256/224), then the centre 16x16
        resized = tf.image.resize(image, [24, 18], antialias=True).numpy()
        np.testing.assert_allclose(eager, np.round(resized[4:20, 1:17]), atol=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"resolution": 0}, "resolution"),
        ({"resolution": 16, "crop": "random"}, "unknown crop"),
        ({"resolution": 16, "crop_min_area": 0.0}, "minimum area"),
        ({"resolution": 16, "mixup": -1.0}, "mixup"),
        ({"resolution": 16, "permutation": "rows"}, "unknown permutation"),
        ({"resolution": 16, "augment_on": "tpu"}, "augment_on must be one of device, host"),
    ],
)
def test_bad_preprocessing_is_refused(kwargs, message) -> None:
    with pytest.raises(ConfigError, match=message):
        Preprocessing(**kwargs)


def test_tensorflow_comes_without_keras_which_stays_importable() -> None:
    import sys

    assert "keras" not in sys.modules  # TensorFlow's eager Keras import was skipped
    assert tf.keras.layers.Dense.__module__.startswith("keras")  # loads it on first use
    assert sys.modules["keras"] is not None


def test_pipelines_are_traced_without_autograph(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AutoGraph writes each function it rewrites to a temporary file (left behind when a
    run is killed); our functions are graphs as written, so nothing is rewritten."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    pre = Preprocessing(resolution=8, crop="inception", mixup=0.5)  # RandAugment: its own test
    with mock_tfds("cifar10", ("train", "test"), 8, tmp_path / "tfds") as data_dir:
        for src in (open_dataset("digits"), open_dataset("cifar10", data_dir)):
            next(iter(TrainBatches(src, "train", pre, 8, 0, MESH)))
            next(iter(EvalBatches(src, "test", pre, 8, MESH)))
    assert not list((tmp_path / "tmp").glob("__autograph_generated_file*"))
