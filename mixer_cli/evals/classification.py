"""`classification`: top-1, top-5 and mean loss over a whole split (padded, masked).

Reads one split (default: the run's evaluation split, under the run's evaluation
transform) and needs the model's head to have that dataset's classes. With `classes`
(a class subset) top-1 is the arg max over those classes' logits only: how ImageNet-R
and ImageNet-A, labelled in the 1k space with 200 classes present, score a 1000-class
head (Hendrycks et al.'s `imagenet-r` and `natural-adv-examples` eval.py). The
`imagenet_v2`, `imagenet_r` and `imagenet_a` types are this evaluator on those sets.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from mixer_cli.core.errors import ConfigError
from mixer_cli.evals import base
from mixer_cli.evals.base import SUMS, Among, Context, EvalSettings, PassOutput, Read, Split


@dataclass(frozen=True)
class Settings(EvalSettings):
    type: str = "classification"
    data: str | None = None  # a dataset (digits, folder:PATH, TFDS name); None = the run's
    data_dir: str | None = None
    split: str | None = None  # None = the run's evaluation split (data.eval_split), or a
    # named dataset's own
    classes: tuple[int, ...] = ()  # top-1 among these classes only; () = all


@dataclass(frozen=True)
class SubsetSettings(Settings):
    """A set scored among its own classes (`imagenet_a`, `imagenet_r`): its test split."""

    split: str | None = "test"
    classes: tuple[int, ...] = ()  # () = the set's own classes (its Evaluator's CLASSES)


class Evaluator(base.Evaluator):
    """Metrics: top1, top5, loss (mean over examples), examples; with `classes`, top1
    among them, and examples."""

    settings: Settings
    CLASSES: tuple[int, ...] = ()  # a set's own class subset, where `classes` names none

    def __init__(self, name: str, settings: Settings, context: Context) -> None:
        super().__init__(name, settings, context)
        if context.head != "classify":
            raise ConfigError(
                f"evaluator {name!r} ({settings.type}) needs a classifier; this model has a "
                f"{context.head} head (its evaluator: type segmentation)"
            )
        source, self.split = self.one_split(self.dataset(), settings.data_dir, settings.split)
        classes = settings.classes or self.CLASSES
        outside = [c for c in classes if not 0 <= c < source.num_classes]
        if outside or len(set(classes)) != len(classes) or len(classes) == 1:
            got = f"class {outside[0]}" if outside else f"{list(classes)}"
            raise ConfigError(
                f"evaluator {name!r} ({settings.type}): classes must be at least two distinct "
                f"class indices of {source.name} (0..{source.num_classes - 1}); got {got}"
            )
        self.among = Among(tuple(sorted(classes))) if classes else None

    def dataset(self) -> str | None:
        """The dataset it reads (None: the run's)."""
        return self.settings.data

    def reads(self) -> list[Read]:
        needs = (SUMS,) if self.among is None else (SUMS, self.among)
        return [self.read(self.split, *needs)]

    def metrics(self, outputs: Mapping[Split, PassOutput]) -> Iterator[tuple[str, float]]:
        sums = outputs[self.split].sums
        count = sums["count"]
        if self.among is not None:
            yield "top1", sums[self.among.key] / count
        else:
            yield "top1", sums["correct_top1"] / count
            yield "top5", sums["correct_top5"] / count
            yield "loss", sums["loss"] / count
        yield "examples", count
