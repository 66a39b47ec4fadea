"""`mixer plot`'s figures: read what a figure shows, draw it, write it where --out says."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixer_cli.core import report
from mixer_cli.core.errors import ConfigError

if TYPE_CHECKING:
    from mixer_cli.figures.weights import Units


def figure_path(out: Path | None, default_dir: Path, name: str, format_: str) -> Path:
    """Where the figure goes: --out as a file, --out as a directory, or the default."""
    from mixer_cli.figures import FORMATS

    if format_ not in FORMATS:
        raise ConfigError(f"--format {format_!r}: expected one of {', '.join(FORMATS)}")
    if out is not None and out.suffix:
        if out.suffix.lstrip(".").lower() not in FORMATS:
            raise ConfigError(f"--out {out}: a figure is .png or .svg")
        return out
    return (out if out is not None else default_dir) / f"{name}.{format_}"


@dataclass(frozen=True)
class WeightsSettings:
    """`mixer plot weights`: which checkpoint, blocks and units, and where the figure goes."""

    init: str | None  # None: the newest finished run under ./runs
    blocks: list[int] | None  # None: the first three
    units: int
    resolution: int | None
    out: Path | None
    format: str


@dataclass(frozen=True)
class WeightsFigure:
    """The written figure, the model drawn and one row per block shown."""

    path: Path
    model: str
    rows: list[dict[str, Any]]


def plot_weights(settings: WeightsSettings) -> WeightsFigure:
    """The paper's Fig. 5 of a checkpoint: its first token-mixing layer's units per block."""
    from mixer_cli import figures
    from mixer_cli.figures.weights import block_units, choose_blocks, draw_weights
    from mixer_cli.models import registry
    from mixer_cli.weights.arrays import flat_params

    init = settings.init if settings.init is not None else _newest_run()
    loaded = registry.load_checkpoint(init, settings.resolution)
    token_weights = registry.get(loaded.family).token_weights
    if token_weights is None:
        drawn = ", ".join(registry.families_that("token_weights"))
        raise ConfigError(
            f"{init} is a {loaded.family}: it mixes tokens without token-mixing weights to "
            f"draw (families that have them: {drawn})"
        )
    kernels = token_weights(flat_params(loaded.params))
    shown = [
        block_units(b, kernels[b], settings.units) for b in choose_blocks(kernels, settings.blocks)
    ]
    title = f"{loaded.name} at {loaded.resolution} px ({Path(str(init)).name}): token-mixing units"
    source = Path(str(init))
    default_dir = source if source.is_dir() else Path(".")
    name = "weights" if source.is_dir() else f"weights-{source.stem or 'model'}"
    figure = draw_weights(shown, title)
    path = figures.save(figure, figure_path(settings.out, default_dir, name, settings.format))
    return WeightsFigure(path, loaded.name, [_block_row(units) for units in shown])


def _newest_run() -> str:
    """--init's default: the newest finished run under ./runs (said on stderr)."""
    from mixer_cli.train.workdir import latest_run

    init = str(latest_run(Path("runs")))
    report.stderr.print(f"drawing {init} (the newest finished run; --init picks another)")
    return init


def _block_row(units: Units) -> dict[str, Any]:
    """One block's line of the table: units shown, opposite pairs, median frequency."""
    import numpy as np

    return {
        "block": units.block,
        "units": len(units.order),
        "pairs": units.pairs,
        "freq": float(np.median(units.frequency)),
    }


def plot_curves(runs: list[Path], x: str, smooth: float, out: Path | None, format_: str) -> Path:
    """Training curves of run directories, overlaid."""
    from mixer_cli import figures
    from mixer_cli.figures.curves import draw_curves, read_run

    loaded = [read_run(run) for run in runs]
    figure = draw_curves(loaded, x=x, smooth=smooth)
    return figures.save(figure, figure_path(out, Path(runs[0]), "curves", format_))


def plot_transfer(results: list[Path], out: Path | None, format_: str) -> Path:
    """Per-task test top-1 and the means of `mixer transfer` results, beside the paper's."""
    from mixer_cli import figures
    from mixer_cli.figures.transfer import draw_transfer, read_result

    loaded = [read_result(r) for r in results]
    first = Path(results[0])
    default_dir = first if first.is_dir() else first.parent
    return figures.save(draw_transfer(loaded), figure_path(out, default_dir, "transfer", format_))


def plot_fewshot(results: list[Path], out: Path | None, format_: str) -> Path:
    """Few-shot accuracy against shots of `mixer fewshot` results."""
    from mixer_cli import figures
    from mixer_cli.figures.fewshot import draw_fewshot, read_result

    loaded = [read_result(r) for r in results]
    first = Path(results[0])
    default_dir = first if first.is_dir() else first.parent
    return figures.save(draw_fewshot(loaded), figure_path(out, default_dir, "fewshot", format_))
