"""The `model` section of a run's config: which family, variant and head, and the options
that the families read.

It is saved flat in every run's config.yaml (`model.KEY`), so runs of earlier versions
resume and load as they were. Which family owns an option, and what a family's options
imply, is said here and in the family's module, not in the config layer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mixer_cli.core.errors import ConfigError

# family name -> the module holding its FAMILY.
FAMILY_MODULES: dict[str, str] = {
    "mixer": "mixer_cli.models.mixer_family",
    "hybrid": "mixer_cli.models.hybrid_family",
    "resnet": "mixer_cli.models.resnet_family",
    "vit": "mixer_cli.models.vit_family",
    "resmlp": "mixer_cli.models.resmlp_family",
    "gmlp": "mixer_cli.models.gmlp_family",
}
FAMILY_NAMES: tuple[str, ...] = tuple(FAMILY_MODULES)
# What a model outputs: class scores, or per-pixel scores (`mixer segment`).
HEADS: tuple[str, ...] = ("classify", "segment")


@dataclass(frozen=True)
class ModelConfig:
    family: str = "mixer"  # a model family of the registry (mixer_cli.models.registry)
    variant: str = "N/2"  # in the family's notation: Mixer, ViT SIZE/PATCH, ResNet{depth}x{factor}
    resolution: int = 8
    dropout: float = 0.0
    stoch_depth: float = 0.0  # drop rate at the last block, growing linearly from 0
    dtype: str = "float32"  # compute dtype; parameters stay float32
    grid_factor: int = 1  # K: token mixing K^2 wider, for K x the pre-training resolution
    # GELU of the mixer, hybrid and vit families: tanh (Google's weights, ours) or exact
    # (timm's weights; read from timm's files, so a fine-tune of one keeps it)
    gelu: str = "tanh"
    # The follow-up architectures (models/hybrid.py; any of them makes the family hybrid):
    stem: str = "linear"  # linear: the patch projection; conv: stride-2 3x3 convolutions
    pattern: str = ""  # one letter per block, M (Mixer) or A (attention); '' = all M
    token_mixing: str = "mlp"  # sum: token MLP + a zero-gated attention in every M block
    conv_after: tuple[int, ...] = ()  # blocks followed by a residual depthwise-conv branch
    heads: int = 0  # attention heads; 0 = C / 64, at least 1
    width: int = 64  # ResNet only: base channels (BiT x1 = 64)
    classifier: str = "token"  # ViT only: the class token's output, or gap (the tokens' mean)
    # ViT only: > 0, a Dense + tanh `pre_logits` layer of this width before the head
    # (vit_jax's representation_size; Google's ImageNet-21k ViTs have one)
    representation_size: int = 0
    init: str | None = None  # a checkpoint: .npz, .safetensors, run dir, released or hf-hub name
    init_scope: str = "all"  # all: every parameter as saved; backbone: a fresh head on it
    head: str = "classify"  # classify: class scores; segment: per-pixel scores (mixer segment)


MODEL_CHOICES = {
    "model.family": FAMILY_NAMES,
    "model.init_scope": ("all", "backbone"),
    "model.head": HEADS,
    "model.dtype": ("float32", "bfloat16"),
    "model.gelu": ("tanh", "exact"),
    "model.stem": ("linear", "conv"),
    "model.token_mixing": ("mlp", "sum"),
    "model.classifier": ("token", "gap"),
}
MODEL_POSITIVE = ("model.resolution", "model.grid_factor", "model.width")
MODEL_NON_NEGATIVE = ("model.heads", "model.representation_size")

# The follow-up architectures' options (models/hybrid.py): any of them set on a Mixer
# makes it the `hybrid` family.
HYBRID_KEYS = ("stem", "pattern", "token_mixing", "conv_after", "heads")
# The ViT's options (models/vit.py): refused on another family.
VIT_KEYS = ("classifier", "representation_size")


def implied_family(m: ModelConfig) -> ModelConfig:
    """A Mixer with any follow-up option set (model.stem, pattern, token_mixing,
    conv_after, heads) is the `hybrid` family; another family refuses them, as a family
    other than `vit` refuses the ViT's options."""
    defaults = ModelConfig()
    vit_given = [k for k in VIT_KEYS if getattr(m, k) != getattr(defaults, k)]
    if vit_given and m.family != "vit":
        raise ConfigError(
            f"model.{vit_given[0]} is an option of ViTs (family vit), not of model.family "
            f"{m.family}"
        )
    given = [k for k in HYBRID_KEYS if getattr(m, k) != getattr(defaults, k)]
    if not given or m.family == "hybrid":
        return m
    if m.family != "mixer":
        raise ConfigError(
            f"model.{given[0]} is an option of Mixers (families mixer, hybrid), not of "
            f"model.family {m.family}"
        )
    return dataclasses.replace(m, family="hybrid")
