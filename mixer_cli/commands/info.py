"""`mixer info`: the variant table with parameters and measured FLOPs; checkpoints; datasets."""

from __future__ import annotations

from typing import Annotated, Any

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
    any family.
    """
    from mixer_cli.core.errors import ConfigError

    if checkpoints:
        _released(json)
        return
    if sum(x is not None for x in (variant, checkpoint, data)) > 1:
        raise ConfigError("give at most one of --variant, --checkpoint and --data")
    if data is not None:
        _dataset(data, data_dir, json)
    elif set_:
        _model(variant, resolution, num_classes, set_, json)
    else:
        _variants(variant, resolution, num_classes, checkpoint, json)


def _variants(
    variant: str | None, resolution: int | None, num_classes: int, checkpoint: Any, json: bool
) -> None:
    from mixer_cli.core import report
    from mixer_cli.core.errors import ConfigError
    from mixer_cli.models import LISTED_VARIANTS, parse_variant
    from mixer_cli.models.costs import describe
    from mixer_cli.models.mixer_checkpoint import read_checked

    if checkpoint is not None:
        _, arch = read_checked(checkpoint)
        if resolution not in (None, arch.resolution):
            raise ConfigError(
                f"{checkpoint} was trained at {arch.resolution} px; --resolution must match"
            )
        specs, resolution, num_classes = [arch.spec], arch.resolution, arch.num_classes
    else:
        specs = [parse_variant(name) for name in ([variant] if variant else LISTED_VARIANTS)]
        resolution = 224 if resolution is None else resolution
        for spec in specs:
            spec.check_resolution(resolution)

    rows = []
    with report.progress() as bar:
        task = bar.add_task("compiling to count FLOPs", total=len(specs))
        for spec in specs:
            rows.append(describe(spec, resolution, num_classes))
            bar.advance(task)

    if json:
        report.print_json(rows)
        return
    head = f"with a {num_classes}-class head" if num_classes else "without head"
    report.print_table(
        f"MLP-Mixer variants at {resolution} px (parameters {head})",
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
        rows,
    )


def _model(
    variant: str | None, resolution: int | None, num_classes: int, items: list[str], json: bool
) -> None:
    """One model of any family from --set options: its parameters and GFLOPs per image."""
    from mixer_cli.config import model_config
    from mixer_cli.core import report
    from mixer_cli.models import registry

    m = model_config(variant or "B/16", resolution or 224, "float32", items)
    family = registry.get(m.family)
    row = {
        "family": m.family,
        "model": family.parse(m),
        "resolution": m.resolution,
        "num_classes": num_classes,
        **family.count(m, num_classes),
    }
    if json:
        report.print_json([row])
        return
    head = f"with a {num_classes}-class head" if num_classes else "without head"
    report.print_table(
        f"{row['model']} at {m.resolution} px (parameters {head})",
        [
            report.Column("family", "Family", justify="left"),
            report.Column("model", "Model", justify="left"),
            report.Column("params", "Params", report.millions),
            report.Column("gflops", "GFLOPs/img", lambda g: f"{g:,.2f}"),
        ],
        [row],
    )


def _released(json: bool) -> None:
    from mixer_cli.core import report
    from mixer_cli.weights import released

    rows = []
    for name in released.NAMES:
        path = released.cache_path(name)
        rows.append(
            {
                "name": name,
                "source": f"{released.base_url()}/{name}.npz",
                "cached": f"{path.stat().st_size / 2**20:,.0f} MiB" if path.exists() else "-",
            }
        )
    if json:
        report.print_json(rows)
        return
    report.print_table(
        "Google's released Mixer checkpoints (--init NAME; downloaded once, then verified)",
        [
            report.Column("name", "Name", justify="left"),
            report.Column("source", "Source", justify="left"),
            report.Column("cached", "Cached"),
        ],
        rows,
    )


def _dataset(data: str, data_dir: Any, json: bool) -> None:
    from mixer_cli.core import report
    from mixer_cli.data import open_dataset

    source = open_dataset(data, data_dir, task=None)
    height, width, channels = source.image_shape
    summary = {
        "dataset": source.name,
        "task": source.task,
        "num_classes": source.num_classes,
        "image_shape": [height, width, channels],
        "train_split": source.train_split,
        "eval_split": source.eval_split,
        "splits": source.splits,
    }
    if json:
        report.print_json(summary)
        return
    size = "varied" if height is None else f"{height}x{width}"
    report.print_table(
        f"{source.name}: {source.num_classes} classes"
        f"{' (per-pixel masks)' if source.task == 'segment' else ''}, images {size} "
        f"(train on {source.train_split!r}, evaluate on {source.eval_split!r})",
        [report.Column("split", "Split", justify="left"), report.Column("examples", "Examples")],
        [{"split": name, "examples": f"{n:,}"} for name, n in source.splits.items()],
    )
