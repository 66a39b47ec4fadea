"""Training checkpoints with orbax: complete or ignored, verified on read, the last K kept.

A checkpoint holds the whole TrainState (parameters, optimizer state, step, RNG) and a
small JSON record (step, data position, results so far, and a checksum of every array).
Orbax writes into a temporary directory and renames it when complete, so a crash mid-save
leaves nothing that looks finished (leftover temporary directories are removed at the next
start). On restore, a checkpoint that fails to read or to match its checksums is set aside
as `<step>.corrupt` with a warning, and the one before it is used. A save that fails (disk
full, permissions) stops the run with one line; older checkpoints are never touched: the
oldest are deleted by us, not by orbax, and only once a newer one is complete on disk
(orbax's own `max_to_keep` deletes them even when the newer write has failed).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from mixer_cli import report
from mixer_cli.errors import CheckpointSaveFailed

CHECKSUMS = "checksums"  # the record's key for {array path: 32-bit checksum}


class CorruptCheckpoint(Exception):
    """Arrays that read back with other bits than were written."""


def _bits(x: jax.Array) -> jax.Array:
    """The array's exact bits as uint32 numbers (one per element)."""
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    x = x.reshape(-1)
    if x.dtype == jnp.bool_ or x.dtype.itemsize == 1:
        return x.astype(jnp.uint8).astype(jnp.uint32)
    unsigned = {2: jnp.uint16, 4: jnp.uint32}[x.dtype.itemsize]
    return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


@jax.jit
def _checksum_tree(tree: Any) -> Any:
    def checksum(x: jax.Array) -> jax.Array:
        # sum(bits_i * (2i + 1)) mod 2^32: the odd weights make every single flipped bit,
        # and any swap of two different elements, change the sum.
        bits = _bits(x)
        weights = jnp.arange(bits.size, dtype=jnp.uint32) * 2 + 1
        return jnp.sum(bits * weights, dtype=jnp.uint32)

    return jax.tree.map(checksum, tree)


def checksums(tree: Any) -> dict[str, int]:
    """{'params/stem/kernel': checksum, ...}: computed where the arrays live, a few bytes
    back to the host, so verifying a multi-gigabyte state costs one pass over it."""
    sums = jax.device_get(_checksum_tree(tree))
    return {
        jax.tree_util.keystr(path, simple=True, separator="/"): int(value)
        for path, value in jax.tree_util.tree_leaves_with_path(sums)
    }


def verify(tree: Any, expected: dict[str, int] | None) -> None:
    """Raise CorruptCheckpoint unless every array of `tree` has its recorded checksum
    (checkpoints written before checksums were recorded are accepted as they are)."""
    if not expected:
        return
    for path, value in checksums(tree).items():
        if path in expected and expected[path] != value:
            raise CorruptCheckpoint(f"{path} does not match its checksum")


class _OrbaxNoise(logging.Filter):
    """Drops orbax's own log lines, and asyncio's about orbax's tasks: its failures reach
    us as exceptions and are reported once, as one line; its warnings (per-item metadata,
    partial restores) are handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.CRITICAL:
            return True
        return "orbax" not in record.pathname and "orbax" not in record.getMessage()


def _closed_loop(kind: type, value: BaseException | None) -> bool:
    # After a failed or aborted read or write, tensorstore's callbacks still post to
    # orbax's finished event loop, each printing this traceback; the failure itself is
    # reported once, by us.
    return kind is RuntimeError and str(value) == "Event loop is closed"


def _skip_closed_loop() -> None:
    """Wrap sys.excepthook and sys.unraisablehook (once each) to drop that traceback."""
    previous_excepthook, previous_unraisablehook = sys.excepthook, sys.unraisablehook

    def excepthook(kind: type, value: BaseException, tb: Any) -> None:
        if not _closed_loop(kind, value):
            previous_excepthook(kind, value, tb)

    def unraisablehook(unraisable: Any) -> None:
        if not _closed_loop(unraisable.exc_type, unraisable.exc_value):
            previous_unraisablehook(unraisable)

    excepthook.mixer_filter = unraisablehook.mixer_filter = True  # type: ignore[attr-defined]
    if not getattr(previous_excepthook, "mixer_filter", False):
        sys.excepthook = excepthook
    if not getattr(previous_unraisablehook, "mixer_filter", False):
        sys.unraisablehook = unraisablehook


def quiet_orbax() -> None:
    """Keep orbax's internal noise off stderr (idempotent; MIXER_DEBUG=1 keeps it)."""
    if os.environ.get("MIXER_DEBUG") == "1":
        return
    for logger in (logging.getLogger("absl"), logging.getLogger("asyncio")):
        if not any(isinstance(f, _OrbaxNoise) for f in logger.filters):
            logger.addFilter(_OrbaxNoise())
    _skip_closed_loop()


def _reason(err: Exception) -> str:
    """The short cause of an orbax/tensorstore error: the OS error when there is one."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    code = re.search(r"os_error_code='?(\d+)", str(err))
    if code:
        return os.strerror(int(code.group(1)))
    text = str(err).split(" See full TensorStore details")[0].strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(err).__name__}: {first[:200]}" if first else type(err).__name__


def _warn_damaged(step_dir: Path, err: Exception, action: str) -> None:
    report.stderr.print(
        f"[yellow]warning:[/] checkpoint {step_dir} is damaged ({_reason(err)}); {action}",
        highlight=False,
        soft_wrap=True,
    )


@functools.cache
def whole_array_writes() -> None:
    """In a single process, write each replicated array whole from one device (set once).

    Orbax's default on CPUs splits every replicated array into one slice per device
    ("replica-parallel", meant for many hosts sharing the writes); each slice is an eager
    op compiled per shape: 232 compiles and ~12 s in a `mixer permute` test run on 8
    host devices, for no gain when one process writes everything. Many processes keep
    orbax's default.
    """
    if jax.process_count() > 1:
        return
    from orbax.checkpoint._src.metadata import array_metadata_store  # as orbax's default

    handler = ocp.type_handlers.ArrayHandler(
        array_metadata_store=array_metadata_store.Store(), use_replica_parallel=False
    )
    ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)


class Checkpointer:
    def __init__(self, directory: Path, keep: int) -> None:
        quiet_orbax()
        whole_array_writes()
        self.directory = directory.absolute()
        self.keep = keep
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(create=True, cleanup_tmp_directories=True),
        )
        self._writing: int | None = None
        self._failure: CheckpointSaveFailed | None = None  # raised again by every call

    def save(self, step: int, state: Any, record: dict[str, Any]) -> None:
        """Start writing `step` in the background (the previous write is finished first)."""
        self.wait()
        record = {**record, CHECKSUMS: checksums(state)}
        try:
            self.manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(record)
                ),
                force=True,
            )
        except Exception as err:
            raise self._failed(self._writing or step, err) from err
        self._writing = step

    def check(self) -> None:
        """Raise now if a background write has failed (cheap: no waiting)."""
        try:
            self.manager.check_for_errors()
        except Exception as err:
            raise self._failed(self._writing, err) from err

    def wait(self) -> None:
        """Block until background writes are on disk, then delete the steps beyond `keep`."""
        try:
            self.manager.wait_until_finished()
            self.manager.check_for_errors()
        except Exception as err:
            raise self._failed(self._writing, err) from err
        complete = self._complete_steps()
        if self._writing is not None and self._writing not in complete:
            # Orbax logs some failed writes instead of raising them.
            raise self._failed(self._writing, RuntimeError("the write did not complete"))
        self._writing = None
        # All but the newest `keep` complete steps (on every process: orbax syncs them).
        known = set(self.manager.all_steps())
        for step in complete[self.keep :]:
            if step in known:
                self.manager.delete(step)

    def _complete_steps(self) -> list[int]:
        """The complete steps, newest first, as process 0 lists them, on every process.

        Process 0 renames a finished step into place; a peer can list the directory
        before that rename shows. Deciding from their own listings, one process would
        delete an old step (a collective inside orbax) while the other does not, and the
        run fails on a mismatched sync (seen with two processes on a loaded machine).
        """
        steps = [int(d.name) for d in _step_dirs(self.directory)]
        if jax.process_count() == 1:
            return steps
        from jax.experimental import multihost_utils

        count = int(multihost_utils.broadcast_one_to_all(np.int32(len(steps))))
        padded = np.full(count, -1, np.int32)
        padded[: min(count, len(steps))] = steps[:count]
        return [int(s) for s in multihost_utils.broadcast_one_to_all(padded)]

    def _failed(self, step: int | None, err: Exception) -> CheckpointSaveFailed:
        if self._failure is not None:  # orbax raises an error once; we keep it
            return self._failure
        # The aborted write leaves orbax coroutines that Python reports, at exit, as never
        # awaited: the run is over and its error is this one.
        warnings.filterwarnings("ignore", "coroutine .* was never awaited", RuntimeWarning)
        complete = _step_dirs(self.directory)
        kept = (
            f"earlier checkpoints are intact (step {complete[0].name} is the newest complete one)"
            if complete
            else "there is no earlier checkpoint"
        )
        self._failure = CheckpointSaveFailed(
            f"could not write the checkpoint of step {step} in {self.directory} "
            f"({_reason(err)}); {kept}; free space or fix permissions, then run the same "
            "command to resume"
        )
        return self._failure

    def restore_latest(self, abstract_state: Any) -> tuple[Any, dict[str, Any]] | None:
        """The newest checkpoint that reads back intact, or None when there is none."""
        set_aside = False
        try:
            for step in sorted(self.manager.all_steps(), reverse=True):
                try:
                    restored = self.manager.restore(
                        step,
                        args=ocp.args.Composite(
                            state=ocp.args.StandardRestore(abstract_state),
                            record=ocp.args.JsonRestore(),
                        ),
                    )
                    record = dict(restored["record"])
                    verify(restored["state"], record.pop(CHECKSUMS, None))
                except Exception as err:  # unreadable or altered: fall back to an older one
                    step_dir = self.directory / str(step)
                    aside = _unused_name(step_dir, ".corrupt")
                    _warn_damaged(step_dir, err, f"kept as {aside.name}, using an older one")
                    if jax.process_index() == 0:
                        step_dir.rename(aside)
                    set_aside = True
                    continue
                return restored["state"], record
            return None
        finally:
            if set_aside:
                if jax.process_count() > 1:
                    from jax.experimental import multihost_utils

                    multihost_utils.sync_global_devices("mixer: corrupt checkpoints set aside")
                self.manager.reload()

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def close(self) -> None:
        self.manager.close()


def _unused_name(path: Path, suffix: str) -> Path:
    """path + suffix, or + suffix-2, -3, ... when a step was set aside before."""
    candidate, n = path.with_name(path.name + suffix), 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}{suffix}-{n}")
    return candidate


def _step_dirs(directory: Path) -> list[Path]:
    """Complete checkpoint steps under a run directory, its checkpoints/ or one step, newest
    first (orbax renames a step into place only once it is complete)."""
    if (directory / "state").is_dir():
        return [directory]
    if (directory / "checkpoints").is_dir():
        directory = directory / "checkpoints"
    if not directory.is_dir():
        return []
    steps = [d for d in directory.iterdir() if d.name.isdigit() and (d / "state").is_dir()]
    return sorted(steps, key=lambda d: int(d.name), reverse=True)


def _read_step_params(step_dir: Path) -> dict[str, Any]:
    """One step's parameters as NumPy, verified, without knowing the optimizer that wrote
    the rest of its state."""
    with ocp.PyTreeCheckpointer() as reader:
        tree = reader.metadata(step_dir / "state").item_metadata.tree
        item = {"params": tree["params"]}
        as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
        restored = reader.restore(
            step_dir / "state",
            args=ocp.args.PyTreeRestore(item=item, restore_args=as_numpy, partial_restore=True),
        )
    with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as reader:
        record = reader.restore(step_dir / "record", args=ocp.args.JsonRestore())
    verify(restored, record.get(CHECKSUMS))
    return restored["params"]


class UnreadableCheckpoints(Exception):
    """Training checkpoints exist but none reads back intact."""


def read_params(directory: Path) -> tuple[dict[str, Any], str] | None:
    """The parameters (as NumPy) of the newest intact training checkpoint: (params, where),
    or None if there is none. Raises UnreadableCheckpoints when every one is damaged."""
    quiet_orbax()
    steps = _step_dirs(directory)
    for step_dir in steps:
        try:
            return _read_step_params(step_dir), str(step_dir)
        except Exception as err:  # unreadable or altered: fall back to an older step
            if step_dir == steps[-1]:
                newer = f"; so are the {len(steps) - 1} newer ones" if len(steps) > 1 else ""
                raise UnreadableCheckpoints(
                    f"checkpoint {step_dir} is damaged ({_reason(err)}){newer}"
                ) from err
            _warn_damaged(step_dir, err, "trying an older one")
    return None
