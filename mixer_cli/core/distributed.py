"""Devices, the data-parallel mesh, and global batches assembled from per-process data.

Data parallelism over every device of every process: one Mesh axis named 'data',
parameters replicated, batches split along their first axis. Each process supplies
only its own rows; `to_global` makes them one `jax.Array` spanning all hosts.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
import time
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mixer_cli.core.errors import ConfigError, nearby_multiples

DATA_AXIS = "data"


def make_mesh(devices: list[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over all devices (of all processes), axis 'data'."""
    return Mesh(np.array(jax.devices() if devices is None else devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Rows split over the 'data' axis; the other dimensions whole."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def local_batch_size(global_batch: int, mesh: Mesh, what: str = "batch size") -> int:
    """This process's share of a global batch, refusing sizes the devices do not divide."""
    devices = mesh.devices.size
    if global_batch <= 0 or global_batch % devices:
        raise ConfigError(
            f"{what} {global_batch} is not a positive multiple of the {devices} devices; "
            f"try {nearby_multiples(global_batch, devices)}"
        )
    return global_batch // jax.process_count()


def to_global(local: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, Any]:
    """Per-process rows -> global arrays sharded along 'data' (no copy between hosts)."""
    return {
        key: jax.make_array_from_process_local_data(sharding, value) for key, value in local.items()
    }


DEFAULT_PEER_TIMEOUT = 120.0


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    peer_timeout: float = DEFAULT_PEER_TIMEOUT,
) -> bool:
    """Join a multi-process run when asked (arguments or JAX_COORDINATOR_ADDRESS,
    JAX_NUM_PROCESSES, JAX_PROCESS_ID); True if this is one. Must run before any JAX
    computation. On CPUs the processes talk through gloo. A process that loses a peer
    for `peer_timeout` seconds exits (see PeerWatchdog) instead of waiting forever."""
    coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if not coordinator:
        return False
    num_processes = num_processes or int(os.environ.get("JAX_NUM_PROCESSES", "0")) or None
    if process_id is None and "JAX_PROCESS_ID" in os.environ:
        process_id = int(os.environ["JAX_PROCESS_ID"])
    if num_processes is None or process_id is None:
        raise ConfigError(
            "a multi-process run needs the coordinator address, the number of processes and "
            "this process's id (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID)"
        )
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ConfigError(
            f"process id {process_id} is not one of the run's {num_processes} processes "
            f"(ids 0 to {num_processes - 1})"
        )
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if peer_timeout <= 0:
        raise ConfigError(f"--peer-timeout must be positive, got {peer_timeout:g}")
    jax.distributed.initialize(
        coordinator,
        num_processes=num_processes,
        process_id=process_id,
        # JAX's own detector (which aborts with a C++ stack trace) is the backstop.
        heartbeat_timeout_seconds=int(peer_timeout) + 60,
    )
    PeerWatchdog(process_id, num_processes, peer_timeout).start()
    return True


class PeerWatchdog:
    """Ends this process with one line, exit code 1, when another process of the run has
    stopped (killed, crashed, its host gone) for `timeout` seconds.

    Without it the survivors wait inside a collective or a checkpoint barrier until JAX's
    coordination service aborts them. Each process bumps a counter in the coordination
    service's key-value store every `interval` seconds and watches the others' counters;
    a process that ends normally marks itself done (at exit), so peers do not mistake a
    finished process for a lost one. Nothing is written at failure: the run resumes from
    its last complete checkpoint when all processes are started again.
    """

    PREFIX = "mixer/alive/"

    def __init__(self, process_id: int, num_processes: int, timeout: float, interval: float = 1.0):
        from jax._src.distributed import global_state  # the client JAX itself uses

        self.client = global_state.client
        self.process_id, self.num_processes = process_id, num_processes
        self.timeout, self.interval = timeout, interval
        self.stopped = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._watch, name="mixer-peer-watchdog", daemon=True).start()
        atexit.register(self.stop)  # runs before jax.distributed's own shutdown (LIFO)

    def stop(self) -> None:
        if not self.stopped.is_set():
            self.stopped.set()
            with contextlib.suppress(Exception):
                self._set("done")

    def _set(self, value: str) -> None:
        self.client.key_value_set(f"{self.PREFIX}{self.process_id}", value, allow_overwrite=True)

    def _watch(self) -> None:
        peers = [p for p in range(self.num_processes) if p != self.process_id]
        seen: dict[int, str | None] = dict.fromkeys(peers)
        changed = dict.fromkeys(peers, time.monotonic())
        contact, beat = time.monotonic(), 0
        while not self.stopped.wait(self.interval):
            now = time.monotonic()
            try:
                beat += 1
                self._set(str(beat))
                contact = now
            except Exception:
                if now - contact > self.timeout:
                    self._fail("lost contact with the coordinator (process 0)")
                continue
            for peer in peers:
                try:
                    value = self.client.key_value_try_get(f"{self.PREFIX}{peer}")
                except Exception:  # not written yet
                    value = None
                if value == "done":
                    changed[peer] = now
                elif value != seen[peer]:
                    seen[peer], changed[peer] = value, now
                elif now - changed[peer] > self.timeout:
                    self._fail(f"process {peer} of {self.num_processes} stopped responding")

    def _fail(self, what: str) -> None:
        if self.stopped.is_set():
            return
        sys.stderr.write(
            f"error: {what} {self.timeout:g} s ago (--peer-timeout); stopping this process "
            "too. Start all processes again with the same command: the run resumes from its "
            "last complete checkpoint\n"
        )
        sys.stderr.flush()
        os._exit(1)
