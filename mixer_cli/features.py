"""Frozen features: a model's pre_logits over a whole split, cached on disk by content.

Few-shot evaluation (and the shuffle experiment's probes) need every example's
pre_logits once, in the split's order, with nothing dropped: batches are padded and
masked, sharded over all devices, and gathered back in the split's canonical order
whatever the process count. The cache key is the parameters' content (not their
path), the dataset, split, resolution and preprocessing, so a second evaluation with
other shots or seeds reads the features back in a moment.
"""

from __future__ import annotations

import collections
import functools
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import traverse_util
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from mixer_cli import report
from mixer_cli.cache import read_npz, write_npz
from mixer_cli.data import EvalBatches, Preprocessing
from mixer_cli.data.sources import DataSource
from mixer_cli.distributed import batch_sharding, make_mesh, replicated

CACHE_VERSION = 1  # bump when the features of the same inputs would change


@dataclass(frozen=True)
class SplitFeatures:
    features: np.ndarray  # [examples, C] float32, in the split's order
    labels: np.ndarray  # [examples] int64


def params_digest(params: Mapping[str, Any]) -> str:
    """A digest of the parameters' names, shapes and values."""
    digest = hashlib.blake2b(digest_size=16)
    for keys, value in sorted(traverse_util.flatten_dict(params).items()):
        array = np.ascontiguousarray(value, dtype=np.float32)
        digest.update(f"{'/'.join(keys)}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def cache_key(digest: str, source: DataSource, split: str, pre: Preprocessing) -> str:
    description = repr((CACHE_VERSION, digest, source.name, split, sorted(asdict(pre).items())))
    return hashlib.blake2b(description.encode(), digest_size=16).hexdigest()


@functools.lru_cache(maxsize=8)
def _forward(model: Any, mesh: Mesh) -> Callable[..., tuple[jax.Array, ...]]:
    """One compiled feature function per model and mesh (probes call extract repeatedly)."""

    def forward(params: Any, batch: dict[str, jax.Array]) -> tuple[jax.Array, ...]:
        pre_logits = model.apply({"params": params}, batch["image"])[1]["pre_logits"]
        return pre_logits, batch["label"], batch["mask"]

    repl, rows = replicated(mesh), batch_sharding(mesh)
    return jax.jit(forward, in_shardings=(repl, rows), out_shardings=rows)


def extract(
    model: Any, params: Any, source: DataSource, split: str, pre: Preprocessing, batch: int
) -> SplitFeatures:
    """pre_logits of every example of `split`, in order (padding removed). `model` is a
    Mixer or a ResNet: anything returning ``(logits, {'pre_logits': ...})``."""
    mesh = make_mesh()
    batches = EvalBatches(source, split, pre, batch, mesh)
    forward = _forward(model, mesh)
    params = jax.device_put(params, replicated(mesh))
    processes, local = jax.process_count(), batches.local_batch
    parts: list[list[tuple[np.ndarray, ...]]] = [[] for _ in range(processes)]

    def collect(outputs: tuple[jax.Array, ...]) -> None:
        gathered = multihost_utils.process_allgather(outputs, tiled=True)
        for p in range(processes):  # global rows: each process's local rows in turn
            parts[p].append(tuple(np.asarray(a)[p * local : (p + 1) * local] for a in gathered))
        bar.advance(task)

    pending: collections.deque = collections.deque()
    with report.progress() as bar:
        task = bar.add_task(f"features of {source.name} {split}", total=batches.num_batches)
        for device_batch in batches:
            pending.append(forward(params, device_batch))
            if len(pending) > 2:  # fetch two batches behind: the device never waits on us
                collect(pending.popleft())
        while pending:
            collect(pending.popleft())
    features, labels = [], []
    for process_parts in parts:  # process p holds the p-th contiguous slice of the split
        for feats, onehot, mask in process_parts:
            features.append(feats[mask])
            labels.append(np.argmax(onehot[mask], axis=1))
    result = SplitFeatures(np.concatenate(features).astype(np.float32), np.concatenate(labels))
    if len(result.labels) != batches.num_examples:
        raise RuntimeError(f"extracted {len(result.labels)} of {batches.num_examples} examples")
    return result


def cached_extract(
    model: Any,
    params: Any,
    source: DataSource,
    split: str,
    pre: Preprocessing,
    batch: int,
    cache_dir: Path | None,
    digest: str | None = None,
) -> SplitFeatures:
    """`extract`, read from or written to `cache_dir` (None: no cache)."""
    if cache_dir is None:
        return extract(model, params, source, split, pre, batch)
    digest = digest or params_digest(params)
    path = cache_dir / "features" / f"{cache_key(digest, source, split, pre)}.npz"
    cached = read_npz(path, "feature cache")
    if cached is not None and {"features", "labels"} <= cached.keys():
        return SplitFeatures(cached["features"], cached["labels"])
    result = extract(model, params, source, split, pre, batch)
    if jax.process_index() == 0:
        write_npz(path, "feature cache", features=result.features, labels=result.labels)
    return result
