"""`mixer fewshot`: a checkpoint's linear few-shot accuracy on datasets, by the `fewshot`
evaluator run once on its fixed weights (features cached by content, so other shots or
seeds cost only the solves).

`run_fewshot` is the task (results.json's content); `evals.ridge.print_fewshot_table`
renders it and `core.report.save_results` writes the file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class FewshotRequest:
    """What `mixer fewshot` was asked: the checkpoint (None: the newest finished run),
    datasets, shots, seeds 0..seeds-1, ridge strengths (several: cross-validated) and the
    pool the shots are drawn from (0: each whole training split)."""

    init: Path | None
    datasets: tuple[str, ...]
    data_dir: str | None = None
    shots: tuple[int, ...] = (1, 5, 10, 25)
    seeds: int = 3
    l2s: tuple[float, ...] = (1024.0,)
    pool_per_class: int = 0
    resolution: int | None = None
    batch_size: int = 256
    use_cache: bool = True
    workdir: Path | None = None


@dataclass
class FewshotResult:
    results: dict[str, Any]  # results.json's content, and the table's input
    workdir: Path


def run_fewshot(request: FewshotRequest) -> FewshotResult:
    """Score the checkpoint on every dataset with the `fewshot` evaluator."""
    from mixer_cli.core import report
    from mixer_cli.core.cache import default_cache_dir
    from mixer_cli.data import open_dataset
    from mixer_cli.evals import settings_class
    from mixer_cli.evals.suite import checkpoint_context, evaluate_checkpoint
    from mixer_cli.models.registry import load_checkpoint
    from mixer_cli.train.workdir import default_workdir, latest_run

    init, datasets = request.init, list(request.datasets)
    if init is None:
        init = latest_run(Path("runs"))
        report.stderr.print(f"evaluating {init} (the newest finished run; --init picks another)")
    loaded = load_checkpoint(init, request.resolution)
    first = open_dataset(datasets[0], request.data_dir)
    context = checkpoint_context(
        loaded, first, request.batch_size, request.data_dir, name=datasets[0]
    )
    settings = settings_class("fewshot")(
        datasets=tuple(datasets),
        shots=tuple(request.shots),
        seeds=request.seeds,
        l2_reg=tuple(request.l2s),
        pool_per_class=request.pool_per_class,
    )
    started = time.time()
    cache_dir = default_cache_dir() if request.use_cache else None
    _, suite = evaluate_checkpoint(loaded, {"fewshot": settings}, context, cache_dir)
    evaluator = suite.evaluators["fewshot"]
    model = {"variant": loaded.name, "resolution": loaded.resolution, **loaded.details}
    results = {
        "command": "fewshot",
        "init": str(init),
        "variant": model["variant"],
        "resolution": model["resolution"],
        "grid_factor": model.get("grid_factor", 1),
        "shots": list(request.shots),
        "seeds": list(range(request.seeds)),
        "l2_regs": list(request.l2s),
        "pool_per_class": request.pool_per_class,
        "datasets": evaluator.details,
        "average": evaluator.average(),
        "seconds": time.time() - started,
    }
    workdir = request.workdir or default_workdir("fewshot", model["variant"], ",".join(datasets))
    return FewshotResult(results, Path(workdir))
