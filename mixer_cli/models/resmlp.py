"""ResMLP (Touvron et al., 2021) in Flax linen: timm's MlpMixer with ResBlock and Affine.

Each block: tokens mixed by one linear layer across the patches (no non-linearity), then
channels by a GELU MLP of width 4D; each branch takes an Affine `alpha * x + beta` of its
input (no statistics: no LayerNorm) and is scaled per channel by a learned layer scale
before the residual sum. An Affine before the mean over tokens, then the head. No class
token, no position embedding.

Parameter names (our .npz files hold these; `resmlp_timm.py` maps timm's and Facebook's):

    stem/{kernel [P, P, 3, D], bias [D]}               the patch embedding (as the Mixer's)
    ResBlock_{i}/affine_tokens/{scale, bias} [D]       timm norm1.{alpha, beta}
    ResBlock_{i}/token_mixing/{kernel [S, S], bias [S]}   timm linear_tokens ([in, out])
    ResBlock_{i}/layer_scale_tokens [D]                timm ls1 (Facebook gamma_1)
    ResBlock_{i}/affine_channels/{scale, bias} [D]     timm norm2
    ResBlock_{i}/channel_mixing/Dense_{0,1}/{kernel, bias}   timm mlp_channels.fc1, fc2
    ResBlock_{i}/layer_scale_channels [D]              timm ls2 (Facebook gamma_2)
    pre_head_affine/{scale, bias} [D]                  timm norm
    head/{kernel [D, classes], bias}

Variants are the paper's SIZE/PATCH (``S12/16``, ``S24/16``, ``S36/16``, ``B24/8``; the
paper calls them ResMLP-S12 ... ResMLP-B24/8), timm's names (``resmlp_12_224``,
``resmlp_big_24_224``), or ``LAYERSxD/PATCH`` (``LAYERSxD-MLP/PATCH`` for a channel MLP
other than 4D) for any other, e.g. a tiny CPU model ``2x16/4``. The layer scales start at
the value the paper gives for the depth (Facebook's code: 0.1 for 12 blocks, 1e-5 for 24,
1e-6 for 36 and for B24; another depth takes CaiT's rule, 0.1 up to 18 blocks, 1e-5 up to
24, 1e-6 beyond). timm 1.0's ``resmlp_12_224`` leaves timm's default 1e-4 instead: a
difference of initialisation only, no checkpoint reads differently.

Returns ``(logits, out)`` as the other families: ``stem``, ``block_{i}``, ``tokens`` (after
the final Affine, [B, S, D]), ``pre_logits`` ([B, D], their mean), ``logits``. No jit, I/O
or logging here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mixer_cli.core.errors import ConfigError
from mixer_cli.models.isotropic import checked_module, trunk
from mixer_cli.models.mixer import MlpBlock, PatchEmbedding, TokenDense
from mixer_cli.models.variants import check_patch_grid

Dtype = Any
MLP_RATIO = 4  # the channel MLP's width over D, in every ResMLP


@dataclass(frozen=True)
class ResMLPSpec:
    """A ResMLP architecture without its head: depth, width, patch size, layer-scale init."""

    name: str
    patch_size: int
    num_blocks: int
    hidden_dim: int  # D
    mlp_dim: int  # the channel MLP's hidden width (4D in the paper's sizes)
    init_values: float  # the layer scales' initial value

    def check_resolution(self, resolution: int) -> None:
        """Refuse resolutions the patch grid cannot tile, suggesting the nearest valid ones."""
        check_patch_grid(resolution, self.patch_size, f"ResMLP-{self.name}")


# size -> (blocks, D, layer-scale init), as Facebook's resmlp_models.py builds them.
SIZES: dict[str, tuple[int, int, float]] = {
    "S12": (12, 384, 0.1),
    "S24": (24, 384, 1e-5),
    "S36": (36, 384, 1e-6),
    "B24": (24, 768, 1e-6),
}
# What `mixer info --family resmlp` lists: the paper's four (timm's resmlp_*_224).
LISTED_VARIANTS: tuple[str, ...] = ("S12/16", "S24/16", "S36/16", "B24/8")
# timm's model names -> ours (their 224 is the resolution, not the patch).
TIMM_NAMES: dict[str, str] = {
    "resmlp_12_224": "S12/16",
    "resmlp_24_224": "S24/16",
    "resmlp_36_224": "S36/16",
    "resmlp_big_24_224": "B24/8",
}
# S12/16 (also ResMLP-S12/16, s12_16), or the depth alone for the D=384 sizes (12/16),
# `big-24/8` for B24/8.
_VARIANT_RE = re.compile(r"^(?:resmlp[-_])?(s|b|big[-_]?)?(\d+)[/_](\d+)$", re.IGNORECASE)
_CUSTOM_RE = re.compile(r"^(\d+)x(\d+)(?:-(\d+))?/(\d+)$")


def parse_resmlp(variant: str) -> ResMLPSpec:
    """``'S12/16'`` (also ``12/16``, ``big-24/8``, ``ResMLP-B24/8``, timm's
    ``resmlp_12_224``) or ``LAYERSxD[-MLP]/PATCH`` (``'2x16/4'``) -> its ResMLPSpec."""
    text = variant.strip()
    text = TIMM_NAMES.get(text.lower(), text)
    custom = _CUSTOM_RE.match(text)
    if custom and all(int(n) > 0 for n in custom.groups() if n is not None):
        layers, width, mlp, patch = custom.groups()
        mlp_dim = int(mlp) if mlp else MLP_RATIO * int(width)
        return spec_from_dims(int(patch), int(layers), int(width), mlp_dim)
    match = _VARIANT_RE.match(text)
    size = None
    if match and int(match.group(3)) > 0:
        letter = (match.group(1) or "s")[0].upper()
        size = f"{letter}{int(match.group(2))}"
    if size not in SIZES:
        raise ConfigError(
            f"unknown ResMLP variant {variant!r}: expected SIZE/PATCH with SIZE one of "
            f"{', '.join(SIZES)} and PATCH a positive integer (e.g. {', '.join(LISTED_VARIANTS)}; "
            f"also 12/16, big-24/8, {', '.join(TIMM_NAMES)}), or LAYERSxD/PATCH for another "
            "architecture (e.g. 2x16/4; LAYERSxD-MLP/PATCH for a channel MLP other than 4D)"
        )
    layers, width, init = SIZES[size]
    patch = int(match.group(3))
    return ResMLPSpec(f"{size}/{patch}", patch, layers, width, MLP_RATIO * width, init)


def spec_from_dims(patch: int, layers: int, width: int, mlp_dim: int) -> ResMLPSpec:
    """A spec from raw dimensions (e.g. read off a checkpoint), named after its size if known."""
    size = next(
        (n for n, (b, d, _) in SIZES.items() if (b, d, MLP_RATIO * d) == (layers, width, mlp_dim)),
        None,
    )
    if size is not None:
        return ResMLPSpec(f"{size}/{patch}", patch, layers, width, mlp_dim, SIZES[size][2])
    mlp = "" if mlp_dim == MLP_RATIO * width else f"-{mlp_dim}"
    return ResMLPSpec(
        f"{layers}x{width}{mlp}/{patch}", patch, layers, width, mlp_dim, layer_scale_init(layers)
    )


def layer_scale_init(layers: int) -> float:
    """CaiT's rule for the layer scales' start by depth (ResMLP's paper follows it)."""
    return 0.1 if layers <= 18 else 1e-5 if layers <= 24 else 1e-6


class Affine(nn.Module):
    """x * scale + bias per channel (timm's Affine: alpha * x + beta)."""

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.initializers.ones_init(), (x.shape[-1],), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (x.shape[-1],), jnp.float32)
        x, scale, bias = nn.dtypes.promote_dtype(x, scale, bias, dtype=self.dtype)
        return x * scale + bias


class ResBlock(nn.Module):
    """Affine -> linear across tokens -> layer scale, then Affine -> channel MLP -> layer
    scale, each a residual branch (timm's ResBlock)."""

    mlp_dim: int
    init_values: float
    dropout: float = 0.0
    drop_path: float = 0.0  # stochastic depth: probability of skipping each residual branch
    dtype: Dtype = jnp.float32
    gelu: str = "tanh"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:  # x: [B, S, D]
        drop_path = nn.Dropout(self.drop_path, broadcast_dims=(1, 2), deterministic=not train)
        width = x.shape[-1]

        def layer_scale(name: str, y: jax.Array) -> jax.Array:
            gamma = self.param(name, nn.initializers.constant(self.init_values), (width,))
            return y * gamma.astype(y.dtype)

        y = Affine(self.dtype, name="affine_tokens")(x)
        y = TokenDense(x.shape[1], dtype=self.dtype, name="token_mixing")(y)  # [B, S, D]
        x = x + drop_path(layer_scale("layer_scale_tokens", y))
        y = Affine(self.dtype, name="affine_channels")(x)
        y = MlpBlock(self.mlp_dim, self.dropout, self.dtype, gelu=self.gelu, name="channel_mixing")(
            y, train=train
        )
        return x + drop_path(layer_scale("layer_scale_channels", y))


class ResMLP(nn.Module):
    """ResMLP. Returns ``(logits, out)`` (see the module's docstring); with
    ``num_classes=0`` there is no head and ``logits`` are the pre_logits."""

    patch_size: int
    hidden_dim: int
    num_blocks: int
    mlp_dim: int
    init_values: float
    num_classes: int = 0
    dropout: float = 0.0
    stoch_depth: float = 0.0  # drop rate of the last block; grows linearly from 0 at the first
    head_bias_init: float = 0.0
    dtype: Dtype = jnp.float32  # compute dtype; parameters stay float32
    gelu: str = "tanh"  # one of GELU_FORMS: the form the weights were trained with

    @nn.compact
    def __call__(
        self, images: jax.Array, *, train: bool = False
    ) -> tuple[jax.Array, dict[str, jax.Array]]:  # images: [B, H, W, 3]
        return trunk(
            self,
            images,
            stem=PatchEmbedding(self.hidden_dim, self.patch_size, self.dtype, name="stem"),
            block=lambda i, rate: ResBlock(
                self.mlp_dim, self.init_values, self.dropout, rate, self.dtype, self.gelu
            ),
            final_norm=Affine(self.dtype, name="pre_head_affine"),
            train=train,
        )


def create_resmlp(spec: ResMLPSpec, **options: Any) -> ResMLP:
    """A ResMLP of `spec`; `options` are every family's (`isotropic.checked_module`:
    num_classes, dropout, stoch_depth, head_bias_init, dtype, gelu), refused if no model
    can be built with them."""
    return checked_module(
        ResMLP,
        {
            "patch_size": spec.patch_size,
            "hidden_dim": spec.hidden_dim,
            "num_blocks": spec.num_blocks,
            "mlp_dim": spec.mlp_dim,
            "init_values": spec.init_values,
        },
        **options,
    )
