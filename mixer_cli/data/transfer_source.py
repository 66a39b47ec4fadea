"""A transfer task (``vtab:NAME``, ``avg5:NAME``) as a dataset: its TFDS dataset read through
the task's named splits, labels made by the task's label function.

The splits are the task's own names (VTAB-1k: train800, val200, train800val200, test; Avg 5:
dev, train_minus_dev, train, test), each mapped to the TFDS split string the reference code
reads (data/transfer_tasks.py); any other name is refused with the list. Training defaults to
train800val200 (VTAB's final run) or train, evaluation to test. The task's flip and
random-crop allowances travel as the source's `flip` and `random_crop`: the preprocessing
applies a run's flip and crop only where they are allowed (data/preprocess.py).

``TASK@ROOT`` reads a task whose labels are the stored classes from an image folder instead
(ROOT/<split>/<class>/<image>, the folder's split names as TFDS's: an ImageNet or CIFAR copy
kept as files): the same named splits, cut from the folder's splits as from TFDS's.
"""

from __future__ import annotations

import os
from pathlib import Path

from mixer_cli.core.errors import DataError, DatasetNotFound
from mixer_cli.core.tf_cpu import tf
from mixer_cli.data.folder import FolderSource
from mixer_cli.data.preprocess import to_uint8
from mixer_cli.data.tfds_source import TfdsSource, default_data_dir, prepared_builder
from mixer_cli.data.transfer_tasks import Stored, TransferTask, find_task


def open_transfer(
    spec: str, data_dir: str | os.PathLike | None, *, download: bool, skip_corrupt: bool = False
) -> TransferSource | TaskFolder:
    """The task of `spec` on its prepared TFDS dataset (or, as TASK@ROOT, on an image folder);
    a dataset that is not there is refused naming the task and how to prepare it (where to put
    a manual download's files)."""
    spec, _, folder = spec.partition("@")
    task = find_task(spec)
    if folder:
        return TaskFolder(Path(folder).expanduser(), task, skip_corrupt)
    data_dir = str(data_dir) if data_dir else default_data_dir()
    try:
        builder = prepared_builder(task.tfds, data_dir, download=download)
    except DatasetNotFound as err:
        if task.manual is None:
            raise DatasetNotFound(f"{spec}: {err}") from None
        raise DatasetNotFound(
            f"{spec} needs {task.tfds} prepared in {data_dir}, from a manual download: "
            f"{task.manual.replace('DATA_DIR', data_dir)}; then `tfds build {task.tfds} "
            f"--data_dir {data_dir}` (or rerun, which prepares it)"
        ) from None
    return TransferSource(builder, task)


class TaskSplits:
    """A task's named splits over a dataset's own (its `_task_splits`: name -> split string)
    and its defaults: train on train800val200 (VTAB) or train, evaluate on test."""

    name: str
    _task_splits: dict[str, str]

    def use_task_splits(self, task: TransferTask, sizes: dict[str, int], where: str) -> None:
        try:
            self._task_splits = task.splits(sizes)
        except KeyError as err:  # a copy without the split the task cuts from
            raise DataError(
                f"{task.spec}: {where} has no {err.args[0]!r} split (it has "
                f"{', '.join(sizes) or 'none'})"
            ) from None
        self.train_split = "train800val200" if task.suite == "vtab1k" else "train"
        self.eval_split = "test"

    @property
    def splits(self) -> dict[str, int]:
        return {name: self.num_examples(name) for name in self._task_splits}

    def task_split(self, split: str) -> str:
        """The dataset's split string of the task's split `split`; others are refused."""
        if split not in self._task_splits:
            raise DataError(
                f"{self.name} has no split {split!r} (splits: {', '.join(self._task_splits)}: "
                "the task's own, as its protocol defines them)"
            )
        return self._task_splits[split]


class TransferSource(TaskSplits, TfdsSource):
    def __init__(self, builder, task: TransferTask) -> None:
        # Not TfdsSource's: a task's label need not be a stored 'label' feature.
        self.builder, self.masks, self.task_entry = builder, None, task
        self.name, self.num_classes, self.label_key = task.spec, task.num_classes, "label"
        self.flip, self.random_crop = task.flip, task.random_crop
        self.encoded = task.pixel_scale == 1  # else `read` decodes and rescales
        height, width = builder.info.features["image"].shape[:2]
        self.image_shape = (height, width, 3)
        sizes = {name: info.num_examples for name, info in builder.info.splits.items()}
        where = (
            f"{task.tfds} in {builder.data_dir} (prepare it again with `tfds build {task.tfds}`)"
        )
        self.use_task_splits(task, sizes, where)

    def tfds_split(self, split: str) -> str:
        return self.task_split(split)

    def label(self, example: dict) -> tf.Tensor:
        return self.task_entry.label(example)

    def read(self, raw: tf.Tensor) -> tf.Tensor:
        """Stored bytes; for a set stored as 0/1 pixels (dSprites), the decoded image scaled
        to 0-255, as task_adaptation does."""
        if self.encoded:
            return raw
        image = tf.io.decode_image(raw, channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        return to_uint8(tf.cast(image, tf.float32) * self.task_entry.pixel_scale)


class TaskFolder(TaskSplits, FolderSource):
    """A task whose labels are the stored classes, on an image folder: the task's named
    splits, flip and crop allowances, its class count checked against the folder's."""

    def __init__(self, root: Path, task: TransferTask, skip_corrupt: bool = False) -> None:
        if not isinstance(task.label, Stored) or task.pixel_scale != 1:
            raise DataError(
                f"{task.spec}@{root}: {task.spec}'s labels are not class folders' (they are "
                f"computed from {task.tfds}'s annotations): it reads its TFDS dataset"
            )
        super().__init__(root, skip_corrupt)
        if self.num_classes != task.num_classes:
            raise DataError(
                f"{task.spec}@{root}: the folder holds {self.num_classes} classes, "
                f"{task.spec} has {task.num_classes}"
            )
        self.name, self.task_entry = f"{task.spec}@{root}", task
        self.flip, self.random_crop = task.flip, task.random_crop
        self.use_task_splits(task, dict(self._sizes), f"the folder {str(root)!r}")

    def _parts(self, split: str) -> list:
        """The task's split `split` as the folder's (train800 -> train[:800], ...)."""
        return super()._parts(self.task_split(split))
