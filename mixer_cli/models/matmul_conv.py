"""Convolutions computed as matmuls of shifted views, with nn.Conv's parameters.

XLA's CPU convolutions ran many times slower inside the engine's multi-step programs (a
scan over train steps) than alone: 6x for a depthwise 3x3; the ResNet baseline's train
step ran 11x faster at 16 px as matmuls (benchmarks/RESULTS.md). The same function as
k*k shifted views of the padded input, concatenated and multiplied by the kernel
reshaped to [k*k*in, out], is a plain matmul, which XLA runs at full speed on every
backend. Parameters have nn.Conv's names and shapes ([k, k, in, out]; depthwise
[k, k, 1, C]), so checkpoints do not change.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


def windows(x: jax.Array, size: int, stride: int) -> list[jax.Array]:
    """The size^2 shifted views of a window (padding size // 2) at `stride`, in kernel
    (dy, dx) order: what a convolution multiplies by each of its taps."""
    b, h, w, c = x.shape
    pad = size // 2
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    oh, ow = -(-h // stride), -(-w // stride)
    return [
        jax.lax.slice(
            padded, (0, dy, dx, 0), (b, dy + (oh - 1) * stride + 1, dx + (ow - 1) * stride + 1, c),
            (1, stride, stride, 1),
        )
        for dy in range(size)
        for dx in range(size)
    ]  # fmt: skip


class MatmulConv(nn.Module):
    """nn.Conv(features, (size, size), strides, padding=size // 2, use_bias) with the same
    parameters, computed from the shifted views: one matmul, or per-channel multiply-adds."""

    features: int
    size: int = 3
    strides: int = 1
    depthwise: bool = False  # one filter per channel (feature_group_count = channels)
    use_bias: bool = True
    kernel_init: Any = nn.initializers.lecun_normal()
    dtype: Dtype = jnp.float32

    def transform_kernel(self, kernel: jax.Array) -> jax.Array:
        """The kernel as the convolution uses it (a subclass may reparametrise it)."""
        return kernel

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c, k = x.shape[-1], self.size
        shape = (k, k, 1, c) if self.depthwise else (k, k, c, self.features)
        kernel = self.transform_kernel(self.param("kernel", self.kernel_init, shape, jnp.float32))
        x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
        views = windows(x, k, self.strides)
        if self.depthwise:
            taps = kernel.reshape(k * k, c)
            y = sum(view * taps[i] for i, view in enumerate(views))
        else:
            stacked = views[0] if k == 1 else jnp.concatenate(views, axis=-1)
            y = stacked @ kernel.reshape(k * k * c, self.features)
        if not self.use_bias:
            return y
        bias = self.param("bias", nn.initializers.zeros_init(), (shape[-1],), jnp.float32)
        return y + bias.astype(y.dtype)
