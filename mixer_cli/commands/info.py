"""`mixer info`: the variant table with parameters and measured FLOPs."""

from __future__ import annotations

from mixer_cli.commands import options


def info(
    variant: options.Variant = None,
    resolution: options.Resolution = None,
    num_classes: options.NumClasses = 0,
    checkpoint: options.Checkpoint = None,
    json: options.Json = False,
) -> None:
    """Show Mixer variants: layers, patch, widths, parameters and GFLOPs per image.

    Parameters exclude the head unless --num-classes is given (as in the paper's Table 1).
    FLOPs come from XLA's cost analysis of the compiled forward pass (2 per multiply-add).
    With --checkpoint, describe the architecture read off an .npz file's shapes.
    """
    from mixer_cli import report
    from mixer_cli.checkpoints import read_checked
    from mixer_cli.costs import describe
    from mixer_cli.errors import ConfigError
    from mixer_cli.models import LISTED_VARIANTS, parse_variant

    if checkpoint is not None:
        if variant is not None:
            raise ConfigError("give --variant or --checkpoint, not both")
        _, arch = read_checked(checkpoint)
        if resolution not in (None, arch.resolution):
            raise ConfigError(
                f"{checkpoint} was trained at {arch.resolution} px; --resolution must match"
            )
        specs, resolution, num_classes = [arch.spec], arch.resolution, arch.num_classes
    else:
        names = [variant] if variant else list(LISTED_VARIANTS)
        specs = [parse_variant(name) for name in names]
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
