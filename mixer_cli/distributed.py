"""Devices, the data-parallel mesh, and global batches assembled from per-process data.

Data parallelism over every device of every process: one Mesh axis named 'data',
parameters replicated, batches split along their first axis. Each process supplies
only its own rows; `to_global` makes them one `jax.Array` spanning all hosts.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mixer_cli.errors import ConfigError, nearby_multiples

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


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Join a multi-process run when asked (arguments or JAX_COORDINATOR_ADDRESS,
    JAX_NUM_PROCESSES, JAX_PROCESS_ID); True if this is one. Must run before any JAX
    computation. On CPUs the processes talk through gloo."""
    import os

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
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)
    return True
