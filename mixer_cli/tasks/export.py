"""`mixer export`'s work: build the files, check them in their runtime, write atomically."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixer_cli.core.atomic import atomic_directory
from mixer_cli.core.errors import ConfigError
from mixer_cli.export import FORMATS, INT8_FORMATS, INT8_MODES
from mixer_cli.models import registry

FILES = {"stablehlo": "model.stablehlo", "onnx": "model.onnx", "tflite": "model.tflite"}


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
        if self.format not in FORMATS:
            raise ConfigError(
                f"unknown format {self.format!r}: expected one of {', '.join(FORMATS)}"
            )
        if self.int8 is not None and self.int8 not in INT8_MODES:
            raise ConfigError(f"--int8 {self.int8!r}: expected one of {', '.join(INT8_MODES)}")
        if self.int8 is not None and self.format not in INT8_FORMATS:
            raise ConfigError(
                f"--int8: the {self.format} format cannot carry int8 here; use --format "
                f"{' or '.join(INT8_FORMATS)}"
            )
        if self.format == "tflite" and self.int8 == "static":
            raise ConfigError(
                "--int8 static with --format tflite: TFLite's full-integer conversion also "
                "quantizes every LayerNorm and GELU (top-1 agreed with float on 73% of digits' "
                "test split); use --int8 dynamic, or --format onnx for static int8"
            )
        if self.float_token_mixing and (self.int8 is None or self.format != "onnx"):
            raise ConfigError("--float-token-mixing applies to --format onnx with --int8")
        if self.out.exists() and not self.overwrite:
            raise ConfigError(f"{self.out} exists: choose another --out or pass --overwrite")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"--batch-size must be positive or 'dynamic', got {self.batch_size}")


def _require(*modules: str) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"mixer export needs {' and '.join(missing)}: pip install 'mixer-cli[export]'"
        )


def run_onnx(path: Path, images: np.ndarray, threads: int = 0) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images})[0]


def run_file(path: Path, images: np.ndarray, batch_size: int | None = None) -> np.ndarray:
    """Logits of an exported file in its own runtime (a fixed batch: in padded chunks)."""
    from mixer_cli.export import stablehlo, tflite

    def call(x: np.ndarray) -> np.ndarray:
        if path.suffix == ".onnx":
            return run_onnx(path, x)
        return (tflite.run if path.suffix == ".tflite" else stablehlo.run)(str(path), x)

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
    settings.check()
    _require({"onnx": "onnx", "stablehlo": "jax", "tflite": "tensorflow"}[settings.format],
             "onnxruntime")  # fmt: skip
    if settings.format == "onnx" and not registry.get(loaded.family).exports_onnx:
        covered = ", ".join(registry.families_that("exports_onnx"))
        raise ConfigError(
            f"ONNX export covers the {covered} family; {source} is a {loaded.family}: use "
            "--format stablehlo"
        )
    if settings.int8 == "static" and calibration is None:
        raise ConfigError("--int8 static calibrates on real images: give --data")
    float_input = check_images.astype(np.float32)
    feed = _as_input(float_input, settings.uint8_input)
    want = np.asarray(loaded.model.apply({"params": loaded.params}, _as_model_input(feed))[0])
    # TFLite wants a fixed batch: 1 unless one is given
    batch = settings.batch_size or (1 if settings.format == "tflite" else None)
    with atomic_directory(settings.out) as staging:
        path = staging / FILES[settings.format]
        int8_path = path.with_name(f"model.int8{path.suffix}")
        args = (loaded.model, loaded.params, loaded.resolution, batch, settings.uint8_input)
        if settings.format == "onnx":
            from mixer_cli.export.onnx_graph import mixer_graph
            from mixer_cli.export.quantize import quantize
            from mixer_cli.weights.arrays import flat_params

            graph = mixer_graph(
                flat_params(loaded.params),
                loaded.resolution,
                gelu=loaded.details.get("gelu", "tanh"),
                batch_size=batch,
                uint8_input=settings.uint8_input,
            )
            path.write_bytes(graph.SerializeToString())
            if settings.int8:
                quantize(path, int8_path, settings.int8, calibration, settings.float_token_mixing)
        elif settings.format == "tflite":
            from mixer_cli.export import tflite

            path.write_bytes(tflite.export_bytes(*args))
            if settings.int8:
                int8_path.write_bytes(tflite.export_bytes(*args, settings.int8))
        else:
            from mixer_cli.export import stablehlo

            path.write_bytes(stablehlo.export_bytes(*args))
        got = run_file(path, feed, batch)
        record: dict[str, Any] = {
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
            "checked_on": len(feed),
            "max_abs_diff": float(np.abs(got - want).max()),
            "settings": {
                k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()
            },
        }
        if settings.int8:
            int8 = run_file(int8_path, feed, batch)
            record["int8"] = {
                "file": int8_path.name,
                "mode": settings.int8,
                "top1_agreement": float(np.mean(int8.argmax(-1) == want.argmax(-1))),
                "max_abs_diff": float(np.abs(int8 - want).max()),
            }
            if labels is not None:
                record["int8"]["top1"] = float(np.mean(int8.argmax(-1) == labels))
        if labels is not None:
            record["top1"] = float(np.mean(want.argmax(-1) == labels))
        (staging / "export.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def _as_input(images: np.ndarray, uint8: bool) -> np.ndarray:
    if not uint8:
        return images
    return np.clip(np.round((images + 1) * 127.5), 0, 255).astype(np.uint8)


def _as_model_input(feed: np.ndarray) -> np.ndarray:
    return feed.astype(np.float32) * (2 / 255) - 1 if feed.dtype == np.uint8 else feed
