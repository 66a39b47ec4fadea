"""`mixer plot weights|curves|fewshot`: figures as PNG (or SVG) files; no display needed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mixer_cli.commands import options

app = typer.Typer(
    help="Figures: token-mixing weights (the paper's Fig. 5), training curves, few-shot "
    "curves. PNG files (SVG with --format svg), written without a display; the path is printed.",
    no_args_is_help=True,
)

Out = Annotated[
    Optional[Path],
    typer.Option(
        "--out",
        help="The file to write (.png or .svg), or a directory for the default name. "
        "[default: in the run directory]",
        show_default=False,
    ),
]
Format = Annotated[str, typer.Option("--format", help="png or svg (when --out names no file).")]


def _blocks(blocks: str | None) -> list[int] | None:
    """--blocks 0,1,2 -> [0, 1, 2] (duplicates dropped, order kept); None: not given."""
    from mixer_cli.core.errors import ConfigError

    if blocks is None:
        return None
    parts = [b.strip() for b in blocks.split(",") if b.strip()]
    if not parts or not all(b.isdigit() for b in parts):
        raise ConfigError(f"--blocks expects block numbers from 0 such as 0,1,2, got {blocks!r}")
    return list(dict.fromkeys(int(b) for b in parts))


@app.command("weights")
def weights(
    init: Annotated[
        Optional[str],
        typer.Option(
            "--init",
            help="The checkpoint: any form --init takes (.npz, a run directory, "
            "imagenet21k/Mixer-B_16, .safetensors, hf-hub:timm/NAME). "
            "[default: the newest finished run]",
            show_default=False,
        ),
    ] = None,
    blocks: Annotated[
        Optional[str],
        typer.Option(
            "--blocks",
            help="Blocks to show, e.g. 0,1,2 (from 0). [default: the first three]",
            show_default=False,
        ),
    ] = None,
    units: Annotated[
        int, typer.Option("--units", help="Hidden units shown per block.", min=2)
    ] = 64,
    resolution: options.AdaptedResolution = None,
    out: Out = None,
    format_: Format = "png",
) -> None:
    """The first token-mixing layer's hidden units as images on the token grid, one panel
    per block (the paper's Fig. 5): units paired by opposite phase, pairs side by side,
    sorted by spatial frequency (low first), each scaled to its own largest weight.

    A checkpoint at K times its pre-training resolution shows each unit in one of its
    K x K parts. `mixer plot weights --init imagenet21k/Mixer-B_16` draws Google's.
    """
    from mixer_cli.core import report
    from mixer_cli.tasks.plot import WeightsSettings, plot_weights

    settings = WeightsSettings(
        init=init,
        blocks=_blocks(blocks),
        units=units,
        resolution=resolution,
        out=out,
        format=format_,
    )
    drawn = plot_weights(settings)
    report.print_table(
        f"{drawn.model}: first token-mixing layer",
        [
            report.Column("block", "block"),
            report.Column("units", "units shown"),
            report.Column("pairs", "opposite pairs"),
            report.Column("freq", "median frequency (cycles/side)", lambda v: f"{v:.2f}"),
        ],
        drawn.rows,
    )
    report.print_written(drawn.path)


@app.command("curves")
def curves(
    runs: Annotated[list[Path], typer.Argument(help="Run directories (with metrics.jsonl).")],
    x: Annotated[str, typer.Option("--x", help="steps or epochs.")] = "steps",
    smooth: Annotated[
        float, typer.Option("--smooth", help="Smoothing of the training loss in [0, 1).")
    ] = 0.0,
    out: Out = None,
    format_: Format = "png",
) -> None:
    """Training loss, learning rate, test top-1 and every evaluator metric against steps
    (or epochs), the runs overlaid with their names: `mixer plot curves runs/a runs/b`."""
    from mixer_cli.core import report
    from mixer_cli.tasks.plot import plot_curves

    report.print_written(plot_curves(runs, x, smooth, out, format_))


@app.command("fewshot")
def fewshot(
    results: Annotated[
        list[Path], typer.Argument(help="`mixer fewshot` results.json files or their directories.")
    ],
    out: Out = None,
    format_: Format = "png",
) -> None:
    """Linear few-shot accuracy against shots, one panel per dataset, one line per result
    (mean, shaded +- std over seeds, each seed a dot): `mixer plot fewshot runs/fewshot-*`."""
    from mixer_cli.core import report
    from mixer_cli.tasks.plot import plot_fewshot

    report.print_written(plot_fewshot(results, out, format_))


@app.command("transfer")
def transfer(
    results: Annotated[
        list[Path], typer.Argument(help="`mixer transfer` results.json files or suite directories.")
    ],
    out: Out = None,
    format_: Format = "png",
) -> None:
    """Test top-1 per task of transfer suites, one bar per result, and their means beside the
    paper's numbers: `mixer plot transfer runs/transfer-vtab1k-* runs/transfer-vit-*`."""
    from mixer_cli.core import report
    from mixer_cli.tasks.plot import plot_transfer

    report.print_written(plot_transfer(results, out, format_))
