"""Evaluators as plug-ins: declared in a run's `evals:` section, found here by type.

An evaluator is one module holding a `Settings` dataclass (its config keys, every default
in one place) and an `Evaluator` class that says which splits it reads and turns the
shared forward passes over them into named metrics (`NAME/METRIC`). Adding one is that
module plus one line in `TYPES`. The registry imports a module only when its type is
used, so `mixer --help` stays free of JAX.
"""

from __future__ import annotations

import importlib
from typing import Any

from mixer_cli.core.errors import ConfigError

# type -> the module that implements it (its `Settings` and `Evaluator`).
TYPES: dict[str, str] = {
    "classification": "mixer_cli.evals.classification",
    "fewshot": "mixer_cli.evals.fewshot",
    "imagenet_a": "mixer_cli.evals.imagenet_a",
    "imagenet_r": "mixer_cli.evals.imagenet_r",
    "imagenet_v2": "mixer_cli.evals.imagenet_v2",
    "real": "mixer_cli.evals.real",
    "segmentation": "mixer_cli.evals.segmentation",
}


def module_for(kind: str) -> Any:
    if kind not in TYPES:
        raise ConfigError(f"unknown evaluator type {kind!r}; types: {', '.join(TYPES)}")
    return importlib.import_module(TYPES[kind])


def settings_class(kind: str) -> type:
    """The settings dataclass of an evaluator type (refusing unknown types)."""
    return module_for(kind).Settings


def evaluator_class(kind: str) -> type:
    return module_for(kind).Evaluator
