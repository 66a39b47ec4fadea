"""`mixer segment`'s own step after training: a figure of test images with their true and
predicted masks."""

from __future__ import annotations

from pathlib import Path

from mixer_cli.config import Config
from mixer_cli.models import registry


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
