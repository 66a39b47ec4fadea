"""A checkpoint's arrays as models read them: a segmentation model's backbone
unwrapped, checked against the model that will run them."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from mixer_cli.weights.arrays import Params, as_tree, check_compatible
from mixer_cli.weights.forms import read_arrays

SEGMENTER_PARTS = ("backbone", "segment_head")  # a `mixer segment` model's two subtrees


def is_segmenter(flat: Mapping[str, Any]) -> bool:
    """Whether flat arrays are a segmentation model's (a backbone under a dense head)."""
    return bool(flat) and {key.split("/")[0] for key in flat} == set(SEGMENTER_PARTS)


def read_params(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], str]:
    """`read_arrays`, with a segmentation model read as its backbone alone (a headless
    classifier's arrays): what eval, fewshot, finetune, export and a new `mixer segment`
    take from it."""
    flat, source = read_arrays(path)
    if is_segmenter(flat):
        prefix = f"{SEGMENTER_PARTS[0]}/"
        flat = {k.removeprefix(prefix): v for k, v in flat.items() if k.startswith(prefix)}
    return flat, source


def load_params(path: str | os.PathLike, expected: Mapping[str, Any]) -> Params:
    """Parameters to continue from, exactly as saved (an .npz in the official layout or a
    run directory), checked against the run's parameter tree."""
    flat, source = read_params(path)
    check_compatible(expected, flat, source, "this run's model")
    return as_tree(flat)
