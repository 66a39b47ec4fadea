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


def _target(out: Path | None, default_dir: Path, name: str, format_: str) -> Path:
    """Where the figure goes: --out as a file, --out as a directory, or the default."""
    from mixer_cli.core.errors import ConfigError
    from mixer_cli.figures import FORMATS

    if format_ not in FORMATS:
        raise ConfigError(f"--format {format_!r}: expected one of {', '.join(FORMATS)}")
    if out is not None and out.suffix:
        if out.suffix.lstrip(".").lower() not in FORMATS:
            raise ConfigError(f"--out {out}: a figure is .png or .svg")
        return out
    return (out if out is not None else default_dir) / f"{name}.{format_}"


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
    import numpy as np

    from mixer_cli import figures
    from mixer_cli.core import report
    from mixer_cli.core.errors import ConfigError
    from mixer_cli.figures.weights import block_units, choose_blocks, draw_weights, token_kernels
    from mixer_cli.models.registry import load_checkpoint
    from mixer_cli.train.workdir import latest_run
    from mixer_cli.weights.arrays import flat_params

    chosen = None
    if blocks is not None:
        parts = [b.strip() for b in blocks.split(",") if b.strip()]
        if not parts or not all(b.isdigit() for b in parts):
            raise ConfigError(
                f"--blocks expects block numbers from 0 such as 0,1,2, got {blocks!r}"
            )
        chosen = list(dict.fromkeys(int(b) for b in parts))
    if init is None:
        init = str(latest_run(Path("runs")))
        report.stderr.print(f"drawing {init} (the newest finished run; --init picks another)")
    loaded = load_checkpoint(init, resolution)
    kernels = token_kernels(flat_params(loaded.params))
    shown = [block_units(b, kernels[b], units) for b in choose_blocks(kernels, chosen)]
    title = f"{loaded.name} at {loaded.resolution} px ({Path(str(init)).name}): token-mixing units"
    source = Path(str(init))
    default_dir = source if source.is_dir() else Path(".")
    name = "weights" if source.is_dir() else f"weights-{source.stem or 'model'}"
    path = figures.save(draw_weights(shown, title), _target(out, default_dir, name, format_))
    rows = [
        {
            "block": u.block,
            "units": len(u.order),
            "pairs": u.pairs,
            "freq": float(np.median(u.frequency)),
        }
        for u in shown
    ]
    report.print_table(
        f"{loaded.name}: first token-mixing layer",
        [
            report.Column("block", "block"),
            report.Column("units", "units shown"),
            report.Column("pairs", "opposite pairs"),
            report.Column("freq", "median frequency (cycles/side)", lambda v: f"{v:.2f}"),
        ],
        rows,
    )
    report.print_written(path)


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
    from mixer_cli import figures
    from mixer_cli.core import report
    from mixer_cli.figures.curves import draw_curves, read_run

    loaded = [read_run(run) for run in runs]
    figure = draw_curves(loaded, x=x, smooth=smooth)
    report.print_written(figures.save(figure, _target(out, Path(runs[0]), "curves", format_)))


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
    from mixer_cli import figures
    from mixer_cli.core import report
    from mixer_cli.figures.fewshot import draw_fewshot, read_result

    loaded = [read_result(r) for r in results]
    first = Path(results[0])
    default_dir = first if first.is_dir() else first.parent
    report.print_written(
        figures.save(draw_fewshot(loaded), _target(out, default_dir, "fewshot", format_))
    )
