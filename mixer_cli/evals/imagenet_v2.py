"""`imagenet_v2`: ImageNet-v2 (Recht et al. 2019: 10,000 new test images of the 1,000
ImageNet classes; TFDS `imagenet_v2`, split `test`), plain top-1 over all 1,000 classes.

`config` picks the sampling: `matched-frequency` (the one usually reported, and
big_vision's `imagenet_v2` eval), `threshold-0.7` or `topimages`. A `classification` of
the set `imagenet_v2/CONFIG`; an unknown config is refused by TFDS's list of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from mixer_cli.evals import classification


@dataclass(frozen=True)
class Settings(classification.Settings):
    type: str = "imagenet_v2"
    config: str = "matched-frequency"  # or threshold-0.7, topimages
    split: str | None = "test"


class Evaluator(classification.Evaluator):
    """Metrics: top1, top5, loss, examples."""

    settings: Settings

    def dataset(self) -> str | None:
        return self.settings.data or f"imagenet_v2/{self.settings.config}"
