"""A run's evaluators together: when each is due, and one forward pass per split.

At an evaluation point the suite collects what the due evaluators read, merges the
needs of every split that several of them read (same dataset, split and evaluation
transform), runs each distinct split once, and hands every evaluator its outputs. Its
metrics come back as `NAME/METRIC`. With a feature cache (fixed parameters: `mixer eval`,
`mixer fewshot`) a pass that needs only features is read back when it was made before;
`checkpoint_context` and `evaluate_checkpoint` are that case, the suite run once.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from mixer_cli.data import Preprocessing
from mixer_cli.data.sources import DataSource
from mixer_cli.evals import evaluator_class
from mixer_cli.evals.base import (
    FEATURES,
    Among,
    Context,
    EvalSettings,
    Evaluator,
    PassOutput,
    Split,
)
from mixer_cli.evals.forward import FeatureCache, run_pass


class EvalSuite:
    """Evaluators by name, their schedule, and the passes they share."""

    def __init__(self, evaluators: Mapping[str, Evaluator], default_every: int) -> None:
        self.evaluators = dict(evaluators)
        self.default_every = default_every
        self.passes = 0  # forward passes run so far (tests count them)

    @classmethod
    def from_config(
        cls, evals: Mapping[str, EvalSettings], context: Context, default_every: int
    ) -> EvalSuite:
        """Build every declared evaluator; bad settings and missing datasets fail here,
        before any training step."""
        built = {
            name: evaluator_class(settings.type)(name, settings, context)
            for name, settings in evals.items()
        }
        return cls(built, default_every)

    def every(self, name: str) -> int:
        return self.evaluators[name].settings.every or self.default_every

    def intervals(self) -> list[int]:
        """The evaluation intervals in use (steps the loop must stop at)."""
        return sorted({self.every(name) for name in self.evaluators} - {0})

    def due(self, step: int, total: int) -> list[str]:
        """Evaluators to run after `step` of `total`: all at the end, those with `at_start`
        at step 0, the others every `every` steps."""
        if step >= total:
            return list(self.evaluators)
        if step == 0:
            return [n for n, e in self.evaluators.items() if e.settings.at_start]
        return [n for n in self.evaluators if self.every(n) and step % self.every(n) == 0]

    def run(
        self,
        model: Any,
        params: Any,
        names: list[str] | None = None,
        *,
        loss: str = "softmax",
        cache: FeatureCache | None = None,
        mesh: Any = None,
        show_progress: bool = True,
    ) -> dict[str, float]:
        """Run the named evaluators (default: all) on `params`: {NAME/METRIC: value}."""
        chosen = [self.evaluators[n] for n in (list(self.evaluators) if names is None else names)]
        needs: dict[Split, set[str | Among]] = {}
        batch: dict[Split, int] = {}
        for evaluator in chosen:
            for read in evaluator.reads():
                needs.setdefault(read.split, set()).update(read.needs)
                batch.setdefault(read.split, read.batch_size)
        outputs: dict[Split, PassOutput] = {}
        for split, wanted in needs.items():
            found = cache.get(split) if cache is not None and wanted == {FEATURES} else None
            if found is None:
                found = run_pass(
                    model, params, split, frozenset(wanted), batch[split], loss, mesh, show_progress
                )
                self.passes += 1
                if cache is not None:
                    cache.put(split, found)
            outputs[split] = found
        metrics: dict[str, float] = {}
        for evaluator in chosen:
            for metric, value in evaluator.metrics(outputs):
                metrics[f"{evaluator.name}/{metric}"] = float(value)
        return metrics


class Checkpoint(Protocol):
    """What evaluating fixed weights reads of a loaded checkpoint (`models.registry.Loaded`)."""

    model: Any
    params: Any
    resolution: int
    num_classes: int


def checkpoint_context(
    loaded: Checkpoint,
    source: DataSource | None,
    batch_size: int,
    data_dir: str | None = None,
    *,
    name: str | None = None,
) -> Context:
    """Evaluating `loaded` on `source` (opened as `name`; None: only evaluators that name
    their datasets): the reference evaluation transform at the checkpoint's resolution,
    splits as the dataset names them."""
    context = Context(
        source=source,
        train_split=source.train_split if source else "",
        eval_split=source.eval_split if source else "",
        preprocessing=Preprocessing(resolution=loaded.resolution),
        num_classes=loaded.num_classes,
        head="classify",
        loss="softmax",
        batch_size=batch_size,
        resolution=loaded.resolution,
        data_dir=data_dir,
    )
    if source is not None and name is not None:  # evaluators naming it reuse the source
        context.opened[(name, data_dir, source.task)] = source
    return context


def evaluate_checkpoint(
    loaded: Checkpoint,
    evals: Mapping[str, EvalSettings],
    context: Context,
    cache_dir: Path | None,
) -> tuple[dict[str, float], EvalSuite]:
    """Every evaluator once on the checkpoint's weights: (metrics, the suite, whose
    evaluators keep their details)."""
    suite = EvalSuite.from_config(evals, context, default_every=0)
    cache = None if cache_dir is None else FeatureCache(cache_dir, loaded.params)
    metrics = suite.run(loaded.model, loaded.params, cache=cache)
    return metrics, suite
