"""What mixer keeps on disk because it can be recomputed, only slowly: extracted features,
the prepared digits dataset. Under $MIXER_CACHE_DIR, else $XDG_CACHE_HOME/mixer, else
~/.cache/mixer. A cache file that is missing or unreadable is recomputed; one that cannot
be written costs time, never the result."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from mixer_cli.core import report
from mixer_cli.core.atomic import atomic_write
from mixer_cli.core.errors import ConfigError


def default_cache_dir() -> Path:
    """The cache directory; refuses one that cannot be a directory (checked up front)."""
    base = os.environ.get("MIXER_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME")
    path = Path(base) / "mixer" if base else Path.home() / ".cache" / "mixer"
    blocked = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise ConfigError(
            f"the cache directory {str(path)!r} cannot be made: {str(blocked)!r} is a file "
            "(set MIXER_CACHE_DIR to a directory)"
        )
    return path


def read_npz(path: Path, what: str) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file, or None when there is none or it is unreadable."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # e.g. truncated
        report.stderr.print(f"[yellow]warning:[/] unreadable {what} {path}; recomputing")
        return None


def write_npz(path: Path, what: str, **arrays: np.ndarray) -> None:
    """Write arrays whole or not at all; a cache that cannot be written costs time only."""
    try:
        with atomic_write(path, "wb") as f:
            np.savez(f, **arrays)
    except OSError as err:
        report.stderr.print(f"[yellow]warning:[/] cannot write the {what} {path}: {err}")
