"""`mixer predict`: a checkpoint's top-K classes for a user's own image files.

Files go through the reference evaluation transform (resize to 256/224 of the resolution
and centre crop; an image already at the resolution is left as it is; values in [-1, 1]),
in padded batches sharded over all devices. A damaged or unreadable file is reported by
name and left out; the others still run. Class names come from what the checkpoint was
trained on where that is known: a run directory's dataset, or ImageNet-1k's synsets
(TFDS ships their list) for a 1,000-class head; else the class index.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mixer_cli.core.errors import ConfigError
from mixer_cli.data.folder import IMAGE_SUFFIXES
from mixer_cli.data.image_files import find_damaged

IMAGENET_CLASSES = 1000


def image_paths(arguments: Sequence[Path]) -> list[Path]:
    """Files as given, and the images under given folders (sorted); refuses none."""
    paths: list[Path] = []
    for argument in arguments:
        if argument.is_dir():
            paths += sorted(p for p in argument.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif argument.is_file():
            paths.append(argument)
        else:
            raise ConfigError(f"{str(argument)!r} does not exist")
    if not paths:
        shown = ", ".join(repr(str(a)) for a in arguments[:3])
        raise ConfigError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {shown}")
    return paths


def class_names(init: Path, num_classes: int) -> list[str]:
    """Names of the head's classes: the run's dataset, ImageNet-1k's synsets, or indices."""
    from mixer_cli.weights.forms import saved_run_config

    data = saved_run_config(init).get("data")
    if data:
        from mixer_cli.data import open_dataset

        try:
            source = open_dataset(data.get("name", "digits"), data.get("data_dir"))
        except Exception:  # the run's data may be gone: indices will do
            source = None
        if source is not None and source.num_classes == num_classes:
            return [str(name) for name in getattr(source, "classes", range(num_classes))]
    if num_classes == IMAGENET_CLASSES:
        import tensorflow_datasets as tfds

        listed = tfds.core.tfds_path("datasets/imagenet2012/labels.txt").read_text().split()
        if len(listed) == IMAGENET_CLASSES:
            return listed
    return [str(i) for i in range(num_classes)]


def predict(
    loaded: Any, paths: Sequence[Path], names: Sequence[str], top_k: int, batch_size: int
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """(one record per readable image: path, top-K labels and probabilities; the damaged
    files with why)."""
    import jax

    from mixer_cli.core.distributed import batch_sharding, make_mesh, replicated
    from mixer_cli.core.tf_cpu import tf
    from mixer_cli.data.preprocess import decode, eval_resize, to_model_input

    damaged = find_damaged([str(p) for p in paths])
    bad = {path for path, _ in damaged}
    good = [p for p in paths if str(p) not in bad]
    if not good:
        raise ConfigError(f"none of the {len(paths)} file(s) is a readable image")
    r, mesh = loaded.resolution, make_mesh()
    batch_size = -(-batch_size // mesh.devices.size) * mesh.devices.size  # whole rows per device

    def load(path: tf.Tensor) -> tf.Tensor:
        image = eval_resize(decode(tf.io.read_file(path), encoded=True), r)
        return to_model_input(tf.ensure_shape(image, [r, r, 3]), None)

    images = tf.data.Dataset.from_tensor_slices([str(p) for p in good]).map(load)
    rows = batch_sharding(mesh)
    forward = jax.jit(
        lambda params, x: jax.nn.softmax(loaded.model.apply({"params": params}, x)[0]),
        in_shardings=(replicated(mesh), rows),
    )
    params = jax.device_put(loaded.params, replicated(mesh))
    k = min(top_k, len(names))
    records = []
    start = 0
    for batch in images.batch(batch_size).as_numpy_iterator():
        count = len(batch)
        padded = np.zeros((batch_size, r, r, 3), np.float32)
        padded[:count] = batch
        probs = np.asarray(forward(params, jax.device_put(padded, rows)))[:count]
        top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        for path, row, order in zip(good[start : start + count], probs, top, strict=True):
            records.append(
                {
                    "path": str(path),
                    "top": [
                        {"label": names[c], "index": int(c), "probability": float(row[c])}
                        for c in order
                    ],
                }
            )
        start += count
    return records, damaged
