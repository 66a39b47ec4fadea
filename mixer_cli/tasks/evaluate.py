"""Evaluators on fixed weights: a loaded checkpoint, its context, cached feature passes.

`mixer eval` and `mixer fewshot` are this (`run_eval`, `run_fewshot`): the same
evaluators a training run declares, run once on a checkpoint. Features of fixed weights
are cached by content, so repeating an evaluation with other shots or seeds costs only
the solves.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mixer_cli.data import Preprocessing
from mixer_cli.data.sources import DataSource
from mixer_cli.evals.base import Context, EvalSettings
from mixer_cli.evals.forward import FeatureCache
from mixer_cli.evals.suite import EvalSuite
from mixer_cli.models.registry import Loaded


def checkpoint_context(
    loaded: Loaded,
    source: DataSource,
    batch_size: int,
    data_dir: str | None = None,
    *,
    name: str | None = None,
) -> Context:
    """Evaluating `loaded` on `source` (opened as `name`): the reference evaluation
    transform at the checkpoint's resolution, splits as the dataset names them."""
    context = Context(
        source=source,
        train_split=source.train_split,
        eval_split=source.eval_split,
        preprocessing=Preprocessing(resolution=loaded.resolution),
        num_classes=loaded.num_classes,
        head="classify",
        loss="softmax",
        batch_size=batch_size,
        resolution=loaded.resolution,
        data_dir=data_dir,
    )
    if name is not None:  # evaluators naming the same dataset reuse the opened source
        context.opened[(name, data_dir, source.task)] = source
    return context


def evaluate_checkpoint(
    loaded: Loaded,
    evals: Mapping[str, EvalSettings],
    context: Context,
    cache_dir: Path | None,
) -> tuple[dict[str, float], EvalSuite]:
    """Every evaluator once on the checkpoint's weights: (metrics, the suite, whose
    evaluators keep their details)."""
    suite = EvalSuite.from_config(evals, context, default_every=0)
    cache = None if cache_dir is None else FeatureCache(cache_dir, loaded.params)
    metrics = suite.run(loaded.model, loaded.params, cache=cache)
    return metrics, suite


def describe(loaded: Loaded) -> dict[str, Any]:
    """What results.json says about the evaluated model."""
    return {
        "family": loaded.family,
        "variant": loaded.name,
        "resolution": loaded.resolution,
        "num_classes": loaded.num_classes,
        **loaded.details,
    }


def run_fewshot(
    init: Path,
    datasets: Sequence[str],
    *,
    data_dir: str | None,
    shots: Sequence[int],
    seeds: Sequence[int],
    l2s: Sequence[float],
    resolution: int | None,
    batch_size: int,
    use_cache: bool,
    workdir: Path | None,
    table: bool = True,
) -> dict[str, Any]:
    """Score a checkpoint on datasets with the `fewshot` evaluator (features cached),
    print the table and write results.json."""
    import jax

    from mixer_cli.core import report
    from mixer_cli.core.cache import default_cache_dir
    from mixer_cli.core.errors import ConfigError
    from mixer_cli.data import open_dataset
    from mixer_cli.evals import settings_class
    from mixer_cli.evals.ridge import print_fewshot_table
    from mixer_cli.models.registry import load_checkpoint
    from mixer_cli.train.workdir import default_workdir

    loaded = load_checkpoint(init, resolution)
    first = open_dataset(datasets[0], data_dir)
    context = checkpoint_context(loaded, first, batch_size, data_dir, name=datasets[0])
    settings = settings_class("fewshot")(
        datasets=tuple(datasets), shots=tuple(shots), seeds=len(seeds), l2_reg=tuple(l2s)
    )
    if list(seeds) != list(range(len(seeds))):
        raise ConfigError(f"seeds are 0..N-1, got {list(seeds)}")
    started = time.time()
    cache_dir = default_cache_dir() if use_cache else None
    _, suite = evaluate_checkpoint(loaded, {"fewshot": settings}, context, cache_dir)
    evaluator = suite.evaluators["fewshot"]
    model = describe(loaded)
    results = {
        "command": "fewshot",
        "init": str(init),
        "variant": model["variant"],
        "resolution": model["resolution"],
        "grid_factor": model.get("grid_factor", 1),
        "shots": list(shots),
        "seeds": list(seeds),
        "l2_regs": list(l2s),
        "datasets": evaluator.details,
        "average": evaluator.average(),
        "seconds": time.time() - started,
    }
    if table:
        print_fewshot_table(results)
    if workdir is None:
        workdir = default_workdir("fewshot", model["variant"], ",".join(datasets))
    if jax.process_index() == 0:
        report.write_json(Path(workdir) / "results.json", results)
        report.stderr.print(f"results in {Path(workdir) / 'results.json'}")
    return results


def run_eval(
    init: Path | None,
    data: str | None,
    *,
    data_dir: str | None,
    split: str | None,
    resolution: int | None,
    fewshot: bool,
    shots: str,
    batch_size: int,
    workdir: Path | None,
    table: bool = True,
) -> dict[str, Any]:
    """`mixer eval`: the checkpoint on a split, classification when its head fits the
    dataset (else the representation evaluators only), few-shot on request."""
    import jax

    from mixer_cli.config import parse_number_list
    from mixer_cli.core import report
    from mixer_cli.core.cache import default_cache_dir
    from mixer_cli.data import open_dataset
    from mixer_cli.evals import settings_class
    from mixer_cli.evals.ridge import print_fewshot_table
    from mixer_cli.models.registry import load_checkpoint
    from mixer_cli.train.workdir import default_workdir, latest_run
    from mixer_cli.weights.forms import saved_run_config

    shot_list = tuple(sorted(parse_number_list(shots, int, "--shots")))
    if init is None:
        init = latest_run(Path("runs"))
        report.stderr.print(f"evaluating {init} (the newest finished run; --init picks another)")
    loaded = load_checkpoint(init, resolution)
    if data is None:
        run_data = saved_run_config(init).get("data", {})
        data, data_dir = run_data.get("name", "digits"), data_dir or run_data.get("data_dir")
    source = open_dataset(data, data_dir)
    split = split or source.eval_split
    context = checkpoint_context(loaded, source, batch_size, data_dir, name=data)
    evals: dict[str, EvalSettings] = {}
    if loaded.num_classes == source.num_classes:
        evals["test"] = settings_class("classification")(split=split)
    else:
        head = f"a {loaded.num_classes}-class head" if loaded.num_classes else "no head"
        report.stderr.print(
            f"note: the checkpoint has {head} and {source.name} has {source.num_classes} "
            "classes: running the representation evaluators (few-shot) only"
        )
        fewshot = True
    if fewshot:
        evals["fewshot"] = settings_class("fewshot")(test_split=split, shots=shot_list)
    cache_dir = default_cache_dir()
    metrics, suite = evaluate_checkpoint(loaded, evals, context, cache_dir)
    results: dict[str, Any] = {
        "command": "eval",
        "init": str(init),
        **describe(loaded),
        "dataset": source.name,
        "split": split,
        **metrics,
    }
    if fewshot:
        results["fewshot"] = suite.evaluators["fewshot"].details
    if table:
        report.print_table(
            f"{loaded.name} at {loaded.resolution} px on {source.name} {split}",
            [
                report.Column("metric", "metric", justify="left"),
                report.Column("value", "value"),
            ],
            [{"metric": k, "value": report.format_metric(k, v)} for k, v in metrics.items()],
        )
        if fewshot:
            print_fewshot_table(
                {
                    "shots": list(shot_list),
                    "seeds": list(range(evals["fewshot"].seeds)),
                    "datasets": results["fewshot"],
                    "variant": loaded.name,
                    "resolution": loaded.resolution,
                }
            )
    workdir = Path(workdir or default_workdir("eval", loaded.name, data))
    if jax.process_index() == 0:
        report.write_json(workdir / "results.json", results)
        report.stderr.print(f"results in {workdir / 'results.json'}")
    return results
