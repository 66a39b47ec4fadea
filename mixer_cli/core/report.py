"""Everything the user sees: rich tables, progress bars and JSON results.

One place for presentation, so every subcommand prints tables the same way and
writes the same JSON. Tables and JSON go to stdout; progress and notes to stderr,
so ``mixer ... --json | jq`` stays clean.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

stdout = Console()
stderr = Console(stderr=True)


@dataclass(frozen=True)
class Column:
    """A table column: which field of a row it shows and how."""

    key: str
    header: str
    fmt: Callable[[Any], str] = str
    justify: str = "right"
    no_wrap: bool = False  # numbers such as '98.1% ± 0.2%' read badly over two lines


def print_table(title: str, columns: Sequence[Column], rows: Sequence[Mapping[str, Any]]) -> None:
    stdout.print(title, style="bold", highlight=False)  # above, not wrapped to the table width
    table = Table()
    for column in columns:
        table.add_column(
            column.header,
            justify=column.justify,  # type: ignore[arg-type]
            no_wrap=column.no_wrap,
        )
    for row in rows:
        table.add_row(*(column.fmt(row[column.key]) for column in columns))
    stdout.print(table)


def print_written(path: str | os.PathLike, what: str = "figure") -> None:
    """Say a file was written: the words on stderr, the path alone on stdout (unwrapped,
    so scripts can read it)."""
    stderr.print(f"{what} written:")
    print(path)


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False)


def print_json(obj: Any) -> None:
    # Plain print: rich would wrap or colour it, and this output is for machines.
    print(to_json(obj))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write JSON atomically: a reader sees the old file or the new one, never half of one."""
    from mixer_cli.core.atomic import atomic_write

    with atomic_write(path) as f:
        f.write(to_json(obj) + "\n")
    return Path(path)


def save_results(workdir: str | os.PathLike, results: Any) -> Path:
    """A command's results.json in `workdir`, written by the first process only, and a
    line saying where it is."""
    import jax

    path = Path(workdir) / "results.json"
    if jax.process_index() == 0:
        write_json(path, results)
        stderr.print(f"results in {path}")
    return path


class _TransientProgress(Progress):
    """rich's Progress, without the empty line it prints when it stops on a console that
    is not a terminal (a log, a pipe, a test's capture): a bar that disappears leaves
    nothing, so an error raised under it is still the output's one line."""

    def stop(self) -> None:
        if not self.disable:
            self.live.stop()


def progress(enabled: bool = True) -> Progress:
    """A progress bar on stderr that disappears when done (use as a context manager);
    disabled where another one is live (an evaluation inside training's bar)."""
    return _TransientProgress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr,
        transient=True,
        disable=not enabled or not stderr.is_interactive,
    )


def format_metric(key: str, value: float) -> str:
    """Accuracies as percentages (top1, top5, few-shot), counts whole, the rest short."""
    metric = key.rsplit("/", 1)[-1]
    if metric.startswith("top") or metric.endswith("shot"):
        return f"{value:.2%}"
    if metric in ("examples", "excluded"):
        return f"{value:,.0f}"
    return f"{value:.4g}"


def format_metrics(metrics: dict[str, float]) -> str:
    """'test/top1 97.50%, test/loss 0.08, ...' for a progress line."""
    shown = {k: v for k, v in metrics.items() if not k.endswith("/examples")}
    return ", ".join(f"{k} {format_metric(k, v)}" for k, v in shown.items())


def millions(n: int) -> str:
    return f"{n / 1e6:,.1f}M" if n >= 1e5 else f"{n:,}"


class TrainingProgress:
    """A progress bar with the live training scalars; `note` prints a line above it."""

    def __init__(self, total: int, start: int, enabled: bool) -> None:
        from rich.progress import TimeRemainingColumn

        self.enabled = enabled
        self.bar = Progress(
            TextColumn("step {task.completed:>6}/{task.total}"),
            BarColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}"),
            TextColumn("{task.fields[ips]:,.0f} img/s"),
            TimeRemainingColumn(),
            console=stderr,
            disable=not enabled,
        )
        self.task = self.bar.add_task(
            "train", total=total, completed=start, loss=float("nan"), lr=0.0, ips=0.0
        )

    def __enter__(self) -> TrainingProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)

    def update(self, step: int, **fields: float) -> None:
        self.bar.update(self.task, completed=step, **fields)

    def note(self, text: str) -> None:
        if self.enabled:
            self.bar.console.print(text)


def training_progress(total: int, start: int, enabled: bool = True) -> TrainingProgress:
    return TrainingProgress(total, start, enabled)
