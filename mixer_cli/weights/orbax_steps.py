"""Training checkpoints as orbax writes them, read back: verified, whatever wrote them.

A run's checkpoints/ holds one directory per step (`state`: the whole TrainState;
`record`: a JSON record with a checksum of every array). This module is the format:
checksums, verification, finding the complete steps, and reading a step's parameters
without knowing the optimizer that wrote the rest (what `--init RUN_DIR` takes from an
unfinished run). Writing lives with the training loop (`train/checkpoint.py`).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from mixer_cli.core import report

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


def reason(err: Exception) -> str:
    """The short cause of an orbax/tensorstore error: the OS error when there is one."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    code = re.search(r"os_error_code='?(\d+)", str(err))
    if code:
        return os.strerror(int(code.group(1)))
    text = str(err).split(" See full TensorStore details")[0].strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(err).__name__}: {first[:200]}" if first else type(err).__name__


def warn_damaged(step_dir: Path, err: Exception, action: str) -> None:
    report.stderr.print(
        f"[yellow]warning:[/] checkpoint {step_dir} is damaged ({reason(err)}); {action}",
        highlight=False,
        soft_wrap=True,
    )


def step_dirs(directory: Path) -> list[Path]:
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
    steps = step_dirs(directory)
    for step_dir in steps:
        try:
            return _read_step_params(step_dir), str(step_dir)
        except Exception as err:  # unreadable or altered: fall back to an older step
            if step_dir == steps[-1]:
                newer = f"; so are the {len(steps) - 1} newer ones" if len(steps) > 1 else ""
                raise UnreadableCheckpoints(
                    f"checkpoint {step_dir} is damaged ({reason(err)}){newer}"
                ) from err
            warn_damaged(step_dir, err, "trying an older one")
    return None
