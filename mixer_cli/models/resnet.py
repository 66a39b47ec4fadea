"""The ResNet baseline of the shuffle experiment: BiT's ResNet-v2 in Flax linen.

Pre-activation bottleneck units with GroupNorm and weight-standardised convolutions
(Kolesnikov et al., "Big Transfer"), the family the paper's ResNet50x1 baseline
comes from. No BatchNorm, so the model is a pure function of its parameters and
trains with the same step as the Mixer. Same interface as `MlpMixer`: returns
``(logits, out)`` with ``out['pre_logits']``. The stem follows the input size: the
ImageNet stem (7x7 stride 2 + max-pool) from 64 px up, a 3x3 stride-1 stem below,
so that 8-32 px images are not pooled away.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mixer_cli.core.errors import ConfigError
from mixer_cli.models.head import classifier_head
from mixer_cli.models.matmul_conv import MatmulConv

Dtype = Any

# Bottleneck units per stage for the depths we name ResNet-{depth}x{width factor}.
DEPTHS: dict[int, tuple[int, ...]] = {
    14: (1, 1, 1, 1),
    26: (2, 2, 2, 2),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
}
SMALL_INPUT = 64  # below this resolution: the 3x3 stride-1 stem, no max-pool
_NAME_RE = re.compile(r"^(?:resnet|r)[-_]?(\d+)(?:x(\d+))?$", re.IGNORECASE)


@dataclass(frozen=True)
class ResNetSpec:
    name: str
    stage_sizes: tuple[int, ...]
    width: int  # channels of the first stage's bottleneck (64 for x1)


def parse_resnet(name: str, width: int = 64) -> ResNetSpec:
    """``'ResNet50x1'`` / ``'R26'``: depth from the name; ``width`` sets the base channels
    (the x-factor multiplies it)."""
    match = _NAME_RE.match(name.strip())
    if not match or int(match.group(1)) not in DEPTHS:
        raise ConfigError(
            f"unknown ResNet {name!r}: expected ResNet{{depth}}[x{{factor}}] with depth one "
            f"of {', '.join(map(str, DEPTHS))} (e.g. ResNet50x1)"
        )
    depth, factor = int(match.group(1)), int(match.group(2) or 1)
    if width <= 0:
        raise ConfigError(f"ResNet width must be positive, got {width}")
    channels = [width * factor * 2**stage * k for stage in range(4) for k in (1, 4)]
    if odd := [c for c in channels if c > 32 and c % 32]:  # GroupNorm's min(32, C) groups
        raise ConfigError(
            f"ResNet width {width * factor} makes {odd[0]} channels, which GroupNorm's 32 "
            "groups do not divide: use a power of two below 32 or a multiple of 32"
        )
    label = f"ResNet{depth}x{factor}" if width == 64 else f"ResNet{depth} (width {width * factor})"
    return ResNetSpec(label, DEPTHS[depth], width * factor)


class StdConv(MatmulConv):
    """A bias-free convolution whose kernel is standardised (zero mean, unit variance per
    output), computed as a matmul (models/matmul_conv.py: 11x faster train steps at 16 px)."""

    use_bias: bool = False

    def transform_kernel(self, kernel: jax.Array) -> jax.Array:
        mean = jnp.mean(kernel, axis=(0, 1, 2), keepdims=True)
        var = jnp.var(kernel, axis=(0, 1, 2), keepdims=True)
        return (kernel - mean) / jnp.sqrt(var + 1e-10)


def _norm(channels: int, dtype: Dtype, name: str | None = None) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=min(32, channels), dtype=dtype, name=name)


class BottleneckUnit(nn.Module):
    """Pre-activation bottleneck: GN-ReLU-1x1, GN-ReLU-3x3(stride), GN-ReLU-1x1, + shortcut."""

    features: int  # bottleneck width; the unit outputs 4x this
    stride: int = 1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        out = 4 * self.features
        y = nn.relu(_norm(x.shape[-1], self.dtype, "gn1")(x))
        shortcut = x
        if self.stride != 1 or x.shape[-1] != out:
            shortcut = StdConv(out, 1, self.stride, dtype=self.dtype, name="proj")(y)
        y = StdConv(self.features, 1, dtype=self.dtype, name="conv1")(y)
        y = nn.relu(_norm(self.features, self.dtype, "gn2")(y))
        y = StdConv(self.features, 3, self.stride, dtype=self.dtype, name="conv2")(y)
        y = nn.relu(_norm(self.features, self.dtype, "gn3")(y))
        y = StdConv(out, 1, dtype=self.dtype, name="conv3")(y)
        return y + shortcut


class ResNet(nn.Module):
    """BiT ResNet-v2. Returns ``(logits, out)`` like `MlpMixer` (``out['pre_logits']``)."""

    stage_sizes: Sequence[int]
    width: int = 64
    num_classes: int = 0
    head_bias_init: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, images: jax.Array, *, train: bool = False
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        del train  # no dropout, no batch statistics: training and evaluation agree
        out: dict[str, jax.Array] = {}
        x = images.astype(self.dtype)
        if images.shape[1] >= SMALL_INPUT:
            x = StdConv(self.width, 7, 2, dtype=self.dtype, name="stem")(x)
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        else:
            x = StdConv(self.width, 3, dtype=self.dtype, name="stem")(x)
        out["stem"] = x
        for stage, units in enumerate(self.stage_sizes):
            for unit in range(units):
                stride = 2 if stage > 0 and unit == 0 else 1
                x = BottleneckUnit(
                    self.width * 2**stage, stride, self.dtype, name=f"stage{stage}_unit{unit}"
                )(x)
            out[f"stage_{stage}"] = x
        x = nn.relu(_norm(x.shape[-1], self.dtype, "pre_head_norm")(x))
        x = out["pre_logits"] = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        logits = classifier_head(
            x, out, num_classes=self.num_classes, bias_init=self.head_bias_init
        )
        return logits, out


def create_resnet(
    name: str,
    *,
    width: int = 64,
    num_classes: int = 0,
    head_bias_init: float = 0.0,
    dtype: Dtype = jnp.float32,
) -> ResNet:
    spec = parse_resnet(name, width)
    return ResNet(spec.stage_sizes, spec.width, num_classes, head_bias_init, dtype)
