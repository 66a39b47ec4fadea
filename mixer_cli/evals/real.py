"""`real`: ImageNet ReaL top-1 (Beyer et al. 2020, "Are we done with ImageNet?").

The ImageNet validation images relabelled by raters: each image has a *set* of correct
classes (TFDS `imagenet2012_real`, split `validation`, feature `real_label`, a
variable-length list). A prediction is correct when the top-1 class is in the set; the
images whose set is empty (about 3,500 of 50,000) are left out, and counted. This is
big_vision's rule (`evaluators/classification.py`: the labels are multi-hot, rows with no
label are masked out, `top1_correct` is the label at the arg max): the label sets travel
through the shared forward pass as multi-hot rows (`data.EvalBatches(label_set=...)`) and
are scored on the devices, so the same pass also gives the original labels' top-1.

The same images as files: `real_json` (google-research/reassessed-imagenet's real.json)
makes `data` a folder of ImageNet's validation images, ILSVRC2012_val_NNNNNNNN.JPEG flat or
in class folders (`data.real_folder`); its label sets reach the same pass by the same name.

Metrics: top1 (ReaL), top1_original (ImageNet top-1 on the same images, every image; not
for a flat folder, which has no original labels), examples (with a label set), excluded
(without).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from mixer_cli.core.errors import ConfigError, DataError
from mixer_cli.evals import base
from mixer_cli.evals.base import SUMS, Context, EvalSettings, PassOutput, Read, Split


@dataclass(frozen=True)
class Settings(EvalSettings):
    type: str = "real"
    data: str = "imagenet2012_real"  # a TFDS set with a per-image list of classes, or
    # with real_json the folder of ImageNet's validation images
    data_dir: str | None = None
    split: str = "validation"
    label_set: str = "real_label"  # the feature holding each image's classes
    real_json: str | None = None  # ReaL's real.json: read `data` as a folder with it


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
        self.original = True  # whether the images have their original labels
        if s.real_json is None:
            _, self.split = self.one_split(s.data, s.data_dir, s.split, label_set=s.label_set)
            return
        from mixer_cli.data.real_folder import RealFolderSource

        if s.data == Settings.data:
            raise ConfigError(
                f"evaluator {name!r} (real) has real_json but no folder: set its data "
                f"(evals.{name}.data) to the folder of ImageNet's validation images"
            )
        folder = Path(s.data.removeprefix("folder:")).expanduser()
        labels = Path(s.real_json).expanduser()
        source = RealFolderSource(folder, labels, context.skip_corrupt)
        self.original = source.original_labels
        self.split = self.split_of(source, s.split, s.label_set)

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
        if self.original:
            yield "top1_original", sums["correct_top1"] / sums["count"]
        yield "examples", labelled
        yield "excluded", sums["count"] - labelled
