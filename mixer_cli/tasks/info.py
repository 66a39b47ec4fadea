"""`mixer info`'s descriptions: the variant table (parameters and measured FLOPs), one
model of any family, Google's released checkpoints, a dataset. Rows only; the command
renders them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mixer_cli.core import report


@dataclass(frozen=True)
class VariantTable:
    """Mixer variants described at one resolution, with or without a head."""

    rows: list[dict[str, Any]]
    resolution: int
    num_classes: int


def describe_variants(
    variant: str | None, resolution: int | None, num_classes: int
) -> VariantTable:
    """The listed Mixer variants (or `variant`), each compiled to count its FLOPs."""
    from mixer_cli.models import LISTED_VARIANTS, parse_variant
    from mixer_cli.models.costs import describe

    specs = [parse_variant(name) for name in ([variant] if variant else LISTED_VARIANTS)]
    resolution = 224 if resolution is None else resolution
    for spec in specs:
        spec.check_resolution(resolution)

    rows = []
    with report.progress() as bar:
        task = bar.add_task("compiling to count FLOPs", total=len(specs))
        for spec in specs:
            rows.append(describe(spec, resolution, num_classes))
            bar.advance(task)
    return VariantTable(rows, resolution, num_classes)


def describe_checkpoint(checkpoint: Any, resolution: int | None) -> dict[str, Any]:
    """The model a checkpoint of any family holds, as its arrays say (`describe_model`)."""
    from mixer_cli.core.errors import ConfigError
    from mixer_cli.models import registry

    loaded = registry.load_checkpoint(checkpoint)
    if resolution not in (None, loaded.resolution):
        raise ConfigError(
            f"{checkpoint} was trained at {loaded.resolution} px; --resolution must match"
        )
    items = [  # a list (conv_after: [1, 3]) as the flag writes it: '1,3'
        f"model.{k}={','.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
        for k, v in loaded.config.items()
        if k not in ("variant", "resolution")
    ]
    variant = loaded.config.get("variant", loaded.name)  # name may be a display name
    return describe_model(variant, loaded.resolution, loaded.num_classes, items)


def describe_model(
    variant: str | None, resolution: int | None, num_classes: int, items: list[str]
) -> dict[str, Any]:
    """One model of any family from --set options: its parameters and GFLOPs per image."""
    from mixer_cli.config import model_config
    from mixer_cli.models import registry

    m = model_config(variant or "B/16", resolution or 224, "float32", items)
    family = registry.get(m.family)
    return {
        "family": m.family,
        "model": family.parse(m),
        "resolution": m.resolution,
        "num_classes": num_classes,
        **family.count(m, num_classes),
    }


def describe_family(
    name: str, variant: str | None, resolution: int | None, num_classes: int, items: list[str]
) -> list[dict[str, Any]]:
    """A family's listed variants (or `variant`), each as `describe_model` describes it."""
    from mixer_cli.core.errors import ConfigError
    from mixer_cli.models import registry

    family = registry.get(name)
    if any(item.replace(" ", "").startswith("model.family=") for item in items):
        raise ConfigError("give the family with --family or with --set model.family, not both")
    variants = [variant] if variant else list(family.variants)
    if not variants:
        raise ConfigError(
            f"the {name} family has no variant table; describe one of its models with "
            "--variant and --set model.KEY=VALUE"
        )
    rows = []
    with report.progress() as bar:
        task = bar.add_task("compiling to count FLOPs", total=len(variants))
        for one in variants:
            rows.append(
                describe_model(one, resolution, num_classes, [f"model.family={name}", *items])
            )
            bar.advance(task)
    return rows


def released_checkpoints() -> list[dict[str, str]]:
    """Google's released checkpoints: name, the model it holds, source and the size of
    the cached copy."""
    from mixer_cli.weights import released

    rows = []
    for name in released.NAMES:
        path, model = released.cache_path(name), released.entry(name)
        rows.append(
            {
                "name": name,
                "family": model.family,
                "variant": model.variant,
                "resolution": model.resolution,
                "classes": model.classes,
                "source": released.url_of(name),
                "cached": f"{path.stat().st_size / 2**20:,.0f} MiB" if path.exists() else "-",
            }
        )
    return rows


def describe_dataset(data: str, data_dir: Any) -> dict[str, Any]:
    """A dataset's task, classes, image shape and splits."""
    from mixer_cli.data import open_dataset

    source = open_dataset(data, data_dir, task=None)
    height, width, channels = source.image_shape
    return {
        "dataset": source.name,
        "task": source.task,
        "num_classes": source.num_classes,
        "image_shape": [height, width, channels],
        "train_split": source.train_split,
        "eval_split": source.eval_split,
        "splits": source.splits,
    }
