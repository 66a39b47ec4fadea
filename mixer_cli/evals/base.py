"""What every evaluator shares: its schedule settings, the splits it reads, its context.

An evaluator never runs the model itself. It names the splits it reads (`Read`: a
dataset, a split, an evaluation transform, and whether it needs the classification sums
or the pre_logits); the suite runs one forward pass per distinct split and hands every
evaluator the outputs it asked for. So a classification evaluator and a few-shot probe
of the same test split cost one pass, not two.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mixer_cli.core.errors import ConfigError, DataError

if TYPE_CHECKING:  # TensorFlow stays unimported until an evaluator runs
    from mixer_cli.data.preprocess import Preprocessing
    from mixer_cli.data.sources import DataSource

# What a forward pass can produce: classification sums, pre_logits, a segmentation
# confusion matrix (scored at each image's own size).
SUMS, FEATURES, PIXELS = "sums", "features", "pixels"


@dataclass(frozen=True)
class Among:
    """A need beside SUMS: top-1 correct with the prediction taken among `classes` only
    (the arg max of their logits), summed on the devices as sums[`key`]. ImageNet-R and
    -A score a 1000-class head so, over the 200 classes they hold."""

    classes: tuple[int, ...]

    @property
    def key(self) -> str:
        digest = hashlib.blake2b(repr(self.classes).encode(), digest_size=6).hexdigest()
        return f"correct_top1_among_{digest}"


@dataclass(frozen=True)
class EvalSettings:
    """Keys every evaluator has: when it runs."""

    type: str = ""
    every: int = 0  # steps between runs; 0 = at train.eval_every (and always at the end)
    at_start: bool = False  # also before the first step
    batch_size: int = 0  # global batch of its passes; 0 = train.eval_batch_size


def eval_preprocessing(pre: Preprocessing) -> Preprocessing:
    """Only what the evaluation transform reads (resolution, permutation): two runs that
    differ in augmentation read the same evaluation inputs, and share cache entries."""
    from mixer_cli.data.preprocess import Preprocessing

    return Preprocessing(
        resolution=pre.resolution,
        permutation=pre.permutation,
        permutation_patch=pre.permutation_patch,
        permutation_seed=pre.permutation_seed,
    )


@dataclass(frozen=True, eq=False)
class Split:
    """One split as the model sees it; equal when dataset, split and transform are (and
    the label-set feature its batches carry, if any: see `data.EvalBatches`)."""

    source: DataSource
    split: str
    preprocessing: Preprocessing
    label_set: str | None = None

    def key(self) -> tuple:
        return (self.source.name, self.split, self.preprocessing, self.label_set)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Split) and self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.key())

    def label(self) -> str:
        return f"{self.source.name} {self.split}"


@dataclass(frozen=True)
class Read:
    """A split an evaluator reads and what it needs of it (SUMS, FEATURES, PIXELS)."""

    split: Split
    needs: frozenset[str | Among]
    batch_size: int


@dataclass
class PassOutput:
    """One forward pass over a whole split (padded batches masked out)."""

    num_examples: int
    sums: dict[str, float] | None = None  # correct_top1, correct_top5, loss, count
    features: np.ndarray | None = None  # [examples, C] pre_logits in the split's order
    labels: np.ndarray | None = None  # [examples] int, with the features
    confusion: np.ndarray | None = None  # [K, K] pixel counts, rows true, columns predicted


@dataclass
class Context:
    """What evaluators may use: the run's data and model head, and a dataset opener."""

    source: DataSource | None  # the run's dataset (None: `mixer eval --evals` without one)
    train_split: str
    eval_split: str
    preprocessing: Preprocessing  # the run's (its evaluation transform is what counts)
    num_classes: int  # the model's head; 0 = none
    head: str  # classify (class scores) or segment (per-pixel scores)
    loss: str  # softmax or sigmoid: how the classification loss is measured
    batch_size: int  # the default global evaluation batch
    resolution: int
    data_dir: str | None = None
    skip_corrupt: bool = False  # image folders leave damaged files out (else refuse them)
    opened: dict[tuple[str, str | None, str], DataSource] = field(default_factory=dict)

    def open(
        self, name: str | None, data_dir: str | None = None, task: str = "classify"
    ) -> DataSource:
        """A dataset by name (None: the run's), opened once per context."""
        from mixer_cli.data import open_dataset

        if name is None:
            if self.source is None:
                raise ConfigError(
                    "an evaluator without `data` needs a dataset: give it `data: NAME` "
                    "(with mixer eval: --data NAME)"
                )
            return self.source
        key = (name, data_dir or self.data_dir, task)
        if key not in self.opened:
            self.opened[key] = open_dataset(name, key[1], task=task, skip_corrupt=self.skip_corrupt)
        return self.opened[key]

    def split(self, source: DataSource, split: str, label_set: str | None = None) -> Split:
        """`split` of `source` under the run's evaluation transform if it is the run's
        dataset (the shuffle experiment's permutation included), else a plain one; its
        batches carry the `label_set` feature if one is named."""
        from mixer_cli.data.preprocess import Preprocessing

        # A split that does not exist fails here, naming the splits; so does an empty one
        # (a slice such as test[:0], or an image folder's split whose files were all
        # damaged and left out), which has no accuracy to measure.
        if source.num_examples(split) == 0:
            raise DataError(
                f"{source.name} split {split!r} has no images to evaluate; choose another "
                "split or add images to it"
            )
        if label_set is not None:
            source.check_label_set(label_set)
        pre = self.preprocessing if source is self.source else Preprocessing(self.resolution)
        return Split(source, split, eval_preprocessing(pre), label_set)


class Evaluator:
    """Base of the evaluators: `reads()` once, `metrics(outputs)` at every run."""

    def __init__(self, name: str, settings: EvalSettings, context: Context) -> None:
        self.name, self.settings, self.context = name, settings, context
        self.batch_size = settings.batch_size or context.batch_size

    def reads(self) -> list[Read]:
        raise NotImplementedError

    def metrics(self, outputs: Mapping[Split, PassOutput]) -> Iterator[tuple[str, float]]:
        """(metric, value) pairs; the suite prefixes them with `NAME/`."""
        raise NotImplementedError

    def read(self, split: Split, *needs: str | Among) -> Read:
        return Read(split, frozenset(needs), self.batch_size)

    def one_split(
        self,
        data: str | None,
        data_dir: str | None,
        split: str | None,
        task: str = "classify",
        label_set: str | None = None,
    ) -> tuple[DataSource, Split]:
        """The split an evaluator of one split reads: `data` (None: the run's) at `split`
        (None: the run's evaluation split, or the named dataset's own), refusing a model
        whose head has other classes than the dataset; its batches carry `label_set`."""
        context = self.context
        source = context.open(data, data_dir, task=task)
        default = context.eval_split if data is None else source.eval_split
        return source, self.split_of(source, split or default, label_set)

    def split_of(self, source: DataSource, split: str, label_set: str | None = None) -> Split:
        """`split` of `source` (opened by the evaluator itself, or by `one_split`), refusing
        a model whose head has other classes than the dataset."""
        context = self.context
        if context.num_classes != source.num_classes:
            raise ConfigError(
                f"evaluator {self.name!r} ({self.settings.type}) needs a head of "
                f"{source.num_classes} classes for {source.name}; the model has "
                f"{context.num_classes or 'none'}"
            )
        return context.split(source, split, label_set)


def settings_dict(settings: EvalSettings) -> dict[str, Any]:
    """The YAML form: tuples as lists."""
    return {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in dataclasses.asdict(settings).items()
    }
