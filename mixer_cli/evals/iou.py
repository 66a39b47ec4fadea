"""Segmentation metrics from a confusion matrix: mean IoU, per-class IoU, pixel accuracy.

The matrix is summed over batches (padded examples and "ignore" pixels masked out), so a
whole split is scored exactly, not averaged per batch. Work in progress toward the
segmentation evaluator of `mixer segment` (issue 26).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

IGNORE = 255  # the label of pixels that count nowhere (the Oxford pets trimaps' border)


def confusion(
    predicted: jax.Array, true: jax.Array, classes: int, valid: jax.Array | None = None
) -> jax.Array:
    """[classes, classes] counts, rows true, columns predicted; pixels whose label is
    IGNORE (or outside the classes) and pixels where `valid` is False are left out."""
    keep = (true >= 0) & (true < classes)
    if valid is not None:
        keep &= valid
    index = jnp.where(keep, true * classes + predicted, classes * classes)
    counts = jnp.bincount(index.reshape(-1), length=classes * classes + 1)
    return counts[:-1].reshape(classes, classes)


def summary(matrix: Any) -> dict[str, Any]:
    """{'miou', 'pixel_accuracy', 'iou': [per class, None where a class is in neither the
    labels nor the predictions]}; the mean is over the classes that occur."""
    m = np.asarray(matrix, np.float64)
    hits = np.diag(m)
    union = m.sum(axis=0) + m.sum(axis=1) - hits
    iou = [float(h / u) if u > 0 else None for h, u in zip(hits, union, strict=True)]
    present = [v for v in iou if v is not None]
    total = m.sum()
    return {
        "miou": float(np.mean(present)) if present else 0.0,
        "pixel_accuracy": float(hits.sum() / total) if total else 0.0,
        "iou": iou,
        "pixels": int(total),
    }
