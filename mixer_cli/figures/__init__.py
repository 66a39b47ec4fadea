"""Figures: what mixer draws, one module per figure, files only (no display is needed).

Every figure is built as a matplotlib Figure by a `draw_*` function (what the tests
inspect: panels, lines, image values) and written by `save` (PNG, or SVG by the suffix),
atomically, so an interrupted plot never leaves half a file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

FORMATS = ("png", "svg")


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend: files only, whatever the environment says."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(figure: Any, path: Path, dpi: int = 120) -> Path:
    """Write `figure` to `path` (.png or .svg) atomically and close it."""
    from mixer_cli.core.atomic import atomic_write

    path = Path(path)
    kind = path.suffix.lstrip(".").lower()
    with atomic_write(path, "wb") as f:
        figure.savefig(f, dpi=dpi, format=kind, bbox_inches="tight")
    pyplot().close(figure)
    return path
