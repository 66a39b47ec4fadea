"""The Vision Transformer (Dosovitskiy et al., 2021) in Flax linen, with Google's parameter tree.

Names and shapes are those of the released ViT .npz files (vit_jax's `models_vit.py`):
``embedding`` (the P x P patch projection, kernel [P, P, 3, D]), ``cls`` [1, 1, D] (with
the `token` classifier), ``Transformer/posembed_input/pos_embedding`` [1, (1 +) N, D],
``Transformer/encoderblock_{i}/{LayerNorm_0, MultiHeadDotProductAttention_1, LayerNorm_2,
MlpBlock_3/Dense_{0,1}}`` (the pre-linen names the released files carry; query, key and
value kernels [D, heads, D/heads], out [heads, D/heads, D]), ``Transformer/encoder_norm``,
optional ``pre_logits`` (Dense + tanh) and ``head``. Numerics as vit_jax: LayerNorm epsilon
1e-6 and, by default, Flax's GELU (the tanh approximation); ``gelu='exact'`` runs timm's
weights as timm does (its erf GELU). Like the other families it returns
``(logits, out)`` with ``out['pre_logits']`` and ``out['tokens']`` (the patch tokens after
the final LayerNorm, [B, N, D]: what a dense head reads). No jit, I/O or logging here.

Sizes (width D, MLP width, heads, layers) are the paper's Ti/S/B/L/H plus a nano size
N for CPU work; any size goes with any patch size (``B/16``), as for the Mixer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mixer_cli.core.errors import ConfigError
from mixer_cli.models.isotropic import (
    check_tiles,
    checked_module,
    pooled_head,
    run_blocks,
)
from mixer_cli.models.mixer import PatchEmbedding
from mixer_cli.models.variants import check_patch_grid

Dtype = Any
CLASSIFIERS: tuple[str, ...] = ("token", "gap")  # the class token's output, or the tokens' mean


@dataclass(frozen=True)
class ViTSpec:
    """A ViT architecture without its head: a size and a patch size."""

    name: str
    patch_size: int
    num_blocks: int  # encoder blocks (layers)
    hidden_dim: int  # D
    mlp_dim: int
    num_heads: int

    def check_resolution(self, resolution: int) -> None:
        """Refuse resolutions the patch grid cannot tile, suggesting the nearest valid ones."""
        check_patch_grid(resolution, self.patch_size, f"ViT-{self.name}")


# (layers, D, MLP width, heads): the ViT/DeiT/AugReg sizes; N is ours, for CPUs.
SIZES: dict[str, tuple[int, int, int, int]] = {
    "N": (4, 128, 512, 2),
    "Ti": (12, 192, 768, 3),
    "S": (12, 384, 1536, 6),
    "B": (12, 768, 3072, 12),
    "L": (24, 1024, 4096, 16),
    "H": (32, 1280, 5120, 16),
}
# What `mixer info --family vit` lists: our CPU size first, then the released ones.
LISTED_VARIANTS: tuple[str, ...] = (
    "N/16",
    "Ti/16",
    "S/32",
    "S/16",
    "B/32",
    "B/16",
    "L/32",
    "L/16",
    "H/14",
)
_VARIANT_RE = re.compile(r"^(?:vit[-_])?([A-Za-z]+)[/_](\d+)$", re.IGNORECASE)
# An architecture outside the table, as checkpoints define them: LAYERSxD-MLP-HEADS/PATCH.
_CUSTOM_RE = re.compile(r"^(\d+)x(\d+)-(\d+)-(\d+)/(\d+)$")


def parse_vit(variant: str) -> ViTSpec:
    """``'B/16'`` (also ``b_16``, ``ViT-B_16``) or ``LAYERSxD-MLP-HEADS/PATCH``
    (``'2x16-32-2/4'``) -> its ViTSpec."""
    custom = _CUSTOM_RE.match(variant.strip())
    if custom and all(int(n) > 0 for n in custom.groups()):
        layers, width, mlp, heads, patch = (int(n) for n in custom.groups())
        return spec_from_dims(patch, layers, width, mlp, heads)
    match = _VARIANT_RE.match(variant.strip())
    sizes = {name.lower(): name for name in SIZES}
    if not match or match.group(1).lower() not in sizes or int(match.group(2)) <= 0:
        raise ConfigError(
            f"unknown ViT variant {variant!r}: expected SIZE/PATCH with SIZE one of "
            f"{', '.join(SIZES)} and PATCH a positive integer (e.g. B/16, Ti/16, N/4), or "
            "LAYERSxD-MLP-HEADS/PATCH for another architecture (e.g. 2x16-32-2/4)"
        )
    return spec_from_dims(int(match.group(2)), *SIZES[sizes[match.group(1).lower()]])


def spec_from_dims(patch: int, layers: int, width: int, mlp: int, heads: int) -> ViTSpec:
    """A spec from raw dimensions (e.g. read off a checkpoint), named after its size if known."""
    if width % heads:
        raise ConfigError(f"ViT width {width} is not divisible by its {heads} heads")
    size = next((name for name, dims in SIZES.items() if dims == (layers, width, mlp, heads)), None)
    name = f"{size}/{patch}" if size else f"{layers}x{width}-{mlp}-{heads}/{patch}"
    return ViTSpec(name, patch, layers, width, mlp, heads)


class MlpBlock(nn.Module):
    """Dense -> GELU -> Dense (vit_jax's: Xavier-uniform kernels, biases N(0, 1e-6); the
    Mixer's MlpBlock computes the same function with other initialisers)."""

    mlp_dim: int
    dropout: float = 0.0
    dtype: Dtype = jnp.float32
    gelu: str = "tanh"  # one of GELU_FORMS

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        init = {
            "kernel_init": nn.initializers.xavier_uniform(),
            "bias_init": nn.initializers.normal(stddev=1e-6),
        }
        y = nn.Dense(self.mlp_dim, dtype=self.dtype, name="Dense_0", **init)(x)
        y = nn.gelu(y, approximate=self.gelu == "tanh")
        y = nn.Dropout(self.dropout, deterministic=not train)(y)
        y = nn.Dense(x.shape[-1], dtype=self.dtype, name="Dense_1", **init)(y)
        return nn.Dropout(self.dropout, deterministic=not train)(y)


class EncoderBlock(nn.Module):
    """Pre-LN self-attention and MLP residuals, under the released files' names."""

    mlp_dim: int
    num_heads: int
    dropout: float = 0.0
    drop_path: float = 0.0  # stochastic depth: probability of skipping each residual branch
    dtype: Dtype = jnp.float32
    gelu: str = "tanh"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:  # x: [B, T, D]
        drop_path = nn.Dropout(self.drop_path, broadcast_dims=(1, 2), deterministic=not train)
        y = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="LayerNorm_0")(x)
        y = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads,
            dtype=self.dtype,
            kernel_init=nn.initializers.xavier_uniform(),
            deterministic=True,
            name="MultiHeadDotProductAttention_1",
        )(y)
        x = x + drop_path(nn.Dropout(self.dropout, deterministic=not train)(y))
        y = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="LayerNorm_2")(x)
        y = MlpBlock(self.mlp_dim, self.dropout, self.dtype, self.gelu, name="MlpBlock_3")(
            y, train=train
        )
        return x + drop_path(y)


class AddPositionEmbs(nn.Module):
    """Learned position embeddings [1, T, D] added to the tokens (BERT's N(0, 0.02) init)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        pos = self.param(
            "pos_embedding", nn.initializers.normal(stddev=0.02), (1, *x.shape[1:]), jnp.float32
        )
        return x + pos.astype(x.dtype)


class Encoder(nn.Module):
    """Position embedding, the blocks, the final LayerNorm: vit_jax's `Transformer`."""

    num_blocks: int
    mlp_dim: int
    num_heads: int
    dropout: float = 0.0
    stoch_depth: float = 0.0
    dtype: Dtype = jnp.float32
    gelu: str = "tanh"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> tuple[jax.Array, list[jax.Array]]:
        x = AddPositionEmbs(name="posembed_input")(x)
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        x, blocks = run_blocks(
            x,
            lambda i, rate: EncoderBlock(
                self.mlp_dim,
                self.num_heads,
                self.dropout,
                rate,
                self.dtype,
                self.gelu,
                name=f"encoderblock_{i}",
            ),
            self.num_blocks,
            self.stoch_depth,
            train=train,
        )
        return nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="encoder_norm")(x), blocks


class VisionTransformer(nn.Module):
    """ViT. Returns ``(logits, out)``: ``out`` has ``stem`` (patch embeddings [B, N, D]),
    ``block_{i}``, ``tokens`` ([B, N, D], the class token left out), ``pre_logits`` ([B, D]
    or [B, representation_size]) and ``logits``. With ``num_classes=0`` there is no head."""

    patch_size: int
    hidden_dim: int
    num_blocks: int
    mlp_dim: int
    num_heads: int
    num_classes: int = 0
    classifier: str = "token"  # one of CLASSIFIERS
    representation_size: int = 0  # > 0: a Dense + tanh `pre_logits` layer of this width
    dropout: float = 0.0
    stoch_depth: float = 0.0  # drop rate of the last block; grows linearly from 0 at the first
    head_bias_init: float = 0.0
    dtype: Dtype = jnp.float32  # compute dtype; parameters stay float32
    gelu: str = "tanh"  # one of GELU_FORMS: the form the weights were trained with

    @nn.compact
    def __call__(
        self, images: jax.Array, *, train: bool = False
    ) -> tuple[jax.Array, dict[str, jax.Array]]:  # images: [B, H, W, 3]
        p = self.patch_size
        check_tiles(images, p)
        out: dict[str, jax.Array] = {}
        x = PatchEmbedding(self.hidden_dim, p, self.dtype, name="embedding")(images)  # [B, N, D]
        out["stem"] = x
        token = self.classifier == "token"
        if token:
            cls = self.param("cls", nn.initializers.zeros, (1, 1, self.hidden_dim), jnp.float32)
            x = jnp.concatenate([jnp.tile(cls.astype(x.dtype), (x.shape[0], 1, 1)), x], axis=1)
        x, blocks = Encoder(
            self.num_blocks,
            self.mlp_dim,
            self.num_heads,
            self.dropout,
            self.stoch_depth,
            self.dtype,
            self.gelu,
            name="Transformer",
        )(x, train=train)  # [B, (1 +) N, D]
        out.update({f"block_{i}": block for i, block in enumerate(blocks)})
        out["tokens"] = x[:, 1:] if token else x
        x = x.astype(jnp.float32)
        x = x[:, 0] if token else jnp.mean(x, axis=1)
        if self.representation_size:
            x = jnp.tanh(nn.Dense(self.representation_size, name="pre_logits")(x))
        logits = pooled_head(
            x, out, num_classes=self.num_classes, bias_init=self.head_bias_init, dtype=self.dtype
        )
        return logits, out


def create_vit(
    spec: ViTSpec, *, classifier: str = "token", representation_size: int = 0, **options: Any
) -> VisionTransformer:
    """A VisionTransformer of `spec` with its classifier (and `pre_logits` width); `options`
    are every family's (`isotropic.checked_module`), refused if no model can be built."""
    if classifier not in CLASSIFIERS:
        raise ConfigError(
            f"model.classifier: unknown {classifier!r}; choices: {', '.join(CLASSIFIERS)}"
        )
    dims = {
        "patch_size": spec.patch_size,
        "hidden_dim": spec.hidden_dim,
        "num_blocks": spec.num_blocks,
        "mlp_dim": spec.mlp_dim,
        "num_heads": spec.num_heads,
        "classifier": classifier,
        "representation_size": representation_size,
    }
    return checked_module(VisionTransformer, dims, **options)
