"""How fast a Mixer runs on the devices at hand, and how close that is to their limit.

Throughput is timed on fixed synthetic batches (the input pipeline: input_throughput.py),
over every device with the engine's sharding: forward = the evaluation forward pass;
train = the engine's own step (forward, backward, clipping, AdamW) with donated state,
`steps_per_execution` steps to a program as the engine runs them.
Compilation and a warm-up are excluded; the figure is the median over timed windows.
FLOPs per image come from XLA's cost analysis of the lowered program; the peak is a
large square matmul in the same dtype on the same devices in the same run, so that
MFU = achieved FLOP/s / peak compares like with like on a machine whose speed drifts.
The host's side of the timed windows is counted too (page faults, kernel CPU time): on
CPUs, XLA's freshly faulted-in temporaries can cost a sixth of a step (README, "On a CPU").
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mixer_cli.config import ModelConfig, OptimConfig, TrainConfig, model_config
from mixer_cli.core.distributed import batch_sharding, local_batch_size, make_mesh, replicated
from mixer_cli.core.errors import ConfigError
from mixer_cli.models import registry
from mixer_cli.models.costs import model_flops
from mixer_cli.models.isotropic import compute_dtype
from mixer_cli.train.optim import Optimizer, numbers
from mixer_cli.train.steps import compile_steps, initial_state

MODES = ("forward", "train")
NOT_RECORDED = ("window_seconds", "run_model", "measure_peak")


@dataclass(frozen=True)
class BenchSettings:
    variant: str = "B/16"
    resolution: int = 224
    batch_size: int = 32
    dtype: str = "float32"
    mode: str = "both"  # forward | train | both
    num_classes: int = 1000
    windows: int = 5  # timed windows; the median counts
    steps: int = 0  # steps per window; 0 = enough for about `window_seconds`
    window_seconds: float = 2.0
    peak_size: int = 0  # side of the peak matmul; 0 = 4096 on CPUs, 8192 on accelerators
    steps_per_execution: int = TrainConfig.steps_per_execution  # train steps per program
    model_options: tuple[str, ...] = ()  # --set model.KEY=VALUE: another family's options
    run_model: ModelConfig | None = None  # a run's own model (mixer transfer's), else the above
    measure_peak: bool = True  # the matmul peak (for MFU); off where only img/s is wanted

    def model(self) -> ModelConfig:
        if self.run_model is not None:
            return self.run_model
        return model_config(self.variant, self.resolution, self.dtype, list(self.model_options))

    def modes(self) -> tuple[str, ...]:
        if self.mode == "both":
            return MODES
        if self.mode not in MODES:
            raise ConfigError(
                f"unknown mode {self.mode!r}: expected forward, train, both, latency or input"
            )
        return (self.mode,)


def validate(settings: BenchSettings) -> None:
    """Refuse bad settings before anything is compiled."""
    m = settings.model()
    registry.get(m.family).parse(m)  # the variant, resolution and options
    settings.modes()
    local_batch_size(settings.batch_size, make_mesh())
    for name in ("windows", "num_classes", "steps_per_execution"):
        if getattr(settings, name) < 1:
            raise ConfigError(f"{name.replace('_', ' ')} must be at least 1")
    if settings.steps < 0 or settings.peak_size < 0:
        raise ConfigError("steps per window and the peak matmul size must be >= 0 (0 = automatic)")


def matmul_peak(dtype: Any, size: int, repeats: int = 5) -> float:
    """FLOP/s of square matmuls, one per device, all devices at once: the best of several
    windows of back-to-back calls (so that dispatch gaps do not count on fast devices).

    On random data: constant inputs (zeros, ones) draw less power and can run faster on
    accelerators than real data will.
    """
    mesh = make_mesh()
    n = mesh.devices.size
    sharding = batch_sharding(mesh)
    random = partial(jax.random.normal, shape=(n, size, size), dtype=dtype)
    a = jax.jit(random, out_shardings=sharding)(jax.random.key(0))
    mm = jax.jit(lambda x: jnp.einsum("bij,bjk->bik", x, x), out_shardings=sharding)
    mm(a).block_until_ready()
    once = _seconds(lambda: mm(a).block_until_ready())
    calls = max(1, min(50, round(0.2 / once)))
    best = min(time_window(lambda: mm(a), calls) for _ in range(repeats))
    return 2 * n * size**3 * calls / best


def _seconds(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_window(step: Callable[[], Any], steps: int) -> float:
    """Seconds for `steps` calls of `step`, with at most two steps in flight.

    The next step is queued while one runs, but independent forward passes cannot pile
    up (on CPUs, many concurrent multi-device programs can starve each other's collectives).
    """
    start = time.perf_counter()
    previous = None
    for _ in range(steps):
        out = step()
        jax.block_until_ready(previous)
        previous = out
    jax.block_until_ready(previous)
    return time.perf_counter() - start


class HostUsage:
    """What this process cost the host from its creation on: page faults, and the share of
    its CPU time spent in the kernel (on CPU backends, mostly faulting in fresh pages)."""

    def __init__(self) -> None:
        self.start = resource.getrusage(resource.RUSAGE_SELF)

    def per_step(self, steps: int) -> dict[str, float]:
        end = resource.getrusage(resource.RUSAGE_SELF)
        user, kernel = end.ru_utime - self.start.ru_utime, end.ru_stime - self.start.ru_stime
        return {
            "page_faults_per_step": (end.ru_minflt - self.start.ru_minflt) / steps,
            "kernel_time_share": kernel / (user + kernel) if user + kernel > 0 else 0.0,
        }


def calls_per_window(timed: Timed, settings: BenchSettings) -> int:
    """Calls that make the fixed count of steps (rounded up to whole calls), or as many as
    fill about `window_seconds` (timed after a warm-up call)."""
    jax.block_until_ready(timed.step())  # beyond compilation: first-touch allocations, caches
    if settings.steps:
        return -(-settings.steps // timed.steps_per_call)
    once = time_window(timed.step, 1)
    return max(1, min(100, round(settings.window_seconds / max(once, 1e-6))))


def _memory(compiled: Any) -> int | None:
    """Bytes the compiled program needs (arguments + outputs + temporaries - donated)."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # not every backend implements it
        return None
    if m is None:
        return None
    return int(
        m.argument_size_in_bytes
        + m.output_size_in_bytes
        + m.temp_size_in_bytes
        - m.alias_size_in_bytes
    )


def _device_peak_memory() -> int | None:
    """Peak bytes in use on the first device, where the backend keeps count (GPU, TPU)."""
    stats = jax.local_devices()[0].memory_stats()
    return None if not stats else stats.get("peak_bytes_in_use")


def synthetic_batch(settings: BenchSettings) -> dict[str, np.ndarray]:
    """The fixed batch every benchmark times (benchmarks/compare.py hands it to timm too)."""
    rng = np.random.default_rng(0)
    b, r, k = settings.batch_size, settings.resolution, settings.num_classes
    labels = np.eye(k, dtype=np.float32)[rng.integers(0, k, b)]
    images = rng.uniform(-1, 1, (b, r, r, 3)).astype(np.float32)
    return {"image": images, "label": labels, "mask": np.ones(b, np.float32)}


@dataclass
class Timed:
    """A compiled step ready to call repeatedly, with what XLA says it costs."""

    step: Callable[[], Any]
    compiled: Any
    compile_seconds: float
    flops_per_image: float
    steps_per_call: int = 1


class Workload:
    """The model, optimizer, state and a fixed batch of a benchmark, over all devices; with
    `augment` (the data's device half) the train step runs it first, on `batch` (uint8
    images and integer labels, as the host sends them)."""

    def __init__(
        self,
        settings: BenchSettings,
        augment: Callable[..., Any] | None = None,
        batch: dict[str, np.ndarray] | None = None,
    ) -> None:
        validate(settings)
        self.settings = settings
        self.mesh = make_mesh()
        self.repl, self.rows = replicated(self.mesh), batch_sharding(self.mesh)
        self.dtype = compute_dtype(settings.dtype)
        m = settings.model()
        self.name = registry.get(m.family).parse(m)
        self.model = registry.get(m.family).build(m, settings.num_classes, 0.0)
        optim = OptimConfig(warmup_steps=10)
        optimizer = Optimizer.of(optim)
        self.numbers = jax.device_put(numbers(optim, 10_000), self.repl)
        init = partial(initial_state, self.model, optimizer, settings.resolution)
        self.state = jax.jit(init, out_shardings=self.repl)(jax.random.key(0))
        self.batch = jax.device_put(
            synthetic_batch(settings) if batch is None else batch, self.rows
        )
        self.steps = compile_steps(
            self.model,
            optimizer,
            loss_kind="softmax",
            accum_steps=1,
            replicated=self.repl,
            rows=self.rows,
            **({} if augment is None else {"augment": augment}),
        )

    def forward(self) -> Timed:
        """The evaluation forward pass (the evaluators' classification pass)."""
        from mixer_cli.evals.base import SUMS
        from mixer_cli.evals.forward import forward_function

        fn = forward_function(self.model, self.mesh, frozenset({SUMS}), "softmax")
        args = (self.state.params, self.batch)
        compiled, seconds = self._compile(fn, *args)
        flops = model_flops(fn, *args) / self.settings.batch_size
        return Timed(partial(compiled, *args), compiled, seconds, flops)

    def train(self) -> Timed:
        """The engine's train steps, `steps_per_execution` to a call (the same batch each
        time); the state they update lives in `self.state`."""
        batch = {k: self.batch[k] for k in ("image", "label")}
        group = self.settings.steps_per_execution
        if group == 1:
            fn, args = self.steps.train, (self.state, batch, self.numbers)
        else:
            fn, args = self.steps.train_many, (self.state, (batch,) * group, self.numbers)
        compiled, seconds = self._compile(fn, *args)
        # One step's work (a scan's cost analysis counts its body once, not per trip).
        flops = model_flops(self.steps.train, self.state, batch, self.numbers)
        flops /= self.settings.batch_size

        def step() -> Any:
            self.state, metrics = compiled(self.state, *args[1:])
            return metrics

        return Timed(step, compiled, seconds, flops, steps_per_call=group)

    @staticmethod
    def _compile(fn: Any, *args: Any) -> tuple[Any, float]:
        """The compiled program and its compile time."""
        start = time.perf_counter()
        compiled = fn.lower(*args).compile()
        return compiled, time.perf_counter() - start


def host_cores() -> int:
    """The host cores this process may run on (its affinity), whatever the devices."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def compute_cores() -> int:
    """What the paper's img/s/core divides by: the accelerator chips' cores (one per JAX
    device), or on a CPU the host cores this process may run on (not its forced devices)."""
    if jax.devices()[0].platform != "cpu":
        return jax.device_count()
    return host_cores()


def run_bench(
    settings: BenchSettings, on_phase: Callable[[str], None] = lambda _: None
) -> dict[str, Any]:
    """Measure the requested modes; returns the results (see README, `mixer bench`)."""
    on_phase("initialising")
    work = Workload(settings)
    results: dict[str, Any] = {
        "command": "bench",
        **{k: v for k, v in asdict(settings).items() if k not in NOT_RECORDED},
        "family": settings.model().family,
        "model": work.name,
        "platform": jax.devices()[0].platform,
        "device_kind": jax.devices()[0].device_kind,
        "devices": [str(d) for d in jax.devices()],
        "jax_version": jax.__version__,
        "cores": compute_cores(),
    }
    for mode in settings.modes():
        on_phase(f"compiling the {mode} step")
        timed = work.forward() if mode == "forward" else work.train()
        on_phase(f"timing the {mode} step")
        results[mode] = measure(timed, settings, results["cores"])
    if settings.measure_peak:
        measure_peak(work, settings, results, on_phase)
    results["peak_memory_bytes"] = _device_peak_memory()
    return results


def measure(timed: Timed, settings: BenchSettings, cores: int) -> dict[str, Any]:
    """img/s of a compiled step (the median of `settings.windows` timed windows after a
    warm-up), per core, its FLOPs, memory and what it cost the host."""
    calls = calls_per_window(timed, settings)
    images = calls * timed.steps_per_call * settings.batch_size
    host = HostUsage()
    rates = [images / time_window(timed.step, calls) for _ in range(settings.windows)]
    host_usage = host.per_step(calls * timed.steps_per_call * settings.windows)
    ips = statistics.median(rates)
    return {
        "images_per_sec": ips,
        "images_per_sec_per_core": ips / cores,
        "windows": rates,
        "steps_per_window": calls * timed.steps_per_call,
        "compile_seconds": timed.compile_seconds,
        "gflops_per_image": timed.flops_per_image / 1e9,
        "achieved_gflops": ips * timed.flops_per_image / 1e9,
        "program_memory_bytes": _memory(timed.compiled),
        **host_usage,
    }


def measure_peak(
    work: Workload, settings: BenchSettings, results: dict[str, Any], on_phase: Callable
) -> None:
    """The matmul peak in the same dtype on the same devices, and each mode's MFU."""
    on_phase("measuring the matmul peak")
    size = settings.peak_size or (4096 if results["platform"] == "cpu" else 8192)
    peak = matmul_peak(work.dtype, size)
    results["matmul_peak_gflops"] = peak / 1e9
    results["peak_size"] = size
    for mode in settings.modes():
        results[mode]["mfu"] = results[mode]["achieved_gflops"] * 1e9 / peak
