"""Few-shot curves: linear-probe accuracy against shots, one panel per dataset, one line
per `mixer fewshot` result (checkpoint), with the spread over seeds shaded (mean +- std)
and each seed's accuracy as a dot."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixer_cli.core import files
from mixer_cli.core.errors import ConfigError

# What the figure reads of a `mixer fewshot` results.json.
RESULT = {"command": {"fewshot"}, "datasets": dict, "datasets.*.shots": dict,
          "datasets.*.shots.*.mean": files.NUMBER, "datasets.*.shots.*.std": files.NUMBER,
          "datasets.*.shots.*.per_seed?": dict, "datasets.*.shots.*.per_seed.*?": files.NUMBER,
          "variant?": str, "init?": str}  # fmt: skip


@dataclass(frozen=True)
class Result:
    name: str  # the checkpoint, as a legend says it
    datasets: dict[str, Any]  # results.json's "datasets": {name: {"shots": {k: summary}}}


def read_result(path: Path) -> Result:
    """A `mixer fewshot` results.json (or the run directory holding it)."""
    file, results = files.read_results(path, "a `mixer fewshot` result", RESULT)
    odd = next((k for d in results["datasets"].values() for k in d["shots"] if not k.isdigit()), 0)
    if odd:
        raise ConfigError(f"{file} is not a `mixer fewshot` result: shots {odd!r} is no number")
    init = str(results.get("init", file.parent.name))
    name = f"{results.get('variant', '?')} ({Path(init).name})"
    return Result(name, results["datasets"])


def dataset_label(name: str) -> str:
    return Path(name.removeprefix("folder:")).name if name.startswith("folder:") else name


def draw_fewshot(results: Sequence[Result]) -> Any:
    from mixer_cli.figures import pyplot

    datasets = list(dict.fromkeys(d for r in results for d in r.datasets))
    plt = pyplot()
    figure, axes = plt.subplots(1, len(datasets), figsize=(4.6 * len(datasets), 3.8),
                                squeeze=False)  # fmt: skip
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, dataset in zip(axes[0], datasets, strict=True):
        for n, result in enumerate(results):
            if dataset not in result.datasets:
                continue
            summary = result.datasets[dataset]["shots"]
            shots = sorted(summary, key=int)
            xs = [int(k) for k in shots]
            mean = [summary[k]["mean"] for k in shots]
            std = [summary[k]["std"] for k in shots]
            colour = colours[n % len(colours)]
            ax.plot(xs, mean, "o-", color=colour, label=result.name)
            low = [m - s for m, s in zip(mean, std, strict=True)]
            high = [m + s for m, s in zip(mean, std, strict=True)]
            ax.fill_between(xs, low, high, color=colour, alpha=0.2, linewidth=0)
            for k in shots:
                seeds = list(summary[k].get("per_seed", {}).values())
                ax.plot([int(k)] * len(seeds), seeds, ".", color=colour, alpha=0.5,
                        markersize=4, label="_seeds")  # fmt: skip
        ax.set_xscale("log")
        ticks = sorted({int(k) for r in results if dataset in r.datasets
                        for k in r.datasets[dataset]["shots"]})  # fmt: skip
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_title(dataset_label(dataset), fontsize=10)
        ax.set_xlabel("examples per class (shots)")
        ax.set_ylabel("linear probe top-1")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.tight_layout()
    return figure
