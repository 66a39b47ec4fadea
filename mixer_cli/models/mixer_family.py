"""The registry's `mixer` family: the paper's MLP-Mixer in Google's parameter layout.

Variants are SIZE/PATCH (`models/variants.py`); checkpoints are read in the official
npz layout with the architecture inferred from the shapes, and warm starts from a
checkpoint at a lower resolution follow the paper's Appendix C (`checkpoints.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mixer_cli.models import mixer_onnx
from mixer_cli.models.checkpoints import load_params
from mixer_cli.models.isotropic import checked_spec, run_options
from mixer_cli.models.mixer import create_model
from mixer_cli.models.mixer_checkpoint import (
    pretrained_from_flat,
    resolution_factor,
    token_kernels,
    transfer_params,
)
from mixer_cli.models.mixer_timm import LAYOUT_OF_MIXER
from mixer_cli.models.registry import Family, Loaded, onnx_of
from mixer_cli.models.settings import ModelConfig
from mixer_cli.models.variants import LISTED_VARIANTS, MixerSpec, parse_variant


def _spec(m: ModelConfig) -> MixerSpec:
    return checked_spec(parse_variant, m)


def build(m: ModelConfig, num_classes: int, head_bias: float) -> Any:
    return create_model(
        _spec(m),
        grid_factor=m.grid_factor,
        **run_options(m, num_classes, head_bias),
    )


def matches(flat: Mapping[str, Any]) -> bool:
    from mixer_cli.models.hybrid_family import HYBRID_PARTS

    plain = not any(HYBRID_PARTS.search(key) for key in flat)
    return plain and "stem/kernel" in flat and "MixerBlock_0/LayerNorm_0/scale" in flat


def load(
    flat: Mapping[str, Any], source: str, resolution: int | None, settings: Mapping[str, Any]
) -> Loaded:
    gelu = settings.get("gelu", "tanh")
    pre = pretrained_from_flat(flat, source, resolution=resolution, gelu=gelu)
    arch = pre.architecture
    return Loaded(
        pre.model,
        pre.params,
        "mixer",
        arch.spec.name,
        arch.resolution,
        arch.num_classes,
        {
            "grid_factor": arch.grid_factor,
            "native_resolution": arch.native_resolution,
            "gelu": gelu,
        },
        config={
            "family": "mixer",
            "variant": arch.spec.name,
            "resolution": arch.resolution,
            "grid_factor": arch.grid_factor,
            "gelu": gelu,
        },
    )


def resolution_settings(loaded: Loaded, resolution: int) -> dict[str, Any]:
    """Fine-tuning at K x the checkpoint's resolution: token mixing K^2 wider (App. C)."""
    factor = resolution_factor(loaded, resolution)
    return {
        "model.resolution": loaded.resolution * factor,
        "model.grid_factor": loaded.config["grid_factor"] * factor,
    }


def warm_start(path: str, fresh: dict[str, Any], scope: str) -> dict[str, Any]:
    if scope == "backbone":  # adapted to the fresh model's resolution, a fresh head
        return transfer_params(path, fresh)
    return load_params(path, fresh)


PAPER_SIZES = ("S", "B", "L", "H")  # the sizes the paper trains at 224 px


def paper_setting(variant: str, dataset: str | None) -> tuple[str | None, int | None]:
    """A paper size at 224 px; on ImageNet(-21k) the paper's recipe, B's for S and B, L's
    for L and H."""
    size = parse_variant(variant).name.split("/")[0]
    if size not in PAPER_SIZES:
        return None, None
    if dataset is not None:
        return f"{'l16' if size in ('L', 'H') else 'b16'}_{dataset}", None
    return None, 224


def count(m: ModelConfig, num_classes: int) -> dict[str, Any]:
    from mixer_cli.models.costs import describe

    row = describe(_spec(m), m.resolution, num_classes)  # the variant's dimensions too
    return {k: v for k, v in row.items() if k not in ("variant", "num_classes", "resolution")}


FAMILY = Family(
    name="mixer",
    title="Mixer",
    parse=lambda m: _spec(m).name,
    build=build,
    patch_size=lambda m: parse_variant(m.variant).patch_size,
    matches=matches,
    load=load,
    warm_start=warm_start,
    count=count,
    resolution_settings=resolution_settings,
    variants=LISTED_VARIANTS,
    paper_setting=paper_setting,
    token_weights=token_kernels,
    timm=LAYOUT_OF_MIXER,
    onnx=onnx_of(mixer_onnx.mixer_graph),
)
