"""The variant table: Table 1's parameter counts, naming, and shapes of every variant."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from mixer_cli.core.errors import ConfigError
from mixer_cli.models import (
    LISTED_VARIANTS,
    PAPER_VARIANTS,
    SIZES,
    abstract_params,
    count_params,
    create_model,
    parse_variant,
)

# Table 1 of the paper: parameters in millions, head excluded.
TABLE_1_MILLIONS = {
    "S/32": 19,
    "S/16": 18,
    "B/32": 60,
    "B/16": 59,
    "L/32": 206,
    "L/16": 207,
    "H/14": 431,
}


@pytest.mark.parametrize("variant", PAPER_VARIANTS)
def test_table1_parameter_counts(variant: str) -> None:
    params = abstract_params(create_model(variant), 224)
    assert round(count_params(params) / 1e6) == TABLE_1_MILLIONS[variant]


def test_b16_with_imagenet_head_matches_reference_count() -> None:
    params = abstract_params(create_model("B/16", num_classes=1000), 224)
    assert count_params(params) == 59_880_472


@pytest.mark.parametrize("variant", LISTED_VARIANTS)
def test_every_listed_variant_has_the_documented_shapes(variant: str) -> None:
    spec = parse_variant(variant)
    resolution = spec.patch_size * 4
    model = create_model(spec, num_classes=7)
    params = abstract_params(model, resolution)
    images = jax.ShapeDtypeStruct((2, resolution, resolution, 3), jnp.float32)
    logits, out = jax.eval_shape(lambda p, x: model.apply({"params": p}, x), params, images)
    assert logits.shape == (2, 7)
    assert out["pre_logits"].shape == (2, spec.hidden_dim)
    assert out["stem"].shape == (2, 16, spec.hidden_dim)
    assert params["MixerBlock_0"]["token_mixing"]["Dense_0"]["kernel"].shape == (
        16,
        spec.tokens_mlp_dim,
    )
    assert len([k for k in params if k.startswith("MixerBlock_")]) == spec.num_blocks


@pytest.mark.parametrize("size", SIZES)
def test_every_size_keeps_the_paper_ratios(size: str) -> None:
    s = SIZES[size]
    assert s.channels_mlp_dim == 4 * s.hidden_dim and s.tokens_mlp_dim * 2 == s.hidden_dim


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("B/16", "B/16"),
        ("b/16", "B/16"),
        ("B_16", "B/16"),
        ("Mixer-L_16", "L/16"),
        ("ti/4", "Ti/4"),
        ("S/8", "S/8"),
    ],
)
def test_variant_spellings(text: str, name: str) -> None:
    assert parse_variant(text).name == name


@pytest.mark.parametrize("text", ["X/7", "B/0", "B16", "", "B/16/2", "Q/16"])
def test_unknown_variants_are_refused_with_the_valid_form(text: str) -> None:
    with pytest.raises(ConfigError, match=r"SIZE/PATCH.*N, Ti, S, B, L, H"):
        parse_variant(text)


def test_resolution_not_tiled_by_patch_suggests_neighbours() -> None:
    with pytest.raises(ConfigError, match="try 224 or 240"):
        parse_variant("B/16").check_resolution(225)
    with pytest.raises(ConfigError, match=r"try 32$"):
        parse_variant("B/32").check_resolution(20)


def test_an_architecture_outside_the_table_has_a_name_that_parses_back() -> None:
    from mixer_cli.models.variants import spec_from_dims

    spec = spec_from_dims(4, 2, 16, 8, 32)
    assert spec.name == "2x16-8-32/4" and parse_variant(spec.name) == spec
    assert parse_variant("12x768-384-3072/16").name == "B/16"  # a table size keeps its name
    with pytest.raises(ConfigError, match="BLOCKSxC-D_S-D_C/PATCH"):
        parse_variant("2x16-8/4")
