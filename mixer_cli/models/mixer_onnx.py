"""A Mixer's ONNX graph, emitted from its parameter tree (the helpers: core/onnx_ops.py).

Inference-time simplifications, exact up to float rounding: each channel-mixing
LayerNorm's scale and shift fold into the Dense after it, and the pre-head LayerNorm's
into the head (mean pooling is linear). Token mixing keeps its LayerNorm's affine: it is
per channel while that Dense mixes tokens.

Token mixing is Transpose, MatMul(x, W), Transpose, its MatMuls named `TOKEN_MATMUL`:
with the weight on the right the int8 quantizer takes them (`W^T @ x` needs no
transposes but stayed float; core/onnx_ops.py), and int8's `float_token_mixing` finds
them by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from mixer_cli.core import onnx_ops as ops
from mixer_cli.core.onnx_ops import TOKEN_MATMUL


def mixer_graph(
    flat: Mapping[str, np.ndarray],
    resolution: int,
    *,
    gelu: str = "tanh",
    batch_size: int | None = None,
    uint8_input: bool = False,
    fold: bool = True,
) -> Any:
    """An onnx.ModelProto computing the Mixer's logits (pre_logits without a head).

    `flat` holds official-layout arrays; `batch_size` None makes the batch dynamic.
    """
    g, f, x = ops.start(flat, resolution, batch_size, uint8_input, "stem")  # x: [N, S, C]

    i = 0
    while f"MixerBlock_{i}/LayerNorm_0/scale" in f:
        blk = f"MixerBlock_{i}"
        y = ops.layer_norm(g, x, f[f"{blk}/LayerNorm_0/scale"], f[f"{blk}/LayerNorm_0/bias"])
        tm = f"{blk}/token_mixing"
        # over tokens with the weights on the right (see the module's docstring)
        h = g.op("Transpose", [y], perm=[0, 2, 1])  # [N, C, S]
        h = ops.dense(g, h, f[f"{tm}/Dense_0/kernel"], f[f"{tm}/Dense_0/bias"], TOKEN_MATMUL)
        h = ops.gelu(g, h, gelu)
        h = ops.dense(g, h, f[f"{tm}/Dense_1/kernel"], f[f"{tm}/Dense_1/bias"], TOKEN_MATMUL)
        h = g.op("Transpose", [h], perm=[0, 2, 1])  # [N, S, C]
        x = g.op("Add", [x, h], "residual")
        cm = f"{blk}/channel_mixing"
        scale, shift = f[f"{blk}/LayerNorm_1/scale"], f[f"{blk}/LayerNorm_1/bias"]
        kernel, bias = f[f"{cm}/Dense_0/kernel"], f[f"{cm}/Dense_0/bias"]
        y, kernel, bias = ops.norm_then(g, x, scale, shift, kernel, bias, fold)
        h = ops.gelu(g, ops.dense(g, y, kernel, bias), gelu)
        h = ops.dense(g, h, f[f"{cm}/Dense_1/kernel"], f[f"{cm}/Dense_1/bias"])
        x = g.op("Add", [x, h], "residual")
        i += 1

    return ops.pooled_head(g, x, f, "pre_head_layer_norm", "mlp_mixer", fold=fold)
