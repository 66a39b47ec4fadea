"""Segmentation examples: test images beside their true and predicted masks, one row each,
every class in one fixed colour (ignored pixels light grey) with a legend of names."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mixer_cli.data.sources import IGNORE

IGNORED_COLOUR = (0.85, 0.85, 0.85)


def palette(classes: int) -> np.ndarray:
    """[256, 3] RGB in [0, 1]: class i a distinct colour (class 0, usually background,
    black), IGNORE light grey."""
    from matplotlib import colormaps

    colours = np.zeros((256, 3))
    cycle = colormaps["tab20"].colors if classes > 10 else colormaps["tab10"].colors
    for c in range(1, classes):
        colours[c] = cycle[(c - 1) % len(cycle)]
    colours[IGNORE] = IGNORED_COLOUR
    return colours


def draw_segmentation(
    examples: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    classes: Sequence[str],
    title: str = "",
) -> Any:
    """`examples`: (image [R, R, 3] in [0, 1], true mask [H, W], predicted mask [H, W])."""
    from matplotlib.patches import Patch

    from mixer_cli.figures import pyplot

    plt = pyplot()
    colours = palette(len(classes))
    figure, axes = plt.subplots(len(examples), 3, figsize=(6.3, 2.1 * len(examples) + 0.4),
                                squeeze=False)  # fmt: skip
    for row, (image, truth, predicted) in zip(axes, examples, strict=True):
        row[0].imshow(image, interpolation="nearest")
        row[1].imshow(colours[np.asarray(truth, np.uint8)], interpolation="nearest")
        row[2].imshow(colours[np.asarray(predicted, np.uint8)], interpolation="nearest")
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, name in zip(axes[0], ("image", "true mask", "predicted"), strict=True):
        ax.set_title(name, fontsize=10)
    handles = [Patch(color=colours[c], label=name) for c, name in enumerate(classes)]
    handles.append(Patch(color=IGNORED_COLOUR, label="ignored"))
    figure.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
                  frameon=False)  # fmt: skip
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure
