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
# What --init decides (the checkpoint, checked when loaded): not settable with --set.
MODEL_KEYS = tuple(
    f"model.{key}="
    for key in (
        "family",
        "variant",
        "resolution",
        "grid_factor",
        "classifier",
        "init",
        "init_scope",
    )
)
# (command-line settings, base layers of the config) -> the config: how the command's
# options (--recipe, --config, flags, --set) resolve over what a task chooses.
Resolver = Callable[[dict[str, Any], list[tuple[str, dict[str, Any]]]], Config]


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


def refused_key(items: Sequence[str] | None, keys: tuple[str, ...]) -> str | None:
    """The first --set KEY=VALUE of `items` whose key is one of `keys` (``model.KEY=``)."""
    for item in items or []:
        if item.replace(" ", "").startswith(keys):
            return item.split("=", 1)[0].strip()
    return None


def backbone_settings(loaded: Loaded, init: Any, resolution: int | None) -> dict[str, Any]:
    """The model.* settings of training from a checkpoint's backbone at `resolution`: its
    family, variant, resolution, GELU form, ... (--set model.gelu etc. override them)."""
    return {
        **{f"model.{key}": value for key, value in loaded.config.items()},
        **model_settings(loaded, resolution),
        "model.init": str(init),
        "model.init_scope": "backbone",
    }


def native_resolution(loaded: Loaded) -> int:
    """The resolution a checkpoint was pre-trained at (before any adaptation)."""
    return loaded.details.get("native_resolution", loaded.resolution)


@dataclass(frozen=True)
class FinetuneSettings:
    """What `mixer finetune` was asked beyond the config's own settings."""

    init: Path | None  # None: the newest finished pretrain run under ./runs
    resolution: int | None  # None: the checkpoint's
    lrs: Sequence[float] | None  # an lr sweep's candidates
    holdout: float | None  # None: the dataset preset's
    workdir: Path | None
    stop_after: int | None


def run_finetune(settings: FinetuneSettings, resolve: Resolver) -> dict[str, Any] | None:
    """Fine-tune a checkpoint (after an lr sweep, if asked); results, or None when stopped
    during the sweep (the same command resumes it)."""
    from mixer_cli.models.registry import load_checkpoint
    from mixer_cli.tasks.train import run_training
    from mixer_cli.train.workdir import default_workdir, latest_run

    init = settings.init
    if init is None:
        init = latest_run(Path("runs"), command="pretrain")
        report.stderr.print(f"fine-tuning {init} (the newest pretrain run; --init picks another)")
    loaded = load_checkpoint(init)  # a bad checkpoint fails here, before any run directory
    config, preset = finetune_config(backbone_settings(loaded, init, settings.resolution), resolve)
    workdir = settings.workdir or default_workdir(
        "finetune", config.model.variant, config.data.name
    )
    extra: dict[str, Any] = {"native_resolution": native_resolution(loaded)}
    if settings.lrs is not None:
        holdout = preset.holdout if settings.holdout is None else settings.holdout
        config, record = sweep_with_engine(
            config, workdir, settings.lrs, holdout, settings.stop_after
        )
        if record.get("stopped_in_sweep"):
            return None
        extra.update(record)
    return run_training(
        "finetune", config, workdir=workdir, stop_after=settings.stop_after, extra=extra
    )


def finetune_config(flags: dict[str, Any], resolve: Resolver) -> tuple[Config, Preset]:
    """The config of fine-tuning: the recipe < the dataset's preset < the user's settings."""
    from mixer_cli.config import read_yaml, recipe_path

    base = [(str(recipe_path(RECIPE)), read_yaml(recipe_path(RECIPE)))]
    preset = preset_for(resolve(flags, base).data.name)
    config = resolve(flags, [*base, ("the dataset's fine-tuning preset", preset.settings)])
    return config, preset


def sweep_with_engine(
    config: Config,
    workdir: Path,
    lrs: Sequence[float],
    holdout: float,
    stop_after: int | None,
) -> tuple[Config, dict[str, Any]]:
    """`lr_sweep` on a held-out slice of the training split, each trial trained by the
    engine under `workdir/sweep` (stopping as --stop-after says)."""
    from mixer_cli.train.engine import train_and_evaluate

    def trial(trial_config: Config, where: Path) -> dict[str, Any]:
        return train_and_evaluate(trial_config, where, stop_after=stop_after)

    splits = holdout_splits(config, holdout)
    config, record = lr_sweep(config, workdir / "sweep", lrs, splits, trial)
    if "selected_lr" in record:
        record["holdout_fraction"] = holdout
    return config, record


def holdout_splits(config: Config, fraction: float) -> tuple[str, str]:
    """(fit, held-out) slices of the training split: the held-out one is its last `fraction`
    (sources store splits shuffled, so that is a random subset)."""
    if not 0 < fraction < 1:
        raise ConfigError(f"the held-out fraction must be in (0, 1), got {fraction}")
    d = config.data
    source = open_dataset(d.name, d.data_dir, skip_corrupt=d.skip_corrupt)  # as training reads it
    split = d.train_split or source.train_split
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
    root: Path,
    lrs: Sequence[float],
    splits: tuple[str, str],
    train: Callable[..., dict[str, Any]],
) -> tuple[Config, dict[str, Any]]:
    """Train each lr on the fit split and score it on the held-out split (`splits`).

    `train(config, workdir)` runs one training (the engine). Returns the config to
    re-train (the lr `choose_lr` picks) and the sweep's record for results.json.
    Each trial has its own directory `root/lr-LR`, so a rerun resumes the sweep.
    """
    fit, held = splits
    trials = []
    for lr, trial, where in sweep_runs(config, root, lrs, splits):
        results = train(trial, where)
        if not results["finished"]:
            return config, {"lr_sweep": trials, "stopped_in_sweep": True}
        trials.append(
            {
                "lr": lr,
                "holdout_top1": results["test/top1"],
                "final_train_loss": results["final_train_loss"],
                "workdir": str(where),
            }
        )
    best = choose_lr(trials)
    print_sweep(trials, best, fit, held)
    record = {"lr_sweep": trials, "selected_lr": best["lr"], "holdout_split": held}
    return with_lr(config, best["lr"]), record


def sweep_runs(
    config: Config, root: Path, lrs: Sequence[float], splits: tuple[str, str]
) -> list[tuple[float, Config, Path]]:
    """Each lr's trial of a sweep: (lr, its config: trained on the fit split, scored on the
    held-out one, its run directory `root/lr-LR`)."""
    fit, held = splits
    return [
        (lr, with_lr(config, lr, train_split=fit, eval_split=held), root / f"lr-{lr:g}")
        for lr in lrs
    ]


def choose_lr(trials: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The paper's rule: the trial of the best held-out top-1; ties go to the smaller lr."""
    return max(trials, key=lambda trial: (trial["holdout_top1"], -trial["lr"]))


def with_lr(config: Config, lr: float, **data: Any) -> Config:
    """`config` with another learning rate (and data.* settings, e.g. its splits)."""
    optim = dataclasses.replace(config.optim, lr=lr)
    if not data:
        return dataclasses.replace(config, optim=optim)
    return dataclasses.replace(config, optim=optim, data=dataclasses.replace(config.data, **data))


def print_sweep(trials: list[dict[str, Any]], best: dict[str, Any], fit: str, held: str) -> None:
    """The sweep's table: each lr's held-out top-1 and train loss, the chosen one marked."""
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
