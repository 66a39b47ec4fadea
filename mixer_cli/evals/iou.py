"""Segmentation metrics from a confusion matrix: mean IoU, per-class IoU, pixel accuracy.

The matrix is summed over a whole split (padded examples and "ignore" pixels left out),
so a split is scored exactly, not averaged per batch. Scoring happens on the host, at
each image's own size: the model's per-pixel scores at its resolution are resized back
to the image (bilinear on the scores), then compared with the true mask.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def confusion(predicted: Any, true: Any, classes: int, valid: Any | None = None) -> np.ndarray:
    """[classes, classes] counts, rows true, columns predicted; pixels whose label is
    IGNORE (or outside the classes) and pixels where `valid` is False are left out."""
    predicted, true = np.asarray(predicted, np.int64), np.asarray(true, np.int64)
    keep = (true >= 0) & (true < classes)
    if valid is not None:
        keep &= np.asarray(valid, bool)
    index = true[keep] * classes + predicted[keep]
    return np.bincount(index, minlength=classes * classes).reshape(classes, classes)


def score_batch(
    scores: np.ndarray, truth: np.ndarray, sizes: np.ndarray, valid: np.ndarray
) -> np.ndarray:
    """The confusion of one batch: scores [B, R, R, K] at the model's resolution, true
    masks [B, H, W] padded with IGNORE, each image's (height, width) [B, 2], and which
    rows are real examples [B]."""
    classes = scores.shape[-1]
    total = np.zeros((classes, classes), np.int64)
    resolution = scores.shape[1:3]
    for i in np.flatnonzero(valid):
        height, width = (int(v) for v in sizes[i])
        pixels = scores[i]
        if (height, width) != resolution:
            from mixer_cli.data.segment_transforms import to_image_size

            pixels = to_image_size(pixels, height, width).numpy()
        total += confusion(pixels.argmax(-1), truth[i, :height, :width], classes)
    return total


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
