"""Model definitions: the Flax Mixer core, its variant table, and the family registry.

Attributes load on first use (PEP 562), so the registry's names reach the config layer
without importing Flax or JAX (`mixer --help` stays instant).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MlpMixer": "mixer_cli.models.mixer",
    "abstract_params": "mixer_cli.models.mixer",
    "count_params": "mixer_cli.models.mixer",
    "create_model": "mixer_cli.models.mixer",
    "LISTED_VARIANTS": "mixer_cli.models.variants",
    "PAPER_VARIANTS": "mixer_cli.models.variants",
    "SIZES": "mixer_cli.models.variants",
    "MixerSpec": "mixer_cli.models.variants",
    "parse_variant": "mixer_cli.models.variants",
    "spec_from_dims": "mixer_cli.models.variants",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mixer_cli.models' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
