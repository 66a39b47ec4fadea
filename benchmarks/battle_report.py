"""The tables and figures of `benchmarks/battle.py` from its state file (issue 40).

The tuning table (each family's two runs), an equal-budget table per kind of CPU the
finals ran on (one row per model: parameters, GFLOPs per image, train img/s, the tuned lr,
steps, wall time, test top-1 with the weight average's beside it, linear 5-shot; mean and
range where three seeds were run) and the data-size table, printed and written to
battle.md; battle_budget.png (test top-1 against wall minutes, one line per model, a panel
per kind of CPU) and battle_size.png (test top-1 and 5-shot against the size of the
training set; the mean of the seeds run, bars from the lowest to the highest), for
RESULTS.md and the README.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

FRACTIONS = ("10", "30", "100")


def spread(runs: list[dict[str, Any]], key: str) -> str:
    """'72.4%' for one run, '72.4% (71.9-72.8, 3 seeds)' for several."""
    values = [r[key] for r in runs]
    mean = f"{statistics.mean(values):.1%}"
    if len(values) == 1:
        return mean
    return f"{mean} ({min(values):.1%}-{max(values):.1%}, {len(values)} seeds)"


def final_sets(
    state: dict[str, Any], labels: dict[str, str]
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """{kind of CPU: {model: its finals}} for each kind with finals, the models in `labels`'
    order whatever order they ran in: wall times compare only within a kind (the families'
    speed ratios differ between kinds)."""
    return {
        kind: {slug: finals[slug] for slug in labels if slug in finals}
        for kind, finals in state["final"].items()
        if finals
    }


def budget_table(
    state: dict[str, Any],
    labels: dict[str, str],
    kind: str,
    finals: dict[str, list[dict[str, Any]]],
) -> list[str]:
    lines = [
        "| model | params | GFLOPs/img | train img/s | lr (tuned) | steps "
        "| wall to results.json | test top-1 | EMA top-1 | 5-shot |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for slug, runs in finals.items():
        speed, tune = state["speed"][kind][slug], state["tune"][slug]
        walls = ", ".join(f"{r['wall_s'] / 60:.1f}" for r in runs)
        lines.append(
            f"| {labels[slug]} ({speed['model']}) | {speed['params'] / 1e6:.2f}M "
            f"| {speed['gflops']:.3f} | {speed['img_per_sec']:.0f} | {tune['lr']:g} "
            f"| {runs[0]['steps']:,} | {walls} min | {spread(runs, 'top1')} "
            f"| {spread(runs, 'ema_top1')} | {spread(runs, 'fewshot5')} |"
        )
    return lines


def tune_table(state: dict[str, Any], labels: dict[str, str]) -> list[str]:
    """The same tuning effort per family: its two runs' validation top-1 and the lr kept."""
    lines = ["| model | val. top-1 at lr 1e-3 | at 3e-3 | lr kept |", "|---|---|---|---|"]
    for slug, tune in state["tune"].items():
        scores = " | ".join(f"{v:.1%}" for v in tune["validation_top1"].values())
        lines.append(f"| {labels[slug]} | {scores} | {tune['lr']:g} |")
    return lines


def size_table(state: dict[str, Any], labels: dict[str, str]) -> list[str]:
    head = " | ".join(f"{p}% top-1 | {p}% 5-shot" for p in FRACTIONS)
    lines = [f"| model | {head} |", "|---|" + "---|" * 2 * len(FRACTIONS)]
    for slug, rows in state["size"].items():
        cells = " | ".join(
            f"{spread(rows[p], 'top1')} | {spread(rows[p], 'fewshot5')}" if p in rows else "- | -"
            for p in FRACTIONS
        )
        lines.append(f"| {labels[slug]} | {cells} |")
    return lines


def cpu_name(finals: dict[str, list[dict[str, Any]]]) -> str:
    """'Intel Xeon, 2 cores (avx512)': the machine a set of finals ran on, as its runs say."""
    return next(iter(finals.values()))[0]["cpu"]


def draw_finals(ax: Any, finals: dict[str, list[dict[str, Any]]], labels: dict[str, str]) -> None:
    """Seed 0's curve per model; a bar at its end spanning its seeds' final top-1."""
    for slug, runs in finals.items():
        minutes, top1 = zip(*runs[0]["curve"], strict=True)
        color = f"C{list(labels).index(slug)}"  # a model's colour in every panel
        ax.plot(minutes, [100 * v for v in top1], marker="o", label=labels[slug], color=color)
        if len(runs) > 1:
            ends = [100 * r["top1"] for r in runs]
            ax.vlines(minutes[-1], min(ends), max(ends), color=color, lw=6, alpha=0.4)


def budget_figure(
    sets: dict[str, dict[str, list[dict[str, Any]]]], labels: dict[str, str], path: Path
) -> None:
    fig, axes = plt.subplots(1, len(sets), figsize=(7 * len(sets), 4.5), squeeze=False, sharey=True)
    for ax, (kind, finals) in zip(axes[0], sets.items(), strict=True):
        draw_finals(ax, finals, labels)
        ax.axhline(10, color="grey", linestyle=":", label="chance")
        ax.set(xlabel=f"wall time from launch (minutes, 2-core {kind} CPU)",
               ylabel="CIFAR-10 test top-1 (%)", title=cpu_name(finals))  # fmt: skip
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left")
        # The finals within 3 points of the best, magnified: on the full axis they overlap.
        ends = {slug: [100 * r["top1"] for r in runs] for slug, runs in finals.items()}
        best = max(max(v) for v in ends.values())
        close = {slug: runs for slug, runs in finals.items() if max(ends[slug]) > best - 3}
        if len(close) > 1:
            zoom = ax.inset_axes((0.52, 0.16, 0.45, 0.38))
            draw_finals(zoom, close, labels)
            last = [runs[0]["curve"][-1][0] for runs in close.values()]
            low = min(min(ends[slug]) for slug in close)
            zoom.set(xlim=(min(last) - 2, max(last) + 0.5), ylim=(low - 1, best + 0.7))
            zoom.grid(alpha=0.3)
            zoom.tick_params(labelsize=7)
            ax.indicate_inset_zoom(zoom, edgecolor="grey")
    seeded = any(len(runs) > 1 for finals in sets.values() for runs in finals.values())
    fig.suptitle("Equal budget: 30 minutes of the CPU per model, seed 0"
                 + ("; a bar at a line's end: its seeds' range" if seeded else ""))  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def size_figure(state: dict[str, Any], labels: dict[str, str], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    ticks: dict[int, str] = {}
    for slug, rows in state["size"].items():
        done = [p for p in FRACTIONS if p in rows]
        sizes = [rows[p][0]["train_examples"] for p in done]
        ticks |= {n: f"{n:,} ({p}%)" for n, p in zip(sizes, done, strict=True)}
        for ax, key in zip(axes, ("top1", "fewshot5"), strict=True):
            values = [[100 * r[key] for r in rows[p]] for p in done]
            means = [statistics.mean(v) for v in values]
            low_high = [[m - min(v) for m, v in zip(means, values, strict=True)],
                        [max(v) - m for m, v in zip(means, values, strict=True)]]  # fmt: skip
            ax.errorbar(sizes, means, yerr=low_high, marker="o", capsize=3, label=labels[slug])
    for ax, name in zip(axes, ("test top-1", "linear 5-shot"), strict=True):
        ax.set(xscale="log", xlabel="training images (fixed steps)", ylabel=f"CIFAR-10 {name} (%)")
        ax.set_xticks(list(ticks), list(ticks.values()), minor=False)
        ax.set_xticks([], minor=True)
        ax.grid(alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()  # below both: no line hidden
    fig.legend(handles, names, loc="lower center", ncol=len(names), frameon=False)
    title = "As data grows: the same steps on 10%, 30% and 100% of CIFAR-10's train split"
    if any(len(runs) > 1 for rows in state["size"].values() for runs in rows.values()):
        title += "\n(seeds 0-2 where a model is within 2 points of a Mixer: mean; bars, range)"
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(state: dict[str, Any], figures: Path, out: Path, labels: dict[str, str]) -> None:
    parts, written = [], []
    if state["tune"]:
        parts += [
            "## Tuning (train[:90%], scored on train[90%:])",
            "",
            *tune_table(state, labels),
            "",
        ]
    sets = final_sets(state, labels)
    for kind, finals in sets.items():
        parts += [
            f"## Equal budget on {cpu_name(finals)}",
            "",
            *budget_table(state, labels, kind, finals),
            "",
        ]
    if sets:
        budget_figure(sets, labels, figures / "battle_budget.png")
        written.append(str(figures / "battle_budget.png"))
    if state["size"]:
        parts += ["## As data grows", "", *size_table(state, labels), ""]
        size_figure(state, labels, figures / "battle_size.png")
        written.append(str(figures / "battle_size.png"))
    (out / "battle.md").write_text("\n".join(parts))
    print("\n".join(parts))
    print(json.dumps({"written": [*written, str(out / "battle.md")]}))
