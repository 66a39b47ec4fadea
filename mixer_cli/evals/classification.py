"""`classification`: top-1, top-5 and mean loss over a whole split (padded, masked).

Reads one split (default: the run's evaluation split, under the run's evaluation
transform) and needs the model's head to have that dataset's classes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from mixer_cli.core.errors import ConfigError
from mixer_cli.evals import base
from mixer_cli.evals.base import SUMS, Context, EvalSettings, PassOutput, Read, Split


@dataclass(frozen=True)
class Settings(EvalSettings):
    type: str = "classification"
    data: str | None = None  # a dataset (digits, folder:PATH, TFDS name); None = the run's
    data_dir: str | None = None
    split: str | None = None  # None = the run's evaluation split (data.eval_split), or a
    # named dataset's own


class Evaluator(base.Evaluator):
    """Metrics: top1, top5, loss (mean over examples), examples."""

    settings: Settings

    def __init__(self, name: str, settings: Settings, context: Context) -> None:
        super().__init__(name, settings, context)
        if context.head != "classify":
            raise ConfigError(
                f"evaluator {name!r} (classification) needs a classifier; this model has a "
                f"{context.head} head (its evaluator: type segmentation)"
            )
        _, self.split = self.one_split(settings.data, settings.data_dir, settings.split)

    def reads(self) -> list[Read]:
        return [self.read(self.split, SUMS)]

    def metrics(self, outputs: Mapping[Split, PassOutput]) -> Iterator[tuple[str, float]]:
        sums = outputs[self.split].sums
        count = sums["count"]
        yield "top1", sums["correct_top1"] / count
        yield "top5", sums["correct_top5"] / count
        yield "loss", sums["loss"] / count
        yield "examples", count
