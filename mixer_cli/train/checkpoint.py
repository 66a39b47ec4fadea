"""Training checkpoints with orbax: complete or ignored, the last K kept, newest good one wins.

A checkpoint holds the whole TrainState (parameters, optimizer state, step, RNG) and a
small JSON record (step, data position). Orbax writes into a temporary directory and
renames it when complete, so a crash mid-save leaves nothing that looks finished. On
restore, a checkpoint that fails to read is skipped with a warning for the one before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
