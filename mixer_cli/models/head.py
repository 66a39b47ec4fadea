"""The classifier head both model families share."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def classifier_head(
    pre_logits: jax.Array,
    out: dict[str, jax.Array],
    *,
    num_classes: int,
    bias_init: float,
    dtype: Any = jnp.float32,
) -> jax.Array:
    """pre_logits -> float32 logits (also stored in `out`); call inside a compact module.

    The head Dense ('head') starts at zero, as the paper's recipe and fine-tuning need:
    every class starts equal (or at `bias_init`, for the sigmoid loss's ~1/1000 start).
    With num_classes=0 there is no head and the logits are the pre_logits.
    """
    x = pre_logits
    if num_classes:
        x = nn.Dense(
            num_classes,
            dtype=dtype,
            kernel_init=nn.initializers.zeros,
            bias_init=nn.initializers.constant(bias_init),
            name="head",
        )(x)
    logits = out["logits"] = x.astype(jnp.float32)
    return logits
