"""The registry's `hybrid` family: a Mixer with the follow-up options (models/hybrid.py).

Configured by `model.stem`, `model.pattern`, `model.token_mixing`, `model.conv_after` and
`model.heads` on top of a Mixer variant; any of them set on a `mixer` makes it a hybrid
(`config.with_implied_family`). Warm starts take every array a checkpoint shares with
the model (Google's Mixers, ours, other hybrids) and say which parameters are new: the
summed and conv-after models then start exactly as the Mixer they came from.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from mixer_cli.core.errors import CheckpointMismatch, ConfigError
from mixer_cli.models.checkpoints import read_params
from mixer_cli.models.hybrid import HybridMixer, check_options
from mixer_cli.models.isotropic import checked_spec
from mixer_cli.models.mixer import abstract_params, compute_dtype
from mixer_cli.models.mixer_checkpoint import token_kernels
from mixer_cli.models.registry import Family, Loaded, fixed_resolution
from mixer_cli.models.settings import ModelConfig
from mixer_cli.models.variants import MixerSpec, parse_variant, spec_from_dims
from mixer_cli.weights.arrays import as_tree, check_compatible, flatten

# Arrays only a hybrid has: a checkpoint with any of them is no plain Mixer.
HYBRID_PARTS = re.compile(r"(^conv_stem/|/token_attention/|^ConvAfter_\d+/|/gate$)")


def _spec(m: ModelConfig) -> MixerSpec:
    spec = checked_spec(parse_variant, m)
    check_options(
        num_blocks=spec.num_blocks,
        hidden_dim=spec.hidden_dim,
        patch_size=spec.patch_size,
        stem=m.stem,
        pattern=m.pattern,
        token_mixing=m.token_mixing,
        conv_after=m.conv_after,
        heads=m.heads,
        gelu=m.gelu,
    )
    return spec


def describe(m: ModelConfig) -> str:
    """The variant and its options, e.g. `S/16+conv-stem+MAMAMAMA+sum+conv@1,3`."""
    tags = [_spec(m).name]
    if m.stem == "conv":
        tags.append("conv-stem")
    if m.pattern and set(m.pattern) != {"M"}:
        tags.append(m.pattern)
    if m.token_mixing == "sum":
        tags.append("sum")
    if m.conv_after:
        tags.append("conv@" + ",".join(str(i) for i in sorted(m.conv_after)))
    return "+".join(tags)


def build(m: ModelConfig, num_classes: int, head_bias: float) -> HybridMixer:
    spec = _spec(m)
    if m.grid_factor != 1:
        raise ConfigError(
            "model.grid_factor: only plain Mixers adapt to a multiple of their resolution"
        )
    return HybridMixer(
        patch_size=spec.patch_size,
        hidden_dim=spec.hidden_dim,
        num_blocks=spec.num_blocks,
        tokens_mlp_dim=spec.tokens_mlp_dim,
        channels_mlp_dim=spec.channels_mlp_dim,
        num_classes=num_classes,
        stem=m.stem,
        pattern=m.pattern,
        token_mixing=m.token_mixing,
        conv_after=tuple(sorted(set(m.conv_after))),
        heads=m.heads,
        dropout=m.dropout,
        stoch_depth=m.stoch_depth,
        head_bias_init=head_bias,
        dtype=compute_dtype(m.dtype),
        gelu=m.gelu,
    )


def matches(flat: Mapping[str, Any]) -> bool:
    return "MixerBlock_0/LayerNorm_0/scale" in flat and any(HYBRID_PARTS.search(k) for k in flat)


def infer_config(
    flat: Mapping[str, Any], source: str, resolution: int | None, settings: Mapping[str, Any]
) -> ModelConfig:
    """The model config a hybrid's arrays define (a run's config.yaml settings win)."""
    if settings.get("family") == "hybrid":
        keys = {f.name for f in ModelConfig.__dataclass_fields__.values()}
        known = {k: v for k, v in settings.items() if k in keys and k not in ("init",)}
        known["conv_after"] = tuple(known.get("conv_after") or ())
        m = ModelConfig(**{**known, "init": None, "init_scope": "all"})
        if resolution is not None and resolution != m.resolution and "M" in (m.pattern or "M"):
            raise fixed_resolution("hybrid", resolution, m.resolution)  # token MLPs fix it
        return m if resolution is None else _replace(m, resolution=resolution)
    blocks = sum(1 for k in flat if re.fullmatch(r"MixerBlock_\d+/LayerNorm_0/scale", k))
    mlp_blocks = [i for i in range(blocks) if f"MixerBlock_{i}/token_mixing/Dense_0/kernel" in flat]
    convs = sum(1 for k in flat if re.fullmatch(r"conv_stem/conv_\d+/kernel", k))
    if "conv_stem/proj/kernel" in flat:
        stem, patch, hidden = "conv", 2**convs, int(flat["conv_stem/proj/kernel"].shape[-1])
    else:
        patch, hidden = int(flat["stem/kernel"].shape[0]), int(flat["stem/kernel"].shape[-1])
        stem = "linear"
    channels_mlp = int(flat["MixerBlock_0/channel_mixing/Dense_0/kernel"].shape[1])
    tokens_mlp, side = hidden // 2, None
    if mlp_blocks:
        seq_len, tokens_mlp = flat[f"MixerBlock_{mlp_blocks[0]}/token_mixing/Dense_0/kernel"].shape
        side = math.isqrt(int(seq_len))
        if resolution is not None and resolution != side * patch:
            raise fixed_resolution("hybrid", resolution, side * patch)
    if resolution is None:
        if side is None:
            raise ConfigError(
                f"{source} mixes tokens by attention only, which does not fix its input "
                "size: give --resolution"
            )
        resolution = side * patch
    attention = next(
        (k for k in flat if k.endswith("token_attention/attention/query/kernel")), None
    )
    spec = spec_from_dims(patch, blocks, hidden, int(tokens_mlp), channels_mlp)
    pattern = "".join("M" if i in mlp_blocks else "A" for i in range(blocks))
    return ModelConfig(
        family="hybrid",
        variant=spec.name,
        resolution=resolution,
        gelu=settings.get("gelu", "tanh"),
        stem=stem,
        pattern="" if set(pattern) == {"M"} else pattern,
        token_mixing="sum" if any(k.endswith("/gate") for k in flat) else "mlp",
        conv_after=tuple(i for i in range(blocks) if f"ConvAfter_{i}/pointwise/kernel" in flat),
        heads=int(flat[attention].shape[1]) if attention else 0,
    )


def _replace(m: ModelConfig, **changes: Any) -> ModelConfig:
    import dataclasses

    return dataclasses.replace(m, **changes)


def load(
    flat: Mapping[str, Any], source: str, resolution: int | None, settings: Mapping[str, Any]
) -> Loaded:
    m = infer_config(flat, source, resolution, settings)
    num_classes = int(flat["head/kernel"].shape[1]) if "head/kernel" in flat else 0
    model = build(m, num_classes, 0.0)
    name = describe(m)
    check_compatible(abstract_params(model, m.resolution), flat, source, name)
    return Loaded(
        model,
        as_tree(flat),
        "hybrid",
        name,
        m.resolution,
        num_classes,
        {"gelu": m.gelu},
        config=model_keys(m),
    )


def model_keys(m: ModelConfig) -> dict[str, Any]:
    """The model.* settings that rebuild `m` (what a fine-tune of it carries over)."""
    keys = ("family", "variant", "resolution", "gelu", "stem", "pattern", "token_mixing")
    return {
        **{k: getattr(m, k) for k in keys},
        "conv_after": list(m.conv_after),
        "heads": m.heads,
    }


def _group(key: str) -> str:
    """'MixerBlock_3/token_attention/...' -> 'token_attention'; 'conv_stem/...' -> 'conv_stem'."""
    parts = key.split("/")
    return parts[1] if parts[0].startswith("MixerBlock_") else parts[0]


def _blocks(keys: list[str], part: str) -> str:
    found = sorted({int(k.split("/")[0].split("_")[1]) for k in keys if _group(k) == part
                    and k.startswith("MixerBlock_")})  # fmt: skip
    return f" in blocks {','.join(map(str, found))}" if found else ""


def warm_start(path: str, fresh: dict[str, Any], scope: str) -> dict[str, Any]:
    """Every array the checkpoint shares with the model (same name and shape; with scope
    'backbone' not its head), fresh initialisation for the rest, and a note of both."""
    from mixer_cli.core import report

    flat, source = read_params(path)
    fresh_flat = {k: np.asarray(v) for k, v in flatten(fresh).items()}
    if scope == "backbone":
        flat = {k: v for k, v in flat.items() if not k.startswith("head/")}
    for key, value in fresh_flat.items():
        if key in flat and tuple(flat[key].shape) != value.shape:
            raise CheckpointMismatch(
                f"{source}: {key!r} has shape {tuple(flat[key].shape)} but the model's is "
                f"{value.shape}: the parts it shares with the model do not fit (same variant "
                "and resolution?)"
            )
    shared = [k for k in fresh_flat if k in flat]
    if not any(k.startswith("MixerBlock_") for k in shared):
        raise CheckpointMismatch(f"{source} shares no block with the model: nothing to start from")
    new = [k for k in fresh_flat if k not in flat and not k.startswith("head/")]
    dropped = [k for k in flat if k not in fresh_flat]
    unused = [f"{g}{_blocks(dropped, g)}" for g in dict.fromkeys(_group(k) for k in dropped)]
    merged = {**fresh_flat, **{k: flat[k] for k in shared}}
    import jax

    if jax.process_index() == 0:
        groups: dict[str, int] = {}
        for key in new:
            groups[_group(key)] = groups.get(_group(key), 0) + int(fresh_flat[key].size)
        listed = ", ".join(f"{g}{_blocks(new, g)} ({n:,})" for g, n in groups.items()) or "none"
        report.stderr.print(
            f"warm start from {source}: {len(shared)} arrays shared; new parameters: {listed}"
            + (f"; not used: {', '.join(unused)}" if unused else ""),
            soft_wrap=True,
        )
    return as_tree(merged)


def count(m: ModelConfig, num_classes: int) -> dict[str, Any]:
    from mixer_cli.models.costs import measure

    return measure(build(m, num_classes, 0.0), m.resolution)


FAMILY = Family(
    name="hybrid",
    title="Hybrid Mixer",
    parse=describe,
    build=build,
    patch_size=lambda m: parse_variant(m.variant).patch_size,
    matches=matches,
    load=load,
    warm_start=warm_start,
    count=count,
    token_weights=token_kernels,
    starts_from=("mixer",),
)
