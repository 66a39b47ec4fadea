"""A checkpoint's arrays as models read them: a segmentation model's backbone
unwrapped, checked against the model that will run them; a released checkpoint copied
into the cache by hand checked against the model its name gives before it is used."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from mixer_cli.core.errors import CheckpointError
from mixer_cli.models.timm_state import from_state, is_timm_state
from mixer_cli.weights import released
from mixer_cli.weights.arrays import Params, as_tree, check_compatible
from mixer_cli.weights.forms import read_arrays

SEGMENTER_PARTS = ("backbone", "segment_head")  # a `mixer segment` model's two subtrees


def is_segmenter(flat: Mapping[str, Any]) -> bool:
    """Whether flat arrays are a segmentation model's (a backbone under a dense head)."""
    return bool(flat) and {key.split("/")[0] for key in flat} == set(SEGMENTER_PARTS)


def read_params(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], str]:
    """`read_arrays` in our layout: a timm state dict renamed (its input normalisation
    folded in), a segmentation model read as its backbone alone (a headless classifier's
    arrays): what eval, fewshot, finetune, export and a new `mixer segment` take."""
    name = released.unrecorded(path)
    if name is not None:
        return _adopted(name, path)
    flat, source = read_arrays(path)
    if is_timm_state(flat):
        from mixer_cli.weights.released import locate
        from mixer_cli.weights.timm import normalisation

        flat = from_state(flat, source, *normalisation(locate(path)))
    if is_segmenter(flat):
        prefix = f"{SEGMENTER_PARTS[0]}/"
        flat = {k.removeprefix(prefix): v for k, v in flat.items() if k.startswith(prefix)}
    return flat, source


def _adopted(name: str, path: str | os.PathLike) -> tuple[dict[str, np.ndarray], str]:
    """The arrays of a released checkpoint put in the cache by hand (the offline advice),
    used, and recorded like a download, only when they are exactly the model its catalog
    entry gives: the family's variant at its resolution, with its head (21,843 classes for
    ImageNet-21k), built through the registry."""
    import jax
    import jax.numpy as jnp

    from mixer_cli.models import registry
    from mixer_cli.models.settings import ModelConfig

    want = released.entry(name)
    config = ModelConfig(
        family=want.family,
        variant=want.variant,
        resolution=want.resolution,
        **dict(want.settings),
    )
    what = (
        f"{name} ({want.family} {want.variant} at {want.resolution} px, {want.classes:,} classes)"
    )
    try:
        flat, source = read_arrays(path)
        model = registry.build(config, want.classes)
        images = jax.ShapeDtypeStruct((1, want.resolution, want.resolution, 3), jnp.float32)
        expected = jax.eval_shape(model.init, jax.random.key(0), images)["params"]
        check_compatible(expected, flat, source, what)
    except CheckpointError as err:
        raise CheckpointError(
            f"{err}; it is no copy of {name}: delete it or put the released file there"
        ) from None
    released.adopt(name)
    return flat, source


def load_params(path: str | os.PathLike, expected: Mapping[str, Any]) -> Params:
    """Parameters to continue from, exactly as saved (an .npz in the official layout or a
    run directory), checked against the run's parameter tree."""
    flat, source = read_params(path)
    check_compatible(expected, flat, source, "this run's model")
    return as_tree(flat)
