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
import json
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

from mixer_cli import report
from mixer_cli.checkpoints import write_npz
from mixer_cli.config import Config
from mixer_cli.data import EvalBatches, Preprocessing, TrainBatches, open_dataset
from mixer_cli.distributed import batch_sharding, local_batch_size, make_mesh, replicated
from mixer_cli.errors import ConfigError, Interrupted, TrainingDiverged
from mixer_cli.models import MlpMixer, create_model, parse_variant
from mixer_cli.models.mixer import compute_dtype
from mixer_cli.models.resnet import ResNet, create_resnet, parse_resnet
from mixer_cli.train.checkpoint import Checkpointer
from mixer_cli.train.metrics import MetricsWriter
from mixer_cli.train.optim import make_optimizer
from mixer_cli.train.steps import Steps, TrainState, compile_steps
from mixer_cli.train.workdir import check_free_space, prepare_workdir

SIGMOID_HEAD_BIAS = -6.9  # the reference recipe's: initial sigmoid outputs of ~1/1000

# Extra measurements at every evaluation (e.g. few-shot accuracy of the current weights):
# (run, replicated params) -> scalars for metrics.jsonl and results.json.
Probe = Callable[["Run", Any], dict[str, float]]

# How a run gets its starting weights: from the freshly initialised parameters (NumPy)
# to the parameters to train, e.g. a checkpoint's, or its backbone under the fresh head.
WarmStart = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class Run:
    """Everything built from a config, before any step runs."""

    config: Config
    model: MlpMixer | ResNet
    source: Any
    train_split: str
    eval_split: str
    preprocessing: Preprocessing
    total_steps: int
    tx: optax.GradientTransformation
    schedule: optax.Schedule


def build(config: Config) -> Run:
    """Dataset, model, schedule and optimizer from a config, validating their combination."""
    m, d, t = config.model, config.data, config.train
    model = build_model(config, num_classes=0)  # the variant is checked before any data
    patch = d.permutation_patch or getattr(model, "patch_size", 0)
    if d.permutation == "patch" and not patch:
        raise ConfigError("data.permutation_patch must be set to shuffle patches for a ResNet")
    source = open_dataset(d.name, d.data_dir)
    train_split = d.train_split or source.train_split
    eval_split = d.eval_split or source.eval_split
    preprocessing = Preprocessing(
        resolution=m.resolution,
        crop=d.crop,
        crop_min_area=d.crop_min_area,
        flip=d.flip,
        randaug_layers=d.randaug_layers,
        randaug_magnitude=d.randaug_magnitude,
        mixup=d.mixup,
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
    model = build_model(config, num_classes=source.num_classes)
    examples = source.num_examples(train_split)
    total_steps = t.steps or max(1, math.ceil(t.epochs * examples / t.batch_size))
    tx, schedule = make_optimizer(config.optim, total_steps)
    return Run(
        config, model, source, train_split, eval_split, preprocessing, total_steps, tx, schedule
    )


def build_model(config: Config, num_classes: int) -> MlpMixer | ResNet:
    """The config's model: a Mixer (the resolution checked against its patch) or a ResNet."""
    m = config.model
    head_bias = SIGMOID_HEAD_BIAS if config.train.loss == "sigmoid" else 0.0
    if m.kind == "resnet":
        return create_resnet(
            m.variant,
            width=m.width,
            num_classes=num_classes,
            head_bias_init=head_bias,
            dtype=compute_dtype(m.dtype),
        )
    spec = parse_variant(m.variant)
    spec.check_resolution(m.resolution)
    return create_model(
        spec,
        num_classes=num_classes,
        dropout=m.dropout,
        stoch_depth=m.stoch_depth,
        head_bias_init=head_bias,
        dtype=m.dtype,
        grid_factor=m.grid_factor,
    )


def model_name(config: Config) -> str:
    m = config.model
    if m.kind == "resnet":
        return parse_resnet(m.variant, m.width).name
    return parse_variant(m.variant).name


def _initial_state(run: Run, key: jax.Array) -> TrainState:
    r = run.config.model.resolution
    params = run.model.init(key, jnp.zeros((1, r, r, 3), jnp.float32))["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=run.tx.init(params),
        rng=jax.random.key_data(jax.random.fold_in(key, 1)),
    )


def _nbytes(tree: Any) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def evaluate(run: Run, eval_fn: Any, params: Any, mesh: Any, batch_size: int) -> tuple[float, int]:
    """Top-1 accuracy over the whole eval split (padded, masked: every example counts once)."""
    batches = EvalBatches(run.source, run.eval_split, run.preprocessing, batch_size, mesh)
    totals = None
    for batch in batches:
        out = eval_fn(params, batch)
        totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
    correct, count = float(totals["correct"]), int(totals["count"])
    if count != batches.num_examples:
        raise RuntimeError(f"evaluated {count} examples of {batches.num_examples}")
    return correct / count, count


def train_and_evaluate(
    config: Config,
    workdir: Path,
    *,
    command: str = "pretrain",
    init: WarmStart | None = None,
    stop_after: int | None = None,
    evaluate_first: bool = False,
    extra_results: dict[str, Any] | None = None,
    probe: Probe | None = None,
    devices: list[jax.Device] | None = None,
) -> dict[str, Any]:
    """Train (or resume) the run in `workdir`; returns the results also saved as results.json.

    `init` gives the starting weights of a new run (not of a resumed one);
    `evaluate_first` measures test top-1 before the first step (kept across resumes);
    `extra_results` are added to results.json; `probe` runs at every evaluation;
    `devices` limits the data-parallel mesh (default: every device of every process).
    """
    t = config.train
    lead = jax.process_index() == 0
    mesh = make_mesh(devices)
    local_batch_size(t.batch_size, mesh)
    if t.batch_size % (mesh.devices.size * t.accum_steps):
        raise ConfigError(
            f"batch size {t.batch_size} must split into {t.accum_steps} micro-batches over "
            f"{mesh.devices.size} devices (a multiple of {mesh.devices.size * t.accum_steps})"
        )
    eval_batch = t.eval_batch_size or t.batch_size
    local_batch_size(eval_batch, mesh, "evaluation batch size")
    run = build(config)
    prepare_workdir(workdir, config, lead)

    repl, rows = replicated(mesh), batch_sharding(mesh)
    key = jax.random.key(t.seed)
    init_fn = jax.jit(partial(_initial_state, run), out_shardings=repl)
    abstract = jax.eval_shape(partial(_initial_state, run), key)
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl), abstract
    )
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
        state = init_fn(key)
        if init is not None:
            params = init(jax.device_get(state.params))
            state = state.replace(params=jax.device_put(params, repl))
    start = int(state.step)
    if start >= run.total_steps and (workdir / "results.json").exists():
        checkpointer.close()
        if lead:
            report.stderr.print(f"{workdir} has finished its {start} steps; its results:")
        return json.loads((workdir / "results.json").read_text())

    steps = compile_steps(
        run.model,
        run.tx,
        run.schedule,
        loss_kind=t.loss,
        accum_steps=t.accum_steps,
        replicated=repl,
        rows=rows,
    )
    writer = MetricsWriter(workdir, start, enabled=lead)
    # Results measured along the way travel in the checkpoint record, so resumes keep them.
    carried = {k: v for k, v in record.items() if k not in ("step", "data_position")}
    if evaluate_first and start == 0:
        carried["test_top1_at_step0"], _ = evaluate(
            run, steps.evaluate, state.params, mesh, eval_batch
        )
        probed = probe(run, state.params) if probe else {}
        carried.update({f"{k}_at_step0": v for k, v in probed.items()})
        writer.write(0, {"test_top1": carried["test_top1_at_step0"], **probed})
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
                mesh,
                writer,
                checkpointer,
                progress,
                start,
                end,
                eval_batch,
                carried,
                probe,
            )
        results = _results(run, config, command, state, loss, images_per_sec, started)
        results.update(carried)
        results.update(extra_results or {})
        if results["finished"]:
            top1, count = evaluate(run, steps.evaluate, state.params, mesh, eval_batch)
            probed = probe(run, state.params) if probe else {}
            results.update(test_top1=top1, test_examples=count, **probed)
            writer.write(int(state.step), {"test_top1": top1, **probed})
            if lead:
                write_npz(jax.device_get(state.params), workdir / "params.npz")
        if lead:
            report.write_json(workdir / "results.json", results)
        return results
    finally:
        checkpointer.wait()
        checkpointer.close()
        writer.close()


@contextlib.contextmanager
def interrupt_requests() -> Iterator[Callable[[], bool]]:
    """Ctrl-C asks the loop to stop after the current step (with a checkpoint); a second
    Ctrl-C aborts at once. A flag, not an exception, so no half-updated state is saved."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested.is_set
        return

    def handle(signum: int, frame: Any) -> None:
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()
        report.stderr.print("stopping after this step with a checkpoint (Ctrl-C again to abort)")

    previous = signal.signal(signal.SIGINT, handle)
    try:
        yield requested.is_set
    finally:
        signal.signal(signal.SIGINT, previous)


def _loop(
    run: Run,
    state: TrainState,
    batches: Any,
    steps: Steps,
    mesh: Any,
    writer: MetricsWriter,
    checkpointer: Checkpointer,
    progress: report.TrainingProgress,
    start: int,
    end: int,
    eval_batch: int,
    carried: dict[str, Any],
    probe: Probe | None,
) -> tuple[TrainState, float, float]:
    """Steps start..end; scalars come back to the host only at log, eval and save points."""
    t = run.config.train
    last_saved = checkpointer.latest_step()
    loss, images_per_sec = float("nan"), 0.0
    mark_time, mark_step = time.time(), start
    metrics = None

    def save(step: int) -> None:
        record = {"step": step, "data_position": step, **carried}
        if step == run.total_steps:  # a crash before results.json must not lose it
            record["final_train_loss"] = loss
        checkpointer.save(step, state, record)

    done = start
    with interrupt_requests() as interrupted:
        while done < end:
            group = t.steps_per_execution
            if group > 1 and _next_stop(done, end, t) - done >= group:
                state, metrics = steps.train_many(state, tuple(next(batches) for _ in range(group)))
            else:
                state, metrics = steps.train(state, next(batches))
                group = 1
            done, stop = done + group, interrupted()
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
            if t.eval_every and done % t.eval_every == 0 and done != run.total_steps:
                top1, count = evaluate(run, steps.evaluate, state.params, mesh, eval_batch)
                probed = probe(run, state.params) if probe else {}
                writer.write(done, {"test_top1": top1, **probed})
                extra = "".join(f", {k} {v:.2%}" for k, v in probed.items())
                progress.note(f"step {done}: test top-1 {top1:.2%} ({count:,} images{extra})")
            if done % t.checkpoint_every == 0 or done == end or stop:
                if not math.isfinite(float(metrics["loss"])):
                    raise TrainingDiverged(f"loss is not finite at step {done}; not saved")
                save(done)
                last_saved = done
            if stop:
                checkpointer.wait()
                raise Interrupted(
                    f"interrupted at step {done}; checkpoint saved in {checkpointer.directory}; "
                    "run the same command again to resume"
                )
    return state, loss, images_per_sec


def _next_stop(step: int, end: int, t: Any) -> int:
    """The first step after `step` where the host must look: a log, evaluation or
    checkpoint point, or the end. Groups of steps never run past one."""
    every = (t.log_every, t.eval_every, t.checkpoint_every)
    return min([end] + [(step // n + 1) * n for n in every if n])


def _results(
    run: Run,
    config: Config,
    command: str,
    state: TrainState,
    loss: float,
    images_per_sec: float,
    started: float,
) -> dict[str, Any]:
    t = config.train
    return {
        "command": command,
        "variant": model_name(config),
        "resolution": config.model.resolution,
        "grid_factor": config.model.grid_factor,
        "dataset": run.source.name,
        "num_classes": run.source.num_classes,
        "train_split": run.train_split,
        "eval_split": run.eval_split,
        "step": int(state.step),
        "total_steps": run.total_steps,
        "batch_size": t.batch_size,
        "final_train_loss": loss,
        "params_norm": float(jax.jit(optax.tree.norm)(state.params)),  # one compile
        "train_seconds": time.time() - started,
        "images_per_sec": images_per_sec,
        "finished": int(state.step) == run.total_steps,
    }
