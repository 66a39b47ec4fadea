"""`segmentation`: mean IoU, per-class IoU and pixel accuracy over a whole split.

Reads one split of a dataset with masks (default: the run's evaluation split) and needs
the model's segmentation head to have that dataset's classes. Every image is scored at
its own size (the prediction resized back), padded examples and ignored pixels left out;
the confusion matrix is summed over the split before any ratio is taken.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from mixer_cli.core.errors import ConfigError
from mixer_cli.evals import base
from mixer_cli.evals.base import PIXELS, Context, EvalSettings, PassOutput, Read, Split
from mixer_cli.evals.iou import summary


@dataclass(frozen=True)
class Settings(EvalSettings):
    type: str = "segmentation"
    data: str | None = (
        None  # a dataset with masks (digit-scenes, folder:PATH, TFDS); None = the run's
    )
    data_dir: str | None = None
    split: str | None = None  # None = the run's evaluation split, or a named dataset's own


class Evaluator(base.Evaluator):
    """Metrics: miou, pixel_accuracy, iou_CLASS per class that occurs, pixels (scored)."""

    settings: Settings

    def __init__(self, name: str, settings: Settings, context: Context) -> None:
        super().__init__(name, settings, context)
        if context.head != "segment":
            raise ConfigError(
                f"evaluator {name!r} (segmentation) needs a model with a segmentation head "
                "(mixer segment, or model.head=segment)"
            )
        run_data = context.source
        if settings.data is None and run_data is not None and run_data.task != "segment":
            raise ConfigError(f"evaluator {name!r} (segmentation): {run_data.name} has no masks")
        source, self.split = self.one_split(
            settings.data, settings.data_dir, settings.split, task="segment"
        )
        self.classes = [str(c) for c in getattr(source, "classes", range(source.num_classes))]
        self.last: dict[str, Any] = {}  # the latest summary, per-class IoU included

    def reads(self) -> list[Read]:
        return [self.read(self.split, PIXELS)]

    def metrics(self, outputs: Mapping[Split, PassOutput]) -> Iterator[tuple[str, float]]:
        self.last = summary(outputs[self.split].confusion)
        yield "miou", self.last["miou"]
        yield "pixel_accuracy", self.last["pixel_accuracy"]
        for name, iou in zip(self.classes, self.last["iou"], strict=True):
            if iou is not None:
                yield f"iou_{name}", iou
        yield "pixels", self.last["pixels"]
