"""The MLP-Mixer in Flax linen, with the official parameter tree.

Parameter names and shapes match Google's released checkpoints
(``stem``, ``MixerBlock_{i}/{LayerNorm_0,token_mixing,LayerNorm_1,channel_mixing}``,
``pre_head_layer_norm``, ``head``), and the numerics match too: LayerNorm epsilon 1e-6
and, by default, the tanh-approximated GELU the official code trains with (``gelu='exact'``
is the erf form timm runs its weights with; each set of weights reproduces its logits only
with its own). This module only describes the math: no jit, sharding, I/O or logging.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mixer_cli.core.errors import ConfigError
from mixer_cli.models.isotropic import check_options, compute_dtype, trunk
from mixer_cli.models.variants import MixerSpec, parse_variant

Dtype = Any


class PatchEmbedding(nn.Module):
    """The stem: each PxP patch -> C features; tokens [B, S, C] in raster order.

    The official parameters of a PxP/stride-P convolution (kernel [P, P, 3, C], HWIO;
    same names and initialisation as nn.Conv), computed as patches x kernel: one plain
    matmul forward and backward. As a convolution, XLA's CPU backend spent about 210 ms
    of a 2.4 s S/32 train step (batch 32) on the stem; this saves about 195 ms of it
    (profile in benchmarks/RESULTS.md).
    """

    features: int
    patch_size: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        p, (b, h, w, c) = self.patch_size, images.shape
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (p, p, c, self.features), jnp.float32
        )
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        images, kernel, bias = nn.dtypes.promote_dtype(images, kernel, bias, dtype=self.dtype)
        patches = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
        patches = patches.reshape(b, (h // p) * (w // p), p * p * c)  # rows in (y, x, rgb) order
        return patches @ kernel.reshape(p * p * c, self.features) + bias


class TokenDense(nn.Module):
    """A Dense layer across tokens, [B, S, C] -> [B, F, C], with the official kernel [S, F].

    One batched matmul with the kernel broadcast over the batch, so neither the
    activations nor their gradients are transposed to put the token axis last (the
    S/32 gradient 5-30% faster on a CPU than swapaxes + Dense in alternating runs:
    benchmarks/token_mixing.py). Same parameters, names and initialisation as nn.Dense
    (other initialisers for gMLP's spatial gate, models/gmlp.py).
    """

    features: int
    dtype: Dtype = jnp.float32
    kernel_init: Any = nn.initializers.lecun_normal()
    bias_init: Any = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, (x.shape[1], self.features), jnp.float32)
        bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        weights = jnp.broadcast_to(kernel.T, (x.shape[0], *kernel.T.shape))  # [B, F, S]
        y = jax.lax.dot_general(weights, x, (((2,), (1,)), ((0,), (0,))))  # [B, F, C]
        return y + bias[:, None]


class MlpBlock(nn.Module):
    """Dense -> GELU -> Dense back to the input width: over channels (the last axis) or,
    with `across_tokens`, over the token axis of [B, S, C] (TokenDense, no transposes)."""

    mlp_dim: int
    dropout: float = 0.0
    dtype: Dtype = jnp.float32
    across_tokens: bool = False
    gelu: str = "tanh"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        dense, width = (TokenDense, x.shape[1]) if self.across_tokens else (nn.Dense, x.shape[-1])
        y = dense(self.mlp_dim, dtype=self.dtype, name="Dense_0")(x)
        y = nn.gelu(y, approximate=self.gelu == "tanh")
        y = nn.Dropout(self.dropout, deterministic=not train)(y)
        y = dense(width, dtype=self.dtype, name="Dense_1")(y)
        return nn.Dropout(self.dropout, deterministic=not train)(y)


class MixerBlock(nn.Module):
    """Token mixing (an MLP across the S axis) then channel mixing (across C), pre-LN residuals."""

    tokens_mlp_dim: int
    channels_mlp_dim: int
    dropout: float = 0.0
    drop_path: float = 0.0  # stochastic depth: probability of skipping each residual branch
    dtype: Dtype = jnp.float32
    gelu: str = "tanh"

    def mix_tokens(self, y: jax.Array, *, train: bool) -> jax.Array:
        """The token-mixing branch on LN(x); the follow-up blocks (models/hybrid.py) swap it."""
        return MlpBlock(
            self.tokens_mlp_dim,
            self.dropout,
            self.dtype,
            across_tokens=True,
            gelu=self.gelu,
            name="token_mixing",
        )(y, train=train)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:  # x: [B, S, C]
        # Per-example branch dropping, rescaled by 1/(1-p) so evaluation needs no change.
        drop_path = nn.Dropout(self.drop_path, broadcast_dims=(1, 2), deterministic=not train)
        y = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="LayerNorm_0")(x)
        x = x + drop_path(self.mix_tokens(y, train=train))
        y = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="LayerNorm_1")(x)
        y = MlpBlock(
            self.channels_mlp_dim, self.dropout, self.dtype, gelu=self.gelu, name="channel_mixing"
        )(y, train=train)
        return x + drop_path(y)


class MlpMixer(nn.Module):
    """MLP-Mixer. Returns ``(logits, out)``; ``out`` holds named intermediates.

    ``out`` has ``stem`` (tokens [B, S, C]), ``block_{i}``, ``tokens`` (the final tokens
    after the pre-head LayerNorm, [B, S, C]), ``pre_logits`` ([B, C], their mean: the
    features few-shot evaluation uses) and ``logits``. With ``num_classes=0`` there is
    no head and ``logits`` are the pre_logits.
    """

    patch_size: int
    hidden_dim: int
    num_blocks: int
    tokens_mlp_dim: int
    channels_mlp_dim: int
    num_classes: int = 0
    dropout: float = 0.0
    stoch_depth: float = 0.0  # drop rate of the last block; grows linearly from 0 at the first
    head_bias_init: float = 0.0
    dtype: Dtype = jnp.float32  # compute dtype; parameters stay float32
    gelu: str = "tanh"  # one of isotropic.GELU_FORMS: the form the weights were trained with

    @nn.compact
    def __call__(
        self, images: jax.Array, *, train: bool = False
    ) -> tuple[jax.Array, dict[str, jax.Array]]:  # images: [B, H, W, 3]
        return trunk(
            self,
            images,
            stem=PatchEmbedding(self.hidden_dim, self.patch_size, self.dtype, name="stem"),
            block=lambda i, rate: MixerBlock(
                self.tokens_mlp_dim,
                self.channels_mlp_dim,
                self.dropout,
                rate,
                self.dtype,
                self.gelu,
            ),
            final_norm=nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="pre_head_layer_norm"),
            train=train,
        )


def create_model(
    variant: str | MixerSpec,
    *,
    num_classes: int = 0,
    dropout: float = 0.0,
    stoch_depth: float = 0.0,
    head_bias_init: float = 0.0,
    dtype: str | Dtype = "float32",
    grid_factor: int = 1,
    gelu: str = "tanh",
) -> MlpMixer:
    """Build an MlpMixer from a variant name (``'B/16'``) or spec, validating the options.

    ``grid_factor`` K > 1 is a model adapted to K times its pre-training resolution
    (``checkpoints.adapt_resolution``): its token-mixing MLP is K^2 times as wide.
    """
    spec = parse_variant(variant) if isinstance(variant, str) else variant
    if grid_factor < 1:
        raise ConfigError(f"grid factor must be a positive integer, got {grid_factor}")
    check_options(num_classes=num_classes, dropout=dropout, stoch_depth=stoch_depth, gelu=gelu)
    return MlpMixer(
        patch_size=spec.patch_size,
        hidden_dim=spec.hidden_dim,
        num_blocks=spec.num_blocks,
        tokens_mlp_dim=spec.tokens_mlp_dim * grid_factor**2,
        channels_mlp_dim=spec.channels_mlp_dim,
        num_classes=num_classes,
        dropout=dropout,
        stoch_depth=stoch_depth,
        head_bias_init=head_bias_init,
        dtype=compute_dtype(dtype),
        gelu=gelu,
    )


def abstract_params(model: MlpMixer, resolution: int) -> dict[str, Any]:
    """The parameter tree as shapes only (no memory, no compute), for counting and checks."""
    images = jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32)
    return jax.eval_shape(model.init, jax.random.key(0), images)["params"]


def count_params(params: Any) -> int:
    """Total number of scalars in a (possibly abstract) parameter tree."""
    return sum(int(leaf.size) for leaf in jax.tree_util.tree_leaves(params))
