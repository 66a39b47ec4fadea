"""The MLP-Mixer paper's published transfer numbers for Google's released checkpoints.

Keyed by the released name a checkpoint was given as (weights/released.py) and the
fine-tuning resolution; top-1 accuracies in percent. `mixer transfer` prints them beside
its own so a run shows at once whether it reproduces them.

- Table 3 (224 px; ImageNet "ImNet", ReaL, the mean over the five Avg 5 tasks).
- Table 2 (448 px; the same plus the VTAB-1k mean over its 19 tasks; VTAB's tasks use
  their own resolution rule, so its number stands for the checkpoint at any suite
  resolution).
- Throughput: inference img/s per TPU-v3 core at that resolution (Table 2 at 448; at 224
  the paper's throughput figures: B/16 1384, L/16 419), not a percentage.
"""

from __future__ import annotations

from typing import Any

# (released name, resolution) -> {metric: top-1 %}; metrics: imagenet, real, avg5, vtab1k,
# and throughput (img/s/core)
B16, L16 = {"throughput": 1384}, {"throughput": 419}
PUBLISHED: dict[tuple[str, int], dict[str, float]] = {
    ("imagenet21k/Mixer-B_16", 224): {"imagenet": 80.64, "real": 85.80, "avg5": 92.50, **B16},
    ("imagenet21k/Mixer-L_16", 224): {"imagenet": 82.89, "real": 87.54, "avg5": 93.63, **L16},
    ("imagenet1k/Mixer-B_16", 224): {"imagenet": 76.44, "real": 82.36, "avg5": 88.33, **B16},
    ("imagenet21k/Mixer-L_16", 448): {
        "imagenet": 84.15,
        "real": 87.86,
        "avg5": 93.91,
        "vtab1k": 74.95,
        "throughput": 105,
    },
}
PERCENT = ("imagenet", "real", "avg5", "vtab1k")
SOURCES = {224: "Table 3", 448: "Table 2"}


def published(name: str | None, resolution: int) -> dict[str, Any] | None:
    """The paper's numbers for the released checkpoint `name` fine-tuned at `resolution`
    ({metric: value, "source": "Table N"}), with VTAB-1k from whichever table has it;
    None for a checkpoint the paper does not report."""
    rows = {res: row for (key, res), row in PUBLISHED.items() if key == name}
    if not rows:
        return None
    found: dict[str, Any] = dict(rows.get(resolution, {}))
    sources = [SOURCES[resolution]] if found else []
    for res, row in rows.items():
        if "vtab1k" in row and "vtab1k" not in found:
            found["vtab1k"] = row["vtab1k"]
            sources.append(f"{SOURCES[res]} (VTAB-1k)")
    return {**found, "source": ", ".join(sources)} if found else None
