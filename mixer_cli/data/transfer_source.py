"""A transfer task (``vtab:NAME``, ``avg5:NAME``) as a dataset: its TFDS dataset read through
the task's named splits, labels made by the task's label function.

The splits are the task's own names (VTAB-1k: train800, val200, train800val200, test; Avg 5:
dev, train_minus_dev, train, test), each mapped to the TFDS split string the reference code
reads (data/transfer_tasks.py); any other name is refused with the list. Training defaults to
train800val200 (VTAB's final run) or train, evaluation to test. The task's flip and
random-crop allowances travel as the source's `flip` and `random_crop`: the preprocessing
applies a run's flip and crop only where they are allowed (data/preprocess.py).
"""

from __future__ import annotations

import os

from mixer_cli.core.errors import DataError, DatasetNotFound
from mixer_cli.core.tf_cpu import tf
from mixer_cli.data.preprocess import to_uint8
from mixer_cli.data.tfds_source import TfdsSource, default_data_dir, prepared_builder
from mixer_cli.data.transfer_tasks import TransferTask, find_task


def open_transfer(
    spec: str, data_dir: str | os.PathLike | None, *, download: bool
) -> TransferSource:
    """The task of `spec` on its prepared TFDS dataset; a dataset that is not there is refused
    naming the task and how to prepare it (where to put a manual download's files)."""
    task = find_task(spec)
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


class TransferSource(TfdsSource):
    def __init__(self, builder, task: TransferTask) -> None:
        # Not TfdsSource's: a task's label need not be a stored 'label' feature.
        self.builder, self.masks, self.task_entry = builder, None, task
        self.name, self.num_classes, self.label_key = task.spec, task.num_classes, "label"
        self.flip, self.random_crop = task.flip, task.random_crop
        self.encoded = task.pixel_scale == 1  # else `read` decodes and rescales
        height, width = builder.info.features["image"].shape[:2]
        self.image_shape = (height, width, 3)
        sizes = {name: info.num_examples for name, info in builder.info.splits.items()}
        try:
            self._splits = task.splits(sizes)
        except KeyError as err:  # a prepared copy without the split the task cuts from
            raise DataError(
                f"{task.spec}: {task.tfds} in {builder.data_dir} has no {err.args[0]!r} split "
                f"(it has {', '.join(sizes) or 'none'}); prepare it again with `tfds build "
                f"{task.tfds}`"
            ) from None
        self.train_split = "train800val200" if task.suite == "vtab1k" else "train"
        self.eval_split = "test"

    @property
    def splits(self) -> dict[str, int]:
        return {name: self.num_examples(name) for name in self._splits}

    def tfds_split(self, split: str) -> str:
        if split not in self._splits:
            raise DataError(
                f"{self.name} has no split {split!r} (splits: {', '.join(self._splits)}: the "
                "task's own, as its protocol defines them)"
            )
        return self._splits[split]

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
