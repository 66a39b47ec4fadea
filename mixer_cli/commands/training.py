"""What the training subcommands share: config resolution, the run directory, the summary."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def default_workdir(command: str, variant: str, data: str) -> Path:
    tag = "-".join(
        part.replace("/", "").replace(":", "").replace(" ", "")
        for part in (command, variant, Path(data).name or data)
    )
    return Path("runs") / f"{tag}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_training(
    command: str,
    *,
    recipe: str | None,
    config_file: Path | None,
    flags: dict[str, Any],
    assignments: list[str],
    workdir: Path | None,
    init: Path | None,
    stop_after: int | None,
    distributed: tuple[str | None, int | None, int | None],
) -> dict[str, Any]:
    from mixer_cli import distributed as dist
    from mixer_cli import report
    from mixer_cli.config import parse_assignments, resolve

    dist.initialize(*distributed)
    overrides = {key: value for key, value in flags.items() if value is not None}
    overrides.update(parse_assignments(assignments))
    config = resolve(recipe or (None if config_file else "demo"), config_file, overrides)
    if workdir is None:
        workdir = default_workdir(command, config.model.variant, config.data.name)

    from mixer_cli.train.engine import train_and_evaluate

    results = train_and_evaluate(config, workdir, command=command, init=init, stop_after=stop_after)
    rows = [
        ("run directory", str(workdir)),
        ("model", f"{results['variant']} at {results['resolution']} px"),
        ("data", f"{results['dataset']} ({results['train_split']} -> {results['eval_split']})"),
        ("steps", f"{results['step']:,} / {results['total_steps']:,}"),
        ("final train loss", f"{results['final_train_loss']:.4f}"),
        ("train img/s", f"{results['images_per_sec']:,.0f}"),
    ]
    if "test_top1" in results:
        rows.append(("test top-1", f"{results['test_top1']:.2%} of {results['test_examples']:,}"))
    else:
        rows.append(("status", "stopped early; the same command resumes"))
    report.print_table(
        f"mixer {command}",
        [report.Column("what", "", justify="left"), report.Column("value", "", justify="left")],
        [{"what": what, "value": value} for what, value in rows],
    )
    return results
