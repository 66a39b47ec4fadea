"""The follow-up architectures the paper's readers proposed, as one generalised Mixer.

Four independent options on top of the Mixer (models/mixer.py), each off by default, so
that with none set this module is the Mixer, parameter tree and function alike:

- ``stem='conv'``: the linear patch projection replaced by n = log2(P) 3x3 stride-2
  convolutions (LayerNorm over channels and GELU after each) whose channels double from
  C / 2^n to C / 2 (at least 16), then a 1x1 convolution to C: a C-vector per token on
  the same (R/P) x (R/P) grid. P must be a power of two (P = 1: the 1x1 alone).
- ``pattern``: one letter per block, ``M`` a Mixer block, ``A`` a pre-norm multi-head
  self-attention block with the same channel MLP (token mixing by attention instead).
- ``token_mixing='sum'``: every Mixer block mixes tokens by
  ``token_mlp(LN x) + g * attention(LN x)``, a learned scalar gate g per block
  initialised to 0 (the block starts as the Mixer's).
- ``conv_after=(i, ...)``: after block i, the tokens viewed as an image with C channels
  go through a residual LayerNorm -> depthwise 3x3 -> GELU -> pointwise 1x1 branch whose
  pointwise layer is zero-initialised (the model starts as the Mixer).

Attention has no notion of where a token is, which token mixing has in its weights: it
gets a fixed 2-D sine-cosine position embedding (as in MAE) added to its input inside
the attention branch only. It has no parameters, so warm starts need nothing new for it
and the gated sum still starts exactly at the Mixer. Heads: C / 64 (ViT's head width),
at least 1, unless ``heads`` is given.

Blocks keep the Mixer's names (``MixerBlock_{i}`` with ``LayerNorm_0``, ``LayerNorm_1``,
``channel_mixing``; ``token_mixing`` where tokens are mixed by an MLP), so a Mixer
checkpoint's arrays line up with every part they share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mixer_cli.core.errors import ConfigError
from mixer_cli.models.isotropic import GELU_FORMS, trunk
from mixer_cli.models.matmul_conv import MatmulConv
from mixer_cli.models.mixer import MixerBlock, PatchEmbedding

Dtype = Any
STEMS = ("linear", "conv")
TOKEN_MIXING = ("mlp", "sum")
BLOCK_LETTERS = {"M": "a Mixer block", "A": "an attention block"}
HEAD_WIDTH = 64


def default_heads(hidden_dim: int) -> int:
    return max(1, hidden_dim // HEAD_WIDTH)


def conv_stem_widths(hidden_dim: int, patch_size: int) -> tuple[int, ...]:
    """Channels of the conv stem's stride-2 layers: C / 2^n, ..., C / 2 (at least 16)."""
    n = int(patch_size).bit_length() - 1
    return tuple(max(16, hidden_dim // 2 ** (n - i)) for i in range(n))


def sincos_2d(side: int, width: int) -> np.ndarray:
    """A fixed [side*side, width] position embedding: sin/cos of y and x, raster order."""
    quarter = width // 4
    if quarter == 0:
        return np.zeros((side * side, width), np.float32)
    omega = 1.0 / 10000 ** (np.arange(quarter, dtype=np.float64) / quarter)
    y, x = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    parts = []
    for coord in (y.reshape(-1), x.reshape(-1)):
        angles = coord[:, None] * omega[None, :]
        parts += [np.sin(angles), np.cos(angles)]
    emb = np.concatenate(parts, axis=1)
    return np.pad(emb, ((0, 0), (0, width - emb.shape[1]))).astype(np.float32)


class ConvStem(nn.Module):
    """Images [B, R, R, 3] -> tokens [B, (R/P)^2, C] through small stride-2 convolutions."""

    features: int
    patch_size: int
    gelu: str = "tanh"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        x = images
        for i, width in enumerate(conv_stem_widths(self.features, self.patch_size)):
            x = MatmulConv(width, strides=2, dtype=self.dtype, name=f"conv_{i}")(x)
            x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name=f"norm_{i}")(x)
            x = nn.gelu(x, approximate=self.gelu == "tanh")
        x = MatmulConv(self.features, size=1, dtype=self.dtype, name="proj")(x)
        b, h, w, c = x.shape
        return x.reshape(b, h * w, c)


class TokenAttention(nn.Module):
    """Multi-head self-attention over the tokens, position embedding added to its input."""

    heads: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, S, C]
        side = math.isqrt(x.shape[1])
        pos = jnp.asarray(sincos_2d(side, x.shape[-1]), x.dtype)
        return nn.MultiHeadDotProductAttention(
            num_heads=self.heads, dtype=self.dtype, name="attention"
        )(x + pos)


class HybridBlock(MixerBlock):
    """A Mixer block whose token mixing is kind 'M' (the token MLP, plus a zero-gated
    attention if `summed`) or 'A' (attention); LayerNorms and channel MLP as the Mixer's."""

    kind: str = "M"
    heads: int = 1
    summed: bool = False

    def mix_tokens(self, y: jax.Array, *, train: bool) -> jax.Array:
        if self.kind == "A":
            return TokenAttention(self.heads, self.dtype, name="token_attention")(y)
        mixed = super().mix_tokens(y, train=train)
        if not self.summed:
            return mixed
        gate = self.param("gate", nn.initializers.zeros_init(), (), jnp.float32)
        attended = TokenAttention(self.heads, self.dtype, name="token_attention")(y)
        return mixed + gate.astype(mixed.dtype) * attended


class GridConv(nn.Module):
    """Residual LN -> depthwise 3x3 -> GELU -> pointwise 1x1 (zero-init) on the token grid."""

    gelu: str = "tanh"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, S, C]
        b, s, c = x.shape
        side = math.isqrt(s)
        y = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm")(x)
        y = y.reshape(b, side, side, c)
        y = MatmulConv(c, depthwise=True, dtype=self.dtype, name="depthwise")(y)
        y = nn.gelu(y, approximate=self.gelu == "tanh")
        zeros = nn.initializers.zeros_init()
        y = MatmulConv(c, size=1, kernel_init=zeros, dtype=self.dtype, name="pointwise")(y)
        return x + y.reshape(b, s, c)


class HybridMixer(nn.Module):
    """A Mixer with the follow-up options; returns ``(logits, out)`` like MlpMixer."""

    patch_size: int
    hidden_dim: int
    num_blocks: int
    tokens_mlp_dim: int
    channels_mlp_dim: int
    num_classes: int = 0
    stem: str = "linear"
    pattern: str = ""  # '' = all Mixer blocks
    token_mixing: str = "mlp"
    conv_after: Sequence[int] = ()
    heads: int = 0  # 0 = default_heads(hidden_dim)
    dropout: float = 0.0
    stoch_depth: float = 0.0
    head_bias_init: float = 0.0
    dtype: Dtype = jnp.float32
    gelu: str = "tanh"

    @nn.compact
    def __call__(
        self, images: jax.Array, *, train: bool = False
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        p, pattern = self.patch_size, self.pattern or "M" * self.num_blocks
        heads = self.heads or default_heads(self.hidden_dim)

        def block(i: int, rate: float) -> Any:
            mixer_block = HybridBlock(
                self.tokens_mlp_dim,
                self.channels_mlp_dim,
                dropout=self.dropout,
                drop_path=rate,
                dtype=self.dtype,
                gelu=self.gelu,
                kind=pattern[i],
                heads=heads,
                summed=self.token_mixing == "sum",
                name=f"MixerBlock_{i}",
            )
            if i not in self.conv_after:
                return mixer_block
            return lambda x, *, train: GridConv(self.gelu, self.dtype, name=f"ConvAfter_{i}")(
                mixer_block(x, train=train)
            )

        if self.stem == "conv":
            stem = ConvStem(self.hidden_dim, p, self.gelu, self.dtype, name="conv_stem")
        else:
            stem = PatchEmbedding(self.hidden_dim, p, self.dtype, name="stem")
        return trunk(
            self,
            images,
            stem=stem,
            block=block,
            final_norm=nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="pre_head_layer_norm"),
            train=train,
        )


def check_options(
    *,
    num_blocks: int,
    hidden_dim: int,
    patch_size: int,
    stem: str,
    pattern: str,
    token_mixing: str,
    conv_after: Sequence[int],
    heads: int,
    gelu: str,
) -> None:
    """Refuse option values the model cannot be built with, naming the key and choices."""
    if stem not in STEMS:
        raise ConfigError(f"model.stem: unknown stem {stem!r}; stems: {', '.join(STEMS)}")
    if stem == "conv" and patch_size & (patch_size - 1):
        below = 1 << (patch_size.bit_length() - 1)
        raise ConfigError(
            f"model.stem: a conv stem reaches patch sizes that are powers of two (stride-2 "
            f"layers), not {patch_size}; try {below} or {below * 2}"
        )
    bad = next((c for c in pattern if c not in BLOCK_LETTERS), None)
    if bad is not None:
        letters = ", ".join(f"{k} ({v})" for k, v in BLOCK_LETTERS.items())
        raise ConfigError(f"model.pattern: unknown block letter {bad!r}; letters: {letters}")
    if pattern and len(pattern) != num_blocks:
        raise ConfigError(
            f"model.pattern {pattern!r} has {len(pattern)} letters but the model has "
            f"{num_blocks} blocks: give one letter per block (e.g. "
            f"{('MMMA' * num_blocks)[:num_blocks]})"
        )
    if token_mixing not in TOKEN_MIXING:
        raise ConfigError(
            f"model.token_mixing: unknown {token_mixing!r}; choices: {', '.join(TOKEN_MIXING)}"
        )
    late = [i for i in conv_after if not 0 <= i < num_blocks]
    if late:
        raise ConfigError(
            f"model.conv_after: block {late[0]} does not exist; blocks are 0 to {num_blocks - 1}"
        )
    attends = "A" in pattern or token_mixing == "sum"
    if attends and hidden_dim % (heads or default_heads(hidden_dim)):
        raise ConfigError(
            f"model.heads: {heads} heads do not divide the width {hidden_dim}; choose a divisor"
        )
    if gelu not in GELU_FORMS:
        raise ConfigError(f"model.gelu: unknown {gelu!r}; choices: {', '.join(GELU_FORMS)}")
