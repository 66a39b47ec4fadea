"""`mixer transfer`: the paper's transfer protocols (Avg 5, VTAB-1k) for one checkpoint.

Each task of the suite (data/transfer_tasks.py) is fine-tuned as `mixer finetune` does
(tasks/finetune.py: the recipe, the backbone under a new zero head, its `lr_sweep` and
choice rule): every lr of the task's grid trained on the sweep's fit split (VTAB-1k:
train800; Avg 5: train minus dev) and scored on its held-out split (val200; dev), then
the chosen lr trained on the final split (train800val200; train) and scored on test.

The suite's directory holds `TASK/lr-LR/` and `TASK/final/`, ordinary resumable run
directories, `TASK/sweep.json` (the finished sweep and its choice, re-read on a rerun),
`suite.json` (the settings it was started with: a rerun with others is refused) and
`results.json` (every task's numbers, group and suite means, the paper's numbers),
rewritten as each task finishes. A rerun skips finished runs and resumes a half-done one.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixer_cli.config import Config, resolve
from mixer_cli.core import files, report
from mixer_cli.core.errors import ConfigError, DatasetNotFound
from mixer_cli.data import open_dataset
from mixer_cli.data.transfer_tasks import PREFIXES, SUITES, VTAB_GROUPS, TransferTask, find_task
from mixer_cli.tasks.finetune import backbone_settings, finetune_config, lr_sweep, with_lr

BATCH = 512  # the protocols' batch (ViT App. B.1.1); a smaller --batch-size accumulates
DEFAULT_RESOLUTION = 224  # Avg 5 at Table 3's resolution; VTAB-1k tasks follow their rule
# (sweep: fit, held-out), (final: train, test) splits of each protocol
SPLITS = {
    "vtab1k": (("train800", "val200"), ("train800val200", "test")),
    "avg5": (("train_minus_dev", "dev"), ("train", "test")),
}
SUITE_FILE, SWEEP_FILE, THROUGHPUT_FILE = "suite.json", "sweep.json", "throughput.json"
SWEEP = {
    "selected_lr": (int, float),
    "lr_sweep.*.lr": (int, float),
    "lr_sweep.*.holdout_top1": (int, float),
}


@dataclass(frozen=True)
class TransferSettings:
    """What `mixer transfer` was asked."""

    init: Path  # a checkpoint --init takes (a path, a released name, a run directory)
    suite: str  # avg5, vtab1k or TASK,TASK (vtab:NAME, avg5:NAME)
    workdir: Path | None  # None: runs/transfer-SUITE-TIME
    steps_scale: float = 1.0
    resolution: int | None = None  # None: each task's protocol's
    batch_size: int | None = None  # per micro-batch; None: 512 in one
    data_dir: Path | None = None
    throughput: bool = True  # measure img/s/core at the suite's resolutions at its end
    lr: float | None = None  # every task at this lr, no sweep (a budget, not the protocol)
    stop_after: int | None = None  # steps of this invocation's current run


def suite_tasks(spec: str) -> tuple[tuple[TransferTask, str], ...]:
    """`avg5`, `vtab1k` or a comma-separated list of tasks (vtab:NAME, avg5:NAME, either as
    TASK@FOLDER on an image folder): each task with the --data its runs read."""
    spec = spec.strip()
    if spec in SUITES:
        return tuple((task, task.spec) for task in SUITES[spec])
    names = [name.strip() for name in spec.split(",") if name.strip()]
    if not names or any(name.partition(":")[0] not in PREFIXES for name in names):
        listed = "; ".join(
            f"{prefix}: {', '.join(t.name for t in tasks)}" for prefix, tasks in PREFIXES.items()
        )
        raise ConfigError(
            f"--suite {spec!r}: expected {' or '.join(SUITES)}, or tasks as PREFIX:NAME "
            f"separated by commas ({listed})"
        )
    tasks = tuple((find_task(name.partition("@")[0]), name) for name in names)
    if len({t.name for t, _ in tasks}) < len(tasks):
        raise ConfigError(f"--suite {spec!r} names a task twice (or one task of both suites)")
    return tasks


def accum_steps(batch_size: int | None) -> int:
    """Micro-batches per step keeping the protocols' batch of 512 at `batch_size` each."""
    if batch_size is None:
        return 1
    if batch_size > BATCH or BATCH % batch_size:
        raise ConfigError(
            f"--batch-size {batch_size}: the protocols train on batches of {BATCH}; give a "
            f"divisor of {BATCH} (e.g. 256, 128, 64) and the rest is gradient accumulation"
        )
    return BATCH // batch_size


def scaled(steps: int, scale: float) -> int:
    return max(1, round(steps * scale))


def task_config(task: TransferTask, data: str, base: dict[str, Any], s: TransferSettings) -> Config:
    """The fine-tuning config of `task` reading `data`: the finetune recipe, the checkpoint's
    model at the task's resolution (`base`: backbone_settings), its steps and warmup scaled."""
    flags = {
        **base,
        "data.name": data,
        "data.data_dir": None if s.data_dir is None else str(s.data_dir),
        "train.steps": scaled(task.steps, s.steps_scale),
        "train.batch_size": BATCH,
        "train.accum_steps": accum_steps(s.batch_size),
        # the zero head's score at step 0 is the same for every run of a task: not repeated
        "evals.test.at_start": False,
    }
    if task.warmup_steps is not None:
        flags["optim.warmup_steps"] = task.warmup_steps
    config, _ = finetune_config(flags, lambda flags, layers: resolve(None, None, flags, layers))
    warmup = min(round(config.optim.warmup_steps * s.steps_scale), flags["train.steps"] - 1)
    return dataclasses.replace(config, optim=dataclasses.replace(config.optim, warmup_steps=warmup))


def resolution_of(task: TransferTask, s: TransferSettings) -> int:
    return s.resolution or task.resolution or DEFAULT_RESOLUTION


def plan(s: TransferSettings) -> tuple[list[tuple[TransferTask, Config]], Path]:
    """Every task's config and the suite's directory, all checked before anything runs:
    the settings, the checkpoint at each task's resolution, and every task's dataset (the
    missing ones listed together, each with how to prepare it)."""
    from mixer_cli.models.registry import load_checkpoint

    if not s.steps_scale > 0:
        raise ConfigError(
            f"--steps-scale must be above 0, got {s.steps_scale:g} (1: the protocols' steps)"
        )
    if s.lr is not None and not s.lr > 0:
        raise ConfigError(f"--lr must be above 0, got {s.lr:g}")
    tasks = suite_tasks(s.suite)
    accum_steps(s.batch_size)
    loaded = load_checkpoint(s.init)
    bases = {
        r: backbone_settings(loaded, s.init, r) for r in {resolution_of(t, s) for t, _ in tasks}
    }
    missing = []
    for name in dict.fromkeys(n for t, d in tasks for n in (d, *dict(t.final_evals).values())):
        try:
            open_dataset(name, s.data_dir, download=False)
        except DatasetNotFound as err:
            missing.append(str(err))
    if missing:
        raise DatasetNotFound(
            f"the suite needs {len(missing)} dataset(s) not prepared: {' | '.join(missing)}"
        )
    workdir = s.workdir or default_suite_dir(s.suite)
    _check_suite_record(workdir, s)
    return [(t, task_config(t, d, bases[resolution_of(t, s)], s)) for t, d in tasks], workdir


def default_suite_dir(suite: str) -> Path:
    from mixer_cli.train.workdir import default_workdir

    return default_workdir("transfer", suite.replace(",", "+"), "suite")


def _suite_record(s: TransferSettings) -> dict[str, Any]:
    return {
        "init": str(s.init),
        "steps_scale": s.steps_scale,
        "resolution": s.resolution,
        "lr": s.lr,
    }


def _check_suite_record(workdir: Path, s: TransferSettings) -> None:
    path = workdir / SUITE_FILE
    if not path.exists():
        return
    old, new = files.read_json(path, "a transfer suite's settings", {"init": str}), _suite_record(s)
    for key, value in new.items():
        if old.get(key) != value:
            raise ConfigError(
                f"{workdir} holds a suite run with other settings ({key}: {old.get(key)!r} "
                f"before, {value!r} now); rerun it with the same or choose another --workdir"
            )


class Runs:
    """The suite's runs in order: a finished one is read back, any other trained (or
    resumed) by the engine, each announced as `[k/N]` with what it trains and scores."""

    def __init__(self, total: int, stop_after: int | None) -> None:
        self.total, self.done, self.stop_after = total, 0, stop_after

    def __call__(self, config: Config, where: Path) -> dict[str, Any]:
        from mixer_cli.train.engine import train_and_evaluate

        self.done += 1
        what = self.what(config)
        results = self.finished(where)
        if results is not None:
            report.stderr.print(f"[{self.done}/{self.total}] {what}: finished, read back")
            return results
        report.stderr.print(f"[{self.done}/{self.total}] {what} in {where}")
        return train_and_evaluate(config, where, stop_after=self.stop_after)

    @staticmethod
    def what(config: Config) -> str:
        d = config.data
        return f"{d.name} lr {config.optim.lr:g}: {d.train_split} -> {d.eval_split}"

    @staticmethod
    def finished(where: Path) -> dict[str, Any] | None:
        """The results of the finished run in `where`; None when there is none."""
        from mixer_cli.train.metrics import read_results

        if (where / "results.json").exists():
            results = read_results(where)
            if results["finished"]:
                return results
        return None


# How the suite's tasks are run: (tasks and their configs, the suite's directory, its runs,
# the settings) -> each finished task's row as it arrives (`in_turn` here; as jobs:
# tasks/transfer_jobs.py).
Rows = Callable[
    [list[tuple[TransferTask, Config]], Path, Runs, TransferSettings], Iterator[dict[str, Any]]
]


def in_turn(
    tasks: list[tuple[TransferTask, Config]], workdir: Path, runs: Runs, s: TransferSettings
) -> Iterator[dict[str, Any]]:
    """Every run in this process, one after another, up to the first one left unfinished."""
    for task, config in tasks:
        row = run_task(task, config, workdir / task.name, runs, s)
        if row is None:
            return
        yield row


def final_evals(task: TransferTask, s: TransferSettings) -> dict[str, Any]:
    """The evaluators the task's final run adds to its test split's (ImageNet: ReaL, v2)."""
    from mixer_cli.evals import settings_class

    data_dir = None if s.data_dir is None else str(s.data_dir)
    return {
        kind: settings_class(kind)(data=data, data_dir=data_dir) for kind, data in task.final_evals
    }


def lrs_of(task: TransferTask, s: TransferSettings) -> tuple[float, ...]:
    """The lrs a task's sweep trains: its grid, or none when --lr fixes it."""
    return () if s.lr is not None else task.lrs


def run_task(
    task: TransferTask, config: Config, taskdir: Path, runs: Runs, s: TransferSettings
) -> dict | None:
    """One task's sweep (or its recorded choice) and final run; its row, or None when stopped."""
    sweep_splits, (train, test) = SPLITS[task.suite]
    record_path = taskdir / SWEEP_FILE
    if s.lr is not None:
        record = {"lr_sweep": [], "selected_lr": s.lr, "fixed_lr": True}
    elif record_path.exists():
        record = files.read_json(record_path, "a transfer task's lr sweep", SWEEP)
        runs.done += len(task.lrs)
    else:
        _, record = lr_sweep(config, taskdir, task.lrs, sweep_splits, runs)
        if record.get("stopped_in_sweep"):
            return None
        report.write_json(record_path, record)
    final = with_lr(config, record["selected_lr"], train_split=train, eval_split=test)
    final = dataclasses.replace(final, evals={**final.evals, **final_evals(task, s)})
    results = runs(final, taskdir / "final")
    if not results["finished"]:
        return None
    extra = {f"{kind}_top1": results[f"{kind}/top1"] for kind, _ in task.final_evals}
    return {
        "task": task.spec,
        "data": config.data.name,
        "suite": task.suite,
        "group": task.group,
        "resolution": config.model.resolution,
        "steps": config.train.steps,
        "selected_lr": record["selected_lr"],
        "lr_sweep": record["lr_sweep"],
        "test_top1": results["test/top1"],
        **extra,
        "workdir": str(taskdir / "final"),
    }


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Group means (VTAB-1k's natural / specialized / structured) and each suite's mean
    (over its tasks present; `complete` when all of them are)."""
    groups = {
        g: statistics.fmean(r["test_top1"] for r in rows if r["group"] == g)
        for g in VTAB_GROUPS
        if any(r["group"] == g for r in rows)
    }
    suites = {}
    for name, tasks in SUITES.items():
        done = [r["test_top1"] for r in rows if r["suite"] == name]
        if done:
            suites[name] = {
                "mean": statistics.fmean(done),
                "tasks": len(done),
                "complete": len(done) == len(tasks),
            }
    imagenet = next((r for r in rows if r["task"] == "avg5:imagenet2012"), {})
    return {
        "group_means": groups,
        "suite_means": suites,
        "imagenet": imagenet.get("test_top1"),
        "real": imagenet.get("real_top1"),
        "imagenet_v2": imagenet.get("imagenet_v2_top1"),
    }


def paper_numbers(s: TransferSettings) -> dict[str, Any] | None:
    """The paper's numbers (as fractions) for a released checkpoint given by its name."""
    from mixer_cli.weights.published import PERCENT, published
    from mixer_cli.weights.released import name_of

    resolution = s.resolution or DEFAULT_RESOLUTION
    found = published(name_of(str(s.init)), resolution)
    if found is None:
        return None
    return {
        "resolution": resolution,
        **{k: v / 100 if k in PERCENT else v for k, v in found.items()},
    }


def run_transfer(
    s: TransferSettings,
    arrived: Callable[[dict[str, Any]], None] = lambda row: None,
    rows: Rows = in_turn,
) -> dict[str, Any]:
    """Run the suite (its runs as `rows` runs them), calling `arrived` with each task's row
    as it finishes (read back or trained); the suite's results, also in
    WORKDIR/results.json (`finished` False when a run stopped early: the same command
    resumes)."""
    tasks, workdir = plan(s)
    workdir.mkdir(parents=True, exist_ok=True)
    report.write_json(workdir / SUITE_FILE, _suite_record(s))
    runs = Runs(sum(len(lrs_of(t, s)) + 1 for t, _ in tasks), s.stop_after)
    results: dict[str, Any] = {
        "command": "transfer",
        "suite": s.suite,
        "init": str(s.init),
        "steps_scale": s.steps_scale,
        "comparable_to_paper": s.steps_scale == 1 and s.lr is None,
        "fixed_lr": s.lr,
        "batch_size": BATCH,
        "accum_steps": accum_steps(s.batch_size),
        "paper": paper_numbers(s),
        "workdir": str(workdir),
        "tasks": [],
        **summary([]),
        "finished": False,
    }
    for row in rows(tasks, workdir, runs, s):
        results["tasks"].append(row)
        results.update(summary(results["tasks"]))
        report.write_json(workdir / "results.json", results)
        arrived(row)
    results["finished"] = len(results["tasks"]) == len(tasks)
    if results["finished"] and s.throughput:
        results["throughput"] = throughput(tasks, workdir)
    report.write_json(workdir / "results.json", results)
    return results


def throughput(tasks: list[tuple[TransferTask, Config]], workdir: Path) -> dict[str, Any]:
    """The paper's img/s/core column: `mixer bench`'s evaluation forward pass of the suite's
    model at each resolution it fine-tuned at, measured once (kept in throughput.json)."""
    from mixer_cli.train.throughput import BenchSettings, run_bench

    path = workdir / THROUGHPUT_FILE
    if path.exists():
        return files.read_json(path, "a transfer suite's throughput", {})
    measured = {}
    for resolution, model in {c.model.resolution: c.model for _, c in tasks}.items():
        report.stderr.print(f"measuring throughput at {resolution} px (mixer bench, forward)")
        settings = BenchSettings(
            resolution=resolution, mode="forward", windows=3, window_seconds=0.5,
            measure_peak=False, run_model=model,
        )  # fmt: skip
        bench = run_bench(settings)
        forward = bench["forward"]
        measured[str(resolution)] = {
            "images_per_sec_per_core": forward["images_per_sec_per_core"],
            "images_per_sec": forward["images_per_sec"],
            "cores": bench["cores"],
            "device_kind": bench["device_kind"],
            "batch_size": settings.batch_size,
            "dtype": model.dtype,
        }
    report.write_json(path, measured)
    return measured
