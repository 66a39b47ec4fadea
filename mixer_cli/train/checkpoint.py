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
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from mixer_cli.core.errors import CheckpointSaveFailed
from mixer_cli.weights.orbax_steps import (
    CHECKSUMS,
    checksums,
    quiet_orbax,
    reason,
    step_dirs,
    verify,
    warn_damaged,
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
        steps = [int(d.name) for d in step_dirs(self.directory)]
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
        complete = step_dirs(self.directory)
        kept = (
            f"earlier checkpoints are intact (step {complete[0].name} is the newest complete one)"
            if complete
            else "there is no earlier checkpoint"
        )
        self._failure = CheckpointSaveFailed(
            f"could not write the checkpoint of step {step} in {self.directory} "
            f"({reason(err)}); {kept}; free space or fix permissions, then run the same "
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
                    warn_damaged(step_dir, err, f"kept as {aside.name}, using an older one")
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
