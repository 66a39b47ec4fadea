"""A Mixer from a checkpoint's arrays: its architecture inferred, checked, adapted.

The official MLP-Mixer releases are NumPy archives whose keys are the Flax
parameter paths joined by ``/`` (``MixerBlock_0/token_mixing/Dense_0/kernel``).
We read them with ``allow_pickle=False`` (an archive cannot run code), infer the
architecture from the array shapes when no variant is given, and write our own
parameters in the same layout so they load in the reference code too.

Higher resolution (the paper's Appendix C): at K times the resolution the image is
K x K parts, each an ordinary token sequence, and the token-mixing MLP becomes K^2
block-diagonal copies of the pretrained one. We keep the tokens in raster order and
instead permute the block-diagonal kernels' token rows/columns into that order: the
same function, and the adapted checkpoint stays a plain Mixer at the new resolution
that every loader (ours, the official code) runs without knowing K. K itself is read
back from the shapes (the token-mixing width over the size's D_S is K^2).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mixer_cli.core.errors import CheckpointMismatch, ConfigError
from mixer_cli.models.checkpoints import read_params
from mixer_cli.models.mixer import MlpMixer, abstract_params, create_model
from mixer_cli.models.registry import Loaded
from mixer_cli.models.variants import SIZES, MixerSpec, parse_variant, spec_from_dims
from mixer_cli.weights.arrays import (
    Params,
    array_shape,
    as_tree,
    check_compatible,
    flatten,
    with_fresh_head,
)
from mixer_cli.weights.forms import saved_settings


@dataclass(frozen=True)
class Architecture:
    """What a checkpoint's shapes say about the model that made it."""

    spec: MixerSpec  # the size as pre-trained (D_S before any resolution adaptation)
    num_classes: int  # 0 when the checkpoint has no head
    resolution: int  # the input resolution its weights expect, from the sequence length
    grid_factor: int = 1  # K: adapted from a pre-training at resolution / K

    @property
    def native_resolution(self) -> int:
        return self.resolution // self.grid_factor

    @property
    def side(self) -> int:
        """Tokens per row and column."""
        return self.resolution // self.spec.patch_size

    def create_model(self, **options: Any) -> MlpMixer:
        return create_model(
            self.spec, num_classes=self.num_classes, grid_factor=self.grid_factor, **options
        )


@dataclass
class Pretrained:
    """A model with its parameters and the resolution its weights expect."""

    model: MlpMixer
    params: Params
    architecture: Architecture

    @property
    def resolution(self) -> int:
        return self.architecture.resolution

    def __call__(self, images: Any) -> Any:
        """Logits for a batch of images [B, R, R, 3] with values in [-1, 1]."""
        return self.model.apply({"params": self.params}, images)[0]


def infer_architecture(flat: Mapping[str, np.ndarray], source: str = "checkpoint") -> Architecture:
    """Read patch size, depth, widths, native resolution and classes off the array shapes."""

    def shape(key: str, ndim: int) -> tuple[int, ...]:
        return array_shape(flat, key, ndim, source, "an MLP-Mixer")

    patch, patch_w, channels, hidden = shape("stem/kernel", 4)
    if patch != patch_w or channels != 3:
        raise CheckpointMismatch(
            f"{source}: 'stem/kernel' has shape {flat['stem/kernel'].shape}, "
            "expected (P, P, 3, C) with square patches"
        )
    num_blocks = sum(
        1 for k in flat if k.startswith("MixerBlock_") and k.endswith("LayerNorm_0/scale")
    )
    if num_blocks == 0:
        raise CheckpointMismatch(f"{source} has no MixerBlock_0: not an MLP-Mixer checkpoint")
    seq_len, tokens_mlp_dim = shape("MixerBlock_0/token_mixing/Dense_0/kernel", 2)
    _, channels_mlp_dim = shape("MixerBlock_0/channel_mixing/Dense_0/kernel", 2)
    side = math.isqrt(seq_len)
    if side * side != seq_len:
        raise CheckpointMismatch(
            f"{source}: 'MixerBlock_0/token_mixing/Dense_0/kernel' gives a sequence length "
            f"of {seq_len}, which is not a square number of patches"
        )
    num_classes = shape("head/kernel", 2)[1] if "head/kernel" in flat else 0
    spec, factor = spec_from_dims(patch, num_blocks, hidden, tokens_mlp_dim, channels_mlp_dim), 1
    for size_name, size in SIZES.items():  # a known size widened K^2 times: adapted K-fold
        k = math.isqrt(tokens_mlp_dim // size.tokens_mlp_dim)
        if (
            k > 1
            and tokens_mlp_dim == k * k * size.tokens_mlp_dim
            and side % k == 0
            and (num_blocks, hidden, channels_mlp_dim)
            == (size.num_blocks, size.hidden_dim, size.channels_mlp_dim)
        ):
            spec, factor = parse_variant(f"{size_name}/{patch}"), k
    return Architecture(spec, num_classes, side * patch, factor)


def resolution_factor(arch: Architecture | Any, resolution: int) -> int:
    """The integer K taking a checkpoint's resolution (`arch.resolution`, or `arch` itself
    if a number) to `resolution`; refuses anything else."""
    r = arch if isinstance(arch, int) else arch.resolution
    valid = ", ".join(str(k * r) for k in range(1, 4))
    if resolution < r:
        raise ConfigError(
            f"resolution {resolution} is below the checkpoint's {r}: its token mixing can "
            f"only be adapted to integer multiples of it ({valid}, ...)"
        )
    if resolution % r:
        below, above = resolution // r * r, (resolution // r + 1) * r
        raise ConfigError(
            f"resolution {resolution} is not an integer multiple of the checkpoint's {r}; "
            f"try {below} or {above}"
        )
    return resolution // r


def part_major_order(side: int, factor: int) -> np.ndarray:
    """Raster indices of the (side*factor)^2 tokens listed part by part: the image's
    factor x factor parts in raster order, each part's side x side tokens in raster order."""
    grid = np.arange((side * factor) ** 2).reshape(factor, side, factor, side)
    return grid.transpose(0, 2, 1, 3).reshape(-1)


def adapt_resolution(
    flat: Mapping[str, np.ndarray], side: int, factor: int
) -> dict[str, np.ndarray]:
    """Token-mixing weights for `factor` times the resolution (the paper's Appendix C).

    `side` is the checkpoint's tokens per row. Both kernels become block-diagonal with
    factor^2 copies (biases tiled), their token axis permuted from part-major to raster
    order. On a factor x factor mosaic of images the adapted model's pre_logits are the
    mean of the original model's pre_logits of the parts.
    """
    if factor == 1:
        return dict(flat)
    order, copies = part_major_order(side, factor), factor * factor
    adapted = dict(flat)
    for key, value in flat.items():
        if "/token_mixing/" not in key:
            continue
        if key.endswith("Dense_0/kernel"):  # [S, D_S]: token rows
            adapted[key] = np.empty((copies * value.shape[0], copies * value.shape[1]), value.dtype)
            adapted[key][order] = np.kron(np.eye(copies, dtype=value.dtype), value)
        elif key.endswith("Dense_0/bias"):  # [D_S]: hidden units, block by block
            adapted[key] = np.tile(value, copies)
        elif key.endswith("Dense_1/kernel"):  # [D_S, S]: token columns
            adapted[key] = np.empty((copies * value.shape[0], copies * value.shape[1]), value.dtype)
            adapted[key][:, order] = np.kron(np.eye(copies, dtype=value.dtype), value)
        elif key.endswith("Dense_1/bias"):  # [S]: tokens
            adapted[key] = np.empty(copies * value.shape[0], value.dtype)
            adapted[key][order] = np.tile(value, copies)
    return adapted


def adapt_token_linear(
    kernel: np.ndarray, bias: np.ndarray, side: int, factor: int
) -> tuple[np.ndarray, np.ndarray]:
    """A Linear across tokens ([S, S] kernel, [S] bias; ResMLP's token mixing, gMLP's
    spatial gating) at `factor` times the resolution, as Appendix C adapts a Mixer's:
    block-diagonal with factor^2 copies, tokens permuted from part-major to raster order,
    so each of the factor x factor parts of the image mixes its own tokens as before."""
    if factor == 1:
        return kernel, bias
    order, copies = part_major_order(side, factor), factor * factor
    wide = np.empty((copies * kernel.shape[0], copies * kernel.shape[1]), kernel.dtype)
    wide[np.ix_(order, order)] = np.kron(np.eye(copies, dtype=kernel.dtype), kernel)
    tiled = np.empty(copies * bias.shape[0], bias.dtype)
    tiled[order] = np.tile(bias, copies)
    return wide, tiled


def token_linears_at(
    flat: Mapping[str, Any], kernels: re.Pattern, side: int, factor: int
) -> dict[str, Any]:
    """Every Linear across tokens (the keys `kernels` matches, with their biases beside) at
    `factor` times the resolution (`adapt_token_linear`); `side`: the checkpoint's tokens
    per row."""
    out = dict(flat)
    for key in flat:
        if kernels.match(key):
            bias = key.removesuffix("kernel") + "bias"
            out[key], out[bias] = adapt_token_linear(
                np.asarray(flat[key]), np.asarray(flat[bias]), side, factor
            )
    return out


def token_linears_for(
    flat: Mapping[str, Any], fresh: Mapping[str, Any], kernels: re.Pattern
) -> dict[str, Any]:
    """A checkpoint's token Linears made as wide as a fresh model's, where it mixes K^2
    times the tokens (a warm start at K times the resolution); else `flat` unchanged (the
    shapes are checked where it is used)."""
    key = next((k for k in fresh if kernels.match(k)), None)
    if key is None or key not in flat:
        return dict(flat)
    side, wide = math.isqrt(flat[key].shape[0]), math.isqrt(fresh[key].shape[0])
    if wide == side or wide % side:
        return dict(flat)
    return token_linears_at(flat, kernels, side, wide // side)


def read_checked(
    path: str | os.PathLike, variant: str | None = None
) -> tuple[dict[str, np.ndarray], Architecture]:
    """Read a checkpoint and verify it is exactly one Mixer's parameters: (flat, architecture).

    `path` is an .npz or a run directory (see `read_params`). The architecture comes from
    the shapes unless ``variant`` is given; then the file must be exactly that variant,
    and a difference is refused naming the key and both shapes.
    """
    flat, source = read_params(path)
    return flat, checked_architecture(flat, source, variant)


def checked_architecture(
    flat: Mapping[str, np.ndarray], source: str, variant: str | None = None
) -> Architecture:
    """The Mixer that `flat` holds exactly (see `read_checked`)."""
    arch = infer_architecture(flat, source)
    if variant is not None:
        # Same token count, the requested patch size: shape differences then name the key.
        spec = parse_variant(variant)
        arch = Architecture(spec, arch.num_classes, arch.side * spec.patch_size, arch.grid_factor)
    check_compatible(
        abstract_params(arch.create_model(), arch.resolution), flat, source, arch.spec.name
    )
    return arch


def transfer_params(path: str | os.PathLike, fresh: Mapping[str, Any]) -> Params:
    """Fine-tuning's start: the checkpoint's backbone, adapted to the resolution of the
    `fresh` (initialised) model, under the fresh model's own zero-initialised head."""
    flat, source = read_params(path)
    arch = infer_architecture(flat, source)
    fresh_flat = flatten(fresh)
    key = "MixerBlock_0/token_mixing/Dense_0/kernel"
    ratio = fresh_flat[key].shape[0] / flat[key].shape[0] if key in fresh_flat else 1
    factor = math.isqrt(int(ratio))
    if factor * factor != ratio:
        raise CheckpointMismatch(
            f"{source}: {flat[key].shape[0]} tokens cannot be adapted to the model's "
            f"{fresh_flat[key].shape[0]} (the resolution must be an integer multiple)"
        )
    return with_fresh_head(adapt_resolution(flat, arch.side, factor), fresh, source)


def load_pretrained(
    path: str | os.PathLike,
    variant: str | None = None,
    *,
    resolution: int | None = None,
    dtype: str = "float32",
    gelu: str | None = None,
) -> Pretrained:
    """Load a checkpoint in any form `--init` takes as a ready-to-run model: an official
    ``.npz`` (Google's or ours), a run directory, a released name
    (``imagenet21k/Mixer-B_16``), a timm ``.safetensors`` file or ``hf-hub:timm/NAME``.

    The architecture is inferred from the array shapes; with ``variant`` the file must
    match it exactly. ``resolution`` adapts the weights to an integer multiple of their
    resolution (the paper's Appendix C, see `adapt_resolution`). ``dtype='bfloat16'``
    computes in bfloat16 with float32 weights. ``gelu`` defaults to the checkpoint's form
    (exact for timm's weights, else tanh). Every form takes images in [-1, 1].
    """
    flat, source = read_params(path)
    gelu = gelu or saved_settings(path).get("gelu", "tanh")
    return pretrained_from_flat(
        flat, source, variant, resolution=resolution, dtype=dtype, gelu=gelu
    )


def pretrained_from_flat(
    flat: Mapping[str, np.ndarray],
    source: str,
    variant: str | None = None,
    *,
    resolution: int | None = None,
    dtype: str = "float32",
    gelu: str = "tanh",
) -> Pretrained:
    """`load_pretrained` of arrays already read."""
    arch = checked_architecture(flat, source, variant)
    if resolution is not None:
        factor = resolution_factor(arch, resolution)
        flat = adapt_resolution(flat, arch.side, factor)
        arch = Architecture(arch.spec, arch.num_classes, resolution, arch.grid_factor * factor)
    model = arch.create_model(dtype=dtype, gelu=gelu)
    return Pretrained(model=model, params=as_tree(flat), architecture=arch)


TOKEN_KERNEL = re.compile(r"^(?:.*/)?MixerBlock_(\d+)/token_mixing/Dense_0/kernel$")


def token_kernels(
    flat: Mapping[str, Any], kernels: re.Pattern = TOKEN_KERNEL
) -> dict[int, np.ndarray]:
    """{block: its token-mixing kernel [S, ...]} of a checkpoint's flat arrays, the keys
    `kernels` matches (default: a Mixer's first token-mixing kernel [S, D_S]; a hybrid's
    attention blocks have none). Each column is one output's weights over the input tokens
    (what `mixer plot weights` draws)."""
    found = {}
    for key, value in flat.items():
        match = kernels.match(key)
        if match:
            found[int(match[1])] = np.asarray(value, np.float64)
    return dict(sorted(found.items()))


def token_linears_loaded(
    model: Any, spec: Any, flat: Mapping[str, Any], source: str, resolution: int | None, *,
    family: str, label: str, native: int, classes: int, gelu: str, kernels: re.Pattern,
) -> Loaded:  # fmt: skip
    """A gMLP's or ResMLP's checkpoint (its tokens mixed by [S, S] Linears, the keys
    `kernels` matches) as a `Loaded` of `model` (of `spec`): its arrays checked against
    the model at its `native` resolution (as `label`-VARIANT), and at a `resolution` K
    times that its token Linears made block-diagonal (`token_linears_at`)."""
    name = spec.name
    check_compatible(abstract_params(model, native), flat, source, f"{label}-{name}")
    at = native
    if resolution is not None and resolution != native:
        at = native * resolution_factor(native, resolution)
        flat = token_linears_at(flat, kernels, native // spec.patch_size, at // native)
    return Loaded(
        model,
        as_tree(flat),
        family,
        name,
        at,
        classes,
        {"gelu": gelu, "native_resolution": native},
        config={"family": family, "variant": name, "resolution": at, "gelu": gelu},
    )


def token_linears_resolution(loaded: Loaded, resolution: int) -> dict[str, Any]:
    """`Family.resolution_settings` of a gMLP or ResMLP: fine-tuning at K times the
    checkpoint's resolution (its token Linears block-diagonal)."""
    return {"model.resolution": loaded.resolution * resolution_factor(loaded, resolution)}


def token_linears_warm_start(
    flat: Mapping[str, Any], source: str, fresh: dict[str, Any], scope: str, kernels: re.Pattern
) -> Params:
    """scope 'all': every array as saved; 'backbone': all but the head, under the fresh
    model's, the token Linears (`kernels`) made block-diagonal where the fresh model has
    K^2 times the tokens (`token_linears_for`)."""
    if scope == "backbone":
        flat = token_linears_for(flat, flatten(fresh), kernels)
        return with_fresh_head(flat, fresh, source)
    check_compatible(fresh, flat, source, "this run's model")
    return as_tree(flat)
