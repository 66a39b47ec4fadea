"""The registry's `gmlp` family: gMLP as timm defines it (`models/gmlp.py`).

Variants are SIZE/PATCH (Ti/16, S/16, B/16; timm's `gmlp_s16_224` too) or
LAYERSxD-RATIO/PATCH; checkpoints are ours (the names `models/gmlp.py` lists) or timm's
state dicts (`gmlp_timm.py`), the architecture read off the shapes. The gate's [S, S]
projection mixes a fixed number of tokens; at K times a checkpoint's resolution it becomes
block-diagonal, each of the K x K parts of the image gated as before (the Mixer paper's
Appendix C, `mixer_checkpoint.adapt_token_linear`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from mixer_cli.core.errors import CheckpointMismatch
from mixer_cli.models import gmlp_onnx
from mixer_cli.models.checkpoints import read_params
from mixer_cli.models.gmlp import LISTED_VARIANTS, GmlpSpec, create_gmlp, parse_gmlp, spec_from_dims
from mixer_cli.models.gmlp_timm import LAYOUT_OF_GMLP
from mixer_cli.models.isotropic import checked_spec, run_options
from mixer_cli.models.mixer_checkpoint import (
    token_kernels,
    token_linears_loaded,
    token_linears_resolution,
    token_linears_warm_start,
)
from mixer_cli.models.registry import Family, Loaded, onnx_of
from mixer_cli.models.settings import ModelConfig
from mixer_cli.weights.arrays import array_shape

GATE = re.compile(r"^GatingBlock_(\d+)/gate_proj/kernel$")


def _spec(m: ModelConfig) -> GmlpSpec:
    return checked_spec(
        parse_gmlp,
        m,
        no_grid_factor=(
            "model.grid_factor is a Mixer's: a gMLP at K times a checkpoint's resolution is "
            "built at that resolution (set model.resolution)"
        ),
    )


def build(m: ModelConfig, num_classes: int, head_bias: float) -> Any:
    return create_gmlp(
        _spec(m),
        **run_options(m, num_classes, head_bias),
    )


def matches(flat: Mapping[str, Any]) -> bool:
    return "stem/kernel" in flat and "GatingBlock_0/gate_proj/kernel" in flat


def load(
    flat: Mapping[str, Any], source: str, resolution: int | None, settings: Mapping[str, Any]
) -> Loaded:
    """A gMLP from its arrays: patch and width from the stem, depth from the blocks, the
    channel MLP's ratio from `channel_in`, the grid from the gate's [S, S] projection."""

    def shape(key: str, ndim: int) -> tuple[int, ...]:
        return array_shape(flat, key, ndim, source, "a gMLP")

    patch, patch_w, channels, width = shape("stem/kernel", 4)
    hidden = shape("GatingBlock_0/channel_in/kernel", 2)[1]
    tokens = shape("GatingBlock_0/gate_proj/kernel", 2)[0]
    side = math.isqrt(tokens)
    if patch != patch_w or channels != 3 or hidden % width or side * side != tokens:
        raise CheckpointMismatch(
            f"{source}: not a gMLP's shapes (stem {flat['stem/kernel'].shape}, channel_in "
            f"{width} -> {hidden}, gate over {tokens} tokens): expected a [P, P, 3, D] stem, a "
            "channel MLP a multiple of D wide and a square grid of tokens"
        )
    layers = sum(1 for key in flat if GATE.match(key))
    spec = spec_from_dims(patch, layers, width, hidden // width)
    native = side * patch
    num_classes = shape("head/kernel", 2)[1] if "head/kernel" in flat else 0
    gelu = settings.get("gelu", "tanh")
    model = create_gmlp(spec, num_classes=num_classes, gelu=gelu)
    return token_linears_loaded(
        model, spec, flat, source, resolution, family="gmlp", label="gMLP", native=native,
        classes=num_classes, gelu=gelu, kernels=GATE,
    )  # fmt: skip


def warm_start(path: str, fresh: dict[str, Any], scope: str) -> dict[str, Any]:
    """scope 'all': every array as saved; 'backbone': the checkpoint's backbone under the
    fresh model's head, its gates made block-diagonal where the fresh model has K^2 times
    the tokens."""
    flat, source = read_params(path)
    if not matches(flat):
        raise CheckpointMismatch(
            f"{source} is not a gMLP checkpoint (it has no 'stem' and 'GatingBlock_*/gate_proj' "
            "arrays): a gMLP starts from a gMLP; set model.family to the checkpoint's family"
        )
    return token_linears_warm_start(flat, source, fresh, scope, GATE)


def count(m: ModelConfig, num_classes: int) -> dict[str, Any]:
    """Parameters and GFLOPs, measured on the model with one and two blocks (`by_blocks`)."""
    from mixer_cli.models.costs import count_by_blocks

    return count_by_blocks(
        lambda spec: create_gmlp(spec, num_classes=num_classes), _spec(m), m.resolution
    )


def paper_setting(variant: str, dataset: str | None) -> tuple[str | None, int | None]:
    """A size of the gMLP paper at 224 px; on ImageNet-1k the paper's (DeiT's) recipe."""
    if parse_gmlp(variant).name not in LISTED_VARIANTS:
        return None, None
    return ("gmlp_s16_imagenet", None) if dataset == "imagenet" else (None, 224)


FAMILY = Family(
    name="gmlp",
    title="gMLP",
    parse=lambda m: _spec(m).name,
    build=build,
    patch_size=lambda m: parse_gmlp(m.variant).patch_size,
    matches=matches,
    load=load,
    warm_start=warm_start,
    count=count,
    resolution_settings=token_linears_resolution,
    variants=LISTED_VARIANTS,
    paper_setting=paper_setting,
    token_weights=lambda flat: token_kernels(flat, GATE),
    timm=LAYOUT_OF_GMLP,
    onnx=onnx_of(gmlp_onnx.gmlp_graph),
)
