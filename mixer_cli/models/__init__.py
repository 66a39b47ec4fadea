"""Model definitions: the Flax Mixer core and its variant table (pure math, no I/O)."""

from mixer_cli.models.mixer import MlpMixer, abstract_params, count_params, create_model
from mixer_cli.models.variants import (
    LISTED_VARIANTS,
    PAPER_VARIANTS,
    SIZES,
    MixerSpec,
    parse_variant,
    spec_from_dims,
)

__all__ = [
    "LISTED_VARIANTS",
    "PAPER_VARIANTS",
    "SIZES",
    "MixerSpec",
    "MlpMixer",
    "abstract_params",
    "count_params",
    "create_model",
    "parse_variant",
    "spec_from_dims",
]
