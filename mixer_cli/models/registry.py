"""Model families as plug-ins: name -> how to parse a variant, build, count, load, warm-start.

A family is one module exposing `FAMILY` (a `Family`), listed in `FAMILY_MODULES`; the
module is imported only when the family is used. Nothing outside a family's module
branches on its name: the engine, `mixer eval` and the shuffle experiment ask the
registry. Adding a family is its module plus one line here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mixer_cli.errors import CheckpointMismatch, ConfigError

if TYPE_CHECKING:
    from mixer_cli.config import ModelConfig

# family name -> the module holding its FAMILY.
FAMILY_MODULES: dict[str, str] = {
    "mixer": "mixer_cli.models.mixer_family",
    "hybrid": "mixer_cli.models.hybrid_family",
    "resnet": "mixer_cli.models.resnet_family",
}
FAMILY_NAMES: tuple[str, ...] = tuple(FAMILY_MODULES)


@dataclass
class Loaded:
    """A checkpoint ready to run: its module, parameters and what its arrays say."""

    model: Any
    params: dict[str, Any]
    family: str
    name: str  # the variant, as the family writes it
    resolution: int
    num_classes: int
    details: dict[str, Any] = field(default_factory=dict)  # e.g. grid_factor (for results)
    config: dict[str, Any] = field(default_factory=dict)  # model.* keys that rebuild it


@dataclass(frozen=True)
class Family:
    """What the rest of mixer may ask of a model family."""

    name: str
    # The variant's display name; refuses a bad variant or resolution (ConfigError).
    parse: Callable[[ModelConfig], str]
    # (model config, classes, head bias init) -> a Flax module returning (logits, out).
    build: Callable[[ModelConfig, int, float], Any]
    # The patch size the shuffle experiment permutes by default (0: the family has none).
    patch_size: Callable[[ModelConfig], int]
    # Flat '/'-joined arrays of a checkpoint -> whether they are this family's.
    matches: Callable[[Mapping[str, Any]], bool]
    # (flat arrays, name for messages, requested resolution or None, the model settings
    # the checkpoint carries: `checkpoints.saved_settings`) -> Loaded.
    load: Callable[[Mapping[str, Any], str, int | None, Mapping[str, Any]], Loaded]
    # (checkpoint path, freshly initialised params, 'all' | 'backbone') -> params to train.
    warm_start: Callable[[str, dict[str, Any], str], dict[str, Any]]
    # (model config, classes) -> {'params': int, 'gflops': float} per image.
    count: Callable[[ModelConfig, int], dict[str, Any]]


def get(name: str) -> Family:
    """The family called `name`, refusing unknown ones with the valid names."""
    if name not in FAMILY_MODULES:
        raise ConfigError(f"unknown model family {name!r}; families: {', '.join(FAMILY_NAMES)}")
    return importlib.import_module(FAMILY_MODULES[name]).FAMILY


def family_of(flat: Mapping[str, Any], source: str) -> Family:
    """The family whose parameter layout a checkpoint's arrays have."""
    for name in FAMILY_NAMES:
        family = get(name)
        if family.matches(flat):
            return family
    raise CheckpointMismatch(
        f"{source} is not a checkpoint of a known model family ({', '.join(FAMILY_NAMES)})"
    )


def load_checkpoint(path: Any, resolution: int | None = None) -> Loaded:
    """Any checkpoint `--init` takes (Google's npz or name, ours, a run directory, timm's
    safetensors or hf-hub name) as a ready model. A run directory's config.yaml names its
    family and resolution; a bare file is recognised by its arrays."""
    from mixer_cli.checkpoints import read_params, saved_settings

    flat, source = read_params(path)
    settings = saved_settings(path)
    if "family" in settings or "kind" in settings:  # a run's config.yaml
        family = get(settings.get("family", settings.get("kind", "mixer")))
        resolution = resolution or settings.get("resolution")
    else:
        family = family_of(flat, source)
    return family.load(flat, source, resolution, settings)
