"""`mixer segment`: per-pixel classes from a Mixer's final tokens, trained by the engine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mixer_cli.commands import options as opts

SegmentInit = Annotated[
    Optional[Path],
    typer.Option(
        "--init",
        help="A checkpoint whose backbone to start from (any form finetune takes: ours, a "
        "run directory, Google's .npz or released name, timm's weights); a classifier's head "
        "is dropped, a segmentation model's kept where its classes match. "
        "[default: a fresh model (--variant, --resolution)]",
        show_default=False,
    ),
]
SegmentResolution = Annotated[
    Optional[int],
    typer.Option(
        "--resolution",
        help="Input resolution. With --init: the checkpoint's or an integer multiple K of it "
        "(K x finer token grid, the paper's rule); without: any the patches tile. "
        "[default: the checkpoint's, else the recipe's 32]",
        show_default=False,
    ),
]
Examples = Annotated[
    int,
    typer.Option(
        "--examples", help="Test images in the figure (segmentation.png); 0 = none.", min=0
    ),
]


@opts.training_command
def segment(
    init: SegmentInit = None,
    variant: opts.Variant = None,
    resolution: SegmentResolution = None,
    examples: Examples = 6,
    *,
    options: opts.TrainingOptions,
) -> None:
    """Train a segmentation head on a Mixer: each final token -> a block of per-pixel class
    scores, assembled into the image (the head the paper's readers proposed).

    With no arguments: a nano Mixer from scratch on the embedded digit scenes (32 px
    canvases of 1-3 digits; 11 classes) in a few CPU minutes. Data: digit-scenes,
    oxford_iiit_pet (its trimaps: background, pet; the border ignored), or
    folder:PATH laid out as `PATH/<split>/images/<name>.<ext>` + `PATH/<split>/masks/<name>.png`
    (8-bit grayscale PNGs of class indices, 255 = ignore; class names from `PATH/classes.txt`).
    Training and resume are the engine's (recipe `segment`: Adam, crop and flip applied to
    image and mask alike); the test split is scored at each image's own size: mean IoU,
    per-class IoU and pixel accuracy in results.json, and a figure of test images with
    their true and predicted masks.
    """
    from mixer_cli.commands.options import resolve_config
    from mixer_cli.core import report
    from mixer_cli.core.errors import ConfigError
    from mixer_cli.tasks.finetune import refused_key
    from mixer_cli.tasks.segment import INIT_KEYS, SegmentSettings, run_segment

    options.start_processes()
    if init is not None:
        if variant is not None:
            raise ConfigError("--variant: with --init the model is the checkpoint's")
        key = refused_key(options.set_, INIT_KEYS)
        if key is not None:
            raise ConfigError(f"--set {key}: with --init the model comes from the checkpoint")
    settings = SegmentSettings(
        init=init,
        variant=variant,
        resolution=resolution,
        examples=examples,
        workdir=options.workdir,
        stop_after=options.stop_after,
    )

    def resolve(flags: dict, base: list[tuple[str, dict]]):
        return resolve_config(options, flags, base=base, default_recipe=None)

    run = run_segment(settings, resolve)
    if run.figure is not None:
        report.print_written(run.figure)
