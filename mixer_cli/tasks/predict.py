"""`mixer predict`: a checkpoint's top-K classes for a user's own image files.

Files go through the reference evaluation transform (resize to 256/224 of the resolution
and centre crop; an image already at the resolution is left as it is; values in [-1, 1]),
each process reading its share of the files (`ImageFiles`), in padded batches sharded
over all devices through the forward loop (`evals.forward`). Every file is checked
first, its header and end and then a full decode (`data.image_files.undecodable`): a
damaged or unreadable one is reported by name and left out; the others still run. Class
names come from what the checkpoint was trained on where that is known: a run directory's
dataset, or ImageNet-1k's synsets (TFDS ships their list) for a 1,000-class head; else the
class index. `run_predict` is the task (it writes results.json); `print_predictions` renders
what it found.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixer_cli.core.errors import ConfigError, DataError
from mixer_cli.data.folder import IMAGE_SUFFIXES
from mixer_cli.data.image_files import find_damaged, listing, undecodable

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


class ImageFiles:
    """Image files as a split the forward loop reads: the reference evaluation transform,
    each process its contiguous share of the files, in padded batches of global arrays
    (`mask` marks the real rows)."""

    def __init__(self, paths: Sequence[Path], resolution: int, global_batch: int, mesh: Any):
        import jax

        processes, process = jax.process_count(), jax.process_index()
        self.resolution, self.mesh = resolution, mesh
        self.local_batch = global_batch // processes
        bounds = [len(paths) * p // processes for p in range(processes + 1)]
        self.paths = [str(p) for p in paths[bounds[process] : bounds[process + 1]]]
        largest = max(b - a for a, b in itertools.pairwise(bounds))
        self.num_batches = -(-largest // self.local_batch)

    def host_batches(self) -> Iterator[np.ndarray]:
        """This process's images, batched (the last one short)."""
        from mixer_cli.core.tf_cpu import tf
        from mixer_cli.data.preprocess import decode, eval_resize, to_model_input

        r = self.resolution

        def load(path: tf.Tensor) -> tf.Tensor:
            image = eval_resize(decode(tf.io.read_file(path), encoded=True), r)
            return to_model_input(tf.ensure_shape(image, [r, r, 3]), None)

        files = tf.data.Dataset.from_tensor_slices(tf.constant(self.paths, tf.string))
        return files.map(load).batch(self.local_batch).as_numpy_iterator()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from mixer_cli.core.distributed import batch_sharding, to_global

        r, local, host = self.resolution, self.local_batch, self.host_batches()
        for _ in range(self.num_batches):  # every process as many batches (padding only)
            batch = next(host, np.zeros((0, r, r, 3), np.float32))
            padded = np.zeros((local, r, r, 3), np.float32)
            padded[: len(batch)] = batch
            mask = np.arange(local) < len(batch)
            yield to_global({"image": padded, "mask": mask}, batch_sharding(self.mesh))


def predict(
    loaded: Any, paths: Sequence[Path], names: Sequence[str], top_k: int, batch_size: int
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """(one record per readable image: path, top-K labels and probabilities; the damaged
    files with why)."""
    from mixer_cli.core.distributed import make_mesh
    from mixer_cli.evals.forward import PROBABILITIES, TopK, forward_function, forward_loop

    damaged = find_damaged([str(p) for p in paths], undecodable)  # decoded: they are few
    bad = {path for path, _ in damaged}
    good = [p for p in paths if str(p) not in bad]
    if not good:
        raise DataError(f"none of the {len(paths)} file(s) is a readable image: {listing(damaged)}")
    mesh = make_mesh()
    batch_size = -(-batch_size // mesh.devices.size) * mesh.devices.size  # whole rows per device
    files = ImageFiles(good, loaded.resolution, batch_size, mesh)
    forward = forward_function(loaded.model, mesh, frozenset({PROBABILITIES}), "softmax")
    top = TopK(min(top_k, len(names)))
    forward_loop(files, forward, loaded.params, [top], mesh=mesh, local_batch=files.local_batch)
    records = [
        {
            "path": str(path),
            "top": [
                {"label": names[c], "index": int(c), "probability": float(p)}
                for c, p in zip(order, probabilities, strict=True)
            ],
        }
        for path, order, probabilities in zip(good, *top.columns(), strict=True)
    ]
    return records, damaged


@dataclass(frozen=True)
class PredictRequest:
    """What `mixer predict` was asked: files and folders, the checkpoint (None: the
    newest finished run), how many classes per image."""

    paths: tuple[Path, ...]
    init: Path | None = None
    top: int = 5
    resolution: int | None = None
    batch_size: int = 64
    workdir: Path | None = None


@dataclass
class Predictions:
    """Every readable image's top classes, the files skipped, and where they are kept."""

    records: list[dict[str, Any]]
    skipped: list[tuple[str, str]]  # (path, why)
    title: str  # of the table
    workdir: Path


def run_predict(request: PredictRequest) -> Predictions:
    """Classify the files (warning of each damaged one) and write results.json."""
    from mixer_cli.core import report
    from mixer_cli.models.registry import load_checkpoint
    from mixer_cli.train.workdir import default_workdir, latest_run

    files, init = image_paths(request.paths), request.init
    if init is None:
        init = latest_run(Path("runs"))
        report.stderr.print(
            f"predicting with {init} (the newest finished run; --init picks another)"
        )
    loaded = load_checkpoint(init, request.resolution)
    if not loaded.num_classes:
        raise ConfigError(
            f"{init} has no classifier head (a feature extractor, or a segmentation "
            "model's backbone): nothing to predict"
        )
    names = class_names(init, loaded.num_classes)
    records, damaged = predict(loaded, files, names, request.top, request.batch_size)
    for path, why in damaged:
        report.stderr.print(f"[yellow]warning:[/] skipped {path}: {why}", soft_wrap=True)
    workdir = Path(request.workdir or default_workdir("predict", loaded.name, "files"))
    report.write_json(
        workdir / "results.json",
        {"command": "predict", "init": str(init), "variant": loaded.name,
         "resolution": loaded.resolution, "predictions": records,
         "skipped": [{"path": p, "why": why} for p, why in damaged]},
    )  # fmt: skip
    title = f"{loaded.name} at {loaded.resolution} px: top {request.top} of "
    return Predictions(records, damaged, f"{title}{loaded.num_classes} classes", workdir)


def print_predictions(predictions: Predictions, as_json: bool) -> None:
    """One JSON object per image, or a table and where results.json is."""
    import json

    from mixer_cli.core import report

    if as_json:
        for record in predictions.records:
            print(json.dumps(record))
        return
    report.print_table(
        predictions.title,
        [
            report.Column("path", "image", justify="left"),
            report.Column("classes", "classes (probability)", justify="left"),
        ],
        [
            {
                "path": r["path"],
                "classes": ", ".join(f"{t['label']} ({t['probability']:.1%})" for t in r["top"]),
            }
            for r in predictions.records
        ],
    )
    report.stderr.print(f"results in {predictions.workdir / 'results.json'}")
