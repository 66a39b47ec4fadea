"""Training checkpoints with orbax: complete or ignored, the last K kept, newest good one wins.

A checkpoint holds the whole TrainState (parameters, optimizer state, step, RNG) and a
small JSON record (step, data position). Orbax writes into a temporary directory and
renames it when complete, so a crash mid-save leaves nothing that looks finished. On
restore, a checkpoint that fails to read is skipped with a warning for the one before.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from mixer_cli import report


class Checkpointer:
    def __init__(self, directory: Path, keep: int) -> None:
        self.directory = directory.absolute()
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        )

    def save(self, step: int, state: Any, record: dict[str, Any]) -> None:
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(record)
            ),
            force=True,
        )

    def restore_latest(self, abstract_state: Any) -> tuple[Any, dict[str, Any]] | None:
        """The newest checkpoint that reads back, or None when there is none."""
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                restored = self.manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state),
                        record=ocp.args.JsonRestore(),
                    ),
                )
            except Exception as err:  # any unreadable checkpoint: fall back to an older one
                report.stderr.print(
                    f"[yellow]warning:[/] checkpoint {self.directory / str(step)} is unreadable "
                    f"({type(err).__name__}); trying an older one"
                )
                continue
            return restored["state"], dict(restored["record"])
        return None

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def wait(self) -> None:
        """Block until background writes are on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def _step_dirs(directory: Path) -> list[Path]:
    """Complete checkpoint steps under a run directory, its checkpoints/ or one step, newest
    first (orbax renames a step into place only once it is complete)."""
    if (directory / "state").is_dir():
        return [directory]
    if (directory / "checkpoints").is_dir():
        directory = directory / "checkpoints"
    steps = [d for d in directory.iterdir() if d.name.isdigit() and (d / "state").is_dir()]
    return sorted(steps, key=lambda d: int(d.name), reverse=True)


def read_params(directory: Path) -> tuple[dict[str, Any], str] | None:
    """The parameters (as NumPy) of the newest readable training checkpoint, without
    knowing the optimizer that wrote it: (params, where) or None if there is none."""
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)  # orbax warns about per-item metadata it does not need
    try:
        for step in _step_dirs(directory):
            try:
                with ocp.PyTreeCheckpointer() as reader:
                    tree = reader.metadata(step / "state").item_metadata.tree
                    item = {"params": tree["params"]}
                    as_numpy = jax.tree.map(
                        lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item
                    )
                    restored = reader.restore(
                        step / "state",
                        args=ocp.args.PyTreeRestore(
                            item=item, restore_args=as_numpy, partial_restore=True
                        ),
                    )
            except Exception as err:  # unreadable: fall back to an older step
                report.stderr.print(
                    f"[yellow]warning:[/] checkpoint {step} is unreadable "
                    f"({type(err).__name__}); trying an older one"
                )
                continue
            return restored["params"], str(step)
    finally:
        absl.setLevel(level)
    return None
