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

from mixer_cli.core import report
from mixer_cli.core.cache import read_npz, write_npz
from mixer_cli.core.distributed import batch_sharding, make_mesh, replicated
from mixer_cli.data import EvalBatches
from mixer_cli.data.pipeline import HOST_KEYS
from mixer_cli.evals.base import FEATURES, PIXELS, SUMS, PassOutput, Split
from mixer_cli.evals.iou import score_batch
from mixer_cli.evals.losses import per_example_loss

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
        if PIXELS in needs:
            result["scores"] = logits  # per-pixel, scored on the host at each image's size
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
    shardings.update({"scores": rows} if PIXELS in needs else {})
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
    """Run the model once over `split`, producing `needs` (SUMS, FEATURES, PIXELS)."""
    mesh = mesh or make_mesh()
    batches = EvalBatches(split.source, split.split, split.preprocessing, batch_size, mesh)
    forward = forward_function(model, mesh, needs, loss)
    params = jax.device_put(params, replicated(mesh))
    processes, local = jax.process_count(), batches.local_batch
    parts: list[list[tuple[np.ndarray, ...]]] = [[] for _ in range(processes)]
    totals: Any = None
    matrix = 0

    def mine(array: jax.Array) -> np.ndarray:
        """This process's rows of a global batch output."""
        if processes == 1:
            return np.asarray(array)
        gathered = multihost_utils.process_allgather(array, tiled=True)
        return np.asarray(gathered)[jax.process_index() * local : (jax.process_index() + 1) * local]

    def collect(outputs: dict[str, Any], batch: dict[str, Any]) -> None:
        nonlocal totals, matrix
        if "scores" in outputs:
            sizes = batch["size"]
            matrix = matrix + score_batch(
                mine(outputs["scores"]), batch["truth"], sizes, sizes[:, 0] > 0
            )
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
        for batch in batches:
            device = {k: v for k, v in batch.items() if k not in HOST_KEYS}
            pending.append((forward(params, device), batch))
            if len(pending) > 2:  # fetch two batches behind: the device never waits on us
                collect(*pending.popleft())
        while pending:
            collect(*pending.popleft())
    output = PassOutput(num_examples=batches.num_examples)
    if PIXELS in needs:
        if processes > 1:
            matrix = np.asarray(multihost_utils.process_allgather(matrix)).sum(0)
        output.confusion = np.asarray(matrix, np.int64)
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


def predicted_masks(
    model: Any, params: Any, split: Split, count: int, mesh: Mesh | None = None
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(image in [0, 1] at the model's resolution, true mask, predicted mask at the
    image's own size) for the first `count` examples of a segmentation split: what a
    figure shows, from the pass the segmentation evaluator scores."""
    from mixer_cli.data.segment_transforms import to_image_size

    mesh = mesh or make_mesh()
    batch_size = -(-count // mesh.size) * mesh.size
    batches = EvalBatches(split.source, split.split, split.preprocessing, batch_size, mesh)
    forward = forward_function(model, mesh, frozenset({PIXELS}), "softmax")
    batch = next(iter(batches))
    device = {k: v for k, v in batch.items() if k not in HOST_KEYS}
    scores = np.asarray(forward(jax.device_put(params, replicated(mesh)), device)["scores"])
    images = (np.asarray(batch["image"]) + 1) / 2
    shown = []
    for i in range(min(count, int((batch["size"][:, 0] > 0).sum()))):
        height, width = (int(v) for v in batch["size"][i])
        pixels = to_image_size(scores[i], height, width).numpy().argmax(-1)
        shown.append((images[i].clip(0, 1), batch["truth"][i, :height, :width], pixels))
    return shown
