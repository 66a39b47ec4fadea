"""What the training subcommands share: config resolution, the run directory, the summary."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mixer_cli.config import Config

Distributed = tuple[str | None, int | None, int | None]  # coordinator, processes, process id


def default_workdir(command: str, variant: str, data: str) -> Path:
    tag = "-".join(
        part.replace("/", "").replace(":", "").replace(" ", "")
        for part in (command, variant, Path(data).name or data)
    )
    return Path("runs") / f"{tag}-{time.strftime('%Y%m%d-%H%M%S')}"


def training_flags(
    *,
    data: str | None,
    data_dir: Path | None,
    steps: int | None,
    epochs: float | None,
    batch_size: int | None,
    accum_steps: int | None,
    steps_per_execution: int | None,
    lr: float | None,
    dtype: str | None,
    seed: int | None,
) -> dict[str, Any]:
    """The flags every training command shares, as config keys (None: not given)."""
    return {
        "model.dtype": dtype,
        "data.name": data,
        "data.data_dir": None if data_dir is None else str(data_dir),
        "train.steps": steps,
        "train.epochs": epochs,
        "train.batch_size": batch_size,
        "train.accum_steps": accum_steps,
        "train.steps_per_execution": steps_per_execution,
        "train.seed": seed,
        "optim.lr": lr,
    }


def resolve_config(
    *,
    recipe: str | None,
    config_file: Path | None,
    flags: dict[str, Any],
    assignments: list[str],
    base: list[tuple[str, dict[str, Any]]] = (),
    default_recipe: str | None = "demo",
) -> Config:
    """defaults < base layers < --recipe/--config (else the default recipe) < flags < --set."""
    from mixer_cli.config import parse_assignments, resolve

    overrides = {key: value for key, value in flags.items() if value is not None}
    overrides.update(parse_assignments(assignments))
    chosen = recipe or (None if config_file else default_recipe)
    return resolve(chosen, config_file, overrides, base)


def run_training(
    command: str,
    config: Config,
    *,
    workdir: Path | None,
    stop_after: int | None,
    **engine_options: Any,
) -> dict[str, Any]:
    """Train with the engine in `workdir` (default runs/COMMAND-...) and print the summary."""
    from mixer_cli.train.engine import train_and_evaluate

    if workdir is None:
        workdir = default_workdir(command, config.model.variant, config.data.name)
    results = train_and_evaluate(
        config, workdir, command=command, stop_after=stop_after, **engine_options
    )
    print_summary(command, workdir, results)
    return results


def print_summary(command: str, workdir: Path, results: dict[str, Any]) -> None:
    from mixer_cli import report

    model = f"{results['variant']} at {results['resolution']} px"
    if results.get("grid_factor", 1) > 1:
        model += f" (grid factor {results['grid_factor']})"
    rows = [
        ("run directory", str(workdir)),
        ("model", model),
        ("data", f"{results['dataset']} ({results['train_split']} -> {results['eval_split']})"),
        ("steps", f"{results['step']:,} / {results['total_steps']:,}"),
        ("final train loss", f"{results['final_train_loss']:.4f}"),
        ("train img/s", f"{results['images_per_sec']:,.0f}"),
    ]
    if "test_top1_at_step0" in results:
        rows.append(("test top-1 at step 0", f"{results['test_top1_at_step0']:.2%}"))
    if "test_top1" in results:
        rows.append(("test top-1", f"{results['test_top1']:.2%} of {results['test_examples']:,}"))
    else:
        rows.append(("status", "stopped early; the same command resumes"))
    report.print_table(
        f"mixer {command}",
        [report.Column("what", "", justify="left"), report.Column("value", "", justify="left")],
        [{"what": what, "value": value} for what, value in rows],
    )
