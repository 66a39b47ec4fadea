"""The one forward loop: every pass of a model over batches, whoever reads it.

`forward_loop` iterates batches, runs a compiled forward (`forward_function`), fetches
its outputs two batches behind, and hands each batch's outputs to collectors, one small
object per kind of output: the classification sums (`Sums`: top-1 and top-5 correct,
summed loss, count; reduced on the devices, so a 21k-class head never reaches the host),
per-example rows gathered from all processes in the split's canonical order (`Features`:
pre_logits and labels; `TopK`: each example's most probable classes), a segmentation
split's per-pixel confusion (`Confusion`) and the predicted masks of its first images
(`Masks`). The evaluators' pass over a split (`run_pass`), a segmentation figure's masks
(`predicted_masks`) and `mixer predict` all run through it. Features of fixed parameters
can be cached on disk by content (parameters, dataset, split, transform), so
`mixer fewshot` with other shots or seeds reads them back in a moment.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
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
from mixer_cli.evals.base import FEATURES, PIXELS, SUMS, Among, PassOutput, Split
from mixer_cli.evals.iou import score_batch
from mixer_cli.evals.losses import per_example_loss

CACHE_VERSION = 1  # bump when the features of the same inputs would change
TOP_K = 5
# One more output a pass can give (besides evals.base's SUMS, FEATURES, PIXELS): every
# example's class probabilities with its padding mask, for per-example top-K (`TopK`).
PROBABILITIES = "probabilities"


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
    model: Any, mesh: Mesh, needs: frozenset[str | Among], loss: str
) -> Callable[..., Any]:
    """One compiled pass function per model, mesh and output set (evaluations repeat).
    The sums also count, with `Among` needs, top-1 among a class subset, and for batches
    that carry label sets (multi-hot `label_set`) the top-1 in the set (`correct_set_top1`)
    over the images that have one (`with_set`): big_vision's ReaL rule."""

    def forward(params: Any, batch: dict[str, jax.Array]) -> dict[str, Any]:
        logits, out = model.apply({"params": params}, batch["image"])
        mask = batch["mask"]
        result: dict[str, Any] = {}
        if FEATURES in needs:
            result["rows"] = (out["pre_logits"], jnp.argmax(batch["label"], -1), mask)
        if PROBABILITIES in needs:
            result["probabilities"] = (jax.nn.softmax(logits), mask)
        if PIXELS in needs:
            result["scores"] = logits  # per-pixel, scored on the host at each image's size
        if SUMS in needs:
            weight = mask.astype(jnp.float32)
            label = jnp.argmax(batch["label"], -1)
            top = jax.lax.top_k(logits, min(TOP_K, logits.shape[-1]))[1]
            sums = result["sums"] = {
                "correct_top1": jnp.sum((top[:, 0] == label) * weight),
                "correct_top5": jnp.sum(jnp.any(top == label[:, None], -1) * weight),
                "loss": jnp.sum(per_example_loss(logits, batch["label"], loss) * weight),
                "count": jnp.sum(weight),
            }
            for among in (need for need in needs if isinstance(need, Among)):
                classes = jnp.asarray(among.classes)
                predicted = classes[jnp.argmax(logits[:, classes], -1)]
                sums[among.key] = jnp.sum((predicted == label) * weight)
            if "label_set" in batch:  # [B, K] multi-hot; an empty set counts nowhere
                in_set = jnp.take_along_axis(batch["label_set"], top[:, :1], -1)[:, 0]
                sums["correct_set_top1"] = jnp.sum(in_set * weight)
                sums["with_set"] = jnp.sum(jnp.max(batch["label_set"], -1) * weight)
        return result

    repl, rows = replicated(mesh), batch_sharding(mesh)
    kinds = {FEATURES: "rows", PROBABILITIES: "probabilities", PIXELS: "scores"}
    shardings: dict[str, Any] = {kinds[need]: rows for need in kinds if need in needs}
    shardings.update({"sums": repl} if SUMS in needs else {})
    return jax.jit(forward, in_shardings=(repl, rows), out_shardings=shardings)


# The loop ------------------------------------------------------------------------------


class Fetch:
    """Batch outputs to the host: this process's rows, or every process's in turn."""

    def __init__(self, local_batch: int) -> None:
        self.local, self.processes = local_batch, jax.process_count()

    def mine(self, array: jax.Array) -> np.ndarray:
        """This process's rows of a global batch output."""
        if self.processes == 1:
            return np.asarray(array)
        gathered = multihost_utils.process_allgather(array, tiled=True)
        p, local = jax.process_index(), self.local
        return np.asarray(gathered)[p * local : (p + 1) * local]

    def per_process(self, arrays: Any) -> list[tuple[np.ndarray, ...]]:
        """Every process's rows of a tuple of global batch outputs, process by process."""
        gathered = multihost_utils.process_allgather(arrays, tiled=True)
        local = self.local
        return [
            tuple(np.asarray(a)[p * local : (p + 1) * local] for a in gathered)
            for p in range(self.processes)
        ]


class Collector:
    """Takes each batch's forward outputs in turn; then gives its part of a PassOutput."""

    def add(self, outputs: dict[str, Any], batch: dict[str, Any], fetch: Fetch) -> None:
        raise NotImplementedError

    def finish(self, output: PassOutput) -> None:
        """Put what was collected into `output` (collectors of other kinds keep theirs)."""


class Confusion(Collector):
    """The per-pixel confusion matrix of a segmentation split, scored at each image's
    size on its own process and summed over processes at the end."""

    def __init__(self) -> None:
        self.matrix: Any = 0

    def add(self, outputs: dict[str, Any], batch: dict[str, Any], fetch: Fetch) -> None:
        sizes = batch["size"]
        scores = fetch.mine(outputs["scores"])
        self.matrix = self.matrix + score_batch(scores, batch["truth"], sizes, sizes[:, 0] > 0)

    def finish(self, output: PassOutput) -> None:
        matrix = self.matrix
        if jax.process_count() > 1:
            matrix = np.asarray(multihost_utils.process_allgather(matrix)).sum(0)
        output.confusion = np.asarray(matrix, np.int64)


class Sums(Collector):
    """The classification sums, added on the devices (a 21k-class head never reaches
    the host); all of the split's examples must be counted."""

    def __init__(self) -> None:
        self.totals: Any = None

    def add(self, outputs: dict[str, Any], batch: dict[str, Any], fetch: Fetch) -> None:
        sums = outputs["sums"]
        self.totals = sums if self.totals is None else jax.tree.map(jnp.add, self.totals, sums)

    def finish(self, output: PassOutput) -> None:
        if self.totals is None:
            return
        output.sums = {k: float(v) for k, v in jax.device_get(self.totals).items()}
        if int(output.sums["count"]) != output.num_examples:
            raise RuntimeError(f"evaluated {output.sums['count']} of {output.num_examples}")


class Rows(Collector):
    """Per-example outputs (a tuple whose last array is the padding mask) of every
    process, in the split's order: process p holds its p-th contiguous slice. `keep`
    turns one batch's real rows into what is stored (default: the arrays as they are)."""

    def __init__(self, key: str, keep: Callable[..., tuple] | None = None) -> None:
        self.key, self.keep = key, keep or (lambda *arrays: arrays)
        self.parts: list[list[tuple]] = [[] for _ in range(jax.process_count())]

    def add(self, outputs: dict[str, Any], batch: dict[str, Any], fetch: Fetch) -> None:
        for part, (*arrays, mask) in zip(
            self.parts, fetch.per_process(outputs[self.key]), strict=True
        ):
            part.append(self.keep(*(a[mask] for a in arrays)))

    def columns(self) -> list[np.ndarray]:
        """Each stored array over the whole split."""
        ordered = [row for part in self.parts for row in part]
        return [np.concatenate(column) for column in zip(*ordered, strict=True)]


class Features(Rows):
    """pre_logits and labels of every example, in the split's order."""

    def __init__(self) -> None:
        super().__init__("rows")

    def finish(self, output: PassOutput) -> None:
        features, labels = self.columns()
        output.features = features.astype(np.float32)
        output.labels = labels.astype(np.int64)
        if len(output.labels) != output.num_examples:
            raise RuntimeError(f"extracted {len(output.labels)} of {output.num_examples}")


class TopK(Rows):
    """Each example's `k` most probable classes (ties by class index) and their
    probabilities, in the split's order."""

    def __init__(self, k: int) -> None:
        super().__init__("probabilities", self.top)
        self.k = k

    def top(self, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, : self.k]
        return order, np.take_along_axis(probabilities, order, axis=1)


class Masks(Collector):
    """(image in [0, 1] at the model's resolution, true mask, predicted mask at the
    image's own size) for this process's first `count` examples of a segmentation split."""

    def __init__(self, count: int) -> None:
        self.count, self.shown = count, []

    def add(self, outputs: dict[str, Any], batch: dict[str, Any], fetch: Fetch) -> None:
        from mixer_cli.data.segment_transforms import to_image_size

        scores, images = fetch.mine(outputs["scores"]), (fetch.mine(batch["image"]) + 1) / 2
        real = int((batch["size"][:, 0] > 0).sum())
        for i in range(min(self.count - len(self.shown), real)):
            height, width = (int(v) for v in batch["size"][i])
            pixels = to_image_size(scores[i], height, width).numpy().argmax(-1)
            self.shown.append((images[i].clip(0, 1), batch["truth"][i, :height, :width], pixels))


def forward_loop(
    batches: Iterable[dict[str, Any]],
    forward: Callable[..., dict[str, Any]],
    params: Any,
    collectors: Sequence[Collector],
    *,
    mesh: Mesh,
    local_batch: int,
    progress: tuple[str, int] | None = None,
) -> None:
    """Run `forward` on every batch (its HOST_KEYS stay on the host) and hand each
    batch's outputs, with the batch, to every collector in turn. Outputs are fetched two
    batches behind, so the device never waits on the host. `progress`: (label, batches)
    of a progress bar on stderr."""
    params = jax.device_put(params, replicated(mesh))
    fetch = Fetch(local_batch)
    label, total = progress or ("", 0)

    def collect(outputs: dict[str, Any], batch: dict[str, Any]) -> None:
        for collector in collectors:
            collector.add(outputs, batch, fetch)
        bar.advance(task)

    pending: collections.deque = collections.deque()
    with report.progress(progress is not None) as bar:
        task = bar.add_task(label, total=total)
        for batch in batches:
            device = {k: v for k, v in batch.items() if k not in HOST_KEYS}
            pending.append((forward(params, device), batch))
            if len(pending) > 2:  # fetch two batches behind: the device never waits on us
                collect(*pending.popleft())
        while pending:
            collect(*pending.popleft())


def run_pass(
    model: Any,
    params: Any,
    split: Split,
    needs: frozenset[str | Among],
    batch_size: int,
    loss: str = "softmax",
    mesh: Mesh | None = None,
    show_progress: bool = True,
) -> PassOutput:
    """Run the model once over `split`, producing `needs` (SUMS, FEATURES, PIXELS, Among)."""
    mesh = mesh or make_mesh()
    batches = EvalBatches(
        split.source, split.split, split.preprocessing, batch_size, mesh, split.label_set
    )
    kinds: list[tuple[str, type[Collector]]] = [
        (PIXELS, Confusion), (SUMS, Sums), (FEATURES, Features)
    ]  # fmt: skip
    collectors = [kind() for need, kind in kinds if need in needs]
    progress = (f"evaluating on {split.label()}", batches.num_batches) if show_progress else None
    forward = forward_function(model, mesh, needs, loss)
    forward_loop(
        batches, forward, params, collectors, mesh=mesh, local_batch=batches.local_batch,
        progress=progress,
    )  # fmt: skip
    output = PassOutput(num_examples=batches.num_examples)
    for collector in collectors:
        collector.finish(output)
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
    mesh = mesh or make_mesh()
    batch_size = -(-count // mesh.size) * mesh.size
    batches = EvalBatches(split.source, split.split, split.preprocessing, batch_size, mesh)
    forward = forward_function(model, mesh, frozenset({PIXELS}), "softmax")
    masks = Masks(count)
    needed = -(-count // batches.local_batch)  # this process's first `count` examples
    forward_loop(
        itertools.islice(batches, needed), forward, params, [masks], mesh=mesh,
        local_batch=batches.local_batch,
    )  # fmt: skip
    return masks.shown
