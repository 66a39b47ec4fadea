"""`mixer info`: the variant table with parameters and measured FLOPs; checkpoints; datasets."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from mixer_cli.commands import options


def info(
    variant: options.Variant = None,
    resolution: options.Resolution = None,
    num_classes: options.NumClasses = 0,
    checkpoint: options.Checkpoint = None,
    data: options.Data = None,
    data_dir: options.DataDir = None,
    set_: options.ModelSet = None,
    family: Annotated[
        Optional[str],
        typer.Option(
            "--family",
            help="A model family (mixer, vit, resnet, ...): its variants, or --variant in its "
            "notation, with parameters and GFLOPs per image.",
            show_default=False,
        ),
    ] = None,
    checkpoints: Annotated[
        bool,
        typer.Option("--checkpoints", help="List Google's released checkpoints by name."),
    ] = False,
    json: options.Json = False,
) -> None:
    """Show Mixer variants: layers, patch, widths, parameters and GFLOPs per image.

    Parameters exclude the head unless --num-classes is given (as in the paper's Table 1).
    FLOPs come from XLA's cost analysis of the compiled forward pass (2 per multiply-add).
    With --checkpoint, describe the architecture read off a checkpoint's shapes; with
    --data, describe a dataset (classes, image shape, splits); with --checkpoints, list
    Google's released checkpoints by the names every --init takes. With --set model.KEY=V
    (e.g. model.stem=conv, model.pattern=MMMA...), the one model those options make, of
    any family; with --family NAME, that family's variants (e.g. mixer info --family vit).
    """
    from mixer_cli.core.errors import ConfigError

    if checkpoints:
        _released(json)
        return
    if sum(x is not None for x in (variant, checkpoint, data)) > 1:
        raise ConfigError("give at most one of --variant, --checkpoint and --data")
    if family is not None and (checkpoint is not None or data is not None):
        raise ConfigError("--family describes a family's variants: not with --checkpoint or --data")
    if data is not None:
        _dataset(data, data_dir, json)
    elif family is not None:
        _family(family, variant, resolution, num_classes, set_ or [], json)
    elif checkpoint is not None:
        _checkpoint(checkpoint, resolution, json)
    elif set_:
        _model(variant, resolution, num_classes, set_, json)
    else:
        _variants(variant, resolution, num_classes, json)


def _variants(variant: str | None, resolution: int | None, num_classes: int, json: bool) -> None:
    from mixer_cli.core import report
    from mixer_cli.tasks.info import describe_variants

    table = describe_variants(variant, resolution, num_classes)
    if json:
        report.print_json(table.rows)
        return
    head = f"with a {table.num_classes}-class head" if table.num_classes else "without head"
    report.print_table(
        f"MLP-Mixer variants at {table.resolution} px (parameters {head})",
        [
            report.Column("variant", "Variant", justify="left"),
            report.Column("layers", "Layers"),
            report.Column("patch", "Patch"),
            report.Column("hidden_dim", "C"),
            report.Column("seq_len", "S"),
            report.Column("channels_mlp_dim", "D_C"),
            report.Column("tokens_mlp_dim", "D_S"),
            report.Column("params", "Params", report.millions),
            report.Column("gflops", "GFLOPs/img", lambda g: f"{g:,.2f}"),
        ],
        table.rows,
    )


def _model(
    variant: str | None, resolution: int | None, num_classes: int, items: list[str], json: bool
) -> None:
    """One model of any family from --set options: its parameters and GFLOPs per image."""
    from mixer_cli.tasks.info import describe_model

    row = describe_model(variant, resolution, num_classes, items)
    _models(f"{row['model']} at {row['resolution']} px", [row], num_classes, json)


def _checkpoint(checkpoint: Any, resolution: int | None, json: bool) -> None:
    """The model a checkpoint of any family holds: parameters and GFLOPs per image."""
    from mixer_cli.tasks.info import describe_checkpoint

    row = describe_checkpoint(checkpoint, resolution)
    title = f"{checkpoint}: {row['family']} {row['model']} at {row['resolution']} px"
    _models(title, [row], row["num_classes"], json)


def _family(
    name: str,
    variant: str | None,
    resolution: int | None,
    num_classes: int,
    items: list[str],
    json: bool,
) -> None:
    """A family's variants (or one, in its notation): parameters and GFLOPs per image."""
    from mixer_cli.tasks.info import describe_family

    rows = describe_family(name, variant, resolution, num_classes, items)
    _models(f"{name} variants at {rows[0]['resolution']} px", rows, num_classes, json)


def _models(title: str, rows: list[dict[str, Any]], num_classes: int, json: bool) -> None:
    from mixer_cli.core import report

    if json:
        report.print_json(rows)
        return
    head = f"with a {num_classes}-class head" if num_classes else "without head"
    report.print_table(
        f"{title} (parameters {head})",
        [
            report.Column("family", "Family", justify="left"),
            report.Column("model", "Model", justify="left"),
            report.Column("params", "Params", report.millions),
            report.Column("gflops", "GFLOPs/img", lambda g: f"{g:,.2f}"),
        ],
        rows,
    )


def _released(json: bool) -> None:
    from mixer_cli.core import report
    from mixer_cli.tasks.info import released_checkpoints

    rows = released_checkpoints()
    if json:
        report.print_json(rows)
        return
    report.print_table(
        "Google's released checkpoints (--init NAME; downloaded once, then verified)",
        [
            report.Column("name", "Name", justify="left"),
            report.Column("family", "Family", justify="left"),
            report.Column("variant", "Variant", justify="left"),
            report.Column("resolution", "Res."),
            report.Column("classes", "Classes", lambda c: f"{c:,}"),
            report.Column("source", "Source", justify="left"),
            report.Column("cached", "Cached"),
        ],
        rows,
    )


def _dataset(data: str, data_dir: Any, json: bool) -> None:
    from mixer_cli.core import report
    from mixer_cli.tasks.info import describe_dataset

    summary = describe_dataset(data, data_dir)
    if json:
        report.print_json(summary)
        return
    height, width, _ = summary["image_shape"]
    size = "varied" if height is None else f"{height}x{width}"
    report.print_table(
        f"{summary['dataset']}: {summary['num_classes']} classes"
        f"{' (per-pixel masks)' if summary['task'] == 'segment' else ''}, images {size} "
        f"(train on {summary['train_split']!r}, evaluate on {summary['eval_split']!r})",
        [report.Column("split", "Split", justify="left"), report.Column("examples", "Examples")],
        [{"split": name, "examples": f"{n:,}"} for name, n in summary["splits"].items()],
    )
