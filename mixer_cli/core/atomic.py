"""Files written whole or not at all: the one way mixer writes what others read back.

A temporary file beside the target (same filesystem, so the rename is atomic) is renamed
over it when the writing block completes and removed when it fails: a reader, or a run
killed mid-write, sees the old file or the new one, never half of one. The file gets the
mode an ordinary `open()` would give it (0666 less the umask), not mkstemp's private
0600, so a group's shared run directory stays readable. A write the disk refuses (full,
over quota, read-only) is `WriteFailed`: one line naming the file, the old one intact.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from mixer_cli.core.errors import WriteFailed

# What a write inside the block fails with when the disk takes no more (full, over quota,
# past the file size limit, read-only): said in one line; any other error is the block's.
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """`with atomic_write(path, "wb") as f: ...` ('w' text, 'wb' bytes)."""
    path = Path(path)
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise write_failed(path, err, existed) from err
    try:
        with os.fdopen(fd, mode) as f:
            yield f
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno in NO_ROOM:
            raise write_failed(path, err, existed) from err
        raise
    try:
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise write_failed(path, err, existed) from err
        raise


def write_failed(path: Path, err: OSError, existed: bool) -> WriteFailed:
    """The one line for a write that failed: what, why, and that nothing was damaged."""
    if isinstance(err, WriteFailed):
        return err
    kept = f"the existing {path} is unchanged" if existed else "nothing was written"
    return WriteFailed(
        f"could not write {path}: {err.strerror or err}; {kept} (make room or choose "
        "another place, then run the command again)"
    )


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """`with atomic_directory(out) as staging: ...` fills a directory beside `out` that
    takes `out`'s name only when the block completes (an existing `out`, directory or
    file, is replaced then and removed last); on failure the staging directory goes and
    `out` is untouched."""
    path = Path(path)
    existed = path.exists() or path.is_symlink()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    except OSError as err:
        raise write_failed(path, err, existed) from err
    try:
        yield staging
        os.chmod(staging, 0o777 & ~current_umask())
    except BaseException as err:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(err, OSError) and err.errno in NO_ROOM:
            raise write_failed(path, err, existed) from err
        raise
    old = path.with_name(f".{path.name}.{os.getpid()}.old") if existed else None
    try:
        if old is not None:
            os.replace(path, old)
        try:
            os.replace(staging, path)
        except BaseException:
            if old is not None:
                os.replace(old, path)  # the previous one back under its name
            raise
    except BaseException as err:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(err, OSError):
            raise write_failed(path, err, existed) from err
        raise
    if old is not None:
        remove(old)


def remove(path: Path) -> None:
    """Delete a file, link or directory tree (what an overwritten output was)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
