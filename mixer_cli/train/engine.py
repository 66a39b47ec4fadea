"""The training loop every subcommand uses: build, restore or initialise, train, evaluate.

One jit-compiled step over a Mesh of all devices (parameters replicated, batches split
along 'data', the state's buffers donated), grouped `steps_per_execution` to a program
between the points where the host must look (logs, evaluations, checkpoints); Python
only feeds batches and, every `log_every` steps, reads a few scalars back. A run
directory holds config.yaml, metrics.jsonl (+ TensorBoard), checkpoints/, params.npz
(the final parameters in the official layout) and results.json; the same command on
the same directory resumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax

from mixer_cli.config import Config
from mixer_cli.core import report
from mixer_cli.core.distributed import batch_sharding, local_batch_size, make_mesh, replicated
from mixer_cli.core.errors import (
    CheckpointNotFound,
    ConfigError,
    Interrupted,
    Preempted,
    TrainingDiverged,
)
from mixer_cli.data import DataSource, Preprocessing, TrainBatches, open_dataset
from mixer_cli.data.device_augment import device_augment
from mixer_cli.evals.base import Context
from mixer_cli.evals.suite import EvalSuite
from mixer_cli.models import registry
from mixer_cli.train.checkpoint import Checkpointer
from mixer_cli.train.metrics import MetricsWriter, read_results
from mixer_cli.train.optim import Numbers, Optimizer, numbers
from mixer_cli.train.steps import Steps, TrainState, compile_steps, initial_state
from mixer_cli.train.workdir import check_free_space, hold_workdir, prepare_workdir
from mixer_cli.weights.arrays import write_npz
from mixer_cli.weights.released import locate

SIGMOID_HEAD_BIAS = -6.9  # the reference recipe's: initial sigmoid outputs of ~1/1000


@dataclass
class Run:
    """Everything built from a config, before any step runs."""

    config: Config
    family: registry.Family
    name: str  # the model variant, as its family writes it
    model: Any
    source: Any
    train_split: str
    eval_split: str
    preprocessing: Preprocessing
    total_steps: int
    optimizer: Optimizer
    numbers: Numbers  # the optimizer's, arguments of the compiled step
    evals: EvalSuite
    train_examples: int  # in the training split: what an epoch is


def build(config: Config) -> Run:
    """Dataset, model, schedule, optimizer and evaluators from a config, validating their
    combination (and every evaluator's dataset) before anything is written or trained."""
    m, d, t = config.model, config.data, config.train
    family = registry.get(m.family)
    name = family.parse(m)  # the variant is checked before any data
    preprocessing = run_preprocessing(config, family)
    if m.init is not None and not locate(m.init).exists():  # a released name: fetched now
        raise CheckpointNotFound(f"model.init: checkpoint {m.init!r} does not exist")
    registry.check_warm_start(m)
    source, train_split, eval_split = _checked_source(config)
    _note_upsampling(source, m.resolution)
    head_bias = SIGMOID_HEAD_BIAS if t.loss == "sigmoid" else 0.0
    model = registry.build(m, source.num_classes, head_bias)
    examples = source.num_examples(train_split)
    total_steps = t.steps or max(1, math.ceil(t.epochs * examples / t.batch_size))
    context = Context(
        source=source,
        train_split=train_split,
        eval_split=eval_split,
        preprocessing=preprocessing,
        num_classes=source.num_classes,
        head=m.head,
        loss=t.loss,
        batch_size=t.eval_batch_size or t.batch_size,
        resolution=m.resolution,
        data_dir=d.data_dir,
        skip_corrupt=d.skip_corrupt,
    )
    evals = EvalSuite.from_config(config.evals, context, t.eval_every)
    return Run(
        config=config,
        family=family,
        name=name,
        model=model,
        source=source,
        train_split=train_split,
        eval_split=eval_split,
        preprocessing=preprocessing,
        total_steps=total_steps,
        optimizer=Optimizer.of(config.optim),
        numbers=numbers(config.optim, total_steps),
        evals=evals,
        train_examples=examples,
    )


def _checked_source(config: Config) -> tuple[DataSource, str, str]:
    """The training data and its splits, checked (damaged files, then classes) before a
    run starts: a source checks a split's files when it is first read, sized or counted."""
    m, d = config.model, config.data
    source = open_dataset(d.name, d.data_dir, task=m.head, skip_corrupt=d.skip_corrupt)
    train_split = d.train_split or source.train_split
    eval_split = d.eval_split or source.eval_split
    source.check_classes(train_split, eval_split)
    return source, train_split, eval_split


def _note_upsampling(source: DataSource, resolution: int) -> None:
    side = source.shorter_side()
    if side is not None and side < resolution and jax.process_index() == 0:
        report.stderr.print(
            f"note: {source.name} images are {side} px (shorter side), below the "
            f"{resolution} px resolution: they are upsampled"
        )


def run_preprocessing(config: Config, family: registry.Family) -> Preprocessing:
    """The run's input transform: the data section's keys that Preprocessing shares (crop,
    flip, RandAugment, mixup, cutmix, the permutation, where augmentation runs) at the
    model's resolution; the shuffle experiment's patch defaults to the model's (checked)."""
    m, d = config.model, config.data
    patch = d.permutation_patch or family.patch_size(m)
    if d.permutation == "patch" and not patch:
        raise ConfigError(
            f"data.permutation_patch must be set to shuffle patches for a {m.family} model"
        )
    shared = {f.name for f in dataclasses.fields(Preprocessing)} & {
        f.name for f in dataclasses.fields(d)
    }
    keys = {k: getattr(d, k) for k in shared if k != "permutation_patch"}
    pre = Preprocessing(resolution=m.resolution, permutation_patch=patch or 16, **keys)
    pre.permutation_index()  # a patch that does not divide the image fails here
    return pre


def _nbytes(tree: Any) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def train_and_evaluate(
    config: Config,
    workdir: str | Path,
    *,
    stop_after: int | None = None,
    devices: list[jax.Device] | None = None,
) -> dict[str, Any]:
    """Train (or resume) the run that `config` describes in `workdir`; returns the results
    also saved as results.json.

    Everything the run does is in the config (its warm start `model.init`, its
    evaluators `evals`); the rest is run control: `stop_after` steps of this invocation,
    and `devices` for the data-parallel mesh (default: every device of every process).
    Reads as: build -> restore or start -> loop -> finish.
    """
    workdir, lead = Path(workdir), jax.process_index() == 0
    mesh = _mesh(config, devices)
    run = build(config)
    start = Start(run, mesh)
    # A new run's warm start is checked (and made) before anything is written.
    new = None if (workdir / "checkpoints").exists() else start.state()
    # One run per directory: held until this function returns, whatever the way out.
    with hold_workdir(workdir, enabled=lead):
        prepare_workdir(workdir, config, lead)
        if lead:  # room for one more checkpoint and the final params.npz
            check_free_space(workdir, _nbytes(start.abstract) + _nbytes(start.abstract.params))
        checkpointer = Checkpointer(workdir / "checkpoints", config.train.keep_checkpoints)
        state, record = _restore_or_start(checkpointer, start, new, workdir, lead)
        step = int(state.step)
        if step >= run.total_steps and (workdir / "results.json").exists():
            checkpointer.close()
            if lead:
                report.stderr.print(f"{workdir} has finished its {step} steps; its results:")
            return read_results(workdir)
        hooks = Hooks(run, mesh, checkpointer, MetricsWriter(workdir, step, enabled=lead), record)
        try:
            state, started = _train(run, mesh, hooks, state, stop_after)
            return _finish(run, hooks, state, workdir, started)
        finally:
            hooks.close()


def _mesh(config: Config, devices: list[jax.Device] | None) -> Any:
    """The data-parallel mesh, refusing batch sizes that do not split over it."""
    t = config.train
    mesh = make_mesh(devices)
    local_batch_size(t.batch_size, mesh)
    if t.batch_size % (mesh.devices.size * t.accum_steps):
        raise ConfigError(
            f"batch size {t.batch_size} must split into {t.accum_steps} micro-batches over "
            f"{mesh.devices.size} devices (a multiple of {mesh.devices.size * t.accum_steps})"
        )
    local_batch_size(t.eval_batch_size or t.batch_size, mesh, "evaluation batch size")
    for settings in config.evals.values():
        if settings.batch_size:
            local_batch_size(settings.batch_size, mesh, "evaluation batch size")
    return mesh


@functools.lru_cache(maxsize=8)
def _initialise(model: Any, optimizer: Optimizer, resolution: int, ema: bool) -> Any:
    """The first-state function of a model and optimizer, one object per combination (so
    that its traces are reused by the next run of the same settings in this process)."""
    return partial(initial_state, model, optimizer, resolution, ema=ema)


class Start:
    """A run's first state: initialised on the mesh, warm-started from `model.init` if the
    config names one; `abstract` is its shape (what a checkpoint restores into)."""

    def __init__(self, run: Run, mesh: Any) -> None:
        t = run.config.train
        self.config, self.repl = run.config, replicated(mesh)
        self.key = jax.random.key(t.seed)
        self.fresh = _initialise(
            run.model, run.optimizer, run.config.model.resolution, t.ema_decay > 0
        )
        abstract = jax.eval_shape(self.fresh, self.key)
        self.abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=self.repl), abstract
        )

    def state(self) -> TrainState:
        state = _jitted_init(self.fresh, self.repl)(self.key)
        if self.config.model.init is None:
            return state
        params = registry.warm_start(self.config.model, jax.device_get(state.params))
        params = jax.device_put(params, self.repl)
        ema = None if state.ema is None else jax.tree.map(jnp.copy, params)  # own buffers
        return state.replace(params=params, ema=ema)


@functools.lru_cache(maxsize=8)
def _jitted_init(fresh: Any, repl: Any) -> Any:
    return jax.jit(fresh, out_shardings=repl)


def _restore_or_start(
    checkpointer: Checkpointer, start: Start, new: TrainState | None, workdir: Path, lead: bool
) -> tuple[TrainState, dict[str, Any]]:
    """The newest intact checkpoint's state and record, else the first state."""
    restored = checkpointer.restore_latest(start.abstract)
    if restored is None:
        return (new if new is not None else start.state()), {}
    state, record = restored
    if lead:
        report.stderr.print(f"resuming from step {record['step']} in {workdir}")
    return state, record


def _train(
    run: Run, mesh: Any, hooks: Hooks, state: TrainState, stop_after: int | None
) -> tuple[TrainState, float]:
    """The steps of this invocation (and the step-0 evaluation of a new run); returns the
    state and when training started."""
    t, start = run.config.train, int(state.step)
    steps = compile_steps(
        run.model,
        run.optimizer,
        loss_kind=t.loss,
        accum_steps=t.accum_steps,
        replicated=replicated(mesh),
        rows=batch_sharding(mesh),
        label_smoothing=t.label_smoothing,
        sam=run.config.optim.sam_rho > 0,
        ema_decay=t.ema_decay,
        augment=device_augment(run.source, run.preprocessing),
    )
    if start == 0 and run.evals.due(0, run.total_steps):
        hooks.carried["at_step0"] = hooks.evaluate(0, state, run.evals.due(0, run.total_steps))
    batches = iter(
        TrainBatches(
            run.source, run.train_split, run.preprocessing, t.batch_size, t.seed, mesh, start
        )
    )
    end = run.total_steps if stop_after is None else min(run.total_steps, start + stop_after)
    started = time.time()
    with report.training_progress(run.total_steps, start, enabled=hooks.lead) as progress:
        hooks.progress = progress
        numbers = jax.device_put(run.numbers, replicated(mesh))  # once, not per step
        state = _loop(run, state, batches, (steps, numbers), hooks, start, end)
    return state, started


def _finish(
    run: Run, hooks: Hooks, state: TrainState, workdir: Path, started: float
) -> dict[str, Any]:
    """results.json; at the end of training the final evaluation and params.npz too."""
    results = _results(run, state, hooks.loss, hooks.images_per_sec, started)
    results.update(hooks.carried)
    if results["finished"]:
        results.update(hooks.evaluate(int(state.step), state, list(run.evals.evaluators)))
        if hooks.lead:
            write_npz(jax.device_get(state.params), workdir / "params.npz")
            if state.ema is not None:
                write_npz(jax.device_get(state.ema), workdir / "params_ema.npz")
    if hooks.lead:
        report.write_json(workdir / "results.json", results)
    return results


class Hooks:
    """What the loop does where the host looks: log scalars (and stop on divergence),
    evaluate, checkpoint, report progress, stop on a signal."""

    def __init__(
        self,
        run: Run,
        mesh: Any,
        checkpointer: Checkpointer,
        writer: MetricsWriter,
        record: dict[str, Any],
    ) -> None:
        self.run, self.mesh, self.checkpointer, self.writer = run, mesh, checkpointer, writer
        self.lead = jax.process_index() == 0
        # Results measured along the way travel in the checkpoint record, so resumes keep them.
        self.carried = {k: v for k, v in record.items() if k not in ("step", "data_position")}
        self.progress: report.TrainingProgress | None = None
        self.loss, self.images_per_sec = float("nan"), 0.0
        self.last_saved = checkpointer.latest_step()
        self._mark = (time.time(), 0)

    def begin(self, step: int) -> None:
        """Training (re)starts at `step`: the throughput clock starts here."""
        self._mark = (time.time(), step)

    def log(self, step: int, metrics: Any) -> None:
        """The step's scalars to the host (the only per-step round trip): metrics files,
        progress bar; a non-finite loss stops the run naming the last good checkpoint."""
        scalars = jax.device_get(metrics)
        self.loss = float(scalars["loss"])
        if not math.isfinite(self.loss):
            last = self.last_saved
            where = f"step {last} in {self.checkpointer.directory}" if last else "none"
            raise TrainingDiverged(
                f"loss became {self.loss} by step {step}; last good checkpoint: {where}"
            )
        now, (mark_time, mark_step) = time.time(), self._mark
        batch_size = self.run.config.train.batch_size
        self.images_per_sec = (step - mark_step) * batch_size / max(now - mark_time, 1e-9)
        self._mark = (now, step)
        self.writer.write(step, {**scalars, "img_per_sec": self.images_per_sec})
        self.checkpointer.check()  # a failed background save stops the run here
        self.progress.update(step, loss=self.loss, lr=float(scalars["lr"]), ips=self.images_per_sec)

    def evaluate(
        self, step: int, state: TrainState, names: list[str], bars: bool = True
    ) -> dict[str, float]:
        """Run evaluators on the weights (and on their average, as ema/NAME/METRIC) and
        record the metrics (`bars`: no training bar is live)."""
        weights = {"": state.params} | ({} if state.ema is None else {"ema/": state.ema})
        metrics = {}
        for prefix, params in weights.items():
            found = self.run.evals.run(
                self.run.model,
                params,
                names,
                loss=self.run.config.train.loss,
                mesh=self.mesh,
                show_progress=bars and self.lead,
            )
            metrics.update({prefix + key: value for key, value in found.items()})
        self.writer.write(step, metrics)
        return metrics

    def evaluate_during(self, step: int, state: TrainState, names: list[str]) -> None:
        """A mid-run evaluation, noted above the live training bar."""
        metrics = self.evaluate(step, state, names, False)
        self.progress.note(f"step {step}: {report.format_metrics(metrics)}")

    def save(self, step: int, state: TrainState, metrics: Any) -> None:
        """A checkpoint of `state` with the record resumes need (never a diverged one)."""
        if not math.isfinite(float(metrics["loss"])):
            raise TrainingDiverged(f"loss is not finite at step {step}; not saved")
        record = {"step": step, "data_position": step, **self.carried}
        if step == self.run.total_steps:  # a crash before results.json must not lose it
            record["final_train_loss"] = self.loss
        self.checkpointer.save(step, state, record)
        self.last_saved = step

    def stop(self, step: int, preempted: bool) -> None:
        """After a signal: wait for the checkpoint, then leave with the resume hint."""
        self.checkpointer.wait()
        error = Preempted if preempted else Interrupted
        raise error(
            f"interrupted at step {step}; checkpoint saved in {self.checkpointer.directory}; "
            "run the same command again to resume"
        )

    def close(self) -> None:
        self.checkpointer.wait()
        self.checkpointer.close()
        self.writer.close()


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C; a scheduler's preemption notice


@contextlib.contextmanager
def interrupt_requests() -> Iterator[Callable[[], int | None]]:
    """Ctrl-C or SIGTERM asks the loop to stop after the current step (with a checkpoint);
    a second signal aborts at once. A flag, not an exception, so no half-updated state is
    saved. Yields a function returning the signal received (None while there is none)."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return

    def handle(signum: int, frame: Any) -> None:
        if received:
            raise KeyboardInterrupt
        received.append(signum)
        what = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        report.stderr.print(f"{what}: stopping after this step with a checkpoint (again: abort)")

    # Several processes must checkpoint at one step: there JAX's preemption notifier owns
    # SIGTERM (see `preemption_check`).
    signals = STOP_SIGNALS if jax.process_count() == 1 else (signal.SIGINT,)
    previous = {sig: signal.signal(sig, handle) for sig in signals}
    try:
        yield lambda: received[0] if received else None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _loop(
    run: Run,
    state: TrainState,
    batches: Iterator[Any],
    program: tuple[Steps, Numbers],
    hooks: Hooks,
    start: int,
    end: int,
) -> TrainState:
    """Steps start..end; scalars come back to the host only at log, eval and save points."""
    t, (steps, numbers) = run.config.train, program
    stops = (t.log_every, t.checkpoint_every, *run.evals.intervals())
    hooks.begin(start)
    done, calls = start, 0
    preempted = preemption_check()
    with interrupt_requests() as interrupted:
        while done < end:
            group = t.steps_per_execution
            if group > 1 and _next_stop(done, end, stops) - done >= group:
                group_batches = tuple(next(batches) for _ in range(group))
                state, metrics = steps.train_many(state, group_batches, numbers)
            else:
                state, metrics = steps.train(state, next(batches), numbers)
                group = 1
            done, calls = done + group, calls + 1
            # A scheduler's notice to any process: every process stops at one agreed call.
            preempt = preempted(calls)
            stop = preempt or interrupted() is not None
            if done % t.log_every == 0 or done == end:
                hooks.log(done, metrics)
            due = run.evals.due(done, run.total_steps) if done != run.total_steps else []
            if due:
                hooks.evaluate_during(done, state, due)
            if done % t.checkpoint_every == 0 or done == end or stop:
                hooks.save(done, state, metrics)
            if stop:
                hooks.stop(done, preempt or interrupted() == signal.SIGTERM)
    return state


def preemption_check() -> Callable[[int], bool]:
    """In a multi-process run, JAX's preemption sync point: after a SIGTERM to any process
    (JAX's notifier catches it), every process is told to stop at the same call, counted
    from this invocation's first step, so that all checkpoint the same step. One process
    has its own SIGTERM handler instead (`interrupt_requests`)."""
    if jax.process_count() == 1:
        return lambda calls: False
    from jax.experimental import multihost_utils

    return multihost_utils.reached_preemption_sync_point


def _next_stop(step: int, end: int, every: tuple[int, ...]) -> int:
    """The first step after `step` where the host must look: a log, evaluation or
    checkpoint point (multiples of `every`), or the end. Groups never run past one."""
    return min([end] + [(step // n + 1) * n for n in every if n])


def _results(
    run: Run, state: TrainState, loss: float, images_per_sec: float, started: float
) -> dict[str, Any]:
    m, t = run.config.model, run.config.train
    return {
        "family": m.family,
        "variant": run.name,
        "head": m.head,
        "resolution": m.resolution,
        "grid_factor": m.grid_factor,
        "init": m.init,
        "dataset": run.source.name,
        "num_classes": run.source.num_classes,
        "train_split": run.train_split,
        "eval_split": run.eval_split,
        "step": int(state.step),
        "total_steps": run.total_steps,
        "batch_size": t.batch_size,
        "train_examples": run.train_examples,
        "epochs": int(state.step) * t.batch_size / run.train_examples,
        "final_train_loss": loss,
        "regularisation": {
            "mixup": run.config.data.mixup,
            "cutmix": run.config.data.cutmix,
            "label_smoothing": t.label_smoothing,
            "ema_decay": t.ema_decay,
            "sam_rho": run.config.optim.sam_rho,
        },
        "params_norm": float(jax.jit(optax.tree.norm)(state.params)),  # one compile
        "train_seconds": time.time() - started,
        "images_per_sec": images_per_sec,
        "finished": int(state.step) == run.total_steps,
    }
