"""The one forward pass over a split that every evaluator reading it shares.

A pass runs the model once over a whole split (batches padded and masked, sharded over
all devices) and produces what its readers asked for: the classification sums (top-1
and top-5 correct, summed loss, count; reduced on the devices, so a 21k-class head never
reaches the host) and/or every example's pre_logits in the split's canonical order,
gathered from all processes. Features of fixed parameters can be cached on disk by
content (parameters, dataset, split, transform), so `mixer fewshot` with other shots
or seeds reads them back in a moment.
"""

from __future__ import annotations

import collections
import functools
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from mixer_cli import report
from mixer_cli.cache import read_npz, write_npz
from mixer_cli.data import EvalBatches
from mixer_cli.distributed import batch_sharding, make_mesh, replicated
from mixer_cli.evals.base import FEATURES, SUMS, PassOutput, Split
from mixer_cli.train.steps import per_example_loss

CACHE_VERSION = 1  # bump when the features of the same inputs would change
TOP_K = 5


def params_digest(params: Mapping[str, Any]) -> str:
    """A digest of the parameters' names, shapes and values."""
    digest = hashlib.blake2b(digest_size=16)
    for keys, value in sorted(traverse_util.flatten_dict(params).items()):
        array = np.ascontiguousarray(value, dtype=np.float32)
        digest.update(f"{'/'.join(keys)}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def cache_key(digest: str, split: Split) -> str:
    pre = sorted(asdict(split.preprocessing).items())
    description = repr((CACHE_VERSION, digest, split.source.name, split.split, pre))
    return hashlib.blake2b(description.encode(), digest_size=16).hexdigest()


@functools.lru_cache(maxsize=16)
def forward_function(
    model: Any, mesh: Mesh, needs: frozenset[str], loss: str
) -> Callable[..., Any]:
    """One compiled pass function per model, mesh and output set (evaluations repeat)."""

    def forward(params: Any, batch: dict[str, jax.Array]) -> dict[str, Any]:
        logits, out = model.apply({"params": params}, batch["image"])
        mask = batch["mask"]
        result: dict[str, Any] = {}
        if FEATURES in needs:
            result["rows"] = (out["pre_logits"], jnp.argmax(batch["label"], -1), mask)
        if SUMS in needs:
            weight = mask.astype(jnp.float32)
            label = jnp.argmax(batch["label"], -1)
            top = jax.lax.top_k(logits, min(TOP_K, logits.shape[-1]))[1]
            result["sums"] = {
                "correct_top1": jnp.sum((top[:, 0] == label) * weight),
                "correct_top5": jnp.sum(jnp.any(top == label[:, None], -1) * weight),
                "loss": jnp.sum(per_example_loss(logits, batch["label"], loss) * weight),
                "count": jnp.sum(weight),
            }
        return result

    repl, rows = replicated(mesh), batch_sharding(mesh)
    shardings = {"rows": rows} if FEATURES in needs else {}
    shardings.update({"sums": repl} if SUMS in needs else {})
    return jax.jit(forward, in_shardings=(repl, rows), out_shardings=shardings)


def run_pass(
    model: Any,
    params: Any,
    split: Split,
    needs: frozenset[str],
    batch_size: int,
    loss: str = "softmax",
    mesh: Mesh | None = None,
    show_progress: bool = True,
) -> PassOutput:
    """Run the model once over `split`, producing `needs` (SUMS and/or FEATURES)."""
    mesh = mesh or make_mesh()
    batches = EvalBatches(split.source, split.split, split.preprocessing, batch_size, mesh)
    forward = forward_function(model, mesh, needs, loss)
    params = jax.device_put(params, replicated(mesh))
    processes, local = jax.process_count(), batches.local_batch
    parts: list[list[tuple[np.ndarray, ...]]] = [[] for _ in range(processes)]
    totals: Any = None

    def collect(outputs: dict[str, Any]) -> None:
        nonlocal totals
        if "sums" in outputs:
            sums = outputs["sums"]
            totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
        if "rows" in outputs:
            gathered = multihost_utils.process_allgather(outputs["rows"], tiled=True)
            for p in range(processes):  # global rows: each process's local rows in turn
                parts[p].append(tuple(np.asarray(a)[p * local : (p + 1) * local] for a in gathered))
        bar.advance(task)

    pending: collections.deque = collections.deque()
    with report.progress(show_progress) as bar:
        task = bar.add_task(f"evaluating on {split.label()}", total=batches.num_batches)
        for device_batch in batches:
            pending.append(forward(params, device_batch))
            if len(pending) > 2:  # fetch two batches behind: the device never waits on us
                collect(pending.popleft())
        while pending:
            collect(pending.popleft())
    output = PassOutput(num_examples=batches.num_examples)
    if totals is not None:
        output.sums = {k: float(v) for k, v in jax.device_get(totals).items()}
        if int(output.sums["count"]) != batches.num_examples:
            raise RuntimeError(f"evaluated {output.sums['count']} of {batches.num_examples}")
    if FEATURES in needs:
        features, labels = [], []
        for process_parts in parts:  # process p holds the p-th contiguous slice of the split
            for feats, label, mask in process_parts:
                features.append(feats[mask])
                labels.append(label[mask])
        output.features = np.concatenate(features).astype(np.float32)
        output.labels = np.concatenate(labels).astype(np.int64)
        if len(output.labels) != batches.num_examples:
            raise RuntimeError(f"extracted {len(output.labels)} of {batches.num_examples}")
    return output


class FeatureCache:
    """pre_logits of fixed parameters on disk, keyed by their content and the split."""

    def __init__(self, directory: Path, params: Any) -> None:
        self.directory, self.digest = directory / "features", params_digest(params)

    def path(self, split: Split) -> Path:
        return self.directory / f"{cache_key(self.digest, split)}.npz"

    def get(self, split: Split) -> PassOutput | None:
        cached = read_npz(self.path(split), "feature cache")
        if cached is None or not {"features", "labels"} <= cached.keys():
            return None
        return PassOutput(
            len(cached["labels"]), features=cached["features"], labels=cached["labels"]
        )

    def put(self, split: Split, output: PassOutput) -> None:
        if jax.process_index() == 0 and output.features is not None:
            write_npz(
                self.path(split), "feature cache", features=output.features, labels=output.labels
            )
