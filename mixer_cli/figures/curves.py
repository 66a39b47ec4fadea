"""Training curves of one or more runs from their metrics.jsonl, overlaid by name.

Panels: the training loss, the learning rate, then every evaluator metric the runs
logged (test/top1, test/loss, fewshot/5shot, ...; example counts left out), against
steps or epochs. `smooth` is TensorBoard's exponential moving average (0: raw) of the
training loss, drawn over the raw curve, which stays faint behind it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixer_cli.core.errors import ConfigError

TRAIN_PANELS = ("loss", "lr")
LABELS = {"loss": "training loss", "lr": "learning rate"}


@dataclass(frozen=True)
class Run:
    name: str
    records: list[dict[str, Any]]
    steps_per_epoch: float | None  # None: unknown (no results.json with train_examples)


def read_run(path: Path) -> Run:
    """A run directory's metrics (and its epoch length, when results.json has it)."""
    from mixer_cli.train.metrics import read_metrics, read_results

    path = Path(path)
    if not (path / "metrics.jsonl").is_file():
        raise ConfigError(f"{path} has no metrics.jsonl: not a training run directory")
    records = read_metrics(path)
    if not records:
        raise ConfigError(f"{path}/metrics.jsonl holds no records yet")
    per_epoch = None
    if (path / "results.json").is_file():
        results = read_results(path)
        if results.get("train_examples") and results.get("batch_size"):
            per_epoch = results["train_examples"] / results["batch_size"]
    return Run(path.resolve().name, records, per_epoch)


def metric_names(runs: Sequence[Run]) -> list[str]:
    """The panels: training loss and lr first, then evaluator metrics in sorted order."""
    keys = {k for run in runs for r in run.records for k in r if "/" in k}
    evals = sorted(k for k in keys if not k.endswith("/examples"))
    train = [k for k in TRAIN_PANELS if any(k in r for run in runs for r in run.records)]
    return train + evals


def smoothed(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: a debiased exponential moving average."""
    out, last, norm = np.empty(len(values)), 0.0, 0.0
    for i, v in enumerate(values):
        last = weight * last + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out[i] = last / norm
    return out


def series(run: Run, key: str, x: str) -> tuple[np.ndarray, np.ndarray]:
    points = [(r["step"], r[key]) for r in run.records if key in r and r[key] is not None]
    steps, values = (np.asarray(v, float) for v in zip(*points, strict=True)) if points else (
        np.zeros(0), np.zeros(0))  # fmt: skip
    if x == "epochs":
        steps = steps / run.steps_per_epoch
    return steps, values


def draw_curves(runs: Sequence[Run], x: str = "steps", smooth: float = 0.0) -> Any:
    """A grid of panels, one per metric, one labelled line per run in each."""
    from mixer_cli.figures import pyplot

    if x not in ("steps", "epochs"):
        raise ConfigError(f"--x {x!r}: expected steps or epochs")
    if not 0 <= smooth < 1:
        raise ConfigError(f"--smooth must be in [0, 1), got {smooth}")
    if x == "epochs":
        unknown = [run.name for run in runs if run.steps_per_epoch is None]
        if unknown:
            raise ConfigError(
                f"--x epochs: {unknown[0]} has no results.json with train_examples "
                "(an unfinished run, or one from before mixer recorded it); use --x steps"
            )
    names = metric_names(runs)
    plt = pyplot()
    columns = min(3, len(names))
    rows = -(-len(names) // columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(4.4 * columns, 3.3 * rows), squeeze=False, sharex=True
    )
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key in zip(axes.flat, names, strict=False):
        for n, run in enumerate(runs):
            xs, ys = series(run, key, x)
            if not len(xs):
                continue
            colour = colours[n % len(colours)]
            if key == "loss" and smooth > 0:
                ax.plot(xs, ys, color=colour, alpha=0.25, linewidth=0.8)
                ys = smoothed(ys, smooth)
            style = "-" if key in TRAIN_PANELS else "o-"
            ax.plot(xs, ys, style, color=colour, label=run.name, markersize=3)
        ax.set_title(LABELS.get(key, key), fontsize=10)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)

    axes.flat[0].legend(fontsize=8)
    for ax in list(axes.flat)[len(names) :]:
        ax.set_visible(False)
    figure.tight_layout()
    return figure
