"""The shuffle experiment's figure (`mixer permute`): the paper's Fig. 4, as we run it."""

from __future__ import annotations

from typing import Any

import numpy as np


def draw_permute(results: dict[str, Any], examples: dict[str, np.ndarray]) -> Any:
    """Like the paper's Fig. 4: a panel per model with a 5-shot curve per mode (test top-1
    dotted), and the example image as each mode permutes it."""
    from mixer_cli.figures import pyplot

    plt = pyplot()

    modes, models = results["modes"], results["models"]
    colours = {"original": "tab:blue", "patch": "tab:orange", "global": "tab:green"}
    figure = plt.figure(figsize=(4.2 * len(models), 5.6))
    grid = figure.add_gridspec(2, max(len(models), len(modes)), height_ratios=(3, 1.4))
    axes = None
    for column, model in enumerate(models.values()):
        axes = figure.add_subplot(grid[0, column], sharey=axes)
        for mode in modes:
            points = model["runs"][mode]["curve"]
            steps = [p["step"] for p in points]
            axes.plot(
                steps,
                [p["fewshot/5shot"] for p in points],
                "o-",
                color=colours[mode],
                label=f"{mode} (5-shot)",
            )
            axes.plot(steps, [p["test/top1"] for p in points], ":", color=colours[mode], alpha=0.6)
        axes.set_title(model["name"])
        axes.set_xlabel("training step")
        axes.grid(alpha=0.3)
        if column == 0:
            axes.set_ylabel("linear 5-shot top-1 (dotted: test top-1)")
            axes.legend(fontsize=8)
    for column, mode in enumerate(modes):
        axes = figure.add_subplot(grid[1, column])
        axes.imshow(np.clip(examples[mode], 0, 1), interpolation="nearest")
        axes.set_title(mode, fontsize=9)
        axes.axis("off")
    figure.suptitle(f"shuffle experiment on {results['data']}", fontsize=11)
    figure.tight_layout()
    return figure
