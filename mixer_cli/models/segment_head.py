"""The dense-prediction head the paper's readers proposed: each final token -> a block of
per-pixel class scores, the blocks assembled into the image.

A token of a P x P patch (C values, after the pre-head LayerNorm: `out["tokens"]`) is
projected by one Dense to P * P * K scores, which fill that patch's pixels; the token grid's
raster order is the image's. On a model at K x its resolution the grid is K times finer
per side and the head is unchanged. Works on any backbone whose `out` has ``tokens`` (the
Mixer, hybrid and ViT families); `mixer segment` trains it (config `model.head: segment`).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mixer_cli.core.errors import ConfigError


def assemble(scores: jax.Array, height: int, width: int) -> jax.Array:
    """[B, S, P*P*K] per-token blocks -> [B, H, W, K] (tokens in raster order)."""
    b, s, flat = scores.shape
    side = math.isqrt(s)
    if side * side != s or height % side or width % side or height != width:
        raise ConfigError(f"{s} tokens do not tile a {height}x{width} image into square blocks")
    p = height // side
    k = flat // (p * p)
    blocks = scores.reshape(b, side, side, p, p, k)
    return blocks.transpose(0, 1, 3, 2, 4, 5).reshape(b, height, width, k)


class TokenToPixels(nn.Module):
    """Dense tokens [B, S, C] -> per-pixel scores [B, H, W, K]."""

    classes: int
    block: int  # pixels per token side (the patch size, for a plain Mixer)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, tokens: jax.Array, height: int, width: int) -> jax.Array:
        scores = nn.Dense(
            self.block * self.block * self.classes,
            dtype=self.dtype,
            kernel_init=nn.initializers.zeros_init(),  # as the classifier head: start neutral
            name="dense",
        )(tokens)
        return assemble(scores, height, width).astype(jnp.float32)


class Segmenter(nn.Module):
    """A backbone (built without a classifier head) and the token-to-pixels head.

    Parameters: ``backbone`` (the classification checkpoint's tree, its head dropped: a
    warm start copies it whole) and ``segment_head``. Returns ``(scores, out)``.
    """

    backbone: nn.Module
    classes: int
    block: int

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool = False) -> tuple[jax.Array, dict]:
        _, out = self.backbone(images, train=train)
        if "tokens" not in out:
            raise ConfigError("this backbone has no token grid for a dense head")
        head = TokenToPixels(self.classes, self.block, name="segment_head")
        scores = head(out["tokens"], images.shape[1], images.shape[2])
        return scores, {**out, "scores": scores}


def build_segmenter(family: Any, config: Any, classes: int) -> Segmenter:
    """A Segmenter on the backbone `config` (a ModelConfig) of `family` describes, any
    family with a token grid; refuses one without (a ResNet) and a resolution its patches
    do not tile."""
    family.parse(config)  # the variant and resolution, refused with the family's words
    block = family.patch_size(config)
    if not block:
        raise ConfigError(
            f"the {config.family} family has no token grid for a segmentation head; use a "
            "mixer, hybrid or vit backbone"
        )
    if config.resolution % block:
        raise ConfigError(
            f"resolution {config.resolution} does not tile into {block}x{block} patches"
        )
    return Segmenter(family.build(config, 0, 0.0), classes, block)


def warm_start(family: Any, path: str, fresh: dict[str, Any]) -> dict[str, Any]:
    """A Segmenter's parameters from a checkpoint: its backbone (a classifier's head
    dropped, adapted to the model's grid factor as fine-tuning's is) under the fresh
    segmentation head, or, from a segmentation model for the same classes, under its own
    head (the head is the same at every grid factor: one token, one P x P block)."""
    from mixer_cli.models.checkpoints import SEGMENTER_PARTS
    from mixer_cli.weights.arrays import as_tree, flat_params
    from mixer_cli.weights.forms import read_arrays

    params = {**fresh, "backbone": family.warm_start(path, fresh["backbone"], "backbone")}
    prefix = f"{SEGMENTER_PARTS[1]}/"
    head = read_arrays(path, prefix)[0]  # nothing for a classifier: not read
    head = {k.removeprefix(prefix): v for k, v in head.items()}
    wanted = flat_params(fresh["segment_head"])
    if {k: v.shape for k, v in head.items()} == {k: v.shape for k, v in wanted.items()}:
        params["segment_head"] = as_tree(head)
    return params
