"""The loader choice at 224 px, measured: mixer's tf.data pipeline against grain on ArrayRecord.

    python benchmarks/loaders.py                            # 2,000 JPEGs, 5 windows of 4 s
    python benchmarks/loaders.py --images 64 --seconds 3    # a quick check

Needs `pip install grain` (not a mixer dependency; `array_record` comes with
tensorflow-datasets). --workers, --threads and --decoders take comma lists to sweep.

One folder of ImageNet-sized JPEGs (500x375, as `data_pipeline.py imagenet-like` makes
them), batches of 64 at 224 px, uint8, one row per loader and setting:

- tf.data, augment_on=device (the default): `TrainBatches.host_batches`, i.e. inception
  crop (`decode_and_crop_jpeg` decodes only the window) and antialiased bilinear resize to
  224, uint8; the flip runs in the train step (grain's rows flip on the host: a reversed
  view that batching copies anyway). tf.data's thread pool, one process.
- tf.data, augment_on=host: the same plus the flip, RandAugment(2,15) and floats in
  [-1, 1] on the host (the earlier pipeline; its output is float32).
- grain: the same JPEGs converted once into one ArrayRecord file (timed, reported), read
  with grain's Dataset API: `MapDataset.source(ArrayRecordDataSource)`, a global shuffle
  per epoch, `random_map` (decode + inception crop + resize to 224 + flip, uint8),
  `to_iter_dataset` (grain's thread pool, --threads per process), `batch`, `mp_prefetch`
  with 0, 1, 2 worker processes (the Dataset API's name for the DataLoader's
  `worker_count`; 0 = all in this process). Two per-example functions: `tf` runs mixer's
  own `inception_crop` as a tf.function inside grain's map (the same ops as the tf.data
  rows), `pil` is grain's usual idiom: PIL decodes the whole JPEG, a window from the same
  distribution (its own sampler), PIL's antialiased bilinear resize, NumPy flip.

Each row: a warm-up (3 batches: pipeline building, worker start-up, tracing), then
--windows windows of --seconds each; the median img/s, per host core (the cores this
process may run on), and images per CPU-second (user + system time of this process and
its worker processes over the windows: less sensitive than wall time to other load on a
shared machine). `resume`: whether each loader's exact resume gave the same batch. tf.data
rebuilds the stream at the step after the warm-up, as a resumed run does
(`TrainBatches(start_step=...)`); grain saves its iterator's state before that batch
(`get_state`) and restores it after the windows (`set_state`). Not a test: the table and
a JSON file (--out) are for benchmarks/RESULTS.md.

Exact resume, as each does it. mixer's training stream is a pure function of (seed,
step): every epoch is a permutation seeded by (seed, epoch), every example's crop, flip and
RandAugment draw are keyed by (seed, epoch, position) with TensorFlow's stateless RNG, and
the device augmentation by the step's key. A run resumed at step s builds the stream of
epoch s // steps_per_epoch and skips the first (s mod steps_per_epoch) x batch index
tuples before anything is read or decoded; the checkpoint holds no loader state beyond
the step, and a multi-process run reads the rows of the single-process run's global
batches. grain's `DatasetIterator.get_state()` returns a small JSON-able dict
(`{"next_index": n}` in one process; with `mp_prefetch` one such state per worker and
which worker is next) that is saved with the model (Orbax: `grain.checkpoint.CheckpointSave`
writes one `process_I-of-N.json` per JAX process) and given back with `set_state`;
`shuffle` is seeded by (seed, epoch) and `random_map`'s generator by (seed, the element's
index in the repeated stream), so the restored stream is exact. Batching before
`mp_prefetch` (as here: each worker batches its own slice) makes both the batches and that
state depend on the worker count: grain's documentation warns that output changes when
`num_workers` does, and a run resumed with another count does not continue the same
stream. Docs:
https://google-grain.readthedocs.io/en/latest/tutorials/dataset_basic_tutorial.html
(`DatasetIterator`: "The state of the iterator can be cheaply saved and restored").
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import threading
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import grain
import numpy as np
import psutil
from PIL import Image

# One record per read (grain reads records at random), stored as is: JPEG is compressed.
RECORD_OPTIONS = "group_size:1,uncompressed"
WARMUP_BATCHES = 3
MIN_AREA, ASPECTS = 0.05, (3 / 4, 4 / 3)  # mixer's inception crop (Preprocessing defaults)


def encode_record(label: int, data: bytes) -> bytes:
    return label.to_bytes(4, "little") + data


def decode_record(record: bytes) -> tuple[int, bytes]:
    return int.from_bytes(record[:4], "little"), record[4:]


def jpeg_files(root: Path) -> list[tuple[Path, int]]:
    """The training JPEGs and their labels, classes in sorted order (as mixer's folder)."""
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    return [
        (path, label)
        for label, name in enumerate(classes)
        for path in sorted((root / "train" / name).glob("*.jpg"))
    ]


def convert(root: Path, path: Path) -> dict[str, Any]:
    """Write the folder's JPEGs into one ArrayRecord file: (label, JPEG bytes) per record."""
    from array_record.python.array_record_module import ArrayRecordWriter

    files = jpeg_files(root)
    start = time.perf_counter()
    writer = ArrayRecordWriter(str(path), RECORD_OPTIONS)
    for file, label in files:
        writer.write(encode_record(label, file.read_bytes()))
    writer.close()
    seconds = time.perf_counter() - start
    return {
        "images": len(files),
        "seconds": seconds,
        "images_per_sec": len(files) / seconds,
        "jpeg_bytes": sum(file.stat().st_size for file, _ in files),
        "file_bytes": path.stat().st_size,
        "options": RECORD_OPTIONS,
    }


def crop_box(width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A window of area [MIN_AREA, 1] and aspect ASPECTS placed uniformly, as
    `tf.image.sample_distorted_bounding_box` draws it; the whole image if 10 draws miss."""
    for _ in range(10):
        area = rng.uniform(MIN_AREA, 1.0) * width * height
        aspect = rng.uniform(*ASPECTS)
        w, h = round((area * aspect) ** 0.5), round((area / aspect) ** 0.5)
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.integers(width - w + 1), rng.integers(height - h + 1)
            return left, top, left + w, top + h
    return 0, 0, width, height


class PilCrop(grain.transforms.RandomMap):
    """Decode (PIL, the whole JPEG), inception crop, resize to `resolution`, flip: uint8."""

    def __init__(self, resolution: int) -> None:
        self.resolution = resolution

    def random_map(self, record: bytes, rng: np.random.Generator) -> dict[str, np.ndarray]:
        label, data = decode_record(record)
        with Image.open(io.BytesIO(data)) as image:
            rgb = image.convert("RGB")
        r = self.resolution
        rgb = rgb.resize((r, r), Image.Resampling.BILINEAR, box=crop_box(*rgb.size, rng))
        pixels = np.asarray(rgb)
        return {"image": pixels[:, ::-1] if rng.random() < 0.5 else pixels, "label": label}


class TfCrop(grain.transforms.RandomMap):
    """mixer's `inception_crop` (decode of the window only, antialiased bilinear resize) as
    a tf.function, then the flip: uint8. Traced once per process, on first use (under a
    lock: grain's threads calling it first at once would each trace it)."""

    def __init__(self, resolution: int) -> None:
        self.resolution, self._crop, self._lock = resolution, None, threading.Lock()

    def __getstate__(self) -> dict[str, Any]:  # grain pickles the map into its workers
        return {"resolution": self.resolution}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["resolution"])

    def _function(self) -> Any:
        with self._lock:
            if self._crop is None:
                from mixer_cli.core.tf_cpu import tf
                from mixer_cli.data.preprocess import inception_crop

                def crop(data: Any, seed: Any) -> Any:
                    return inception_crop(data, True, seed, MIN_AREA, self.resolution)

                spec = (tf.TensorSpec([], tf.string), tf.TensorSpec([2], tf.int64))
                function = tf.function(crop, input_signature=spec, autograph=False)
                function.get_concrete_function()  # traced here, not by each of the threads
                self._crop = function
        return self._crop

    def random_map(self, record: bytes, rng: np.random.Generator) -> dict[str, np.ndarray]:
        label, data = decode_record(record)
        seed = rng.integers(0, 2**31, size=2, dtype=np.int64)
        pixels = self._function()(data, seed).numpy()
        return {"image": pixels[:, ::-1] if rng.random() < 0.5 else pixels, "label": label}


def grain_stream(
    path: Path, decoder: str, args: argparse.Namespace, threads: int, workers: int
) -> Any:
    crop = {"tf": TfCrop, "pil": PilCrop}[decoder](args.resolution)
    ds = (
        grain.MapDataset.source(grain.sources.ArrayRecordDataSource(str(path)))
        .seed(args.seed)
        .shuffle()  # a new permutation each epoch
        .repeat()
        .random_map(crop)
        .to_iter_dataset(grain.ReadOptions(num_threads=threads))
        .batch(args.batch_size, drop_remainder=True)
    )
    if workers:
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    return iter(ds)


def cpu_seconds() -> float:
    """User + system time of this process and its live descendants (grain's workers)."""
    me, total = psutil.Process(), 0.0
    for process in (me, *me.children(recursive=True)):
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def timed(stream: Iterator, args: argparse.Namespace, cores: int) -> dict[str, Any]:
    """img/s over --windows windows of --seconds (median), per core and per CPU-second."""
    rates, images, cpu_before, wall_before = [], 0, cpu_seconds(), time.perf_counter()
    for _ in range(args.windows):
        start, batches = time.perf_counter(), 0
        while (elapsed := time.perf_counter() - start) < args.seconds:
            next(stream)
            batches += 1
        rates.append(batches * args.batch_size / elapsed)
        images += batches * args.batch_size
    cpu = cpu_seconds() - cpu_before
    median = statistics.median(rates)
    return {
        "images_per_sec": median,
        "images_per_sec_per_core": median / cores,
        "images_per_cpu_second": images / cpu,
        "cpu_busy": cpu / (time.perf_counter() - wall_before),  # cores kept busy on average
        "windows": rates,
    }


def same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def tfdata_row(root: Path, augment_on: str, args: argparse.Namespace, cores: int) -> dict:
    from mixer_cli.core.distributed import make_mesh
    from mixer_cli.data import Preprocessing, TrainBatches, open_dataset

    layers, magnitude = (2, 15) if augment_on == "host" else (0, 0)
    pre = Preprocessing(
        args.resolution,
        randaug_layers=layers,
        randaug_magnitude=magnitude,
        augment_on=augment_on,
    )
    source = open_dataset(f"folder:{root}")

    def stream(start_step: int) -> Iterator[dict[str, np.ndarray]]:
        return TrainBatches(
            source, source.train_split, pre, args.batch_size, args.seed, make_mesh(), start_step
        ).host_batches()

    batches = stream(0)
    for _ in range(WARMUP_BATCHES):
        next(batches)
    first = next(batches)
    row = timed(batches, args, cores)
    batches.close()
    resumed = stream(WARMUP_BATCHES)
    row["resume_exact"] = same(first, next(resumed))
    resumed.close()
    work = "crop+resize, uint8" if augment_on == "device" else "crop+resize+flip+RA(2,15), f32"
    return {"loader": "tf.data", "setting": f"augment_on={augment_on}", "work": work, **row}


def grain_row(
    path: Path, decoder: str, threads: int, workers: int, args: argparse.Namespace, cores: int
) -> dict[str, Any]:
    batches = grain_stream(path, decoder, args, threads, workers)
    for _ in range(WARMUP_BATCHES):
        next(batches)
    state = batches.get_state()
    first = next(batches)
    row = timed(batches, args, cores)
    batches.set_state(state)
    row["resume_exact"] = same(first, next(batches))
    row["state_bytes"] = len(json.dumps(state))
    batches.close()
    return {
        "loader": "grain",
        "setting": f"{decoder}, workers={workers}, threads={threads}",
        "work": "crop+resize+flip, uint8",
        **row,
    }


def print_table(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    s = results["settings"]
    table = Table(
        title=f"{s['images']} JPEGs 500x375 -> {s['resolution']} px, batch {s['batch_size']}, "
        f"{s['cores']} host cores, median of {s['windows']} x {s['seconds']} s"
    )
    columns = ("loader", "setting", "host work", "img/s", "img/s/core", "img/CPU-s", "CPUs busy")
    for column in columns:
        table.add_column(column, justify="right" if column in columns[3:] else "left")
    table.add_column("resume exact")
    for row in results["rows"]:
        table.add_row(
            row["loader"],
            row["setting"],
            row["work"],
            f"{row['images_per_sec']:,.0f}",
            f"{row['images_per_sec_per_core']:,.0f}",
            f"{row['images_per_cpu_second']:,.0f}",
            f"{row['cpu_busy']:.2f}",
            str(row["resume_exact"]),
        )
    Console(width=160).print(table)
    c = results["conversion"]
    print(
        f"ArrayRecord conversion (once): {c['images']} JPEGs in {c['seconds']:.2f} s "
        f"({c['images_per_sec']:,.0f} img/s), {c['jpeg_bytes'] / 2**20:.1f} MiB of JPEG -> "
        f"{c['file_bytes'] / 2**20:.1f} MiB file ({c['options']})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of a timed window")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--workers", default="0,1,2", help="grain worker processes to try")
    parser.add_argument("--decoders", default="tf,pil", help="grain per-example functions")
    parser.add_argument("--threads", default="16", help="grain's ReadOptions.num_threads to try")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mixer-bench"))
    parser.add_argument("--out", type=Path, help="JSON results (default: WORKDIR/loaders.json)")
    args = parser.parse_args()

    from absl import flags  # grain reads its absl flags; argparse has the command line
    from data_pipeline import make_imagenet_like

    from mixer_cli.core.tf_cpu import tf
    from mixer_cli.train.throughput import host_cores

    flags.FLAGS.mark_as_parsed()
    name = "imagenet-like" if args.images == 2000 else f"imagenet-like-{args.images}"
    root = make_imagenet_like(args.workdir / name, args.images)  # data_pipeline.py's folder
    record_file = args.workdir / f"{name}.array_record"
    conversion = convert(root, record_file)
    cores = host_cores()
    rows = [tfdata_row(root, place, args, cores) for place in ("device", "host")]
    for decoder in args.decoders.split(","):
        for threads in (int(t) for t in args.threads.split(",")):
            for workers in (int(w) for w in args.workers.split(",")):
                rows.append(grain_row(record_file, decoder, threads, workers, args, cores))
    results = {
        "settings": {
            **{k: getattr(args, k) for k in ("images", "batch_size", "resolution")},
            **{k: getattr(args, k) for k in ("windows", "seconds", "seed")},
            "folder": str(root),
            "cores": cores,
        },
        "versions": {
            **{p: version(p) for p in ("grain", "array_record", "pillow")},
            "tensorflow": tf.__version__,
        },
        "conversion": conversion,
        "rows": rows,
    }
    out = args.out or args.workdir / "loaders.json"
    out.write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"JSON: {out}")


if __name__ == "__main__":
    main()
