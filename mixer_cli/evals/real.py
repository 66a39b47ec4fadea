"""`real`: ImageNet ReaL top-1 (Beyer et al. 2020, "Are we done with ImageNet?").

The ImageNet validation images relabelled by raters: each image has a *set* of correct
classes (TFDS `imagenet2012_real`, split `validation`, feature `real_label`, a
variable-length list). A prediction is correct when the top-1 class is in the set; the
images whose set is empty (about 3,500 of 50,000) are left out, and counted. This is
big_vision's rule (`evaluators/classification.py`: the labels are multi-hot, rows with no
label are masked out, `top1_correct` is the label at the arg max): the label sets travel
through the shared forward pass as multi-hot rows (`data.EvalBatches(label_set=...)`) and
are scored on the devices, so the same pass also gives the original labels' top-1.

Metrics: top1 (ReaL), top1_original (ImageNet top-1 on the same images, every image),
examples (with a label set), excluded (without).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from mixer_cli.core.errors import ConfigError, DataError
from mixer_cli.evals import base
from mixer_cli.evals.base import SUMS, Context, EvalSettings, PassOutput, Read, Split


@dataclass(frozen=True)
class Settings(EvalSettings):
    type: str = "real"
    data: str = "imagenet2012_real"  # a TFDS set with a per-image list of classes
    data_dir: str | None = None
    split: str = "validation"
    label_set: str = "real_label"  # the feature holding each image's classes


class Evaluator(base.Evaluator):
    """Top-1 in each image's label set, over the images that have one."""

    settings: Settings

    def __init__(self, name: str, settings: Settings, context: Context) -> None:
        super().__init__(name, settings, context)
        if context.head != "classify":
            raise ConfigError(
                f"evaluator {name!r} (real) needs a classifier; this model has a "
                f"{context.head} head"
            )
        s = settings
        _, self.split = self.one_split(s.data, s.data_dir, s.split, label_set=s.label_set)

    def reads(self) -> list[Read]:
        return [self.read(self.split, SUMS)]

    def metrics(self, outputs: Mapping[Split, PassOutput]) -> Iterator[tuple[str, float]]:
        sums = outputs[self.split].sums
        labelled = sums["with_set"]
        if labelled == 0:
            raise DataError(
                f"{self.split.label()}: no image has a label in {self.settings.label_set!r}, "
                "so there is no ReaL accuracy; check the dataset"
            )
        yield "top1", sums["correct_set_top1"] / labelled
        yield "top1_original", sums["correct_top1"] / sums["count"]
        yield "examples", labelled
        yield "excluded", sums["count"] - labelled
