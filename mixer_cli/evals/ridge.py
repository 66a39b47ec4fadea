"""Linear few-shot evaluation: closed-form ridge regression on frozen pre_logits.

The reference evaluator's method (DESIGN.md): per seed, a NumPy ``default_rng(seed)``
permutes each class's indices and the first k are the k-shot training set (so the
sets nest across k); features are standardised with that set's mean and std (+1e-5),
a constant bias column of 100 is appended (the bias is then barely regularised), the
targets are 2 * onehot - 1, and ridge regression is solved in closed form through the
eigendecomposition of the smaller of X^T X and X X^T, which makes every l2 value after
the first one nearly free. Accuracy is the argmax over the whole test split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixer_cli.core.errors import ConfigError, DataError

BIAS = 100.0
DEFAULT_L2 = 1024.0  # 2^10, the reference's
MAX_FOLDS = 5  # cross-validation folds when several l2 values are given


@dataclass(frozen=True)
class Ridge:
    """A ridge problem factorised once: weights for any l2 = lhs diag(1/(eigs+l2)) rhs."""

    eigs: np.ndarray
    lhs: np.ndarray
    rhs: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, num_classes: int) -> Ridge:
        x = np.asarray(features, np.float64)
        mean, std = x.mean(axis=0), x.std(axis=0) + 1e-5
        x = design_matrix(x, mean, std)
        if len(x) >= x.shape[1]:  # (X^T X + l2 I)^-1 X^T y
            eigs, q = np.linalg.eigh(x.T @ x)
            # X^T y for y = 2 onehot - 1 from per-class sums: O(N D), not O(N D C).
            class_sums = np.zeros((num_classes, x.shape[1]))
            np.add.at(class_sums, labels, x)
            lhs, rhs = q, q.T @ (2.0 * class_sums.T - x.sum(axis=0)[:, None])
        else:  # X^T (X X^T + l2 I)^-1 y
            eigs, q = np.linalg.eigh(x @ x.T)
            lhs, rhs = x.T @ q, q.T @ (2.0 * np.eye(num_classes)[labels] - 1.0)
        return cls(eigs, lhs, rhs, mean, std)

    def weights(self, l2: float) -> np.ndarray:
        """[features + 1, classes]: the last row multiplies the bias column."""
        return self.lhs @ (self.rhs / (self.eigs + l2)[:, None])

    def predict(self, features: np.ndarray, l2: float) -> np.ndarray:
        """Argmax classes; float32 scores (the solve above is float64) halve the big matmul."""
        x = design_matrix(features, self.mean.astype(np.float32), self.std.astype(np.float32))
        return np.argmax(x.astype(np.float32) @ self.weights(l2).astype(np.float32), axis=1)


def design_matrix(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Standardised features with the constant bias column appended."""
    x = (x - mean) / std
    return np.concatenate([x, np.full((len(x), 1), BIAS, x.dtype)], axis=1)


def sample_shots(labels: np.ndarray, shots: int, seed: int, num_classes: int) -> np.ndarray:
    """Indices of `shots` examples per class, class by class; nested across `shots`.

    One generator per seed permutes each class's indices in class order: the permutation
    does not depend on `shots`, so the 5-shot set starts with the 1-shot set.
    """
    rng = np.random.default_rng(seed)
    picked = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if len(members) < shots:
            raise DataError(f"class {c} has {len(members)} training examples, fewer than {shots}")
        picked.append(rng.permutation(members)[:shots])
    return np.concatenate(picked)


def check_shots(counts: np.ndarray, shots: Sequence[int], num_classes: int) -> None:
    """Refuse shot counts the training split cannot serve (`counts`: examples per class)."""
    if num_classes < 2:
        raise DataError(f"few-shot classification needs at least 2 classes, got {num_classes}")
    smallest = int(counts.min())
    too_many = [k for k in shots if k > smallest]
    if too_many:
        raise ConfigError(
            f"{max(too_many)} shots need that many training examples per class; the "
            f"smallest class (label {int(counts.argmin())}) has {smallest}"
        )


def choose_l2(
    features: np.ndarray, labels: np.ndarray, shots: int, l2s: Sequence[float], num_classes: int
) -> float:
    """The l2 with the best cross-validated accuracy inside the k-shot set (never the test
    split): fold f holds out the shots at positions f, f + F, ... of every class.

    With one shot per class there is nothing to hold out: the first value is used.
    """
    if len(l2s) == 1 or shots < 2:
        return float(l2s[0])
    folds = min(shots, MAX_FOLDS)
    position = np.zeros(len(labels), np.int64)  # each example's rank within its class
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        position[members] = np.arange(len(members))
    correct = np.zeros(len(l2s))
    for fold in range(folds):
        held = position % folds == fold
        ridge = Ridge.fit(features[~held], labels[~held], num_classes)
        for i, l2 in enumerate(l2s):
            correct[i] += np.sum(ridge.predict(features[held], l2) == labels[held])
    return float(l2s[int(np.argmax(correct))])  # ties: the first listed


def evaluate(
    train: np.ndarray,
    train_labels: np.ndarray,
    test: np.ndarray,
    test_labels: np.ndarray,
    num_classes: int,
    shots: Sequence[int],
    seeds: Sequence[int],
    l2s: Sequence[float] = (DEFAULT_L2,),
) -> list[dict[str, float]]:
    """One record per (shots, seed): test accuracy and the l2 used."""
    check_shots(np.bincount(train_labels, minlength=num_classes), shots, num_classes)
    records = []
    for seed in seeds:
        for k in shots:
            chosen = sample_shots(train_labels, k, seed, num_classes)
            x, y = train[chosen], train_labels[chosen]
            l2 = choose_l2(x, y, k, l2s, num_classes)
            predictions = Ridge.fit(x, y, num_classes).predict(test, l2)
            accuracy = float(np.mean(predictions == test_labels))
            records.append({"shots": k, "seed": seed, "l2": l2, "accuracy": accuracy})
    return records


def summarize(records: Sequence[dict[str, float]]) -> dict[str, dict[str, Any]]:
    """{shots: {mean, std, per_seed, l2}} from the per-(shots, seed) records."""
    summary = {}
    for k in sorted({int(r["shots"]) for r in records}):
        mine = [r for r in records if r["shots"] == k]
        accuracies = np.array([r["accuracy"] for r in mine])
        summary[str(k)] = {
            "mean": float(accuracies.mean()),
            "std": float(accuracies.std()),
            "per_seed": {str(r["seed"]): r["accuracy"] for r in mine},
            "l2": {str(r["seed"]): r["l2"] for r in mine},
        }
    return summary


def print_fewshot_table(results: dict[str, Any]) -> None:
    """Datasets x shots (mean +- std over seeds) with an average column, and an average row
    over datasets when there are several."""
    from mixer_cli.core import report

    shots = [str(k) for k in results["shots"]]
    columns = [report.Column("dataset", "dataset", justify="left")]
    columns += [report.Column(k, f"{k}-shot", no_wrap=True) for k in shots]
    columns.append(report.Column("average", "average", no_wrap=True))
    rows = []
    for name, d in results["datasets"].items():
        cells = {k: f"{d['shots'][k]['mean']:.1%} ± {d['shots'][k]['std']:.1%}" for k in shots}
        mean = np.mean([d["shots"][k]["mean"] for k in shots])
        label = Path(name.removeprefix("folder:")).name if name.startswith("folder:") else name
        rows.append({"dataset": label, **cells, "average": f"{mean:.1%}"})
    if len(results["datasets"]) > 1:
        average = results["average"]
        cells = {k: f"{average[k]:.1%}" for k in shots}
        rows.append(
            {"dataset": "average", **cells, "average": f"{np.mean(list(average.values())):.1%}"}
        )
    seeds = len(results["seeds"])
    report.print_table(
        f"linear few-shot top-1 of {results['variant']} at {results['resolution']} px "
        f"(mean ± std over {seeds} seed{'s' * (seeds > 1)})",
        columns,
        rows,
    )
