"""The transfer tasks (data/transfer_tasks.py) as datasets: the catalog's invariants, every
task's splits and labels on `tfds.testing.mock_data` (no network), hand-computed labels of
the structured tasks, flip/crop reaching the preprocessing, and one fine-tuning run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from datasets import mock_pets, mock_rows, mock_tfds
from test_finetune import FAST, google_like_npz  # noqa: F401 (a fixture)

from mixer_cli.cli import run
from mixer_cli.core.errors import DataError, DatasetNotFound
from mixer_cli.core.tf_cpu import tf
from mixer_cli.data import Preprocessing, open_dataset
from mixer_cli.data.device_augment import device_augment
from mixer_cli.data.pipeline import transforms_for
from mixer_cli.data.transfer_tasks import AVG5, VTAB, find_task

# The TFDS datasets' real split sizes (their catalog pages): the metadata the mocks carry.
SIZES = {
    "caltech101": {"train": 3060, "test": 6084},
    "cifar10": {"train": 50_000, "test": 10_000},
    "cifar100": {"train": 50_000, "test": 10_000},
    "dtd": {"train": 1880, "validation": 1880, "test": 1880},
    "oxford_flowers102": {"train": 1020, "validation": 1020, "test": 6149},
    "oxford_iiit_pet": {"train": 3680, "test": 3669},
    "sun397/tfds": {"train": 76_128, "validation": 10_875, "test": 21_750},
    "svhn_cropped": {"train": 73_257, "test": 26_032, "extra": 531_131},
    "patch_camelyon": {"train": 262_144, "validation": 32_768, "test": 32_768},
    "eurosat/rgb": {"train": 27_000},
    "resisc45": {"train": 31_500},
    "diabetic_retinopathy_detection/btgraham-300": {
        "train": 35_126, "validation": 10_906, "test": 42_670, "sample": 10,
    },
    "dmlab": {"train": 65_550, "validation": 22_628, "test": 22_735},
    "kitti": {"train": 6347, "validation": 423, "test": 711},
    "smallnorb": {"train": 24_300, "test": 24_300},
    "dsprites": {"train": 737_280},
    "clevr": {"train": 70_000, "validation": 15_000, "test": 15_000},
    "imagenet2012": {"train": 1_281_167, "validation": 50_000},
}  # fmt: skip

# Test-split sizes worked out by hand from task_adaptation's definitions.
VTAB_TEST = {
    "eurosat": 27_000 - 16_200 - 5400,  # train[60% + 20%:]
    "resisc45": 31_500 - 18_900 - 6300,
    "dsprites_location": 737_280 - 589_824 - 73_728,  # train[80% + 10%:]
    "dsprites_orientation": 73_728,
    "smallnorb_azimuth": 12_150,  # test[50%:]
    "smallnorb_elevation": 12_150,
    "clevr_distance": 15_000,  # CLEVR's validation split
    "clevr_count": 15_000,
}
# mock_data cannot draw their object sequences (their lengths differ): hand-made rows
OBJECT_TASKS = {"clevr_count", "clevr_distance", "kitti_distance"}


def test_the_catalog_has_the_papers_tasks() -> None:
    groups = [t.group for t in VTAB]
    assert len(VTAB) == 19 and len({t.name for t in VTAB}) == 19
    assert (groups.count("natural"), groups.count("specialized"), groups.count("structured")) == (
        7,
        4,
        8,
    )
    small = {t.name for t in VTAB if t.resolution == 224}
    assert small == {"cifar100", "svhn", "eurosat", "dsprites_location", "dsprites_orientation"}
    assert all((t.steps, t.batch_size, t.lrs) == (2500, 512, (0.003, 0.01, 0.03)) for t in VTAB)
    assert {t.name for t in VTAB if not t.flip} == {
        "dsprites_location", "dsprites_orientation", "smallnorb_azimuth",
    }  # fmt: skip
    assert {t.name for t in VTAB if not t.random_crop} == {
        "clevr_count", "clevr_distance", "dmlab", "kitti_distance", "dsprites_location",
    }  # fmt: skip
    assert {t.name for t in VTAB if t.manual} == {"resisc45", "diabetic_retinopathy"}
    assert [(t.name, t.steps, t.dev_percent) for t in AVG5] == [
        ("imagenet2012", 20_000, 1), ("cifar10", 10_000, 2), ("cifar100", 10_000, 2),
        ("oxford_iiit_pet", 500, 10), ("oxford_flowers102", 500, 10),
    ]  # fmt: skip
    assert all(t.lrs == (0.003, 0.01, 0.03, 0.06) and t.resolution is None for t in AVG5)
    assert all("task_adaptation/data/" in t.source for t in VTAB)


@pytest.mark.parametrize("task", VTAB, ids=lambda t: t.name)
def test_image_sizes_are_tfds_own_where_fixed(task) -> None:
    """The 96x96 rule reads the catalog's image size: TFDS's own where the feature fixes it."""
    import tensorflow_datasets as tfds

    shape = tfds.builder(task.tfds, data_dir="/nonexistent").info.features["image"].shape
    if shape[0] is not None:
        assert task.image_size == shape[:2]


def _example_rows(task_name: str):
    """Hand-made CLEVR and KITTI rows (mock_data draws object sequences of unequal lengths)
    and the label each must get."""
    png = tf.io.encode_png(np.zeros((6, 9, 3), np.uint8)).numpy()

    def clevr(split: str, i: int) -> dict:
        n = 3 + i % 8  # 3-10 objects
        depth = np.full(n, 12.0, np.float32)
        depth[i % n] = 7.5 + 0.5 * (i % 6)  # the closest: 7.5 .. 10.0
        coords = np.stack([np.zeros(n), np.zeros(n), depth], axis=1).astype(np.float32)
        return {"image": png, "objects": {"size": np.zeros(n, np.int64), "pixel_coords": coords}}

    def kitti(split: str, i: int) -> dict:
        types = np.array([3, i % 4, 7], np.int64)  # one vehicle (type < 3) or none
        location = np.array([[0, 0, 2.0], [0, 0, 5.0 + 6 * (i % 4)], [0, 0, 1.0]], np.float32)
        return {"image": png, "objects": {"type": types, "location": location}}

    def want(i: int) -> int:
        if task_name == "clevr_count":
            return i % 8
        if task_name == "clevr_distance":  # bins (0, 8], (8, 8.5], ..., (10, 100]
            return int(np.searchsorted([0.0, 8.0, 8.5, 9.0, 9.5, 10.0], 7.5 + 0.5 * (i % 6)) - 1)
        return 3 if i % 4 == 3 else [0, 1, 2][(5 + 6 * (i % 4) > 8) + (5 + 6 * (i % 4) > 20)]

    return (clevr if task_name.startswith("clevr") else kitti), want


@pytest.mark.parametrize("task", VTAB + AVG5, ids=lambda t: t.spec)
def test_every_task_splits_and_labels_on_mocked_tfds(tmp_path: Path, task) -> None:
    sizes = SIZES[task.tfds]
    if task.name in OBJECT_TASKS:
        rows, want = _example_rows(task.name)
        context = mock_rows(tmp_path, task.tfds, sizes, rows)
    elif task.tfds == "oxford_iiit_pet":  # mock_data draws invalid head boxes
        context = mock_pets(tmp_path, sizes)
    else:
        context = mock_tfds(task.tfds, (), 6, tmp_path, sizes=sizes)
    with context as data_dir:
        source = open_dataset(task.spec, data_dir)
        assert (source.name, source.num_classes) == (task.spec, task.num_classes)
        assert (source.flip, source.random_crop) == (task.flip, task.random_crop)
        splits = source.splits
        if task.suite == "vtab1k":
            test = VTAB_TEST.get(task.name, sizes.get("test"))
            assert splits == {"train800": 800, "val200": 200, "train800val200": 1000, "test": test}
            assert (source.train_split, source.eval_split) == ("train800val200", "test")
        else:
            train = sizes["train"]
            dev = train - round(train * (100 - task.dev_percent) / 100)
            assert splits["dev"] + splits["train_minus_dev"] == splits["train"] == train
            assert abs(splits["dev"] - dev) <= 1
        split = "val200" if task.suite == "vtab1k" else "dev"
        transforms = transforms_for(source, Preprocessing(resolution=16), seed=0)
        got = list(source.eval_stream(split, 0, 1).map(transforms.eval_example).take(6))
    labels = np.array([np.argmax(x["label"]) for x in got])
    assert len(got) == 6 and all(x["image"].shape == (16, 16, 3) for x in got)
    assert all(x["label"].numpy().sum() == 1 for x in got), "every label in [0, classes)"
    if task.name in OBJECT_TASKS:  # rows 63000.. of CLEVR's train, 0.. of KITTI's validation
        first = 63_000 if task.name.startswith("clevr") else 0
        np.testing.assert_array_equal(labels, [want(first + i) for i in range(6)])


def test_vtab_split_strings_follow_task_adaptation() -> None:
    def splits(name: str) -> dict[str, str]:
        task = find_task(f"vtab:{name}")
        return task.splits(SIZES[task.tfds])

    assert splits("cifar100")["val200"] == "train[45000:45200]"  # cifar.py: 90% of train
    assert splits("oxford_iiit_pet")["train800val200"] == "train[:800]+train[2944:3144]"
    assert splits("dtd")["val200"] == "validation[:200]"
    assert splits("clevr_count")["test"] == "validation"
    assert splits("smallnorb_azimuth")["val200"] == "test[:200]"
    assert splits("eurosat")["test"] == "train[21600:]"
    assert find_task("avg5:cifar10").splits({})["dev"] == "train[98%:]"


def test_dsprites_labels_bin_and_its_pixels_scale(tmp_path: Path) -> None:
    """dSprites stores 0/1 pixels: read as 0/255; x positions 0-31 -> 16 bins, orientations
    0-39 -> floor(v / 2.5)."""
    location, orientation = (
        find_task("vtab:dsprites_location"),
        find_task("vtab:dsprites_orientation"),
    )
    values = tf.constant([0, 1, 2, 31, 39], tf.int64)
    assert location.label({"label_x_position": values[:4]}).numpy().tolist() == [0, 0, 1, 15]
    assert orientation.label({"label_orientation": values}).numpy().tolist() == [0, 0, 0, 12, 15]
    with mock_tfds("dsprites", (), 2, tmp_path, sizes=SIZES["dsprites"]) as data_dir:
        source = open_dataset("vtab:dsprites_location", data_dir)
        image = source.read(tf.io.encode_png(np.eye(4, dtype=np.uint8)[..., None]))
        with pytest.raises(DataError, match=r"no split .train. \(splits: train800, val200, train"):
            source.num_examples("train")  # only the task's own splits
    assert image.shape == (4, 4, 3) and sorted(np.unique(image.numpy())) == [0, 255]


def test_a_task_whose_dataset_is_not_prepared_names_it_and_how(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFound, match=r"^vtab:dmlab: 'dmlab' is not prepared in .*"
                       r"`tfds build dmlab --data_dir DIR`"):  # fmt: skip
        open_dataset("vtab:dmlab", tmp_path, download=False)


@pytest.mark.parametrize("place", ["host", "device"])
def test_a_task_without_random_crop_is_resized_whole(place: str) -> None:
    """The run asks for inception crops and flips; a counting task gets neither, so every
    training and evaluation image is the whole picture resized (augmenting on the device,
    the host sends it as uint8 and the device half does not flip it)."""

    class Counting:
        name, num_classes, encoded, task = "count", 2, False, "classify"
        flip, random_crop = False, False

        def read(self, raw):
            return raw

    image = np.zeros((12, 20, 3), np.uint8)
    image[:, :2] = 255  # a bright strip at the left edge: a crop or a flip would move it
    pre = Preprocessing(resolution=8, augment_on=place)
    transforms = transforms_for(Counting(), pre, seed=0)
    want = tf.image.resize(image, [8, 8], antialias=True).numpy()
    for position in range(4):
        got, *_ = transforms.train_example(
            tf.constant(image), tf.constant(0), tf.constant(position, tf.int64), tf.constant(0)
        )
        pixels = got.numpy() if place == "device" else (got.numpy() + 1) * 127.5
        np.testing.assert_allclose(pixels, np.round(want), atol=0.51)
    assert place == "host" or not device_augment(Counting(), pre).flip
    evaluated = transforms.eval_example(tf.constant(image), tf.constant(0))["image"].numpy()
    np.testing.assert_allclose((evaluated + 1) * 127.5, np.round(want), atol=0.51)


@pytest.mark.slow  # ~12 s: compiling the steps costs what any fine-tuning run does
def test_finetune_on_a_mocked_vtab_task(capsys, tmp_path: Path, google_like_npz) -> None:  # noqa: F811
    """One tiny fine-tuning run through the CLI on dSprites-orientation's splits (hand-made
    rows: train has 1000, so val200 is train[800:1000] and test train[900:])."""
    rng = np.random.default_rng(0)

    def dsprite(split: str, i: int) -> dict:
        image = (rng.random((64, 64, 1)) < 0.1).astype(np.uint8)  # 0/1 pixels, as stored
        return {"image": tf.io.encode_png(image).numpy(), "label_orientation": i % 40}

    with mock_rows(tmp_path / "tfds", "dsprites", {"train": 1000}, dsprite) as data_dir:
        code = run([
            "finetune", "--workdir", str(tmp_path / "run"), "--init", str(google_like_npz),
            "--data", "vtab:dsprites_orientation", "--data-dir", str(data_dir),
            "--resolution", "8", *FAST, "--set=data.train_split=val200",
        ])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["num_classes"] == 16 and results["finished"]
    assert (results["train_split"], results["eval_split"]) == ("val200", "test")
    assert 0 <= results["test/top1"] <= 1
