"""Where examples come from: one interface over TFDS, image folders and the digits set.

A source yields *raw* examples (encoded image bytes, or uint8 arrays for in-memory
sets) with integer labels, shuffled before anything is decoded. Training streams
are defined per epoch and position, so that a resumed run can start at any step
and see exactly the batches it would have seen, and so that every process reads
only its own rows of each global batch.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from mixer_cli.core.errors import DataError
from mixer_cli.core.tf_cpu import no_autograph, tf

IGNORE = 255  # a mask's label of pixels that count nowhere (the Oxford pets trimaps' border)

# An indexed source emits about this many examples per pipeline (many small epochs at
# once, at most CHUNK_EPOCHS), so small datasets do not pay for building a tf.data pipeline
# every few steps, nor a tiny one for drawing ~10^5 permutations up front (which epochs a
# pipeline holds never changes the examples: each epoch's order is its own seed's).
CHUNK_EXAMPLES = 200_000
CHUNK_EPOCHS = 1_000


@dataclass(frozen=True)
class TrainStream:
    """`num_epochs` epochs of raw examples for this process: (raw, label, position, epoch).

    `position` is the example's place in the *global* order of its epoch, which with the
    epoch keys its augmentation randomness: results do not depend on the process count.
    """

    dataset: tf.data.Dataset
    num_epochs: int


class DataSource(abc.ABC):
    """A labelled image dataset with named splits (TFDS split syntax accepted)."""

    name: str
    num_classes: int
    image_shape: tuple[int | None, int | None, int]  # None: sizes vary
    encoded: bool  # raw examples are encoded image bytes (else uint8 [H, W, 3] arrays)
    flip: bool = True  # whether horizontal flips preserve meaning (not for digits)
    random_crop: bool = True  # whether a random crop does (not where labels count or measure)
    task: str = "classify"  # or "segment": labels are [H, W] masks, not class indices
    train_split: str = "train"
    eval_split: str = "test"

    @property
    @abc.abstractmethod
    def splits(self) -> dict[str, int]:
        """Every named split and its number of examples."""

    @abc.abstractmethod
    def num_examples(self, split: str) -> int:
        """Examples in a split (slices such as ``train[:98%]`` included)."""

    @abc.abstractmethod
    def steps_per_epoch(self, split: str, global_batch: int, processes: int) -> int:
        """Full global batches per epoch (the remainder is dropped); refuses zero."""

    @abc.abstractmethod
    def train_stream(
        self, split: str, epoch: int, seed: int, global_batch: int, process: int, processes: int
    ) -> TrainStream:
        """This process's share of seeded, shuffled epochs from `epoch` on, in order."""

    def _too_small(self, split: str, examples: int, global_batch: int) -> DataError:
        return DataError(
            f"{self.name} split {split!r} has {examples} examples, fewer than one batch of "
            f"{global_batch}"
        )

    @abc.abstractmethod
    def eval_stream(
        self, split: str, process: int, processes: int, label_set: str | None = None
    ) -> tf.data.Dataset:
        """This process's contiguous slice of a split, unshuffled: (raw, label), or with
        `label_set` (a feature holding each example's set of classes, a variable-length
        list: ImageNet ReaL's `real_label`) (raw, label, classes)."""

    def check_label_set(self, feature: str) -> None:
        """Refuse `feature` as a label set unless each example holds a list of this
        dataset's classes in it (here: sources without per-example features)."""
        raise DataError(
            f"{self.name} has no feature {feature!r} (a set of classes per image): only "
            "TFDS datasets carry one (e.g. imagenet2012_real's real_label)"
        )

    @abc.abstractmethod
    def eval_sizes(self, split: str, processes: int) -> list[int]:
        """Examples in each process's evaluation slice (they sum to the split size)."""

    def read(self, raw: tf.Tensor) -> tf.Tensor:
        """Raw example -> encoded image bytes (if `encoded`) or a uint8 [H, W, 3] image."""
        return raw

    def read_mask(self, label: tf.Tensor) -> tf.Tensor:
        """A segmentation source's label -> its uint8 [H, W] label map: class indices, or
        `IGNORE` for pixels that count nowhere."""
        return tf.cast(label, tf.uint8)

    def label_counts(self, split: str) -> np.ndarray | None:
        """Examples per class where known without reading the split (None otherwise)."""
        return None

    def undecodable(self, split: str) -> str | None:
        """After reading `split` failed: which of its files cannot be decoded and why
        (None where the source cannot tell). Called only then: it may read every file."""
        return None

    def check_classes(self, train_split: str, eval_split: str) -> None:
        """Refuse an evaluation split with a class that training never sees (its accuracy
        would be wrong without a word); warn of a class the evaluation split lacks. Only
        where the label counts are known without reading the data (folders, digits)."""
        train, held = self.label_counts(train_split), self.label_counts(eval_split)
        if train is None or held is None or train_split == eval_split or not held.any():
            return  # an empty evaluation split: its evaluators refuse it
        names = list(getattr(self, "classes", range(self.num_classes)))
        unseen = np.flatnonzero((held > 0) & (train == 0))
        if len(unseen):
            raise DataError(
                f"{self.name}: class {str(names[unseen[0]])!r} is in the evaluation split "
                f"{eval_split!r} but not in the training split {train_split!r}; add its "
                "training images or remove it from the evaluation split"
            )
        absent = [str(names[c]) for c in np.flatnonzero((held == 0) & (train > 0))]
        import jax

        if absent and jax.process_index() == 0:
            from mixer_cli.core import report

            report.stderr.print(
                f"[yellow]warning:[/] {self.name}: the evaluation split {eval_split!r} has "
                f"no images of {len(absent)} class(es), first {absent[0]!r}"
            )

    def shorter_side(self) -> int | None:
        """The images' shorter side where the source knows it (None: sizes vary)."""
        height, width, _ = self.image_shape
        return None if height is None or width is None else min(height, width)


def epoch_seed(seed: int, epoch: int) -> int:
    """A per-epoch shuffling seed, different for every (seed, epoch) pair."""
    return int(np.random.default_rng([seed, epoch]).integers(2**31 - 1))


class IndexedSource(DataSource):
    """A source with random access by index (in memory or one file per example).

    Every epoch is one seeded permutation of the whole split; process p of P reads
    rows [p*b, (p+1)*b) of each global batch of B = P*b examples. A multi-process
    run therefore trains on exactly the batches of a single-process run.
    """

    def __init__(self, raw: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> None:
        self._sizes = {name: len(v) for name, v in labels.items()}
        self._offsets = dict(zip(labels, np.cumsum([0, *self._sizes.values()])[:-1], strict=True))
        self._raw = np.concatenate([raw[name] for name in labels])
        self._labels = np.concatenate(list(labels.values()))
        if self._labels.dtype.kind in "iub":  # class indices (masks keep their own type)
            self._labels = self._labels.astype(np.int64)

    def _parts(self, split: str) -> list:
        """`split` (TFDS syntax) as absolute instructions: splitname, from_, to."""
        import tensorflow_datasets as tfds

        infos = {name: SimpleNamespace(num_examples=n) for name, n in self._sizes.items()}
        try:
            return tfds.core.ReadInstruction.from_spec(split).to_absolute(infos)
        except (ValueError, AssertionError) as err:
            raise DataError(
                f"{self.name} has no split {split!r} (splits: {', '.join(self._sizes)}; "
                f"slices like 'train[:90%]' work too)"
            ) from err

    def _rows(self, name: str) -> np.ndarray:
        """The rows of the named split (no slice) in the concatenated arrays."""
        return self._offsets[name] + np.arange(self._sizes[name])

    def _indices(self, split: str) -> np.ndarray:
        return np.concatenate([self._rows(p.splitname)[p.from_ : p.to] for p in self._parts(split)])

    @property
    def splits(self) -> dict[str, int]:
        return dict(self._sizes)

    def num_examples(self, split: str) -> int:
        return len(self._indices(split))

    def label_counts(self, split: str) -> np.ndarray | None:
        if self.task != "classify":  # masks: the classes of pixels, not of examples
            return None
        rows = self._indices(split)  # first: a folder may leave damaged files out here
        return np.bincount(self._labels[rows], minlength=self.num_classes)

    def steps_per_epoch(self, split: str, global_batch: int, processes: int) -> int:
        examples = len(self._indices(split))
        if examples < global_batch:
            raise self._too_small(split, examples, global_batch)
        return examples // global_batch

    def train_stream(
        self, split: str, epoch: int, seed: int, global_batch: int, process: int, processes: int
    ) -> TrainStream:
        indices = self._indices(split)
        steps = self.steps_per_epoch(split, global_batch, processes)
        local = global_batch // processes
        num_epochs = max(1, min(CHUNK_EPOCHS, CHUNK_EXAMPLES // (steps * global_batch)))
        positions = np.arange(steps * global_batch).reshape(steps, processes, local)
        positions = positions[:, process].reshape(-1)
        mine = np.concatenate(
            [
                np.random.default_rng(epoch_seed(seed, e))
                .permutation(indices)[: steps * global_batch]
                .reshape(steps, processes, local)[:, process]
                .reshape(-1)
                for e in range(epoch, epoch + num_epochs)
            ]
        )
        epochs = np.repeat(np.arange(epoch, epoch + num_epochs), len(positions))
        raw, labels = tf.constant(self._raw), tf.constant(self._labels)

        @no_autograph
        def example(i: tf.Tensor, position: tf.Tensor, e: tf.Tensor) -> tuple[tf.Tensor, ...]:
            return tf.gather(raw, i), tf.gather(labels, i), position, e

        dataset = tf.data.Dataset.from_tensor_slices(
            (mine, np.tile(positions, num_epochs), epochs)
        ).map(example)
        return TrainStream(dataset, num_epochs)

    def eval_sizes(self, split: str, processes: int) -> list[int]:
        return [len(part) for part in np.array_split(self._indices(split), processes)]

    def eval_stream(
        self, split: str, process: int, processes: int, label_set: str | None = None
    ) -> tf.data.Dataset:
        if label_set is not None:
            self.check_label_set(label_set)
        mine = np.array_split(self._indices(split), processes)[process]
        return tf.data.Dataset.from_tensor_slices((self._raw[mine], self._labels[mine]))
