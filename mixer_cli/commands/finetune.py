"""`mixer finetune`: transfer a checkpoint to a new dataset, at its resolution or a multiple."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mixer_cli.commands import options as opts

FinetuneInit = Annotated[
    Optional[Path],
    typer.Option(
        "--init",
        help="The checkpoint to transfer: Google's official .npz or its released name "
        "(imagenet21k/Mixer-B_16), timm's weights (a .safetensors file or "
        "hf-hub:timm/mixer_b16_224.goog_in21k_ft_in1k), ours, or a run directory "
        "(finished, or its newest training checkpoint). "
        "[default: the newest finished pretrain run under ./runs]",
        show_default=False,
    ),
]
LrSweep = Annotated[
    Optional[str],
    typer.Option(
        "--lr-sweep",
        help="Choose the lr as the paper did, e.g. 0.003,0.01,0.03,0.06: train each on the "
        "training split minus a held-out slice, keep the best on that slice, re-train it on "
        "the whole split and report test top-1.",
        show_default=False,
    ),
]
Holdout = Annotated[
    Optional[float],
    typer.Option(
        "--holdout",
        help="Fraction of the training split held out by --lr-sweep "
        "[default: 0.02 CIFAR, 0.1 Pets/Flowers, 0.01 ImageNet, else 0.1].",
        show_default=False,
    ),
]


@opts.training_command
def finetune(
    init: FinetuneInit = None,
    resolution: opts.AdaptedResolution = None,
    lr_sweep: LrSweep = None,
    holdout: Holdout = None,
    *,
    options: opts.TrainingOptions,
) -> None:
    """Fine-tune a checkpoint on a dataset: new zero-initialised head, SGD momentum 0.9,
    cosine schedule after warmup, clipping at 1, no weight decay (the paper's Appendix C).

    Steps per dataset follow the paper (CIFAR 10k, Pets/Flowers 500, ImageNet 20k, others
    2.5k; digits a 200-step demo); everything is overridable. The `test` evaluator also
    runs before the first step (results.json: at_step0), and results add resolution,
    grid_factor and native_resolution to those of pretrain.
    """
    from mixer_cli.commands.options import resolve_config
    from mixer_cli.config import parse_number_list
    from mixer_cli.core import report
    from mixer_cli.core.errors import ConfigError
    from mixer_cli.tasks.finetune import MODEL_KEYS, FinetuneSettings, refused_key, run_finetune

    options.start_processes()
    key = refused_key(options.set_, MODEL_KEYS)
    if key is not None:
        raise ConfigError(
            f"--set {key}: the model comes from --init (its variant, widths and "
            "classes); set its resolution with --resolution"
        )
    settings = FinetuneSettings(
        init=init,
        resolution=resolution,
        lrs=None if lr_sweep is None else parse_number_list(lr_sweep, float, "--lr-sweep"),
        holdout=holdout,
        workdir=options.workdir,
        stop_after=options.stop_after,
    )

    def resolve(flags: dict, base: list[tuple[str, dict]]):
        return resolve_config(options, flags, base=base, default_recipe=None)

    if run_finetune(settings, resolve) is None:
        report.stderr.print("stopped during the lr sweep; the same command resumes it")
