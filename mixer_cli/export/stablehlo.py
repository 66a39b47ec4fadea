"""Any family's forward pass as serialized StableHLO (`jax.export`), weights inside.

The file needs JAX and nothing of mixer to run:

    from jax import export
    exported = export.deserialize(open("model.stablehlo", "rb").read())
    logits = exported.call(images)   # images: as export.json's "input" says

A dynamic batch is a symbolic dimension: one file serves every batch size.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def forward_function(model: Any, params: Any, uint8_input: bool) -> Any:
    """images -> logits with the parameters as constants (uint8 pixels scaled inside)."""
    params = jax.tree.map(jnp.asarray, params)

    def forward(images: jax.Array) -> jax.Array:
        x = images.astype(jnp.float32) * (2 / 255) - 1 if uint8_input else images
        return model.apply({"params": params}, x)[0]

    return forward


def export_bytes(
    model: Any, params: Any, resolution: int, batch_size: int | None, uint8_input: bool
) -> bytes:
    from jax import export

    batch = export.symbolic_shape("batch")[0] if batch_size is None else batch_size
    dtype = jnp.uint8 if uint8_input else jnp.float32
    spec = jax.ShapeDtypeStruct((batch, resolution, resolution, 3), dtype)
    fn = jax.jit(forward_function(model, params, uint8_input))
    return bytes(export.export(fn, platforms=("cpu",))(spec).serialize())


def load(path: str, threads: int = 0) -> Any:
    """images -> logits of a .stablehlo file (the documented loader, as a function); the
    threads are the process's (XLA's CPU client takes no count)."""
    from jax import export

    with open(path, "rb") as f:
        exported = export.deserialize(bytearray(f.read()))
    return lambda images: np.asarray(exported.call(images))


def run(path: str, images: np.ndarray) -> np.ndarray:
    """Logits of a .stablehlo file."""
    return load(path)(images)
