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
# What --init decides (the checkpoint, checked when loaded): not settable with --set.
MODEL_KEYS = tuple(
    f"model.{key}="
    for key in ("family", "variant", "resolution", "grid_factor", "init", "init_scope")
)


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
    from mixer_cli.config import parse_number_list, read_yaml, recipe_path
    from mixer_cli.core import report
    from mixer_cli.core.errors import ConfigError
    from mixer_cli.models.registry import load_checkpoint
    from mixer_cli.tasks import finetune as transfer
    from mixer_cli.tasks.train import run_training
    from mixer_cli.train.engine import train_and_evaluate
    from mixer_cli.train.workdir import default_workdir, latest_run

    options.start_processes()
    for item in options.set_ or []:
        if item.replace(" ", "").startswith(MODEL_KEYS):
            key = item.split("=", 1)[0].strip()
            raise ConfigError(
                f"--set {key}: the model comes from --init (its variant, widths and "
                "classes); set its resolution with --resolution"
            )
    lrs = None if lr_sweep is None else parse_number_list(lr_sweep, float, "--lr-sweep")
    if init is None:
        init = latest_run(Path("runs"), command="pretrain")
        report.stderr.print(f"fine-tuning {init} (the newest pretrain run; --init picks another)")
    loaded = load_checkpoint(init)  # a bad checkpoint fails here, before any run directory

    flags = {  # its family, variant, resolution, GELU form, ...: --set model.gelu etc. override
        **{f"model.{key}": value for key, value in loaded.config.items()},
        **transfer.model_settings(loaded, resolution),
        "model.init": str(init),
        "model.init_scope": "backbone",
    }
    base = [(str(recipe_path(transfer.RECIPE)), read_yaml(recipe_path(transfer.RECIPE)))]

    def resolved(*layers: tuple[str, dict]):
        return resolve_config(options, flags, base=[*base, *layers], default_recipe=None)

    preset = transfer.preset_for(resolved().data.name)
    settings = resolved(("the dataset's fine-tuning preset", preset.settings))
    workdir = options.workdir or default_workdir(
        "finetune", settings.model.variant, settings.data.name
    )
    extra = {"native_resolution": loaded.details.get("native_resolution", loaded.resolution)}
    if lrs is not None:

        def trial(config, where: Path) -> dict:
            return train_and_evaluate(config, where, stop_after=options.stop_after)

        settings, record = transfer.lr_sweep(
            settings, workdir, lrs, preset.holdout if holdout is None else holdout, trial
        )
        if record.get("stopped_in_sweep"):
            report.stderr.print("stopped during the lr sweep; the same command resumes it")
            return
        extra.update(record)
    run_training("finetune", settings, workdir=workdir, stop_after=options.stop_after, extra=extra)
