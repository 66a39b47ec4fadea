"""Deprecated: this module's contents moved (mixer 0.2). Importing a name from here still
works and warns once with its new home.

- npz arrays (read_npz, write_npz, flat_params, as_tree, check_compatible,
  with_fresh_head): `mixer_cli.weights.arrays`
- any --init form (read_arrays, saved_settings): `mixer_cli.weights.forms`
- a model's view (read_params, load_params, is_segmenter): `mixer_cli.models.checkpoints`
- the Mixer's architecture and resolution rule (load_pretrained, infer_architecture,
  adapt_resolution, ...): `mixer_cli.models.mixer_checkpoint`
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

_HOMES = {
    "mixer_cli.weights.arrays": (
        "Params read_npz write_npz flat_params as_tree check_compatible with_fresh_head"
    ),
    "mixer_cli.weights.forms": "read_arrays saved_settings",
    "mixer_cli.models.checkpoints": "SEGMENTER_PARTS is_segmenter read_params load_params",
    "mixer_cli.models.mixer_checkpoint": (
        "Architecture Pretrained infer_architecture resolution_factor part_major_order "
        "adapt_resolution read_checked checked_architecture transfer_params load_pretrained "
        "pretrained_from_flat"
    ),
}
MOVED = {name: module for module, names in _HOMES.items() for name in names.split()}


def __getattr__(name: str) -> Any:
    if name not in MOVED:
        raise AttributeError(f"module 'mixer_cli.checkpoints' has no attribute {name!r}")
    warnings.warn(
        f"mixer_cli.checkpoints.{name} moved to {MOVED[name]}.{name}",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(MOVED[name]), name)
