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
from mixer_cli.data import Preprocessing, TrainBatches, open_dataset
from mixer_cli.evals.base import Context
from mixer_cli.evals.suite import EvalSuite
from mixer_cli.models import registry
from mixer_cli.train.checkpoint import Checkpointer
from mixer_cli.train.metrics import MetricsWriter, read_results
from mixer_cli.train.optim import make_optimizer
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
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    evals: EvalSuite
    train_examples: int  # in the training split: what an epoch is


def build(config: Config) -> Run:
    """Dataset, model, schedule, optimizer and evaluators from a config, validating their
    combination (and every evaluator's dataset) before anything is written or trained."""
    m, d, t = config.model, config.data, config.train
    family = registry.get(m.family)
    name = family.parse(m)  # the variant is checked before any data
    patch = d.permutation_patch or family.patch_size(m)
    if d.permutation == "patch" and not patch:
        raise ConfigError(
            f"data.permutation_patch must be set to shuffle patches for a {m.family} model"
        )
    if m.init is not None and not locate(m.init).exists():  # a released name: fetched now
        raise CheckpointNotFound(f"model.init: checkpoint {m.init!r} does not exist")
    registry.check_warm_start(m)
    source = open_dataset(d.name, d.data_dir, task=m.head)
    train_split = d.train_split or source.train_split
    eval_split = d.eval_split or source.eval_split
    source.check_classes(train_split, eval_split)
    source.check_images(d.skip_corrupt)  # damaged files stop the run now, not part-way
    preprocessing = Preprocessing(
        resolution=m.resolution,
        crop=d.crop,
        crop_min_area=d.crop_min_area,
        flip=d.flip,
        randaug_layers=d.randaug_layers,
        randaug_magnitude=d.randaug_magnitude,
        mixup=d.mixup,
        cutmix=d.cutmix,
        permutation=d.permutation,
        permutation_patch=patch or 16,
        permutation_seed=d.permutation_seed,
    )
    preprocessing.permutation_index()  # a patch that does not divide the image fails here
    side = source.shorter_side()
    if side is not None and side < m.resolution and jax.process_index() == 0:
        report.stderr.print(
            f"note: {source.name} images are {side} px (shorter side), below the "
            f"{m.resolution} px resolution: they are upsampled"
        )
    head_bias = SIGMOID_HEAD_BIAS if t.loss == "sigmoid" else 0.0
    model = registry.build(m, source.num_classes, head_bias)
    examples = source.num_examples(train_split)
    total_steps = t.steps or max(1, math.ceil(t.epochs * examples / t.batch_size))
    tx, schedule = make_optimizer(config.optim, total_steps)
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
    )
    evals = EvalSuite.from_config(config.evals, context, t.eval_every)
    return Run(
        config,
        family,
        name,
        model,
        source,
        train_split,
        eval_split,
        preprocessing,
        total_steps,
        tx,
        schedule,
        evals,
        examples,
    )


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
    """
    t, workdir = config.train, Path(workdir)
    lead = jax.process_index() == 0
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
    run = build(config)
    repl, rows = replicated(mesh), batch_sharding(mesh)
    key = jax.random.key(t.seed)
    fresh = partial(initial_state, run.model, run.tx, config.model.resolution, ema=t.ema_decay > 0)
    abstract = jax.eval_shape(fresh, key)
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl), abstract
    )

    def starting_state() -> TrainState:
        """Initialised, then warm-started from `model.init` if the config names one."""
        state = jax.jit(fresh, out_shardings=repl)(key)
        if config.model.init is None:
            return state
        params = registry.warm_start(config.model, jax.device_get(state.params))
        params = jax.device_put(params, repl)
        ema = None if state.ema is None else jax.tree.map(jnp.copy, params)  # own buffers
        return state.replace(params=params, ema=ema)

    # A new run's warm start is checked (and made) before anything is written.
    new = None if (workdir / "checkpoints").exists() else starting_state()
    # One run per directory: held until this function returns, whatever the way out.
    with hold_workdir(workdir, enabled=lead):
        prepare_workdir(workdir, config, lead)
        if lead:  # room for one more checkpoint and the final params.npz
            check_free_space(workdir, _nbytes(abstract) + _nbytes(abstract.params))
        checkpointer = Checkpointer(workdir / "checkpoints", t.keep_checkpoints)
        restored = checkpointer.restore_latest(abstract)
        record: dict[str, Any] = {}
        if restored is not None:
            state, record = restored
            if lead:
                report.stderr.print(f"resuming from step {record['step']} in {workdir}")
        else:
            state = new if new is not None else starting_state()
        start = int(state.step)
        if start >= run.total_steps and (workdir / "results.json").exists():
            checkpointer.close()
            if lead:
                report.stderr.print(f"{workdir} has finished its {start} steps; its results:")
            return read_results(workdir)

        steps = compile_steps(
            run.model,
            run.tx,
            run.schedule,
            loss_kind=t.loss,
            accum_steps=t.accum_steps,
            replicated=repl,
            rows=rows,
            label_smoothing=t.label_smoothing,
            sam=config.optim.sam_rho > 0,
            ema_decay=t.ema_decay,
        )
        writer = MetricsWriter(workdir, start, enabled=lead)

        def evaluate(
            step: int, state: TrainState, names: list[str], bars: bool = True
        ) -> dict[str, float]:
            """Run evaluators on the weights (and on their average, as ema/NAME/METRIC)
            and record the metrics (`bars`: no training bar is live)."""
            weights = {"": state.params} | ({} if state.ema is None else {"ema/": state.ema})
            metrics = {}
            for prefix, params in weights.items():
                found = run.evals.run(
                    run.model, params, names, loss=t.loss, mesh=mesh, show_progress=bars and lead
                )
                metrics.update({prefix + key: value for key, value in found.items()})
            writer.write(step, metrics)
            return metrics

        # Results measured along the way travel in the checkpoint record, so resumes keep them.
        carried = {k: v for k, v in record.items() if k not in ("step", "data_position")}
        if start == 0 and run.evals.due(0, run.total_steps):
            carried["at_step0"] = evaluate(0, state, run.evals.due(0, run.total_steps))
        batches = iter(
            TrainBatches(
                run.source,
                run.train_split,
                run.preprocessing,
                t.batch_size,
                t.seed,
                mesh,
                start_step=start,
            )
        )
        end = run.total_steps if stop_after is None else min(run.total_steps, start + stop_after)

        started = time.time()
        try:
            with report.training_progress(run.total_steps, start, enabled=lead) as progress:
                state, loss, images_per_sec = _loop(
                    run,
                    state,
                    batches,
                    steps,
                    writer,
                    checkpointer,
                    progress,
                    start,
                    end,
                    carried,
                    evaluate,
                )
            results = _results(run, state, loss, images_per_sec, started)
            results.update(carried)
            if results["finished"]:
                results.update(evaluate(int(state.step), state, list(run.evals.evaluators)))
                if lead:
                    write_npz(jax.device_get(state.params), workdir / "params.npz")
                    if state.ema is not None:
                        write_npz(jax.device_get(state.ema), workdir / "params_ema.npz")
            if lead:
                report.write_json(workdir / "results.json", results)
            return results
        finally:
            checkpointer.wait()
            checkpointer.close()
            writer.close()


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
    batches: Any,
    steps: Steps,
    writer: MetricsWriter,
    checkpointer: Checkpointer,
    progress: report.TrainingProgress,
    start: int,
    end: int,
    carried: dict[str, Any],
    evaluate: Callable[..., dict[str, float]],
) -> tuple[TrainState, float, float]:
    """Steps start..end; scalars come back to the host only at log, eval and save points."""
    t = run.config.train
    stops = (t.log_every, t.checkpoint_every, *run.evals.intervals())
    last_saved = checkpointer.latest_step()
    loss, images_per_sec = float("nan"), 0.0
    mark_time, mark_step = time.time(), start
    metrics = None

    def save(step: int) -> None:
        record = {"step": step, "data_position": step, **carried}
        if step == run.total_steps:  # a crash before results.json must not lose it
            record["final_train_loss"] = loss
        checkpointer.save(step, state, record)

    done, calls = start, 0
    preempted = preemption_check()
    with interrupt_requests() as interrupted:
        while done < end:
            group = t.steps_per_execution
            if group > 1 and _next_stop(done, end, stops) - done >= group:
                state, metrics = steps.train_many(state, tuple(next(batches) for _ in range(group)))
            else:
                state, metrics = steps.train(state, next(batches))
                group = 1
            done, calls = done + group, calls + 1
            # A scheduler's notice to any process: every process stops at one agreed call.
            preempt = preempted(calls)
            stop = preempt or interrupted() is not None
            if done % t.log_every == 0 or done == end:
                scalars = jax.device_get(metrics)
                loss = float(scalars["loss"])
                if not math.isfinite(loss):
                    where = (
                        f"step {last_saved} in {checkpointer.directory}" if last_saved else "none"
                    )
                    raise TrainingDiverged(
                        f"loss became {loss} by step {done}; last good checkpoint: {where}"
                    )
                now = time.time()
                images_per_sec = (done - mark_step) * t.batch_size / max(now - mark_time, 1e-9)
                mark_time, mark_step = now, done
                writer.write(done, {**scalars, "img_per_sec": images_per_sec})
                checkpointer.check()  # a failed background save stops the run here
                progress.update(done, loss=loss, lr=float(scalars["lr"]), ips=images_per_sec)
            due = run.evals.due(done, run.total_steps) if done != run.total_steps else []
            if due:
                metrics_now = evaluate(done, state, due, False)
                progress.note(f"step {done}: {report.format_metrics(metrics_now)}")
            if done % t.checkpoint_every == 0 or done == end or stop:
                if not math.isfinite(float(metrics["loss"])):
                    raise TrainingDiverged(f"loss is not finite at step {done}; not saved")
                save(done)
                last_saved = done
            if stop:
                checkpointer.wait()
                error = Preempted if preempt or interrupted() == signal.SIGTERM else Interrupted
                raise error(
                    f"interrupted at step {done}; checkpoint saved in {checkpointer.directory}; "
                    "run the same command again to resume"
                )
    return state, loss, images_per_sec


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
