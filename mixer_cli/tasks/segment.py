"""`mixer segment`: the engine trains a segmentation head (from scratch or on a
checkpoint's backbone); then a figure of test images with their true and predicted masks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixer_cli.config import Config
from mixer_cli.models import registry
from mixer_cli.tasks.finetune import Resolver

# What --init decides (the checkpoint, checked when loaded): not settable with --set.
INIT_KEYS = tuple(
    f"model.{key}="
    for key in ("family", "variant", "grid_factor", "classifier", "init", "init_scope")
)


@dataclass(frozen=True)
class SegmentSettings:
    """What `mixer segment` was asked beyond the config's own settings."""

    init: Path | None  # None: a fresh model of `variant` at `resolution`
    variant: str | None
    resolution: int | None
    examples: int  # test images in segmentation.png; 0: no figure
    workdir: Path | None
    stop_after: int | None


@dataclass(frozen=True)
class SegmentRun:
    results: dict[str, Any]
    figure: Path | None  # segmentation.png, when drawn


def run_segment(settings: SegmentSettings, resolve: Resolver) -> SegmentRun:
    """Train (or resume) a segmentation run, then draw its examples once it has finished."""
    from mixer_cli.config import read_yaml, recipe_path
    from mixer_cli.tasks.train import run_training
    from mixer_cli.train.workdir import default_workdir

    flags, extra = model_flags(settings)
    base = [("recipe segment", read_yaml(recipe_path("segment")))]
    config = resolve(flags, base)
    workdir = settings.workdir or default_workdir("segment", config.model.variant, config.data.name)
    results = run_training(
        "segment", config, workdir=workdir, stop_after=settings.stop_after, extra=extra
    )
    figure = None
    if settings.examples and results["finished"]:
        figure = draw_examples(config, workdir, settings.examples)
    return SegmentRun(results, figure)


def model_flags(settings: SegmentSettings) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model.* settings (a segmentation head; a checkpoint's backbone, or a fresh
    model) and what results.json adds (the checkpoint's native resolution)."""
    from mixer_cli.models.registry import load_checkpoint
    from mixer_cli.tasks.finetune import backbone_settings, native_resolution

    flags: dict[str, Any] = {"model.head": "segment"}
    if settings.init is None:
        flags.update({"model.variant": settings.variant, "model.resolution": settings.resolution})
        return flags, {}
    loaded = load_checkpoint(settings.init)  # a bad checkpoint fails here, before any run
    flags.update(backbone_settings(loaded, settings.init, settings.resolution))
    return flags, {"native_resolution": native_resolution(loaded)}


def draw_examples(config: Config, workdir: Path, count: int) -> Path:
    """segmentation.png in the run directory: the first `count` test images, their true
    masks and the trained model's (from params.npz)."""
    import jax
    from flax import traverse_util

    from mixer_cli.data import Preprocessing, open_dataset
    from mixer_cli.evals.base import Split, eval_preprocessing
    from mixer_cli.evals.forward import predicted_masks
    from mixer_cli.figures import save
    from mixer_cli.figures.segmentation import draw_segmentation
    from mixer_cli.weights.forms import read_arrays

    d = config.data
    source = open_dataset(d.name, d.data_dir, task="segment")
    model = registry.build(config.model, source.num_classes)
    flat, _ = read_arrays(workdir / "params.npz")
    params = traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})
    pre = eval_preprocessing(Preprocessing(resolution=config.model.resolution))
    split = Split(source, d.eval_split or source.eval_split, pre)
    shown = predicted_masks(model, params, split, count)
    path = workdir / "segmentation.png"
    if jax.process_index() == 0:
        title = (
            f"{source.name} {split.split}: {config.model.variant} at {config.model.resolution} px"
        )
        save(draw_segmentation(shown, list(getattr(source, "classes", [])), title), path)
    return path
