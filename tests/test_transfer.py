"""`mixer transfer`: the lr choice rule, the published numbers' lookup, both suites end to
end on mocked TFDS rows (every task's own dataset, features and split definitions; one step
per task at a fixed lr), and a one-task suite with its lr sweep (dSprites orientation: 1000
train rows, so train800 is train[:800], val200 train[800:1000], test train[900:]) whose
half-done run resumes to the uninterrupted one's results."""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from datasets import mock_datasets, mock_rows, write_image_folder
from test_transfer_tasks import OBJECT_TASKS, _example_rows

from mixer_cli.cli import run
from mixer_cli.core.tf_cpu import tf
from mixer_cli.data.transfer_tasks import AVG5, VTAB
from mixer_cli.tasks.finetune import choose_lr
from mixer_cli.tasks.transfer import summary
from mixer_cli.weights.published import published

TASK = "vtab:dsprites_orientation"


def test_the_lr_choice_is_the_best_held_out_top1_ties_to_the_smaller_lr() -> None:
    trials = [{"lr": 0.03, "holdout_top1": 0.5}, {"lr": 0.003, "holdout_top1": 0.5}]
    assert choose_lr(trials)["lr"] == 0.003
    trials.append({"lr": 0.01, "holdout_top1": 0.51})
    assert choose_lr(trials)["lr"] == 0.01


def test_group_and_suite_means_and_the_papers_numbers() -> None:
    rows = [
        {"task": "vtab:dtd", "suite": "vtab1k", "group": "natural", "test_top1": 0.6},
        {"task": "vtab:svhn", "suite": "vtab1k", "group": "natural", "test_top1": 0.8},
        {"task": "vtab:dmlab", "suite": "vtab1k", "group": "structured", "test_top1": 0.4},
        {"task": "avg5:imagenet2012", "suite": "avg5", "group": "avg5", "test_top1": 0.8},
    ]
    got = summary(rows)
    assert got["group_means"] == pytest.approx({"natural": 0.7, "structured": 0.4})
    assert got["suite_means"]["vtab1k"] == {
        "mean": pytest.approx(0.6),
        "tasks": 3,
        "complete": False,
    }
    assert got["imagenet"] == 0.8
    assert published("imagenet21k/Mixer-B_16", 224) == {
        "imagenet": 80.64, "real": 85.80, "avg5": 92.50, "throughput": 1384, "source": "Table 3",
    }  # fmt: skip
    at_448 = published("imagenet21k/Mixer-L_16", 448)
    assert at_448["vtab1k"] == 74.95 and at_448["avg5"] == 93.91 and at_448["throughput"] == 105
    assert published("imagenet21k/Mixer-L_16", 224)["vtab1k"] == 74.95  # its own resolutions
    assert published("sam/Mixer-B_16", 224) is None


@functools.cache
def dsprite(i: int) -> dict:
    """Row i of the mocked dSprites (0/1 pixels, as stored), encoded once per session."""
    image = (np.random.default_rng(i).random((64, 64, 1)) < 0.1).astype(np.uint8)
    return {"image": tf.io.encode_png(image).numpy(), "label_orientation": i % 40}


@contextlib.contextmanager
def dsprites(tmp: Path) -> Iterator[Path]:
    with mock_rows(tmp, "dsprites", {"train": 1000}, lambda split, i: dsprite(i)) as data_dir:
        yield data_dir


def transfer(capsys, data_dir: Path, workdir: Path, npz: str, *extra: str) -> tuple[int, str]:
    """The CLI in this process; (exit code, stdout + stderr)."""
    code = run([
        "transfer", "--init", npz, "--suite", TASK, "--workdir", str(workdir),
        "--data-dir", str(data_dir), "--resolution", "16", "--steps-scale", "0.0008",
        "--batch-size", "256", "--no-throughput", *extra,
    ])  # fmt: skip
    out, err = capsys.readouterr()
    return code, " ".join((out + err).split())  # rich wraps lines at the width


def tasks_of(workdir: Path) -> list[dict]:
    """results.json's rows without the paths (another directory holds the same runs)."""
    rows = json.loads((workdir / "results.json").read_text())["tasks"]
    for row in rows:
        row.pop("workdir")
        for trial in row["lr_sweep"]:
            trial.pop("workdir")
    return rows


# Every split the suites read holds a few hundred rows at most: train 2000 (val200 at 90%
# of train and dSprites' test after 90% fit), validation and test 400 (smallNORB's test is
# test[50%:]); ReaL's and ImageNet-v2's sets 100.
TINY = {"train": 2000, "validation": 400, "test": 400}


@functools.cache
def tiny_png(channels: int, i: int) -> bytes:
    return tf.io.encode_png(np.full((8, 8, channels), 60 * i, np.uint8)).numpy()


def feature_rows(name: str):
    """Rows with the dataset's own image channels and class labels (each ClassLabel i % n)."""
    import tensorflow_datasets as tfds

    features = tfds.builder(name, data_dir="/nonexistent").info.features
    channels = features["image"].shape[-1]
    labels = {k: f.num_classes for k, f in features.items() if hasattr(f, "num_classes")}

    def row(split: str, i: int) -> dict:
        return {"image": tiny_png(channels, i % 4), **{k: i % n for k, n in labels.items()}}

    return row


def real_row(split: str, i: int) -> dict:
    labels = np.arange(i % 3, dtype=np.int64)  # none, [0], [0, 1]
    return {"image": tiny_png(3, i % 4), "original_label": i % 2, "real_label": labels}


def suite_data(tmp: Path, tasks) -> contextlib.AbstractContextManager[Path]:
    """Mocked TFDS rows for every dataset the tasks read (ImageNet's: ReaL and v2 too)."""
    import tensorflow_datasets as tfds

    datasets = {}
    for task in tasks:
        splits = tfds.builder(task.tfds, data_dir="/nonexistent").info.splits or TINY
        sizes = {split: TINY.get(split, 100) for split in splits}
        rows = _example_rows(task.name)[0] if task.name in OBJECT_TASKS else feature_rows(task.tfds)
        datasets[task.tfds] = (sizes, rows)
    datasets["imagenet2012_real"] = ({"validation": 100}, real_row)
    datasets["imagenet_v2/matched-frequency"] = ({"test": 100}, feature_rows("imagenet_v2"))
    real = {
        "image": tf.TensorSpec([], tf.string),
        "original_label": tf.TensorSpec([], tf.int64),
        "real_label": tf.TensorSpec([None], tf.int64),
    }
    return mock_datasets(tmp, datasets, signatures={"imagenet2012_real": real})


# VTAB-1k's 19 tasks are 19 runs with 15 different heads, each compiled: ~45 s of CPU
# against Avg 5's ~12 s (5 runs, ImageNet's with ReaL and v2), so it runs with the slow tests.
@pytest.mark.parametrize("suite", [pytest.param("vtab1k", marks=pytest.mark.slow), "avg5"])
def test_a_whole_suite_end_to_end_at_a_fixed_lr(capsys, tmp_path, official_npz, suite) -> None:
    """Every task of the suite, one step each; then the suite half done (its last task not
    run) resumes: the finished tasks read back, the last one runs, the same rows."""
    npz, _ = official_npz
    tasks = {"vtab1k": VTAB, "avg5": AVG5}[suite]

    def transfer(workdir: Path) -> tuple[int, str, str]:
        code = run([
            "transfer", "--init", npz, "--suite", suite, "--workdir", str(workdir),
            "--data-dir", str(data_dir), "--resolution", "16", "--steps-scale", "0.00005",
            "--lr", "0.01", "--no-throughput",
        ])  # fmt: skip
        return code, *capsys.readouterr()

    with suite_data(tmp_path / "tfds", tasks) as data_dir:
        code, out, err = transfer(tmp_path / "suite")
        assert code == 0, err
        half = tmp_path / "half"
        shutil.copytree(tmp_path / "suite", half)
        (half / "results.json").unlink()
        shutil.rmtree(half / tasks[-1].name)
        code, _, resumed = transfer(half)
        assert code == 0, resumed
    resumed = " ".join(resumed.split())
    assert resumed.count("finished, read back") == len(tasks) - 1
    assert f"[{len(tasks)}/{len(tasks)}] {tasks[-1].spec} lr 0.01: " in resumed
    assert tasks_of(half) == tasks_of(tmp_path / "suite")
    results = json.loads((tmp_path / "suite" / "results.json").read_text())
    assert results["finished"] and not results["comparable_to_paper"]
    assert [row["task"] for row in results["tasks"]] == [t.spec for t in tasks]
    assert all(row["selected_lr"] == 0.01 and row["lr_sweep"] == [] for row in results["tasks"])
    assert all(row["steps"] == 1 for row in results["tasks"])
    assert results["suite_means"][suite] == {
        "mean": pytest.approx(np.mean([row["test_top1"] for row in results["tasks"]])),
        "tasks": len(tasks),
        "complete": True,
    }
    if suite == "vtab1k":
        assert set(results["group_means"]) == {"natural", "specialized", "structured"}
    else:  # ImageNet's final run also scores ReaL and ImageNet-v2, shown beside ImageNet
        imagenet = results["tasks"][0]
        assert 0 <= imagenet["real_top1"] <= 1 and 0 <= imagenet["imagenet_v2_top1"] <= 1
        assert (results["real"], results["imagenet_v2"]) == (
            imagenet["real_top1"], imagenet["imagenet_v2_top1"],
        )  # fmt: skip
    text = " ".join((out + err).split())
    assert "lr 0.01, no sweep: NOT comparable to the paper" in text
    assert f"[{len(tasks)}/{len(tasks)}]" in text


def test_a_one_task_suite_on_an_image_folder_end_to_end(capsys, tmp_path, official_npz) -> None:
    """avg5:cifar10 on CIFAR-10 kept as files: its splits cut from the folder's as from
    TFDS's, the final run on train, scored on the folder's test split."""
    from mixer_cli.data import open_dataset

    npz, _ = official_npz
    classes = tuple(f"c{k}" for k in range(10))
    root = write_image_folder(tmp_path / "cifar", {"train": 53, "test": 2}, classes=classes)
    splits = open_dataset(f"avg5:cifar10@{root}").splits
    assert splits == {"dev": 11, "train_minus_dev": 519, "train": 530, "test": 20}
    code = run([
        "transfer", "--init", npz, "--suite", f"avg5:cifar10@{root}", "--workdir",
        str(tmp_path / "suite"), "--resolution", "16", "--steps-scale", "0.0001", "--lr", "0.01",
    ])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    results = json.loads((tmp_path / "suite" / "results.json").read_text())
    (row,) = results["tasks"]
    # The throughput column: img/s per core of the forward pass at the one resolution it ran at
    (measured,) = results["throughput"].values()
    assert measured["images_per_sec_per_core"] * measured["cores"] == pytest.approx(
        measured["images_per_sec"]
    )
    kept = json.loads((tmp_path / "suite" / "throughput.json").read_text())
    assert "img/s/core" in out and kept == results["throughput"]
    final = json.loads((tmp_path / "suite" / "cifar10" / "final" / "results.json").read_text())
    assert row["task"] == "avg5:cifar10" and final["dataset"] == f"avg5:cifar10@{root}"
    assert (final["train_split"], final["eval_split"], final["test/examples"]) == (
        "train", "test", 20,
    )  # fmt: skip
    for suite, why in (
        (f"vtab:clevr_count@{root}", "labels are not class folders"),
        (f"avg5:cifar100@{root}", "the folder holds 10 classes, avg5:cifar100 has 100"),
    ):
        code = run(["transfer", "--init", npz, "--suite", suite, "--workdir", str(tmp_path / "x")])
        err = capsys.readouterr().err
        assert code == 2 and why in err and "Traceback" not in err, err
    assert not (tmp_path / "x").exists()


# ~19 s (a compile per lr, 512-image batches): a run stopped halfway through its steps
@pytest.mark.slow
def test_a_one_task_suite_end_to_end_then_resumed_from_half_done(
    capsys, tmp_path, official_npz
) -> None:
    npz, _ = official_npz
    with dsprites(tmp_path / "tfds") as data_dir:
        code, err = transfer(capsys, data_dir, tmp_path / "suite", npz)
        assert code == 0, err
        results = json.loads((tmp_path / "suite" / "results.json").read_text())
        assert results["finished"] and not results["comparable_to_paper"]
        assert results["accum_steps"] == 2 and results["batch_size"] == 512
        (row,) = results["tasks"]
        assert [t["lr"] for t in row["lr_sweep"]] == [0.003, 0.01, 0.03]
        assert row["selected_lr"] == choose_lr(row["lr_sweep"])["lr"]
        assert row["steps"] == 2 and row["resolution"] == 16
        task = tmp_path / "suite" / "dsprites_orientation"
        final = json.loads((task / "final" / "results.json").read_text())
        assert (final["train_split"], final["eval_split"]) == ("train800val200", "test")
        trial = json.loads((task / "lr-0.01" / "results.json").read_text())
        assert (trial["train_split"], trial["eval_split"]) == ("train800", "val200")
        assert row["test_top1"] == final["test/top1"] and results["suite_means"]["vtab1k"]
        assert "[4/4]" in err and "steps x 0.0008: NOT comparable to the paper" in err

        # Half done: the sweep recorded, the final run stopped after 1 of its 2 steps.
        half = tmp_path / "half"
        shutil.copytree(tmp_path / "suite", half)
        shutil.rmtree(half / "dsprites_orientation" / "final")
        (half / "results.json").unlink()
        code, err = transfer(capsys, data_dir, half, npz, "--stop-after", "1")
        assert code == 0, err
        assert not json.loads((half / "results.json").read_text())["finished"]
        assert "[1/4]" not in err and "[4/4]" in err  # the sweep's record is read, not re-run
        code, err = transfer(capsys, data_dir, half, npz)
        assert code == 0, err
        assert "resuming from step 1" in err
        assert tasks_of(half) == tasks_of(tmp_path / "suite")

        # Finished: nothing trains again, the same results come back.
        code, err = transfer(capsys, data_dir, half, npz)
        assert code == 0 and "[4/4]" in err and "finished, read back" in err, err
        assert tasks_of(half) == tasks_of(tmp_path / "suite")
        code, err = transfer(capsys, data_dir, half, npz, "--steps-scale", "0.001")
        assert code == 2 and "steps_scale: 0.0008 before, 0.001 now" in err
