"""The run directory: checked before any work, tied to one config so a resume is a resume."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from mixer_cli.config import Config, changeable, dump_yaml, upgrade
from mixer_cli.core.atomic import atomic_write
from mixer_cli.core.errors import ConfigError, MixerError


def _first_difference(old: dict, new: dict, prefix: str = "") -> str | None:
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if changeable(f"{prefix}{key}"):
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            found = _first_difference(a, b, f"{prefix}{key}.")
            if found:
                return found
        elif a != b:
            return f"{prefix}{key}: {a!r} before, {b!r} now"
    return None


LOCK = ".lock"  # holds "PID HOST" of the run that trains in the directory


@contextlib.contextmanager
def hold_workdir(workdir: Path, enabled: bool = True) -> Iterator[None]:
    """One run per directory: an exclusive OS lock on WORKDIR/.lock for the run's life.

    The kernel releases it when the process ends in any way (kill -9 included), so a
    stale lock never blocks a resume. A second run is refused at once naming the holder.
    Commands that only read a run (eval, fewshot) take no lock.
    """
    if not enabled:  # the other processes of a multi-process run: process 0 holds it
        yield
        return
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(workdir / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        raise ConfigError(f"workdir {str(workdir)!r} is not writable: {err.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, _, host = os.pread(fd, 256, 0).decode(errors="replace").strip().partition(" ")
            raise ConfigError(
                f"{workdir} is in use by another run (pid {pid or '?'} on {host or '?'}): "
                "wait for it to end, stop it, or choose another --workdir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def prepare_workdir(workdir: Path, config: Config, write: bool) -> None:
    """Create and probe the directory; refuse a different config than the run it holds
    (settings `config.changeable` aside: they change no trained result), and write the
    config as this invocation runs it."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir, prefix=".probe-"):
            pass
    except OSError as err:
        raise ConfigError(f"workdir {str(workdir)!r} is not writable: {err.strerror}") from None
    saved = workdir / "config.yaml"
    if saved.exists():
        from mixer_cli.weights.forms import saved_run_config

        old = upgrade(saved_run_config(workdir), config)
        difference = _first_difference(old, config.to_dict())
        if difference:
            raise ConfigError(
                f"{workdir} holds a run with another config ({difference}); resume it with "
                "the same settings or choose a new --workdir"
            )
    if write:  # the latest schedule (a resume may change how often it evaluates)
        with atomic_write(saved) as f:
            f.write(dump_yaml(config))


def default_workdir(command: str, variant: str, data: str) -> Path:
    """runs/COMMAND-VARIANT-DATA-TIME: where a command writes when no --workdir is given."""
    tag = "-".join(
        part.replace("/", "").replace(":", "").replace(" ", "")
        for part in (command, variant, Path(data).name or data)
    )
    return Path("runs") / f"{tag}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_free_space(workdir: Path, needed: int) -> None:
    """Refuse to start a run whose next checkpoint would not fit on the disk."""
    free = shutil.disk_usage(workdir).free
    if free < needed:
        raise ConfigError(
            f"workdir {str(workdir)!r} has {free / 2**20:,.0f} MiB free; this run's "
            f"checkpoint and parameters need {needed / 2**20:,.0f} MiB: free some space "
            "or choose another --workdir"
        )


def latest_run(root: Path = Path("runs"), command: str | None = None) -> Path:
    """The newest finished run directory under `root` (of `command`, if given): the default
    checkpoint of the subcommands that start from one, right after `mixer pretrain`."""
    from mixer_cli.train.metrics import read_results

    finished = []
    for params in root.glob("*/params.npz"):
        try:
            results = read_results(params.parent)
        except MixerError:  # unfinished (no results.json) or not mixer's: not a candidate
            continue
        if command is None or results.get("command") == command:
            finished.append((params.stat().st_mtime, params.parent))
    if not finished:
        kind = f"finished `mixer {command}` run" if command else "finished run"
        raise ConfigError(
            f"no --init given and no {kind} under {str(root)!r}: run `mixer pretrain` "
            "first or pass --init CHECKPOINT (an .npz or a run directory)"
        )
    return max(finished)[1]
