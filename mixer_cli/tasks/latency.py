"""Per-call latency of a model: JAX, or an exported file in its own runtime.

`mixer bench --mode latency` times single calls (batch 1 by default) after a warm-up and
reports p50/p90/p99 in milliseconds, once on one core and once on all. Each setting runs
in a child process pinned with `sched_setaffinity` before any runtime starts, so "one
core" means the same for XLA, ONNX Runtime and TFLite (their own thread settings follow:
ONNX Runtime's intra-op threads, TFLite's num_threads); the parent only starts children
and reads their JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixer_cli.core import files
from mixer_cli.core.errors import ConfigError
from mixer_cli.export import formats

PERCENTILES = (50, 90, 99)
# What timing an export reads of its export.json (`tasks.export.describe` writes it).
EXPORT_RECORD = {"model": str, "file": str, "input": dict, "input.shape": list,
                 "input.shape.*": (int, str), "input.dtype": {"uint8", "float32"}}  # fmt: skip


@dataclass(frozen=True)
class LatencySettings:
    """What `mixer bench --mode latency` times: a JAX model, or `exported` (a `mixer export`
    directory or its model file) in its runtime."""

    variant: str = "B/16"
    resolution: int = 224
    batch_size: int = 1
    dtype: str = "float32"
    num_classes: int = 1000
    model_options: tuple[str, ...] = ()  # --set model.KEY=VALUE
    exported: Path | None = None
    calls: int = 200

    def spec(self) -> dict[str, Any]:
        """The settings as the child processes read them (and results.json records them)."""
        return {
            "variant": self.variant,
            "resolution": self.resolution,
            "dtype": self.dtype,
            "num_classes": self.num_classes,
            "model_options": list(self.model_options),
            "batch_size": self.batch_size,
            "exported": None if self.exported is None else str(self.exported),
            "calls": self.calls,
            "warmup": max(5, self.calls // 10),
        }

    def name(self) -> str:
        """What the default workdir is named after."""
        return "exported" if self.exported is not None else self.variant


def describe(settings: LatencySettings) -> str:
    """What is timed, for messages; refuses a bad variant or a foreign file."""
    if settings.exported is None:  # (no device-count check: each timing runs on one device)
        from mixer_cli.config import model_config
        from mixer_cli.models import registry

        m = model_config(
            settings.variant, settings.resolution, settings.dtype, list(settings.model_options)
        )
        return registry.get(m.family).parse(m)
    path, record = exported_file(settings.exported)
    return f"{record['model']} ({path.name})"


def measure(settings: LatencySettings, what: str) -> dict[str, Any]:
    """results.json of a latency run: the settings and each setting's percentiles."""
    spec = settings.spec()
    timings = run_latency(spec)
    return {"command": "bench", "mode": "latency", "model": what, **spec, "latency": timings}


def percentiles(fn: Callable[[], Any], calls: int, warmup: int) -> dict[str, float]:
    """Milliseconds per call of `fn` (which must block until its result is ready)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    stats = {f"p{p}_ms": float(np.percentile(times, p)) for p in PERCENTILES}
    return {**stats, "mean_ms": float(np.mean(times)), "calls": calls}


def exported_file(path: Path) -> tuple[Path, dict[str, Any]]:
    """The model file of an export directory (or the file itself) and its export.json."""
    path = Path(path)
    record_path = (path if path.is_dir() else path.parent) / "export.json"
    if not record_path.is_file():
        raise ConfigError(f"{path} is not a mixer export (no export.json beside it)")
    fix = "give --exported a directory that `mixer export` wrote"
    record = files.read_json(record_path, "a mixer export record", EXPORT_RECORD, fix=fix)
    if len(record["input"]["shape"]) != 4:
        raise ConfigError(f"{record_path}: input.shape should be [batch, R, R, 3]; {fix}")
    model = path / record["file"] if path.is_dir() else path
    if not model.is_file():
        raise ConfigError(f"{path}: its export.json names {record['file']}, which is missing")
    formats.for_file(model)  # a format mixer export writes
    return model, record


def _exported_callable(path: Path, record: dict[str, Any], batch: int, threads: int) -> Any:
    shape = record["input"]["shape"]
    if isinstance(shape[0], int) and shape[0] != batch:
        raise ConfigError(f"{path} takes a batch of {shape[0]}: give --batch-size {shape[0]}")
    dtype = np.uint8 if record["input"]["dtype"] == "uint8" else np.float32
    images = np.zeros((batch, *shape[1:]), dtype)
    run = formats.for_file(path).load(path, threads)
    return lambda: run(images)


def _jax_callable(spec: dict[str, Any], batch: int) -> Any:
    import jax
    import jax.numpy as jnp

    from mixer_cli.config import model_config
    from mixer_cli.models import registry

    m = model_config(spec["variant"], spec["resolution"], spec["dtype"], spec["model_options"])
    model = registry.get(m.family).build(m, spec["num_classes"], 0.0)
    images = jnp.zeros((batch, m.resolution, m.resolution, 3), jnp.float32)
    params = jax.jit(model.init)(jax.random.key(0), images)["params"]
    forward = jax.jit(lambda p, x: model.apply({"params": p}, x)[0])
    return lambda: jax.block_until_ready(forward(params, images))


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One setting, in this (pinned) process."""
    if spec["cores"] == 1 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    threads = 1 if spec["cores"] == 1 else 0
    batch = spec["batch_size"]
    if spec.get("exported"):
        path, record = exported_file(Path(spec["exported"]))
        fn = _exported_callable(path, record, batch, threads)
    else:
        fn = _jax_callable(spec, batch)
    return percentiles(fn, spec["calls"], spec["warmup"])


def run_latency(spec: dict[str, Any]) -> dict[str, Any]:
    """{'1 core': {...}, 'all cores': {...}} for the JAX model or spec['exported']."""
    if spec.get("exported"):
        exported_file(Path(spec["exported"]))  # refuse a foreign file before any child runs
    out = {}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}  # one device, as deployed
    for label, count in (("1 core", 1), (f"all {cores} cores", 0)):
        done = subprocess.run(
            [sys.executable, "-m", "mixer_cli.tasks.latency", json.dumps({**spec, "cores": count})],
            capture_output=True,
            text=True,
            env=env,
        )
        lines = done.stdout.strip().splitlines()
        if done.returncode or not lines:
            tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
            raise ConfigError(f"the latency run ({label}) failed: {tail[0]}")
        result = json.loads(lines[-1])
        if "error" in result:
            raise ConfigError(result["error"])
        out[label] = result
    return out


if __name__ == "__main__":
    from mixer_cli.core.errors import MixerError

    try:
        print(json.dumps(child(json.loads(sys.argv[1]))))
    except MixerError as err:  # one line for the parent to show
        print(json.dumps({"error": str(err)}))
