"""mixer: MLP-Mixer vision models on JAX/Flax, as a command-line tool and a library.

The public API is imported lazily, so `import mixer_cli` (and `mixer --help`)
does not pay for importing JAX.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "create_model", "load_pretrained", "write_npz", "write_safetensors"]

if TYPE_CHECKING:
    from mixer_cli.models import create_model
    from mixer_cli.models.mixer_checkpoint import load_pretrained
    from mixer_cli.models.timm_state import write as write_safetensors
    from mixer_cli.weights.arrays import write_npz

_LAZY = {
    "load_pretrained": "mixer_cli.models.mixer_checkpoint",
    "write_npz": "mixer_cli.weights.arrays",
    "create_model": "mixer_cli.models",
    "write_safetensors": ("mixer_cli.models.timm_state", "write"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name] if isinstance(_LAZY[name], tuple) else (_LAZY[name], name)
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'mixer_cli' has no attribute {name!r}")
