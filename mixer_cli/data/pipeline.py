"""Batches for the engine: global `jax.Array`s sharded over the mesh's 'data' axis.

Training streams are endless and can start at any step (exact resume); epochs drop
their last partial batch so a step always maps to the same examples. Evaluation
never drops anything: the last batch is padded and carries a mask, and every process
yields the same number of batches even when their slices differ in size.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from mixer_cli.core.distributed import batch_sharding, local_batch_size, to_global
from mixer_cli.core.errors import DataError
from mixer_cli.core.tf_cpu import op_error_line, tf
from mixer_cli.data.preprocess import Preprocessing, Transforms
from mixer_cli.data.sources import DataSource

AUTOTUNE = tf.data.AUTOTUNE
DEVICE_PREFETCH = 2


def _numpy_batches(
    dataset: tf.data.Dataset, source: DataSource, split: str
) -> Iterator[dict[str, np.ndarray]]:
    """Iterate a tf.data pipeline, turning its runtime errors into one clear DataError
    (naming the files that cannot be decoded, where the source can find them)."""
    iterator = dataset.as_numpy_iterator()
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except tf.errors.OpError as err:
            why = source.undecodable(split)
            fix = "; replace or remove them" if why else ""
            raise DataError(
                f"reading {source.name} {split} failed: {why or op_error_line(err)}{fix}"
            ) from None
        yield batch


# Evaluation keys that stay on the host: a segmentation split's true masks at each
# image's own size (scored there, after the prediction is resized back) and those sizes.
HOST_KEYS = ("truth", "size")


def _on_devices(host: Iterator[dict[str, np.ndarray]], mesh: Mesh) -> Iterator[dict[str, Any]]:
    """Global arrays, transferred a couple of batches ahead so the device never waits
    (HOST_KEYS stay NumPy: this process's rows)."""
    sharding, queue = batch_sharding(mesh), collections.deque()
    for batch in host:
        kept = {k: v for k, v in batch.items() if k in HOST_KEYS}
        moved = {k: v for k, v in batch.items() if k not in HOST_KEYS}
        queue.append({**to_global(moved, sharding), **kept})
        if len(queue) > DEVICE_PREFETCH:
            yield queue.popleft()
    yield from queue


def transforms_for(source: DataSource, pre: Preprocessing, seed: int) -> Any:
    """Classification's transforms, or the aligned image-and-mask ones for a source whose
    labels are masks (`task = "segment"`)."""
    if source.task == "segment":
        from mixer_cli.data.segment_transforms import SegmentTransforms

        return SegmentTransforms(source, pre, seed)
    return Transforms(source, pre, seed)


class TrainBatches:
    """The endless training stream of one run, from `start_step` on."""

    def __init__(
        self,
        source: DataSource,
        split: str,
        pre: Preprocessing,
        global_batch: int,
        seed: int,
        mesh: Mesh,
        start_step: int = 0,
    ) -> None:
        self.source, self.split, self.global_batch, self.seed = source, split, global_batch, seed
        self.mesh, self.start_step = mesh, start_step
        self.local_batch = local_batch_size(global_batch, mesh)
        self.process, self.processes = jax.process_index(), jax.process_count()
        self.transforms = transforms_for(source, pre, seed)
        self.steps_per_epoch = source.steps_per_epoch(split, global_batch, self.processes)

    def _pipeline(self, stream: tf.data.Dataset, skip_steps: int) -> tf.data.Dataset:
        t = self.transforms
        ds = stream.skip(skip_steps * self.local_batch)  # skipped before decoding: cheap
        ds = ds.map(t.train_example, num_parallel_calls=AUTOTUNE, deterministic=True)
        ds = ds.batch(self.local_batch, drop_remainder=True)
        ds = ds.map(t.train_batch, num_parallel_calls=AUTOTUNE)
        return ds.prefetch(AUTOTUNE)

    def host_batches(self) -> Iterator[dict[str, np.ndarray]]:
        """This process's rows of each global batch, as NumPy, from `start_step` on."""
        epoch, skip = divmod(self.start_step, self.steps_per_epoch)
        while True:
            stream = self.source.train_stream(
                self.split, epoch, self.seed, self.global_batch, self.process, self.processes
            )
            yield from _numpy_batches(self._pipeline(stream.dataset, skip), self.source, self.split)
            epoch, skip = epoch + stream.num_epochs, 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return _on_devices(self.host_batches(), self.mesh)


class EvalBatches:
    """One full pass over a split, padded and masked: `num_examples` is the split's size.
    A segmentation split's batches also carry `truth` (masks padded with IGNORE to the
    batch's largest) and `size`, on the host; with `label_set` (a source feature listing
    each image's classes) a classification split's carry `label_set`, multi-hot rows."""

    def __init__(
        self,
        source: DataSource,
        split: str,
        pre: Preprocessing,
        global_batch: int,
        mesh: Mesh,
        label_set: str | None = None,
    ) -> None:
        if label_set is not None and source.task == "segment":
            raise DataError(f"{source.name}: a segmentation split carries no label sets")
        self.source, self.split, self.mesh, self.label_set = source, split, mesh, label_set
        self.local_batch = local_batch_size(global_batch, mesh, "evaluation batch size")
        self.process, processes = jax.process_index(), jax.process_count()
        self.sizes = source.eval_sizes(split, processes)
        self.num_examples = sum(self.sizes)
        self.num_batches = math.ceil(max(self.sizes) / self.local_batch)
        self.transforms = transforms_for(source, pre, seed=0)

    def _dataset(self) -> tf.data.Dataset:
        mine = self.sizes[self.process]
        extra = () if self.label_set is None else (self.label_set,)  # only when asked
        ds = self.source.eval_stream(self.split, self.process, len(self.sizes), *extra)
        ds = ds.map(self.transforms.eval_example, num_parallel_calls=AUTOTUNE, deterministic=True)
        pad = self.num_batches * self.local_batch - mine
        t = self.transforms
        padding = t.eval_padding(label_set=True) if self.label_set else t.eval_padding()
        padding = tf.data.Dataset.from_tensors(padding).repeat(pad)
        ds = ds.concatenate(padding)
        if self.source.task == "segment":
            from mixer_cli.data.sources import IGNORE

            values = {
                k: tf.constant(IGNORE, spec.dtype) if k == "truth" else tf.zeros([], spec.dtype)
                for k, spec in ds.element_spec.items()
            }
            return ds.padded_batch(self.local_batch, padding_values=values).prefetch(AUTOTUNE)
        return ds.batch(self.local_batch).prefetch(AUTOTUNE)

    def host_batches(self) -> Iterator[dict[str, np.ndarray]]:
        return _numpy_batches(self._dataset(), self.source, self.split)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return _on_devices(self.host_batches(), self.mesh)
