"""The shuffle experiment (paper §3.4, Fig. 4): a Mixer against a ResNet on permuted pixels.

For each mode (original images; patch + in-patch pixel shuffle; global pixel shuffle,
one fixed seeded permutation for every image, train and test) the first model (a Mixer,
or any family's with --set model.family=...) and its baselines (a ResNet by default, a
ViT, any FAMILY:VARIANT, or none) are trained from scratch by the shared engine with the
same data budget, and probed
along training by the shared evaluators their configs declare (`PROBES`): test top-1
and linear 5-shot accuracy of their frozen features (the paper's metric). The report
compares each mode with `original`.

Recipes (the same steps, batch and augmentation for every model): Adam (0.9, 0.999)
with decoupled weight decay 0.1 x lr, 10% linear warmup then linear decay; lr 1e-3 for
the baselines (the BiT ResNet-v2: GroupNorm + weight standardisation, so no batch
statistics to carry) and 3e-3 for the first model (1e-3 on digits-placed, where 3e-3
stalled a Mixer one seed in three). On the embedded sets (digits-placed, the default, at
16 px; digits at 8 px): a plain resize and no flips; on other data: inception crop
(35-100%) + flip, as in the CPU CIFAR recipe.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixer_cli.config import Config, parse_assignments, resolve
from mixer_cli.core import report
from mixer_cli.core.errors import ConfigError

MODES = ("original", "patch", "global")
PERMUTATION = {"original": "none", "patch": "patch", "global": "global"}
METRICS = ("fewshot/5shot", "test/top1")
# The probes along training, before the first step too: test top-1 and linear 5-shot
# accuracy (3 seeds, shots from a pool of 50 training images per class, the whole test
# split). The 5-shot probe and test top-1 share one pass over the test split.
PROBES = {
    "evals.test.at_start": True,
    "evals.fewshot.type": "fewshot",
    "evals.fewshot.shots": (5,),
    "evals.fewshot.seeds": 3,
    "evals.fewshot.pool_per_class": 50,
    "evals.fewshot.at_start": True,
}


@dataclass(frozen=True)
class Defaults:
    resolution: int
    variant: str  # the Mixer's
    steps: int
    batch_size: int
    mixer_lr: float  # the ResNet's is 1e-3 everywhere


# The embedded sets (a plain resize, no flips) and any other data (inception crop + flip).
EMBEDDED = {
    "digits-placed": Defaults(16, "N/4", steps=300, batch_size=64, mixer_lr=1e-3),
    "digits": Defaults(8, "N/2", steps=300, batch_size=64, mixer_lr=3e-3),
}
OTHER = Defaults(32, "N/4", steps=2000, batch_size=128, mixer_lr=3e-3)
DEFAULT_DATA = "digits-placed"


def defaults_for(data: str) -> Defaults:
    return EMBEDDED.get(data, OTHER)


@dataclass(frozen=True)
class Baseline:
    """A model trained beside the first one: its family, variant and other model.* keys."""

    family: str
    variant: str
    options: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Experiment:
    data: str
    data_dir: str | None
    variant: str  # the first arm's (a Mixer unless --set model.family says otherwise)
    resolution: int
    baselines: tuple[Baseline, ...]  # the models beside it (none: the first arm alone)
    steps: int
    batch_size: int
    seed: int = 0
    model_options: tuple[str, ...] = ()  # --set model.KEY=VALUE for the first arm
    mixer_lr: float = OTHER.mixer_lr  # the first arm's; every baseline's is BASELINE_LR
    patch_size: int = 0  # what the patch shuffle permutes by: the first arm's patch


@dataclass(frozen=True)
class PermuteSettings:
    """What `mixer permute` was asked; None: the data's default (`defaults_for`)."""

    mode: str = "global"
    data: str | None = None
    data_dir: str | None = None
    variant: str | None = None
    resolution: int | None = None
    baselines: tuple[str, ...] = ("resnet",)
    steps: int | None = None
    batch_size: int | None = None
    seed: int | None = None
    reference: bool = True  # also train on the original images
    model_options: tuple[str, ...] = ()
    workdir: Path | None = None
    stop_after: int | None = None


@dataclass(frozen=True)
class PermuteRun:
    workdir: Path
    results: dict[str, Any] | None  # None: stopped early (the same command resumes)


def run_permute(settings: PermuteSettings) -> PermuteRun:
    """The whole experiment: every configuration checked before any training, then each
    (model, mode) trained and probed, permute.png drawn and results.json written."""
    from mixer_cli.train.workdir import default_workdir

    experiment, modes = plan(settings)
    check_configs(experiment, modes)
    workdir = Path(
        settings.workdir or default_workdir("permute", experiment.variant, experiment.data)
    )
    results = run_experiment(experiment, modes, workdir, settings.stop_after)
    if results is not None:
        results["figure"] = str(draw_figure(experiment, modes, results, workdir))
        report.write_json(workdir / "results.json", results)
    return PermuteRun(workdir, results)


def plan(settings: PermuteSettings) -> tuple[Experiment, list[str]]:
    """The experiment and its modes: what was asked, the data's defaults for the rest."""
    s = settings
    modes = parse_modes(s.mode, reference=s.reference)
    name = s.data or DEFAULT_DATA
    defaults = defaults_for(name)
    experiment = Experiment(
        data=name,
        data_dir=s.data_dir,
        variant=s.variant or defaults.variant,
        resolution=s.resolution or defaults.resolution,
        baselines=(),
        steps=s.steps or defaults.steps,
        batch_size=s.batch_size or defaults.batch_size,
        seed=s.seed or 0,
        model_options=s.model_options,
        mixer_lr=defaults.mixer_lr,
    )
    patch = first_patch(experiment, needed="patch" in modes)
    first = arm_config(experiment).model
    baselines = baselines_for(s.baselines, experiment.resolution, first.family, patch)
    return dataclasses.replace(experiment, baselines=baselines, patch_size=patch), modes


def arms(experiment: Experiment) -> dict[str, dict[str, Any]]:
    """{arm: its settings}: the first model, under its family's name, then each baseline
    under its own (numbered where a family appears twice): the runs' folder prefixes."""
    from mixer_cli.models.settings import ModelConfig

    first = _first_arm(experiment)
    out = {str(first.get("model.family", ModelConfig.family)): first}
    for baseline in experiment.baselines:
        key, n = baseline.family, 2
        while key in out:
            key, n = f"{baseline.family}-{n}", n + 1
        out[key] = _baseline_arm(baseline)
    return out


def check_configs(experiment: Experiment, modes: list[str]) -> None:
    """Build every (model, mode) configuration's model, so a bad one fails before training."""
    from mixer_cli.train.engine import build

    for arm in arms(experiment).values():
        for mode in modes:
            build(config_for(experiment, arm, mode))


def draw_figure(
    experiment: Experiment, modes: list[str], results: dict[str, Any], workdir: Path
) -> Path:
    """permute.png in `workdir`: the probes' curves and each mode's example image."""
    from mixer_cli import figures
    from mixer_cli.figures.permute import draw_permute

    figure = draw_permute(results, example_images(experiment, modes))
    return figures.save(figure, workdir / "permute.png", dpi=110)


def parse_modes(mode: str, reference: bool) -> list[str]:
    """'all' or one mode -> the modes to run, `original` first as the reference."""
    if mode == "all":
        return list(MODES)
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)} or all")
    return ["original", mode] if reference and mode != "original" else [mode]


NO_BASELINE = "none"  # the first arm alone
BASELINE_LR = 1e-3  # every baseline's learning rate (the first arm's: Defaults.mixer_lr)


def baselines_for(
    names: tuple[str, ...], resolution: int, first_family: str, patch: int
) -> tuple[Baseline, ...]:
    """--baseline values -> the models beside the first one. `resnet`: the paper's
    ResNet50x1 from 128 px, else a CPU-sized ResNet14 of width 16; `vit`: ViT-B/16 from
    128 px, else the nano ViT at the first arm's patch size (the same tokens); `none`: no
    baseline; FAMILY:VARIANT any family's model (`gmlp:S/16`); a bare BiT ResNet name
    (`ResNet26x1`) the ResNet at BiT's width."""
    from mixer_cli.models import registry

    if [n.lower() for n in names] == [NO_BASELINE]:
        return ()
    if NO_BASELINE in (n.lower() for n in names):
        raise ConfigError("--baseline none trains the first model alone: give it on its own")
    found = []
    for name in names:
        family, sep, variant = name.partition(":")
        if sep:
            registry.get(family)  # an unknown family is refused with the families listed
            found.append(Baseline(family, variant))
        elif name.lower() == "resnet":
            big = resolution >= 128
            found.append(Baseline("resnet", "ResNet50x1" if big else "ResNet14",
                                  () if big else (("model.width", 16),)))  # fmt: skip
        elif name.lower() == "vit":
            found.append(Baseline("vit", "B/16" if resolution >= 128 else f"N/{patch or 4}"))
        elif name.lower().startswith("resnet"):
            found.append(Baseline("resnet", name))
        else:
            raise ConfigError(
                f"unknown baseline {name!r}: expected resnet, vit, none, a BiT ResNet name "
                "(e.g. ResNet50x1) or FAMILY:VARIANT (e.g. gmlp:S/16)"
            )
    return tuple(found)


def _first_arm(e: Experiment) -> dict[str, Any]:
    options = parse_assignments(list(e.model_options))
    other = next((key for key in options if not key.startswith("model.")), None)
    if other is not None:
        raise ConfigError(f"--set {other}: only model.* keys apply to the first model")
    return {"model.variant": e.variant, "optim.lr": e.mixer_lr, **options}


def _baseline_arm(b: Baseline) -> dict[str, Any]:
    model = {"model.family": b.family, "model.variant": b.variant, **dict(b.options)}
    return {**model, "optim.lr": BASELINE_LR}


def arm_config(e: Experiment) -> Config:
    """The first arm's config (no permutation): what its model is."""
    settings = {**_first_arm(e), "model.resolution": e.resolution, "train.steps": e.steps}
    return resolve(None, None, settings)


def first_patch(e: Experiment, needed: bool) -> int:
    """The first model's patch size: what the patch shuffle permutes by (refused for a
    model without patches when the patch mode runs)."""
    from mixer_cli.models import registry

    model = arm_config(e).model
    patch = registry.get(model.family).patch_size(model)
    if needed and not patch:
        raise ConfigError(
            f"--mode patch shuffles the first model's patches and a {model.family} has none: "
            "make the first model a patch-based one (--set model.family=...)"
        )
    return patch


def config_for(experiment: Experiment, arm: dict[str, Any], mode: str) -> Config:
    """One training of the experiment: the arm's model and lr, the mode's fixed permutation."""
    e = experiment
    embedded = e.data in EMBEDDED
    settings: dict[str, Any] = {
        **arm,
        "model.resolution": e.resolution,
        "data.name": e.data,
        "data.data_dir": e.data_dir,
        "data.crop": "resize" if embedded else "inception",
        "data.crop_min_area": 0.35,
        "data.flip": not embedded,
        "data.permutation": PERMUTATION[mode],
        "data.permutation_patch": e.patch_size or 1,
        "data.permutation_seed": e.seed,
        "optim.warmup_steps": max(1, e.steps // 10),
        "optim.weight_decay": 0.1,
        "train.steps": e.steps,
        "train.batch_size": e.batch_size,
        "train.eval_every": max(1, e.steps // 4),
        "train.log_every": max(1, min(50, e.steps // 10)),
        "train.checkpoint_every": max(1, e.steps // 4),
        "train.keep_checkpoints": 1,
        "train.seed": e.seed,
        **PROBES,
    }
    return resolve(None, None, settings)


def curve(workdir: Path) -> list[dict[str, float]]:
    """The evaluations of one run, in step order, from its metrics.jsonl."""
    from mixer_cli.train.metrics import read_metrics

    points: dict[int, dict[str, float]] = {}
    for record in read_metrics(workdir):
        if any(metric in record for metric in METRICS):
            points.setdefault(record["step"], {"step": record["step"]}).update(
                {k: v for k, v in record.items() if k in METRICS}
            )
    return [points[step] for step in sorted(points)]


def run_experiment(
    experiment: Experiment, modes: list[str], workdir: Path, stop_after: int | None = None
) -> dict[str, Any] | None:
    """Train and probe every (model, mode); returns results (None if stopped early)."""
    models: dict[str, Any] = {}
    for key, arm in arms(experiment).items():
        trained = train_arm(experiment, key, arm, modes, workdir, stop_after)
        if trained is None:
            return None
        models[key] = trained
    return {
        "command": "permute",
        **dataclasses.asdict(experiment),
        "modes": modes,
        "models": models,
        "relative_drop": relative_drops(models, modes),
    }


def train_arm(
    experiment: Experiment,
    key: str,
    arm: dict[str, Any],
    modes: list[str],
    workdir: Path,
    stop_after: int | None = None,
) -> dict[str, Any] | None:
    """One arm trained and probed in every mode: {name, runs} (None if stopped early)."""
    from mixer_cli.models import registry
    from mixer_cli.train.engine import train_and_evaluate

    runs, name = {}, None
    for mode in modes:
        where = workdir / f"{key}-{mode}"
        results = train_and_evaluate(
            config_for(experiment, arm, mode), where, stop_after=stop_after
        )
        if not results["finished"]:
            return None
        runs[mode] = {
            **{metric: results[metric] for metric in METRICS},
            "curve": curve(where),
            "workdir": str(where),
            "train_seconds": results["train_seconds"],
        }
        name = registry.get(results["family"]).label(results["variant"])
    return {"name": name, "runs": runs}


def relative_drops(models: dict[str, Any], modes: list[str]) -> dict[str, dict[str, float]]:
    """1 - accuracy(mode) / accuracy(original), for both metrics, where original ran."""
    if "original" not in modes:
        return {}
    drops: dict[str, dict[str, float]] = {}
    for kind, model in models.items():
        base = model["runs"]["original"]
        for mode in modes:
            if mode == "original":
                continue
            run = model["runs"][mode]
            drops.setdefault(kind, {})[mode] = {
                metric: 1 - run[metric] / base[metric] if base[metric] else 0.0
                for metric in METRICS
            }
    return drops


def print_summary(results: dict[str, Any]) -> None:
    rows = []
    for kind, model in results["models"].items():
        for mode, run in model["runs"].items():
            drop = results["relative_drop"].get(kind, {}).get(mode)
            rows.append(
                {
                    "model": model["name"],
                    "mode": mode,
                    "fewshot": f"{run['fewshot/5shot']:.1%}",
                    "top1": f"{run['test/top1']:.1%}",
                    "drop": "-" if drop is None else f"{drop['fewshot/5shot']:.0%}",
                }
            )
    report.print_table(
        f"shuffle experiment on {results['data']} ({results['steps']} steps of "
        f"{results['batch_size']}, {results['resolution']} px)",
        [
            report.Column("model", "model", justify="left"),
            report.Column("mode", "mode", justify="left"),
            report.Column("fewshot", "5-shot"),
            report.Column("top1", "test top-1"),
            report.Column("drop", "5-shot drop"),
        ],
        rows,
    )


def example_images(experiment: Experiment, modes: list[str]) -> dict[str, np.ndarray]:
    """The first test image as each mode shows it to the models, in [0, 1] for a figure."""
    from mixer_cli.core.tf_cpu import tf
    from mixer_cli.data import Preprocessing, open_dataset
    from mixer_cli.data.preprocess import Transforms

    source = open_dataset(experiment.data, experiment.data_dir)
    raw, label = next(iter(source.eval_stream(source.eval_split, 0, 1)))
    images = {}
    for mode in modes:
        pre = Preprocessing(
            resolution=experiment.resolution,
            permutation=PERMUTATION[mode],
            permutation_patch=experiment.patch_size or 1,
            permutation_seed=experiment.seed,
        )
        image = Transforms(source, pre, seed=0).eval_example(raw, label)["image"]
        images[mode] = (tf.convert_to_tensor(image).numpy() + 1.0) / 2.0
    return images
