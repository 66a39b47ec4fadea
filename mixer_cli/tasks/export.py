"""`mixer export`'s work: build the files, check them in their runtime, write atomically.

What differs between formats is in `mixer_cli.export.formats` (one entry per format);
this module runs the steps every format goes through.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixer_cli.core.atomic import atomic_directory
from mixer_cli.core.errors import ConfigError
from mixer_cli.export import formats
from mixer_cli.export.formats import INT8_MODES, ExportFormat, WriteRequest
from mixer_cli.models import registry

FILES = {name: f.file for name, f in formats.REGISTRY.items()}
CHECK_IMAGES_RANDOM = 16  # without --data: random images to compare runtimes on


@dataclass(frozen=True)
class ExportSettings:
    format: str
    out: Path
    int8: str | None = None  # dynamic | static (ONNX, TFLite)
    batch_size: int | None = None  # None: dynamic
    uint8_input: bool = False
    overwrite: bool = False
    float_token_mixing: bool = False  # with int8 (ONNX): token mixing's MatMuls stay float

    def check(self) -> None:
        fmt = formats.get(self.format)  # refuses an unknown one, naming the formats
        if self.int8 is not None and self.int8 not in INT8_MODES:
            raise ConfigError(f"--int8 {self.int8!r}: expected one of {', '.join(INT8_MODES)}")
        formats.check_int8(fmt, self.int8, self.float_token_mixing)
        if self.out.exists() and not self.overwrite:
            raise ConfigError(f"{self.out} exists: choose another --out or pass --overwrite")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"--batch-size must be positive or 'dynamic', got {self.batch_size}")

    def exported_format(self) -> ExportFormat:
        return formats.get(self.format)


def parse_batch_size(text: str) -> int | None:
    """--batch-size: a positive integer, or dynamic (None)."""
    if text != "dynamic" and not text.isdigit():
        raise ConfigError(f"--batch-size must be a positive integer or dynamic, got {text!r}")
    return None if text == "dynamic" else int(text)


def check_inputs(
    loaded: Any, data: str | None, data_dir: str | None, count: int, int8: str | None
) -> tuple[np.ndarray, np.ndarray | None, Iterator[np.ndarray] | None]:
    """(images to compare runtimes on, their labels, static int8's calibration batches):
    the first `count` test images of `data`, else random ones with neither."""
    if data is None:
        rng = np.random.default_rng(0)
        r = loaded.resolution
        return rng.uniform(-1, 1, (CHECK_IMAGES_RANDOM, r, r, 3)), None, None
    from mixer_cli.export.images import calibration_batches, test_images

    images, labels = test_images(data, data_dir, loaded.resolution, count)
    calibration = None
    if int8 == "static":  # its first batch read now: unusable data is refused before any file
        batches = calibration_batches(data, data_dir, loaded.resolution)
        calibration = itertools.chain([next(batches)], batches)
    return images, labels, calibration


def run_onnx(path: Path, images: np.ndarray, threads: int = 0) -> np.ndarray:
    """Logits of an ONNX file in ONNX Runtime."""
    return formats.get("onnx").load(Path(path), threads)(images)


def run_file(path: Path, images: np.ndarray, batch_size: int | None = None) -> np.ndarray:
    """Logits of an exported file in its own runtime (a fixed batch: in padded chunks)."""
    return run_format(formats.for_file(path), path, images, batch_size)


def run_format(
    fmt: ExportFormat, path: Path, images: np.ndarray, batch_size: int | None
) -> np.ndarray:
    """Logits of a file of format `fmt` in its runtime (a fixed batch: in padded chunks)."""
    call = fmt.load(Path(path), 0)
    if batch_size is None:
        return call(images)
    chunks = []
    for start in range(0, len(images), batch_size):
        part = images[start : start + batch_size]
        padded = np.concatenate([part, np.zeros_like(images[: batch_size - len(part)])])
        chunks.append(call(padded)[: len(part)])
    return np.concatenate(chunks)


def write_export(
    loaded: Any,
    settings: ExportSettings,
    check_images: np.ndarray,
    labels: np.ndarray | None,
    calibration: Iterator[np.ndarray] | None,
    source: str,
) -> dict[str, Any]:
    """Write settings.out (a directory) and return export.json's contents."""
    fmt = check_request(loaded, settings, calibration, source)
    feed = _as_input(check_images.astype(np.float32), settings.uint8_input)
    import jax  # one compiled forward pass (op by op, a ViT's took seconds longer)

    apply = jax.jit(loaded.model.apply)
    want = np.asarray(apply({"params": loaded.params}, _as_model_input(feed))[0])
    batch = settings.batch_size or fmt.default_batch
    request = WriteRequest(
        loaded=loaded,
        batch=batch,
        uint8_input=settings.uint8_input,
        int8=settings.int8,
        calibration=None if calibration is None else graph_inputs(calibration, batch, feed.dtype),
        float_token_mixing=settings.float_token_mixing,
    )
    with atomic_directory(settings.out) as staging:
        path, int8_path = staging / fmt.file, staging / fmt.int8_file
        fmt.write(request, path)
        if settings.int8:
            quantize(fmt, request, path, int8_path)
        diff = np.abs(run_format(fmt, path, feed, request.batch) - want).max()
        record = describe(loaded, settings, source, path, request.batch, len(feed), diff)
        if settings.int8:
            record["int8"] = int8_agreement(fmt, int8_path, settings, feed, want, labels)
        if labels is not None:
            record["top1"] = _top1(want, labels)
        (staging / "export.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def graph_inputs(
    batches: Iterator[np.ndarray], batch: int | None, dtype: np.dtype
) -> Iterator[np.ndarray]:
    """Calibration images as the graph takes them: its input dtype (uint8 pixels with
    --uint8-input) and, for a fixed batch, batches of exactly that size (the last one
    filled up with its own images again)."""
    pending = None
    for images in batches:
        images = _as_input(images.astype(np.float32), dtype == np.uint8)
        if batch is None:
            yield images
            continue
        pending = images if pending is None else np.concatenate([pending, images])
        while len(pending) >= batch:
            yield pending[:batch]
            pending = pending[batch:]
    if pending is not None and len(pending):
        yield np.resize(pending, (batch, *pending.shape[1:]))  # repeats whole images


def check_request(
    loaded: Any, settings: ExportSettings, calibration: Iterator | None, source: str
) -> ExportFormat:
    """Refuse an export that cannot be written: the settings, the format's modules, the
    model family (and --float-token-mixing for one without token-mixing weights), static
    int8 without calibration images."""
    settings.check()
    fmt = settings.exported_format()
    formats.require(fmt)
    formats.check_family(fmt, loaded.family, source)
    if settings.float_token_mixing and registry.get(loaded.family).token_weights is None:
        raise ConfigError(
            f"--float-token-mixing: {source} is a {loaded.family}, which has no token-mixing "
            "weights to keep in float (attention or convolution mixes its tokens); leave it out"
        )
    if settings.int8 == "static" and calibration is None:
        raise ConfigError("--int8 static calibrates on real images: give --data")
    return fmt


def quantize(fmt: ExportFormat, request: WriteRequest, path: Path, int8_path: Path) -> None:
    """The int8 model beside the float one."""
    assert fmt.write_int8 is not None  # ExportSettings.check refused the others
    fmt.write_int8(request, path, int8_path)


def describe(
    loaded: Any,
    settings: ExportSettings,
    source: str,
    path: Path,
    batch: int | None,
    checked: int,
    max_abs_diff: float,
) -> dict[str, Any]:
    """export.json: what the file is, takes and gives, and how close it came to JAX."""
    return {
        "source": source,
        "family": loaded.family,
        "model": loaded.name,
        "format": settings.format,
        "file": path.name,
        "input": {
            "name": "images",
            "shape": [batch or "batch", loaded.resolution, loaded.resolution, 3],
            "dtype": "uint8" if settings.uint8_input else "float32",
            "values": "pixels 0-255 (scaled inside)" if settings.uint8_input else "[-1, 1]",
            "layout": "NHWC, RGB, after the evaluation crop",
        },
        "output": {"name": "logits", "classes": loaded.num_classes},
        "gelu": loaded.details.get("gelu", "tanh"),
        "checked_on": checked,
        "max_abs_diff": float(max_abs_diff),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()},
    }


def int8_agreement(
    fmt: ExportFormat,
    int8_path: Path,
    settings: ExportSettings,
    feed: np.ndarray,
    want: np.ndarray,
    labels: np.ndarray | None,
) -> dict[str, Any]:
    """How close the int8 file comes to JAX's float logits (and its top-1 on the labels)."""
    batch = settings.batch_size or fmt.default_batch
    int8 = run_format(fmt, int8_path, feed, batch)
    agreement = {
        "file": int8_path.name,
        "mode": settings.int8,
        "top1_agreement": float(np.mean(int8.argmax(-1) == want.argmax(-1))),
        "max_abs_diff": float(np.abs(int8 - want).max()),
    }
    if labels is not None:
        agreement["top1"] = _top1(int8, labels)
    return agreement


def _top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(logits.argmax(-1) == labels))


def _as_input(images: np.ndarray, uint8: bool) -> np.ndarray:
    if not uint8:
        return images
    return np.clip(np.round((images + 1) * 127.5), 0, 255).astype(np.uint8)


def _as_model_input(feed: np.ndarray) -> np.ndarray:
    return feed.astype(np.float32) * (2 / 255) - 1 if feed.dtype == np.uint8 else feed
