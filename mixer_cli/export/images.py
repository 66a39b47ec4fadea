"""Real images for an export: its check against JAX and static int8's calibration."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

CALIBRATION_IMAGES = 256


def _batches(data: str, data_dir: str | None, split: str | None, resolution: int) -> Iterator:
    from mixer_cli.core.distributed import make_mesh
    from mixer_cli.data import EvalBatches, open_dataset
    from mixer_cli.data.preprocess import Preprocessing

    source = open_dataset(data, None if data_dir is None else str(data_dir))
    split = split or source.eval_split
    mesh = make_mesh()
    batches = EvalBatches(source, split, Preprocessing(resolution=resolution), 8 * mesh.size, mesh)
    for batch in batches.host_batches():
        keep = batch["mask"].astype(bool)
        yield batch["image"][keep], batch["label"][keep].argmax(-1)


def test_images(
    data: str, data_dir: str | None, resolution: int, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` images of the evaluation split (evaluation crop, [-1, 1]) and labels."""
    images, labels = [], []
    for x, y in _batches(data, data_dir, None, resolution):
        images.append(x)
        labels.append(y)
        if sum(len(i) for i in images) >= count:
            break
    return np.concatenate(images)[:count], np.concatenate(labels)[:count]


def calibration_batches(data: str, data_dir: str | None, resolution: int) -> Iterator[np.ndarray]:
    """Batches of the training split's first images, the inputs static int8 is scaled for."""
    from mixer_cli.data import open_dataset

    source = open_dataset(data, None if data_dir is None else str(data_dir))
    seen = 0
    for x, _ in _batches(data, data_dir, source.train_split, resolution):
        yield x.astype(np.float32)
        seen += len(x)
        if seen >= CALIBRATION_IMAGES:
            return
