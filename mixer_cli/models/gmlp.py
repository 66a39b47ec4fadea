"""gMLP (Liu et al., 2021, "Pay Attention to MLPs") in Flax linen, as timm defines it.

timm's `mlp_mixer.py` builds it as an MlpMixer of `SpatialGatingBlock`s: x + GatedMlp(LN x),
GatedMlp = fc1 (D -> H) -> GELU -> spatial gating unit -> fc2 (H/2 -> D), and the unit
splits its input into halves u, v and returns u * proj(LN v), `proj` a Linear across the
S tokens. Our parameter names (what our .npz files hold; timm's in `gmlp_timm.py`):

    stem                                   the P x P patch projection, kernel [P, P, 3, D]
    GatingBlock_{i}/LayerNorm_0            the block's pre-norm (epsilon 1e-6)
    GatingBlock_{i}/channel_in             Dense D -> H (timm's mlp_channels.fc1)
    GatingBlock_{i}/gate_norm              LayerNorm of v, H/2 wide (epsilon 1e-5: timm's
                                           SpatialGatingUnit takes nn.LayerNorm's default)
    GatingBlock_{i}/gate_proj              Dense across tokens, kernel [S, S] (in, out):
                                           each column one output token's weights
    GatingBlock_{i}/channel_out            Dense H/2 -> D (timm's mlp_channels.fc2)
    pre_head_layer_norm, head              LayerNorm (1e-6), mean over tokens, the head

Initialised as timm does: Dense kernels Xavier-uniform with N(0, 1e-6) biases, the gate's
projection N(0, 1e-6) with biases one (so every block starts near u * 1), the stem LeCun
normal, the head zero. GELU is `gelu` (tanh by default, like every family; timm's weights
run with the exact form). Returns ``(logits, out)`` as the Mixer does: ``out`` has
``stem``, ``block_{i}``, ``tokens`` ([B, S, D] after the final LayerNorm), ``pre_logits``
([B, D], their mean) and ``logits``. No jit, I/O or logging here.
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
from mixer_cli.models.mixer import PatchEmbedding, TokenDense
from mixer_cli.models.variants import check_patch_grid

Dtype = Any


@dataclass(frozen=True)
class GmlpSpec:
    """A gMLP architecture without its head: a size and a patch size."""

    name: str
    patch_size: int
    num_blocks: int
    hidden_dim: int  # D
    mlp_ratio: int  # the channel MLP is H = D * ratio wide; the gate halves it

    @property
    def channel_dim(self) -> int:
        return self.hidden_dim * self.mlp_ratio

    def check_resolution(self, resolution: int) -> None:
        """Refuse resolutions the patch grid cannot tile, suggesting the nearest valid ones."""
        check_patch_grid(resolution, self.patch_size, f"gMLP-{self.name}")


# (blocks, D, ratio): timm's gmlp_ti16/s16/b16 (the paper's Table 1).
SIZES: dict[str, tuple[int, int, int]] = {
    "Ti": (30, 128, 6),
    "S": (30, 256, 6),
    "B": (30, 512, 6),
}
LISTED_VARIANTS: tuple[str, ...] = ("Ti/16", "S/16", "B/16")  # `mixer info --family gmlp`
# S/16, gMLP-S/16, s_16, or timm's gmlp_s16_224 (the resolution is model.resolution's).
_VARIANT_RE = re.compile(r"^(?:gmlp[-_])?([A-Za-z]+)[/_]?(\d+)(?:_\d+)?$", re.IGNORECASE)
# An architecture outside the table, as checkpoints define them: LAYERSxD-RATIO/PATCH.
_CUSTOM_RE = re.compile(r"^(\d+)x(\d+)-(\d+)/(\d+)$")


def parse_gmlp(variant: str) -> GmlpSpec:
    """``'S/16'`` (also ``gmlp_s16_224``, ``gMLP-S/16``) or ``LAYERSxD-RATIO/PATCH``
    (``'2x16-6/4'``) -> its GmlpSpec."""
    custom = _CUSTOM_RE.match(variant.strip())
    if custom and all(int(n) > 0 for n in custom.groups()):
        layers, width, ratio, patch = (int(n) for n in custom.groups())
        return spec_from_dims(patch, layers, width, ratio)
    match = _VARIANT_RE.match(variant.strip())
    sizes = {name.lower(): name for name in SIZES}
    if not match or match.group(1).lower() not in sizes or int(match.group(2)) <= 0:
        listed = ", ".join(LISTED_VARIANTS)
        raise ConfigError(
            f"unknown gMLP variant {variant!r}: expected SIZE/PATCH with SIZE one of "
            f"{', '.join(SIZES)} (listed: {listed}; timm's gmlp_s16_224 too), or "
            "LAYERSxD-RATIO/PATCH for another architecture (e.g. 2x16-6/4)"
        )
    return spec_from_dims(int(match.group(2)), *SIZES[sizes[match.group(1).lower()]])


def spec_from_dims(patch: int, layers: int, width: int, ratio: int) -> GmlpSpec:
    """A spec from raw dimensions (e.g. read off a checkpoint), named after its size if known."""
    if width * ratio % 2:
        raise ConfigError(
            f"gMLP width {width} x ratio {ratio} is odd: the spatial gate splits the channel "
            "MLP's width in half"
        )
    size = next((name for name, dims in SIZES.items() if dims == (layers, width, ratio)), None)
    name = f"{size}/{patch}" if size else f"{layers}x{width}-{ratio}/{patch}"
    return GmlpSpec(name, patch, layers, width, ratio)


class GatingBlock(nn.Module):
    """x + channel_out(u * gate_proj(gate_norm(v))), [u, v] = GELU(channel_in(LN x))."""

    channel_dim: int  # H
    dropout: float = 0.0
    drop_path: float = 0.0  # stochastic depth: probability of skipping the residual branch
    dtype: Dtype = jnp.float32
    gelu: str = "tanh"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:  # x: [B, S, D]
        init = {
            "kernel_init": nn.initializers.xavier_uniform(),
            "bias_init": nn.initializers.normal(stddev=1e-6),
        }
        drop_path = nn.Dropout(self.drop_path, broadcast_dims=(1, 2), deterministic=not train)
        y = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="LayerNorm_0")(x)
        y = nn.Dense(self.channel_dim, dtype=self.dtype, name="channel_in", **init)(y)
        y = nn.gelu(y, approximate=self.gelu == "tanh")
        y = nn.Dropout(self.dropout, deterministic=not train)(y)
        u, v = jnp.split(y, 2, axis=-1)  # [B, S, H/2] each, as torch's chunk(2)
        v = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="gate_norm")(v)
        v = TokenDense(
            x.shape[1],
            self.dtype,
            kernel_init=nn.initializers.normal(stddev=1e-6),
            bias_init=nn.initializers.ones,
            name="gate_proj",
        )(v)  # [B, S, H/2], mixed across tokens
        y = nn.Dense(x.shape[-1], dtype=self.dtype, name="channel_out", **init)(u * v)
        y = nn.Dropout(self.dropout, deterministic=not train)(y)
        return x + drop_path(y)


class GMLP(nn.Module):
    """gMLP. Returns ``(logits, out)`` (see the module docstring); with ``num_classes=0``
    there is no head and ``logits`` are the pre_logits."""

    patch_size: int
    hidden_dim: int
    num_blocks: int
    channel_dim: int
    num_classes: int = 0
    dropout: float = 0.0
    stoch_depth: float = 0.0  # drop rate of the last block; grows linearly from 0 at the first
    head_bias_init: float = 0.0
    dtype: Dtype = jnp.float32  # compute dtype; parameters stay float32
    gelu: str = "tanh"  # one of GELU_FORMS

    @nn.compact
    def __call__(
        self, images: jax.Array, *, train: bool = False
    ) -> tuple[jax.Array, dict[str, jax.Array]]:  # images: [B, H, W, 3]
        return trunk(
            self,
            images,
            stem=PatchEmbedding(self.hidden_dim, self.patch_size, self.dtype, name="stem"),
            block=lambda i, rate: GatingBlock(
                self.channel_dim, self.dropout, rate, self.dtype, self.gelu, name=f"GatingBlock_{i}"
            ),
            final_norm=nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="pre_head_layer_norm"),
            train=train,
        )


def create_gmlp(spec: GmlpSpec, **options: Any) -> GMLP:
    """A GMLP of `spec`; `options` are every family's (`isotropic.checked_module`:
    num_classes, dropout, stoch_depth, head_bias_init, dtype, gelu), refused if no model
    can be built with them."""
    return checked_module(
        GMLP,
        {
            "patch_size": spec.patch_size,
            "hidden_dim": spec.hidden_dim,
            "num_blocks": spec.num_blocks,
            "channel_dim": spec.channel_dim,
        },
        **options,
    )
