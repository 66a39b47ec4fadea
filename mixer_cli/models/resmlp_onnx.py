"""A ResMLP's ONNX graph, emitted from its parameter tree (the helpers: core/onnx_ops.py).

Per block (models/resmlp.py): an Affine, the linear layer across patches (as a Mixer's
token mixing: Transpose, MatMul(x, W) named `TOKEN_MATMUL`, Transpose, so that int8
quantizes it and `float_token_mixing` finds it), a layer scale; an Affine, the GELU MLP,
a layer scale; then an Affine, the mean over patches, the head.

Inference-time simplifications, exact up to float rounding (`fold`): the channel
branch's Affine folds into its first Dense and its layer scale into its second; the
token branch becomes one per-channel scale (layer scale x Affine scale) and one [S, D]
shift after the token MatMul (the Affine's shift through the token kernel, its bias,
both times the layer scale); the final Affine folds into the head (the mean is linear).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from mixer_cli.core import onnx_ops as ops
from mixer_cli.core.onnx_ops import TOKEN_MATMUL


def _token_branch(g: ops.Graph, x: str, f: Mapping[str, np.ndarray], blk: str, fold: bool) -> str:
    """Affine -> linear across the S patches -> layer scale: x [N, S, D] -> [N, S, D]."""
    scale, shift = f[f"{blk}/affine_tokens/scale"], f[f"{blk}/affine_tokens/bias"]
    kernel, bias = f[f"{blk}/token_mixing/kernel"], f[f"{blk}/token_mixing/bias"]  # [S, S]
    gamma = f[f"{blk}/layer_scale_tokens"]
    if not fold:
        h = g.op("Transpose", [ops.affine(g, x, scale, shift)], perm=[0, 2, 1])  # [N, D, S]
        h = g.op("Transpose", [ops.dense(g, h, kernel, bias, TOKEN_MATMUL)], perm=[0, 2, 1])
        return g.op("Mul", [h, g.const(gamma, "layer_scale")])
    # gamma * (K^T (a x + b) + bias) = (gamma a) * K^T x + gamma * (b K^T 1 + bias)
    k64 = kernel.astype(np.float64)
    shifts = k64.sum(axis=0)[:, None] * shift + bias.astype(np.float64)[:, None]  # [S, D]
    h = g.op("Transpose", [x], perm=[0, 2, 1])  # [N, D, S]
    h = g.op("MatMul", [h, g.const(kernel, "kernel")], TOKEN_MATMUL)
    h = g.op("Transpose", [h], perm=[0, 2, 1])  # [N, S, D]
    scales = (gamma.astype(np.float64) * scale).astype(np.float32)
    return ops.affine(g, h, scales, (gamma * shifts).astype(np.float32))


def _channel_branch(
    g: ops.Graph, x: str, f: Mapping[str, np.ndarray], blk: str, gelu: str, fold: bool
) -> str:
    """Affine -> Dense -> GELU -> Dense -> layer scale: x [N, S, D] -> [N, S, D]."""
    mlp = f"{blk}/channel_mixing"
    scale, shift = f[f"{blk}/affine_channels/scale"], f[f"{blk}/affine_channels/bias"]
    k0, b0 = f[f"{mlp}/Dense_0/kernel"], f[f"{mlp}/Dense_0/bias"]
    k1, b1 = f[f"{mlp}/Dense_1/kernel"], f[f"{mlp}/Dense_1/bias"]
    gamma = f[f"{blk}/layer_scale_channels"]
    if not fold:
        h = ops.gelu(g, ops.dense(g, ops.affine(g, x, scale, shift), k0, b0), gelu)
        return g.op("Mul", [ops.dense(g, h, k1, b1), g.const(gamma, "layer_scale")])
    k0, b0 = ops.folded(scale, shift, k0, b0)
    h = ops.gelu(g, ops.dense(g, x, k0, b0), gelu)
    return ops.dense(g, h, k1.astype(np.float64) * gamma, b1.astype(np.float64) * gamma)


def resmlp_graph(
    flat: Mapping[str, np.ndarray],
    resolution: int,
    *,
    gelu: str = "tanh",
    batch_size: int | None = None,
    uint8_input: bool = False,
    fold: bool = True,
) -> Any:
    """An onnx.ModelProto computing the ResMLP's logits (pre_logits without a head).

    `flat` holds our layout's arrays; `batch_size` None makes the batch dynamic.
    """
    g, f, x = ops.start(flat, resolution, batch_size, uint8_input, "stem")  # x: [N, S, D]
    i = 0
    while f"ResBlock_{i}/layer_scale_tokens" in f:
        blk = f"ResBlock_{i}"
        x = g.op("Add", [x, _token_branch(g, x, f, blk, fold)], "residual")
        x = g.op("Add", [x, _channel_branch(g, x, f, blk, gelu, fold)], "residual")
        i += 1
    return ops.pooled_head(g, x, f, "pre_head_affine", "resmlp", fold=fold, by_affine=True)
