"""`fewshot`: linear few-shot accuracy of the frozen pre_logits, on one or more datasets.

The reference evaluator's method (`mixer_cli.evals.ridge`: nested per-class shot sets per
seed, standardised features, bias column 100, closed-form ridge). Each dataset costs two
feature passes, its training and test splits; on the run's own dataset the test pass is
the one the classification evaluator reads too. `pool_per_class` draws the shots from
the first N x classes training examples (splits are stored shuffled), so a probe along
training does not read a whole large training split every time.

Metrics: `{k}shot` for the run's dataset, `{dataset}_{k}shot` for named ones.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixer_cli.core.errors import ConfigError
from mixer_cli.evals import base, ridge
from mixer_cli.evals.base import FEATURES, Context, EvalSettings, PassOutput, Read, Split


@dataclass(frozen=True)
class Settings(EvalSettings):
    type: str = "fewshot"
    datasets: tuple[str, ...] = ()  # digits, folder:PATH, TFDS names; () = the run's dataset
    data_dir: str | None = None
    train_split: str | None = None  # None = each dataset's training split
    test_split: str | None = None  # None = each dataset's evaluation split
    shots: tuple[int, ...] = (5,)
    seeds: int = 3  # seeds 0..N-1, averaged
    l2_reg: tuple[float, ...] = (ridge.DEFAULT_L2,)  # several: cross-validated per set
    pool_per_class: int = 0  # shots drawn from the first N x classes examples; 0 = all


def dataset_label(name: str) -> str:
    """'folder:/data/pets' -> 'pets', 'cifar100:3.0.2' -> 'cifar100'."""
    if name.startswith("folder:"):
        return Path(name.removeprefix("folder:")).name
    return name.split(":")[0].split("/")[0]


@dataclass(frozen=True)
class Task:
    prefix: str  # '' for the run's dataset, else 'LABEL_'
    name: str
    train: Split
    test: Split
    num_classes: int


class Evaluator(base.Evaluator):
    """Mean test accuracy over seeds per dataset and shots; `details` keeps every seed."""

    settings: Settings

    def __init__(self, name: str, settings: Settings, context: Context) -> None:
        super().__init__(name, settings, context)
        s = settings
        if (
            s.seeds <= 0
            or not s.shots
            or min(s.shots) <= 0
            or not s.l2_reg
            or min(s.l2_reg) <= 0
            or s.pool_per_class < 0
        ):
            raise ConfigError(
                f"evaluator {name!r}: shots, seeds and l2_reg must be positive, got shots "
                f"{list(s.shots)}, seeds {s.seeds}, l2_reg {list(s.l2_reg)}, "
                f"pool_per_class {s.pool_per_class}"
            )
        if s.pool_per_class and max(s.shots) > s.pool_per_class:
            raise ConfigError(
                f"evaluator {name!r}: {max(s.shots)} shots need a pool of at least that many "
                f"examples per class, got pool_per_class {s.pool_per_class}"
            )
        self.tasks = []
        names = s.datasets or (None,)
        sources = [context.open(n, s.data_dir) for n in names]  # every name checked first
        for dataset, source in zip(names, sources, strict=True):
            train = s.train_split or (context.train_split if dataset is None else None)
            train = train or source.train_split
            test = s.test_split or (context.eval_split if dataset is None else source.eval_split)
            counts = source.label_counts(train)
            if s.pool_per_class:
                pool = min(source.num_examples(train), s.pool_per_class * source.num_classes)
                train, counts = f"{train}[:{pool}]", None
            if counts is not None:  # known without a pass: refuse impossible shots now
                ridge.check_shots(counts, s.shots, source.num_classes)
            prefix = "" if dataset is None else f"{dataset_label(dataset)}_"
            self.tasks.append(
                Task(
                    prefix,
                    source.name,
                    context.split(source, train),
                    context.split(source, test),
                    source.num_classes,
                )
            )
        self.details: dict[str, Any] = {}

    def reads(self) -> list[Read]:
        return [self.read(split, FEATURES) for t in self.tasks for split in (t.train, t.test)]

    def metrics(self, outputs: Mapping[Split, PassOutput]) -> Iterator[tuple[str, float]]:
        s = self.settings
        for task in self.tasks:
            train, test = outputs[task.train], outputs[task.test]
            started = time.time()
            records = ridge.evaluate(
                train.features,
                train.labels,
                test.features,
                test.labels,
                task.num_classes,
                s.shots,
                range(s.seeds),
                s.l2_reg,
            )
            summary = ridge.summarize(records)
            self.details[task.name] = {
                "train_split": task.train.split,
                "test_split": task.test.split,
                "train_examples": len(train.labels),
                "test_examples": len(test.labels),
                "num_classes": task.num_classes,
                "solve_seconds": time.time() - started,
                "shots": summary,
            }
            for k in s.shots:
                yield f"{task.prefix}{k}shot", summary[str(k)]["mean"]

    def average(self) -> dict[str, float]:
        """Mean over datasets per shots, from the last run."""
        return {
            str(k): float(np.mean([d["shots"][str(k)]["mean"] for d in self.details.values()]))
            for k in self.settings.shots
        }
