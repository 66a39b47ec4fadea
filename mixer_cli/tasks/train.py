"""Training as a command runs it: the engine in a run directory, the command's own
results added, the summary printed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mixer_cli.config import Config
from mixer_cli.train.workdir import default_workdir


def run_training(
    command: str,
    config: Config,
    *,
    workdir: Path | None,
    stop_after: int | None,
    extra: dict[str, Any] | None = None,
    notes: list[str] = (),
) -> dict[str, Any]:
    """Train with the engine in `workdir` (default runs/COMMAND-...), add what the command
    knows (its name, `extra`) to results.json, and print the summary (with `notes`: how
    the command chose settings the user did not name)."""
    import jax

    from mixer_cli.core import report
    from mixer_cli.train.engine import train_and_evaluate

    if workdir is None:
        workdir = default_workdir(command, config.model.variant, config.data.name)
    results = train_and_evaluate(config, workdir, stop_after=stop_after)
    results = {"command": command, **results, **(extra or {})}
    if jax.process_index() == 0 and results["finished"]:
        report.write_json(workdir / "results.json", results)
    print_summary(command, workdir, results, notes)
    return results


def print_summary(
    command: str, workdir: Path, results: dict[str, Any], notes: list[str] = ()
) -> None:
    from mixer_cli.core import report

    model = f"{results['variant']} at {results['resolution']} px"
    ips = results["images_per_sec"]  # 0: this invocation ran no step (resumed at its end)
    if results.get("grid_factor", 1) > 1:
        model += f" (grid factor {results['grid_factor']})"
    rows = [
        ("run directory", str(workdir)),
        ("model", model),
        ("data", f"{results['dataset']} ({results['train_split']} -> {results['eval_split']})"),
        ("steps", f"{results['step']:,} / {results['total_steps']:,}"),
        ("final train loss", f"{results['final_train_loss']:.4f}"),
        ("train img/s", f"{ips:,.0f}" if ips else "- (no step left to run: resumed at its end)"),
        *(("settings", note) for note in notes),
    ]
    for key, value in results.get("at_step0", {}).items():
        rows.append((f"{key} at step 0", report.format_metric(key, value)))
    metrics = {k: v for k, v in results.items() if "/" in k and isinstance(v, (int, float))}
    for key, value in metrics.items():
        rows.append((key, report.format_metric(key, value)))
    if not results["finished"]:
        rows.append(("status", "stopped early; the same command resumes"))
    report.print_table(
        f"mixer {command}",
        [report.Column("what", "", justify="left"), report.Column("value", "", justify="left")],
        [{"what": what, "value": value} for what, value in rows],
    )
