"""Fine-tuning: the paper's transfer recipe, per-dataset presets, and the lr sweep.

`mixer finetune` is the training engine started from a checkpoint's backbone (config
`model.init` with `model.init_scope: backbone`: adapted to the requested resolution, see
`checkpoints.adapt_resolution`) under a new zero-initialised head. The learning rate
may be chosen as the paper did: train each candidate on the training split minus a
held-out slice, keep the best on that slice, re-train it on the whole training split and
only then look at the test split.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixer_cli.config import Config
from mixer_cli.core import report
from mixer_cli.core.errors import ConfigError
from mixer_cli.data import open_dataset
from mixer_cli.models import registry
from mixer_cli.models.registry import Loaded

RECIPE = "finetune"  # recipes/finetune.yaml: SGD momentum, cosine, clip 1, batch 512


@dataclass(frozen=True)
class Preset:
    """What fine-tuning on one dataset changes in the recipe, and its lr-selection slice."""

    settings: dict[str, Any]
    holdout: float  # fraction of the training split held out to choose the lr


# The paper's steps per dataset (App. C) and held-out slices (2% CIFAR, 10% Pets/Flowers,
# 1% ImageNet); other datasets get VTAB's 2.5k steps. Digits is our offline demo.
PRESETS: dict[str, Preset] = {
    "cifar10": Preset({"train.steps": 10_000}, 0.02),
    "cifar100": Preset({"train.steps": 10_000}, 0.02),
    "oxford_iiit_pet": Preset({"train.steps": 500}, 0.10),
    "oxford_flowers102": Preset({"train.steps": 500}, 0.10),
    "imagenet2012": Preset({"train.steps": 20_000}, 0.01),
    "digits": Preset(
        {
            "train.steps": 200,
            "train.batch_size": 64,
            "train.eval_batch_size": 360,
            "train.checkpoint_every": 100,
            "optim.lr": 0.03,
            "optim.warmup_steps": 20,
            "data.crop": "resize",
        },
        0.10,
    ),
}
DEFAULT_PRESET = Preset({"train.steps": 2_500}, 0.10)


def preset_for(data: str) -> Preset:
    """The preset of a dataset spec (``cifar10``, ``cifar10:3.0.2``; folders get the default)."""
    if data.startswith("folder:"):
        return DEFAULT_PRESET
    return PRESETS.get(data.split(":")[0].split("/")[0].strip(), DEFAULT_PRESET)


def model_settings(loaded: Loaded, resolution: int | None) -> dict[str, Any]:
    """The model.* settings of fine-tuning a checkpoint at `resolution` (default: its own)."""
    return registry.settings_at_resolution(loaded, resolution)


def holdout_splits(config: Config, fraction: float) -> tuple[str, str]:
    """(fit, held-out) slices of the training split: the held-out one is its last `fraction`
    (sources store splits shuffled, so that is a random subset)."""
    if not 0 < fraction < 1:
        raise ConfigError(f"the held-out fraction must be in (0, 1), got {fraction}")
    source = open_dataset(config.data.name, config.data.data_dir)
    split = config.data.train_split or source.train_split
    if any(c in split for c in "[]+"):
        raise ConfigError(
            f"an lr sweep holds out a slice of a plain training split, got {split!r}; "
            "set data.train_split to a split name"
        )
    examples = source.num_examples(split)
    held = round(examples * fraction)
    if held < 1 or held >= examples:
        raise ConfigError(
            f"holding out {fraction:.0%} of {examples} training examples leaves "
            f"{held} to choose the lr on and {examples - held} to train on"
        )
    return f"{split}[:{examples - held}]", f"{split}[{examples - held}:]"


def lr_sweep(
    config: Config,
    workdir: Path,
    lrs: Sequence[float],
    holdout: float,
    train: Callable[..., dict[str, Any]],
) -> tuple[Config, dict[str, Any]]:
    """Train each lr on the fit slice and score it on the held-out slice.

    `train(config, workdir)` runs one training (the engine). Returns the config to
    re-train (the best lr; ties go to the smaller) and the sweep's record for results.json.
    Each trial has its own directory under `workdir/sweep`, so a rerun resumes the sweep.
    """
    fit, held = holdout_splits(config, holdout)
    trials = []
    for lr in lrs:
        trial = dataclasses.replace(
            config,
            optim=dataclasses.replace(config.optim, lr=lr),
            data=dataclasses.replace(config.data, train_split=fit, eval_split=held),
        )
        results = train(trial, workdir / "sweep" / f"lr-{lr:g}")
        if not results["finished"]:
            return config, {"lr_sweep": trials, "stopped_in_sweep": True}
        trials.append(
            {
                "lr": lr,
                "holdout_top1": results["test/top1"],
                "final_train_loss": results["final_train_loss"],
                "workdir": str(workdir / "sweep" / f"lr-{lr:g}"),
            }
        )
    best = max(trials, key=lambda trial: (trial["holdout_top1"], -trial["lr"]))
    report.print_table(
        f"lr sweep: trained on {fit}, chosen on {held}",
        [
            report.Column("lr", "lr", "{:g}".format),
            report.Column("holdout_top1", "held-out top-1", "{:.2%}".format),
            report.Column("final_train_loss", "train loss", "{:.4f}".format),
            report.Column("chosen", "", justify="left"),
        ],
        [{**trial, "chosen": "<- best" if trial is best else ""} for trial in trials],
    )
    record = {
        "lr_sweep": trials,
        "selected_lr": best["lr"],
        "holdout_fraction": holdout,
        "holdout_split": held,
    }
    chosen = dataclasses.replace(config, optim=dataclasses.replace(config.optim, lr=best["lr"]))
    return chosen, record
