"""`mixer eval`: a checkpoint on a split by the shared evaluators, once.

`evaluate` is the task (load, pick the evaluators, run them, say what results.json
holds); `print_eval` renders its tables and `core.report.save_results` writes the file.
The steps it shares with `mixer fewshot` (a checkpoint's evaluation context, the suite run once on
fixed weights, features cached by content) live in `evals.suite`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixer_cli.evals.base import EvalSettings
from mixer_cli.evals.suite import checkpoint_context, evaluate_checkpoint
from mixer_cli.models.registry import Loaded

__all__ = [
    "EvalRequest",
    "EvalResult",
    "checkpoint_context",
    "describe",
    "evaluate",
    "evaluate_checkpoint",
    "print_eval",
]


@dataclass(frozen=True)
class EvalRequest:
    """What `mixer eval` was asked: the checkpoint (None: the newest finished run), the
    dataset (None: the run's own; with `evals` and no dataset, only those run), its split
    (None: its evaluation split), few-shot too, and evaluators by name, each on its own
    dataset (`real`, `imagenet_v2`, ...: `config.named_evals` builds them from types and
    `--set` keys)."""

    init: Path | None = None
    data: str | None = None
    data_dir: str | None = None
    split: str | None = None
    resolution: int | None = None
    fewshot: bool = False
    shots: tuple[int, ...] = (1, 5, 10, 25)
    batch_size: int = 256
    workdir: Path | None = None
    evals: dict[str, EvalSettings] = field(default_factory=dict)


@dataclass
class EvalResult:
    """What the evaluation found: results.json's content, and what its tables show."""

    results: dict[str, Any]
    metrics: dict[str, float]
    title: str  # of the metrics table
    fewshot: dict[str, Any] | None  # the few-shot table's input, when it ran
    workdir: Path


def describe(loaded: Loaded) -> dict[str, Any]:
    """What results.json says about the evaluated model."""
    return {
        "family": loaded.family,
        "variant": loaded.name,
        "resolution": loaded.resolution,
        "num_classes": loaded.num_classes,
        **loaded.details,
    }


def evaluate(request: EvalRequest) -> EvalResult:
    """The checkpoint on a split: classification when its head fits the dataset (else the
    representation evaluators only), few-shot on request."""
    from mixer_cli.core import report
    from mixer_cli.core.cache import default_cache_dir
    from mixer_cli.data import open_dataset
    from mixer_cli.evals import settings_class
    from mixer_cli.models.registry import load_checkpoint
    from mixer_cli.train.workdir import default_workdir, latest_run
    from mixer_cli.weights.forms import saved_run_config

    init, data, data_dir = request.init, request.data, request.data_dir
    named = dict(request.evals)
    if init is None:
        init = latest_run(Path("runs"))
        report.stderr.print(f"evaluating {init} (the newest finished run; --init picks another)")
    loaded = load_checkpoint(init, request.resolution)
    skip_corrupt = False  # the run's own data is read as the run read it
    if data is None and not named:
        run_data = saved_run_config(init).get("data", {})
        data, data_dir = run_data.get("name", "digits"), data_dir or run_data.get("data_dir")
        skip_corrupt = bool(run_data.get("skip_corrupt", False))
    source = None if data is None else open_dataset(data, data_dir, skip_corrupt=skip_corrupt)
    split = None if source is None else request.split or source.eval_split
    context = checkpoint_context(loaded, source, request.batch_size, data_dir, name=data)
    evals: dict[str, EvalSettings] = {}
    fewshot = request.fewshot
    if source is None:
        pass  # only the named evaluators, each on its own dataset
    elif loaded.num_classes == source.num_classes:
        evals["test"] = settings_class("classification")(split=split)
    else:
        head = f"a {loaded.num_classes}-class head" if loaded.num_classes else "no head"
        report.stderr.print(
            f"note: the checkpoint has {head} and {source.name} has {source.num_classes} "
            "classes: running the representation evaluators (few-shot) only"
        )
        fewshot = True
    if fewshot:
        evals["fewshot"] = settings_class("fewshot")(test_split=split, shots=request.shots)
    evals.update(named)
    metrics, suite = evaluate_checkpoint(loaded, evals, context, default_cache_dir())
    results: dict[str, Any] = {
        "command": "eval",
        "init": str(init),
        **describe(loaded),
        "dataset": None if source is None else source.name,
        "split": split,
        **({"evals": list(named)} if named else {}),
        **metrics,
    }
    table = None
    if fewshot:
        results["fewshot"] = suite.evaluators["fewshot"].details
        table = {
            "shots": list(request.shots),
            "seeds": list(range(evals["fewshot"].seeds)),
            "datasets": results["fewshot"],
            "variant": loaded.name,
            "resolution": loaded.resolution,
        }
    on = [f"{source.name} {split}"] if source is not None else []
    return EvalResult(
        results,
        metrics,
        f"{loaded.name} at {loaded.resolution} px on {', '.join([*on, *named])}",
        table,
        Path(request.workdir or default_workdir("eval", loaded.name, data or "+".join(named))),
    )


def print_eval(result: EvalResult) -> None:
    """The metrics table, and the few-shot table when few-shot ran."""
    from mixer_cli.core import report
    from mixer_cli.evals.ridge import print_fewshot_table

    report.print_table(
        result.title,
        [report.Column("metric", "metric", justify="left"), report.Column("value", "value")],
        [{"metric": k, "value": report.format_metric(k, v)} for k, v in result.metrics.items()],
    )
    if result.fewshot is not None:
        print_fewshot_table(result.fewshot)
