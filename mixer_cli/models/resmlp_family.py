"""The registry's `resmlp` family: ResMLP as timm defines it (`models/resmlp.py`).

Variants are the paper's SIZE/PATCH (S12/16, S24/16, S36/16, B24/8; timm's resmlp_*_224
names too) or LAYERSxD/PATCH. A checkpoint's architecture is read off its shapes; timm's
and Facebook's state dicts map to ours in `resmlp_timm.py`. The token-mixing Linear is
[S, S] over a fixed number of patches; at K times a checkpoint's resolution it becomes
block-diagonal, each of the K x K parts of the image mixing its own patches as before (the
Mixer paper's Appendix C, `mixer_checkpoint.adapt_token_linear`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from mixer_cli.core.errors import CheckpointMismatch
from mixer_cli.models import resmlp_onnx
from mixer_cli.models.checkpoints import read_params
from mixer_cli.models.isotropic import checked_spec, run_options
from mixer_cli.models.mixer_checkpoint import (
    token_kernels,
    token_linears_loaded,
    token_linears_resolution,
    token_linears_warm_start,
)
from mixer_cli.models.registry import Family, Loaded, onnx_of
from mixer_cli.models.resmlp import (
    LISTED_VARIANTS,
    ResMLPSpec,
    create_resmlp,
    parse_resmlp,
    spec_from_dims,
)
from mixer_cli.models.resmlp_timm import LAYOUT_OF_RESMLP
from mixer_cli.models.settings import ModelConfig
from mixer_cli.weights.arrays import array_shape

_BLOCK0 = "ResBlock_0"
_TOKEN_KERNEL = re.compile(r"^(?:.*/)?ResBlock_(\d+)/token_mixing/kernel$")


def _spec(m: ModelConfig) -> ResMLPSpec:
    return checked_spec(
        parse_resmlp,
        m,
        no_grid_factor=(
            "model.grid_factor is a Mixer's: a ResMLP at K times a checkpoint's resolution "
            "is built at that resolution (set model.resolution)"
        ),
    )


def build(m: ModelConfig, num_classes: int, head_bias: float) -> Any:
    return create_resmlp(
        _spec(m),
        **run_options(m, num_classes, head_bias),
    )


def matches(flat: Mapping[str, Any]) -> bool:
    return "stem/kernel" in flat and f"{_BLOCK0}/affine_tokens/scale" in flat


def infer_architecture(flat: Mapping[str, Any], source: str) -> tuple[ResMLPSpec, int, int]:
    """(spec, classes, resolution) off the shapes: patch and D from the stem, depth from the
    blocks, S (so the resolution) from the token Linear, the MLP width from its first layer."""

    def shape(key: str, ndim: int) -> tuple[int, ...]:
        return array_shape(flat, key, ndim, source, "a ResMLP")

    patch, patch_w, channels, width = shape("stem/kernel", 4)
    if patch != patch_w or channels != 3:
        raise CheckpointMismatch(
            f"{source}: 'stem/kernel' has shape {flat['stem/kernel'].shape}, "
            "expected (P, P, 3, D) with square patches"
        )
    layers = sum(1 for key in flat if re.fullmatch(r"ResBlock_\d+/affine_tokens/scale", key))
    tokens = shape(f"{_BLOCK0}/token_mixing/kernel", 2)[0]
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise CheckpointMismatch(
            f"{source}: '{_BLOCK0}/token_mixing/kernel' mixes {tokens} tokens, which is not a "
            "square number of patches"
        )
    mlp = shape(f"{_BLOCK0}/channel_mixing/Dense_0/kernel", 2)[1]
    classes = shape("head/kernel", 2)[1] if "head/kernel" in flat else 0
    return spec_from_dims(patch, layers, width, mlp), classes, side * patch


def load(
    flat: Mapping[str, Any], source: str, resolution: int | None, settings: Mapping[str, Any]
) -> Loaded:
    gelu = settings.get("gelu", "tanh")
    spec, classes, native = infer_architecture(flat, source)
    model = create_resmlp(spec, num_classes=classes, gelu=gelu)
    return token_linears_loaded(
        model, spec, flat, source, resolution, family="resmlp", label="ResMLP", native=native,
        classes=classes, gelu=gelu, kernels=_TOKEN_KERNEL,
    )  # fmt: skip


def warm_start(path: str, fresh: dict[str, Any], scope: str) -> dict[str, Any]:
    """scope 'all': every array as saved; 'backbone': all but the head, under a fresh one,
    the token Linears made block-diagonal where the fresh model has K^2 times the patches."""
    flat, source = read_params(path)
    if not matches(flat):
        raise CheckpointMismatch(
            f"{source} is not a ResMLP checkpoint (it has no 'stem' and "
            f"'{_BLOCK0}/affine_tokens' arrays): a ResMLP starts from a ResMLP; set "
            "model.family to the checkpoint's family"
        )
    return token_linears_warm_start(flat, source, fresh, scope, _TOKEN_KERNEL)


def count(m: ModelConfig, num_classes: int) -> dict[str, Any]:
    """Parameters and GFLOPs, measured on the model with one and two blocks (`by_blocks`)."""
    from mixer_cli.models.costs import count_by_blocks

    return count_by_blocks(
        lambda spec: create_resmlp(spec, num_classes=num_classes), _spec(m), m.resolution
    )


def paper_setting(variant: str, dataset: str | None) -> tuple[str | None, int | None]:
    """A size of the ResMLP paper at 224 px; on ImageNet-1k the paper's recipe."""
    if parse_resmlp(variant).name not in LISTED_VARIANTS:
        return None, None
    return ("resmlp_s24_imagenet", None) if dataset == "imagenet" else (None, 224)


FAMILY = Family(
    name="resmlp",
    title="ResMLP",
    parse=lambda m: _spec(m).name,
    build=build,
    patch_size=lambda m: parse_resmlp(m.variant).patch_size,
    matches=matches,
    load=load,
    warm_start=warm_start,
    count=count,
    resolution_settings=token_linears_resolution,
    variants=LISTED_VARIANTS,
    paper_setting=paper_setting,
    token_weights=lambda flat: token_kernels(flat, _TOKEN_KERNEL),
    timm=LAYOUT_OF_RESMLP,
    onnx=onnx_of(resmlp_onnx.resmlp_graph),
)
