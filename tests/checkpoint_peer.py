"""One process of a two-process checkpointing run (launched by test_reliability.py).

    python tests/checkpoint_peer.py PORT PROCESS_ID DIRECTORY

Saves steps 1-3 of a small replicated state with keep=1. Process 1 lists the directory
as a peer can on a loaded machine or a shared filesystem: without the newest step, whose
rename by process 0 has not shown yet. Both must still agree on what is complete and
what to delete.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from mixer_cli.core import distributed
from mixer_cli.train import checkpoint


def main(port: str, process_id: str, directory: str) -> None:
    distributed.initialize(f"127.0.0.1:{port}", 2, int(process_id), peer_timeout=20)
    if jax.process_index() == 1:
        step_dirs = checkpoint.step_dirs
        checkpoint.step_dirs = lambda d: step_dirs(d)[1:]  # the newest not visible yet
    sharding = NamedSharding(distributed.make_mesh(), PartitionSpec())
    checkpointer = checkpoint.Checkpointer(Path(directory), keep=1)
    for step in (1, 2, 3):
        value = np.full((4,), step, np.float32)
        state = {"w": jax.make_array_from_callback(value.shape, sharding, lambda i, v=value: v[i])}
        checkpointer.save(step, state, {"step": step})
    checkpointer.wait()
    checkpointer.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
