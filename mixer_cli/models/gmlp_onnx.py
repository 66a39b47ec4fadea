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
    d = f[f"{blk}/channel_in/kernel"].shape[0]
    half = f[f"{blk}/channel_in/kernel"].shape[1] // 2
    scale, shift = f[f"{blk}/LayerNorm_0/scale"], f[f"{blk}/LayerNorm_0/bias"]
    kernel, bias = f[f"{blk}/channel_in/kernel"], f[f"{blk}/channel_in/bias"]
    if fold:
        y = ops.plain_layer_norm(g, x, d)
        kernel, bias = ops.folded(scale, shift, kernel, bias)
    else:
        y = ops.layer_norm(g, x, scale, shift)
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
    g = ops.Graph(resolution, batch_size, uint8_input)
    f = {k: np.asarray(v, np.float32) for k, v in flat.items()}
    d = f["stem/kernel"].shape[-1]
    x = ops.patch_tokens(g, f["stem/kernel"], f["stem/bias"])  # [N, S, D]
    i = 0
    while f"GatingBlock_{i}/LayerNorm_0/scale" in f:
        x = _block(g, x, f, f"GatingBlock_{i}", gelu, fold)
        i += 1
    scale, shift = f["pre_head_layer_norm/scale"], f["pre_head_layer_norm/bias"]
    has_head = "head/kernel" in f
    if has_head and fold:
        y = ops.plain_layer_norm(g, x, d)
        kernel, bias = ops.folded(scale, shift, f["head/kernel"], f["head/bias"])
    else:
        y = ops.layer_norm(g, x, scale, shift)
        kernel, bias = (f["head/kernel"], f["head/bias"]) if has_head else (None, None)
    pooled = g.op("ReduceMean", [y], "pre_logits", axes=[1], keepdims=0)  # [N, D]
    out = ops.dense(g, pooled, kernel, bias) if has_head else pooled
    return ops.model(g, out, f["head/kernel"].shape[1] if has_head else d, "gmlp")


def graph_of(loaded: Any, *, batch_size: int | None, uint8_input: bool) -> Any:
    """`Family.onnx`: a loaded gMLP's graph, in the GELU form it was trained with."""
    from mixer_cli.weights.arrays import flat_params

    return gmlp_graph(
        flat_params(loaded.params),
        loaded.resolution,
        gelu=loaded.details.get("gelu", "tanh"),
        batch_size=batch_size,
        uint8_input=uint8_input,
    )
