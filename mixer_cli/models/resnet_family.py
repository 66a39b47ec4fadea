"""The registry's `resnet` family: BiT's ResNet-v2, the shuffle experiment's baseline.

Variants are ResNet{depth}[x{factor}] with `model.width` base channels. A checkpoint's
depth and width are read off its arrays (units per stage, the stem's channels); a
ResNet takes any input size, so its resolution comes from the run's config.yaml or the
caller.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mixer_cli.core.errors import CheckpointMismatch, ConfigError
from mixer_cli.models.checkpoints import load_params, read_params
from mixer_cli.models.mixer import abstract_params, compute_dtype
from mixer_cli.models.registry import Family, Loaded
from mixer_cli.models.resnet import DEPTHS, ResNet, create_resnet, parse_resnet
from mixer_cli.models.settings import ModelConfig
from mixer_cli.weights.arrays import as_tree, check_compatible, with_fresh_head

_UNIT = re.compile(r"^stage(\d+)_unit(\d+)/")


def build(m: ModelConfig, num_classes: int, head_bias: float) -> Any:
    return create_resnet(
        m.variant,
        width=m.width,
        num_classes=num_classes,
        head_bias_init=head_bias,
        dtype=compute_dtype(m.dtype),
    )


def matches(flat: Mapping[str, Any]) -> bool:
    return any(_UNIT.match(key) for key in flat)


def load(
    flat: Mapping[str, Any], source: str, resolution: int | None, settings: Mapping[str, Any]
) -> Loaded:
    units: dict[int, set[int]] = {}
    for key in flat:
        found = _UNIT.match(key)
        if found:
            units.setdefault(int(found.group(1)), set()).add(int(found.group(2)))
    stages = tuple(len(units[s]) for s in sorted(units))
    depth = next((d for d, sizes in DEPTHS.items() if sizes == stages), None)
    if depth is None or "stem/kernel" not in flat:
        raise CheckpointMismatch(f"{source}: units per stage {stages} are no known ResNet depth")
    if resolution is None:
        raise ConfigError(
            f"{source} is a ResNet, which does not record its input size: give --resolution"
        )
    width = int(flat["stem/kernel"].shape[-1])
    num_classes = int(flat["head/kernel"].shape[1]) if "head/kernel" in flat else 0
    model = ResNet(DEPTHS[depth], width, num_classes)
    check_compatible(abstract_params(model, resolution), flat, source, f"ResNet{depth}")
    name = parse_resnet(f"ResNet{depth}", width).name
    params = as_tree(flat)
    # the variant as --variant takes it (the label above is for people), the width beside it
    config = {"family": "resnet", "variant": f"ResNet{depth}", "width": width}
    config["resolution"] = resolution
    return Loaded(
        model, params, "resnet", name, resolution, num_classes, {"width": width}, config=config
    )


def warm_start(path: str, fresh: dict[str, Any], scope: str) -> dict[str, Any]:
    if scope == "backbone":
        flat, source = read_params(path)
        return with_fresh_head(flat, fresh, source)
    return load_params(path, fresh)


def count(m: ModelConfig, num_classes: int) -> dict[str, Any]:
    from mixer_cli.models.costs import measure

    return measure(build(m, num_classes, 0.0), m.resolution)


FAMILY = Family(
    name="resnet",
    title="ResNet",
    parse=lambda m: parse_resnet(m.variant, m.width).name,
    build=build,
    patch_size=lambda m: 0,
    matches=matches,
    load=load,
    warm_start=warm_start,
    count=count,
    variants=tuple(f"ResNet{depth}x1" for depth in DEPTHS),
)
