"""Files written whole or not at all: the one way mixer writes what others read back.

A temporary file beside the target (same filesystem, so the rename is atomic) is renamed
over it when the writing block completes and removed when it fails: a reader, or a run
killed mid-write, sees the old file or the new one, never half of one. The file gets the
mode an ordinary `open()` would give it (0666 less the umask), not mkstemp's private
0600, so a group's shared run directory stays readable.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """`with atomic_write(path, "wb") as f: ...` ('w' text, 'wb' bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """`with atomic_directory(out) as staging: ...` fills a directory beside `out` that
    takes `out`'s name only when the block completes (an existing `out` is replaced then,
    and removed last); on failure the staging directory goes and `out` is untouched."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield staging
        os.chmod(staging, 0o777 & ~current_umask())
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.{os.getpid()}.old")
            os.replace(path, old)
        os.replace(staging, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
