"""How fast the host feeds training, and what the augmentation's device half costs a step.

`mixer bench --mode input`, on a run's own config (data, augmentation, model):

- host: the training input pipeline itself (`TrainBatches.host_batches`: decode, crop and
  resize, and with `data.augment_on: host` the flip, RandAugment, mixup and CutMix too) in
  images/s and per host core, beside its floor in the same invocation: the same pipeline
  with augmentation on the device, which leaves the host decode-and-crop + resize alone.
  Each runs back to back (the pipeline first, so a cold file cache slows it rather than
  the floor), after a warm-up, as the median of timed windows.
- device: the same settings' `DeviceAugment` on a batch from the floor's stream (what the
  host sends), jitted alone, beside the engine's train step that runs it (the step's
  FLOPs include it): FLOPs per image from XLA's cost analysis and time on these devices,
  and the augmentation's share of each.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import numpy as np

from mixer_cli.config import Config
from mixer_cli.core.distributed import make_mesh
from mixer_cli.core.errors import ConfigError
from mixer_cli.data import TrainBatches, open_dataset
from mixer_cli.data.device_augment import device_augment
from mixer_cli.models import registry
from mixer_cli.models.costs import model_flops
from mixer_cli.train.engine import run_preprocessing
from mixer_cli.train.throughput import (
    BenchSettings,
    Timed,
    Workload,
    compute_cores,
    host_cores,
    measure,
    validate,
)

WARMUP_BATCHES = 3  # tf.data's autotuning and the file cache settle over the first few
MAX_BATCHES = 200  # per window, when sized to `window_seconds`
RECORDED = (  # the augmentation settings results.json names
    "crop",
    "crop_min_area",
    "flip",
    "randaug_layers",
    "randaug_magnitude",
    "mixup",
    "cutmix",
    "permutation",
    "augment_on",
)


@dataclass(frozen=True)
class InputSettings:
    """What `mixer bench --mode input` measures and for how long."""

    config: Config  # the run's: data, augmentation (data.*) and model
    batch_size: int = 32
    windows: int = 5  # timed windows of each measurement; the median counts
    steps: int = 0  # batches (host) or steps (device) per window; 0 = about `window_seconds`
    window_seconds: float = 2.0
    steps_per_execution: int = 1  # train steps per program on the device


class InputBench:
    """The streams and settings of one measurement, built and checked before any timing
    (a bad dataset, split, model or batch size is refused here)."""

    def __init__(self, settings: InputSettings) -> None:
        c, mesh = settings.config, make_mesh()
        self.settings, self.family = settings, registry.get(c.model.family)
        self.name = self.family.parse(c.model)
        self.pre = run_preprocessing(c, self.family)
        d = c.data
        self.source = open_dataset(
            d.name, d.data_dir, task=c.model.head, skip_corrupt=d.skip_corrupt
        )
        if self.source.task == "segment":  # its transforms stay on the host: no floor
            raise ConfigError(
                f"--mode input measures a classification pipeline; {d.name} holds masks "
                "(segmentation transforms images and masks together on the host)"
            )
        self.split = d.train_split or self.source.train_split
        floor = dataclasses.replace(self.pre, augment_on="device")  # the host's part alone
        self.streams = {
            name: TrainBatches(
                self.source, self.split, pre, settings.batch_size, c.train.seed, mesh
            )
            for name, pre in (("pipeline", self.pre), ("floor", floor))
        }
        self.augment = device_augment(self.source, floor)
        self.device = BenchSettings(
            variant=c.model.variant,
            resolution=c.model.resolution,
            dtype=c.model.dtype,
            batch_size=settings.batch_size,
            mode="train",
            num_classes=self.source.num_classes,
            windows=settings.windows,
            steps=settings.steps,
            window_seconds=settings.window_seconds,
            steps_per_execution=settings.steps_per_execution,
            run_model=c.model,
            measure_peak=False,
        )
        validate(self.device)

    def run(self, on_phase: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
        c, cores = self.settings.config, host_cores()
        results: dict[str, Any] = {
            "command": "bench",
            "mode": "input",
            "data": c.data.name,
            "split": self.split,
            "family": c.model.family,
            "model": self.name,
            "variant": c.model.variant,
            "resolution": c.model.resolution,
            "dtype": c.model.dtype,
            "batch_size": self.settings.batch_size,
            "augmentation": {k: getattr(self.pre, k) for k in RECORDED},
            "platform": jax.devices()[0].platform,
            "device_kind": jax.devices()[0].device_kind,
            "devices": [str(d) for d in jax.devices()],
            "jax_version": jax.__version__,
        }
        host: dict[str, Any] = {"cores": cores}
        for name, batches in self.streams.items():
            on_phase(f"timing the host's {name}")
            host[name], batch = self._host(batches, cores)
        host["time_vs_floor"] = host["floor"]["images_per_sec"] / host["pipeline"]["images_per_sec"]
        results["host"] = host
        results["device"] = self._device(batch, on_phase)
        return results

    def _host(self, batches: TrainBatches, cores: int) -> tuple[dict[str, Any], Any]:
        """img/s of one stream (median of the windows after a warm-up), and its last batch."""
        s, stream = self.settings, batches.host_batches()
        try:
            for _ in range(WARMUP_BATCHES):
                batch = next(stream)
            count = s.steps
            if not count:  # batches for about window_seconds, at the rate of a quarter of it
                # (not of one batch: the first ones may come from tf.data's prefetch buffer)
                start, seen = time.perf_counter(), 0
                while (elapsed := time.perf_counter() - start) < s.window_seconds / 4:
                    batch, seen = next(stream), seen + 1
                count = max(1, min(MAX_BATCHES, round(s.window_seconds * seen / elapsed)))
            rates = []
            for _ in range(s.windows):
                start = time.perf_counter()
                for _ in range(count):
                    batch = next(stream)
                rates.append(count * s.batch_size / (time.perf_counter() - start))
        finally:
            stream.close()  # its tf.data threads stop before the next stream is timed
        ips = statistics.median(rates)
        measured = {
            "images_per_sec": ips,
            "images_per_sec_per_core": ips / cores,
            "windows": rates,
            "batches_per_window": count,
        }
        return measured, batch

    def _device(self, batch: dict[str, np.ndarray], on_phase: Callable) -> dict[str, Any]:
        """The augmentation alone and the train step that runs it, on the host's batch."""
        on_phase("compiling the augmentation and the train step")
        work = Workload(self.device, augment=self.augment, batch=batch)
        key = jax.random.key(0)
        compiled, seconds = Workload._compile(jax.jit(self.augment), work.batch, key)
        flops = model_flops(self.augment, work.batch, key) / self.settings.batch_size
        alone = Timed(partial(compiled, work.batch, key), compiled, seconds, flops)
        step = work.train()
        on_phase("timing the augmentation and the train step")
        cores = compute_cores()
        augment, train = measure(alone, self.device, cores), measure(step, self.device, cores)
        return {
            "cores": cores,
            "augment": augment,
            "train_step": train,
            "flops_share": augment["gflops_per_image"] / train["gflops_per_image"],
            "time_share": train["images_per_sec"] / augment["images_per_sec"],
        }
