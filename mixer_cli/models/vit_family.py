"""The registry's `vit` family: the Vision Transformer in Google's parameter layout.

Variants are SIZE/PATCH (`models/vit.py`), the classifier `model.classifier` (token or
gap), an optional `pre_logits` layer `model.representation_size`, the GELU form
`model.gelu`. Checkpoints are read in the released npz layout
(linen-written names too) with the architecture inferred from the shapes
(`vit_checkpoint.py`), or as timm's state dicts (`vit_timm.py`: exact GELU, the heads
from the file's metadata); at another resolution the position embeddings are
interpolated, as vit_jax fine-tunes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from mixer_cli.core.errors import CheckpointMismatch
from mixer_cli.models import vit_onnx
from mixer_cli.models.checkpoints import read_params
from mixer_cli.models.isotropic import checked_spec, run_options
from mixer_cli.models.mixer import abstract_params
from mixer_cli.models.registry import Family, Loaded, onnx_of
from mixer_cli.models.settings import ModelConfig
from mixer_cli.models.vit import LISTED_VARIANTS, ViTSpec, create_vit, parse_vit
from mixer_cli.models.vit_checkpoint import (
    POSEMB,
    at_resolution,
    infer_architecture,
    released_names,
    with_grid,
    with_heads,
)
from mixer_cli.models.vit_timm import LAYOUT_OF_VIT
from mixer_cli.weights.arrays import as_tree, check_compatible, flatten, with_fresh_head


def _spec(m: ModelConfig) -> ViTSpec:
    return checked_spec(
        parse_vit,
        m,
        no_grid_factor=(
            "model.grid_factor: only plain Mixers adapt to a multiple of their resolution; a "
            "ViT interpolates its position embeddings instead (set model.resolution)"
        ),
    )


def build(m: ModelConfig, num_classes: int, head_bias: float) -> Any:
    return create_vit(
        _spec(m),
        classifier=m.classifier,
        representation_size=m.representation_size,
        **run_options(m, num_classes, head_bias),
    )


def matches(flat: Mapping[str, Any]) -> bool:
    blocks = any(key.startswith("Transformer/encoderblock_") for key in flat)
    return "embedding/kernel" in flat and blocks


def load(
    flat: Mapping[str, Any], source: str, resolution: int | None, settings: Mapping[str, Any]
) -> Loaded:
    gelu = settings.get("gelu", "tanh")
    flat = _with_saved_heads(released_names(flat), settings, source)
    arch = infer_architecture(flat, source)
    native = arch.resolution
    if resolution is not None and resolution != native:
        arch, flat = at_resolution(arch, flat, resolution, source)
    model = arch.create_model(gelu)
    name = arch.spec.name
    check_compatible(abstract_params(model, arch.resolution), flat, source, f"ViT-{name}")
    return Loaded(
        model,
        as_tree(flat),
        "vit",
        name,
        arch.resolution,
        arch.num_classes,
        {"classifier": arch.classifier, "native_resolution": native, "gelu": gelu},
        config={
            "family": "vit",
            "variant": name,
            "resolution": arch.resolution,
            "classifier": arch.classifier,
            "gelu": gelu,
        },
    )


def _with_saved_heads(
    flat: dict[str, Any], settings: Mapping[str, Any], source: str
) -> dict[str, Any]:
    """The arrays split into the attention heads the file records (a timm state dict's
    metadata: the state dict itself does not hold them), else as they are."""
    heads = settings.get("attention_heads")
    return with_heads(flat, heads, source) if heads is not None else flat


def resolution_settings(loaded: Loaded, resolution: int) -> dict[str, Any]:
    """Fine-tuning at another resolution: any the patches tile (the position embeddings
    are interpolated when the warm start reads them)."""
    parse_vit(loaded.config["variant"]).check_resolution(resolution)
    return {"model.resolution": resolution}


def warm_start(path: str, fresh: dict[str, Any], scope: str) -> dict[str, Any]:
    """scope 'all': every array as saved. 'backbone': the checkpoint's backbone with its
    position embeddings resized to the fresh model's grid, its `pre_logits` layer dropped
    when the fresh model has none (as vit_jax's fine-tuning does), under a fresh head."""
    from mixer_cli.weights.forms import saved_settings

    flat, source = read_params(path)
    if not matches(flat):
        raise CheckpointMismatch(
            f"{source} is not a ViT checkpoint (it has no 'embedding' and 'Transformer/"
            "encoderblock_*' arrays): a ViT starts from a ViT; set model.family to the "
            "checkpoint's family"
        )
    flat = _with_saved_heads(released_names(flat), saved_settings(path), source)
    fresh_flat = flatten(fresh)
    if scope != "backbone":
        check_compatible(fresh, flat, source, "this run's model")
        return as_tree(flat)
    if POSEMB in flat and POSEMB in fresh_flat:
        rows = fresh_flat[POSEMB].shape[1] - ("cls" in fresh_flat)
        flat = with_grid(flat, math.isqrt(rows), source)
    if "pre_logits/kernel" not in fresh_flat:
        flat = {k: v for k, v in flat.items() if not k.startswith("pre_logits/")}
    return with_fresh_head(flat, fresh, source)


def paper_setting(variant: str, dataset: str | None) -> tuple[str | None, int | None]:
    """A size of the ViT paper (Ti, S, B, L, H) at 224 px; on ImageNet(-21k) the ViT
    paper's recipe for it (one per dataset: the paper trains every size alike)."""
    size = parse_vit(variant).name.split("/")[0]
    if size not in ("Ti", "S", "B", "L", "H"):
        return None, None
    return (f"vit_b16_{dataset}", None) if dataset is not None else (None, 224)


def count(m: ModelConfig, num_classes: int) -> dict[str, Any]:
    """Parameters and GFLOPs, measured on the model with one and two blocks (`by_blocks`)."""
    from mixer_cli.models.costs import count_by_blocks

    return count_by_blocks(
        lambda spec: create_vit(
            spec,
            num_classes=num_classes,
            classifier=m.classifier,
            representation_size=m.representation_size,
        ),
        _spec(m),
        m.resolution,
    )


FAMILY = Family(
    name="vit",
    title="ViT",
    parse=lambda m: _spec(m).name,
    build=build,
    patch_size=lambda m: parse_vit(m.variant).patch_size,
    matches=matches,
    load=load,
    warm_start=warm_start,
    count=count,
    resolution_settings=resolution_settings,
    variants=LISTED_VARIANTS,
    paper_setting=paper_setting,
    timm=LAYOUT_OF_VIT,
    onnx=onnx_of(vit_onnx.vit_graph),
)
