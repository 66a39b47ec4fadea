"""A gMLP's ONNX graph, emitted from its parameter tree (the helpers: core/onnx_ops.py).

Per block (models/gmlp.py): LayerNorm, `channel_in` and GELU, its halves u and v, the
spatial gating unit (v's LayerNorm, epsilon 1e-5; the Dense across tokens as a Mixer's
token mixing: Transpose, MatMul(x, W) named `TOKEN_MATMUL`, Transpose, so that int8
quantizes it and `float_token_mixing` finds it), u * v, `channel_out`, the residual; then
the final LayerNorm, the mean over tokens, the head.

`channel_in` is written as two MatMuls, one per half (no Split: each half its own
GELU). Inference-time simplifications, exact up to float rounding (`fold`): the block's
LayerNorm folds into both halves of `channel_in` and the final one into the head. The
gate's LayerNorm keeps its affine: it is per channel while the Dense after it mixes
tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from mixer_cli.core import onnx_ops as ops
from mixer_cli.core.onnx_ops import TOKEN_MATMUL

GATE_EPSILON = 1e-5  # timm's SpatialGatingUnit: nn.LayerNorm's default


def _block(g: ops.Graph, x: str, f: Mapping[str, np.ndarray], blk: str, gelu: str, fold: bool):
    """x + channel_out(u * gate_proj(gate_norm(v))), [u, v] = GELU(channel_in(LN x))."""
    half = f[f"{blk}/channel_in/kernel"].shape[1] // 2
    scale, shift = f[f"{blk}/LayerNorm_0/scale"], f[f"{blk}/LayerNorm_0/bias"]
    kernel, bias = f[f"{blk}/channel_in/kernel"], f[f"{blk}/channel_in/bias"]
    y, kernel, bias = ops.norm_then(g, x, scale, shift, kernel, bias, fold)
    u, v = (
        ops.gelu(g, ops.dense(g, y, kernel[:, part], bias[part]), gelu)
        for part in (slice(0, half), slice(half, 2 * half))
    )  # [N, S, H/2] each
    v = ops.layer_norm(g, v, f[f"{blk}/gate_norm/scale"], f[f"{blk}/gate_norm/bias"], GATE_EPSILON)
    v = g.op("Transpose", [v], perm=[0, 2, 1])  # [N, H/2, S]
    v = ops.dense(g, v, f[f"{blk}/gate_proj/kernel"], f[f"{blk}/gate_proj/bias"], TOKEN_MATMUL)
    v = g.op("Transpose", [v], perm=[0, 2, 1])  # [N, S, H/2]
    h = g.op("Mul", [u, v], "gated")
    h = ops.dense(g, h, f[f"{blk}/channel_out/kernel"], f[f"{blk}/channel_out/bias"])
    return g.op("Add", [x, h], "residual")


def gmlp_graph(
    flat: Mapping[str, np.ndarray],
    resolution: int,
    *,
    gelu: str = "tanh",
    batch_size: int | None = None,
    uint8_input: bool = False,
    fold: bool = True,
) -> Any:
    """An onnx.ModelProto computing the gMLP's logits (pre_logits without a head).

    `flat` holds our layout's arrays; `batch_size` None makes the batch dynamic.
    """
    g, f, x = ops.start(flat, resolution, batch_size, uint8_input, "stem")  # x: [N, S, D]
    i = 0
    while f"GatingBlock_{i}/LayerNorm_0/scale" in f:
        x = _block(g, x, f, f"GatingBlock_{i}", gelu, fold)
        i += 1
    return ops.pooled_head(g, x, f, "pre_head_layer_norm", "gmlp", fold=fold)
