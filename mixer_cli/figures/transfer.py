"""The transfer suite's bars: test top-1 per task, one bar per `mixer transfer` result
(checkpoint) side by side, VTAB-1k's groups in their own colours of band; and a panel of
the means (VTAB-1k's groups, each suite, ImageNet, ReaL) with the paper's published
numbers as black ticks where the result has them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixer_cli.core import files
from mixer_cli.core.errors import ConfigError

# What the figure reads of a `mixer transfer` results.json.
RESULT = {"command": {"transfer"}, "init": str, "suite": str, "tasks": list,
          "tasks.*.task": str, "tasks.*.group": str, "tasks.*.test_top1": files.NUMBER,
          "group_means": dict, "suite_means": dict, "paper?": (dict, type(None)),
          "steps_scale": files.NUMBER}  # fmt: skip
BAND = {"natural": "#e8f1fa", "specialized": "#fdf1e3", "structured": "#eaf6ea", "avg5": "#f3f3f3"}


@dataclass(frozen=True)
class Result:
    name: str  # the checkpoint, as a legend says it
    results: dict[str, Any]  # the suite's results.json

    def means(self) -> dict[str, tuple[float | None, float | None]]:
        """What the means panel shows: name -> (ours, the paper's)."""
        r, paper = self.results, self.results.get("paper") or {}
        shown = {g: (v, None) for g, v in r["group_means"].items()}
        shown.update({s: (m["mean"], paper.get(s)) for s, m in r["suite_means"].items()})
        for key, label in (("imagenet", "ImageNet"), ("real", "ReaL")):
            if r.get(key) is not None:
                shown[label] = (r[key], paper.get(key))
        return shown


def read_result(path: Path) -> Result:
    """A `mixer transfer` results.json (or the suite directory holding it)."""
    file, results = files.read_results(path, "a `mixer transfer` result", RESULT)
    if not results["tasks"]:
        raise ConfigError(f"{file}: the suite has no finished task yet")
    scale = results["steps_scale"]
    name = Path(results["init"]).name + ("" if scale == 1 else f" (steps x {scale:g})")
    return Result(name, results)


def draw_transfer(results: Sequence[Result]) -> Any:
    from mixer_cli.figures import pyplot

    tasks = list(dict.fromkeys(t["task"] for r in results for t in r.results["tasks"]))
    groups = {t["task"]: t["group"] for r in results for t in r.results["tasks"]}
    plt = pyplot()
    figure, (bars, means) = plt.subplots(
        1, 2, figsize=(12, 1.2 + 0.32 * len(tasks) * max(1, len(results) / 2)),
        gridspec_kw={"width_ratios": [3, 2]},
    )  # fmt: skip
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    height = 0.8 / len(results)
    for y, task in enumerate(tasks):
        bars.axhspan(y - 0.5, y + 0.5, color=BAND.get(groups[task], "white"), zorder=0)
    for n, result in enumerate(results):
        rows = {t["task"]: t["test_top1"] for t in result.results["tasks"]}
        ys = [y + (n - (len(results) - 1) / 2) * height for y, t in enumerate(tasks) if t in rows]
        bars.barh(ys, [rows[t] for t in tasks if t in rows], height=height,
                  color=colours[n % len(colours)], label=result.name, zorder=2)  # fmt: skip
    bars.set_yticks(range(len(tasks)), [t.partition(":")[2] for t in tasks], fontsize=8)
    bars.invert_yaxis()
    bars.set_xlim(0, 1)
    bars.set_xlabel("test top-1")
    bars.set_title("per task (bands: VTAB-1k natural / specialized / structured)", fontsize=10)
    bars.grid(axis="x", alpha=0.3, zorder=1)
    bars.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.07), ncol=len(results))
    _draw_means(means, results, colours)
    figure.tight_layout()
    return figure


def _draw_means(ax: Any, results: Sequence[Result], colours: list[str]) -> None:
    shown = [r.means() for r in results]
    names = list(dict.fromkeys(k for s in shown for k in s))
    height = 0.8 / len(results)
    for n, means in enumerate(shown):
        for y, name in enumerate(names):
            if name not in means:
                continue
            ours, paper = means[name]
            offset = y + (n - (len(results) - 1) / 2) * height
            ax.barh(offset, ours, height=height, color=colours[n % len(colours)], zorder=2)
            ax.text(ours, offset, f" {ours:.1%}", va="center", fontsize=7, zorder=3)
            if paper is not None:
                ax.plot([paper, paper], [offset - height / 2, offset + height / 2], "k-",
                        linewidth=2, zorder=3, label="_paper")  # fmt: skip
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.1)
    ax.set_xlabel("top-1 (black tick: the paper's)")
    ax.set_title("means", fontsize=10)
    ax.grid(axis="x", alpha=0.3, zorder=1)
