"""The loss a model is trained on and evaluated by: one definition, so that training and
evaluation measure the same thing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def per_example_loss(logits: jax.Array, labels: jax.Array, kind: str) -> jax.Array:
    """[B] losses; labels are (possibly mixed) one-hot rows. Training and evaluation
    measure the same thing. Per-pixel labels [B, H, W, K] (segmentation) give each
    example the mean over its labelled pixels; an ignored pixel's row is all zeros."""
    if kind == "sigmoid":
        losses = optax.sigmoid_binary_cross_entropy(logits, labels).sum(axis=-1)
    else:
        losses = optax.softmax_cross_entropy(logits, labels)
    if labels.ndim == 2:
        return losses
    labelled = (labels.sum(axis=-1) > 0).astype(losses.dtype)
    axes = tuple(range(1, losses.ndim))
    return (losses * labelled).sum(axes) / jnp.maximum(labelled.sum(axes), 1.0)
