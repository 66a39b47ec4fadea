"""A ViT's ONNX graph, emitted from its parameter tree (the helpers: core/onnx_ops.py).

Google's layout (models/vit.py): the patch embedding, the class token (classifier
`token`) concatenated before the tokens, learned position embeddings, pre-LN encoder
blocks (multi-head self-attention, then an MLP with the tanh GELU), the final LayerNorm,
the class token's output or the tokens' mean, optional `pre_logits` (Dense + tanh), head.

Attention is MatMul and Softmax: query, key and value (kernels [D, heads, D/heads],
reshaped to [D, D]) are one MatMul [D, 3D] split into heads; the 1/sqrt(D/heads) of the
scores is folded into the query's kernel and bias. Inference-time simplifications, exact
up to float rounding (`fold`): each block's LayerNorms fold into the Dense after them
(query/key/value, the MLP's first), and the final LayerNorm into `pre_logits` or the head
(picking the class token and mean pooling are linear).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from mixer_cli.core import onnx_ops as ops
from mixer_cli.models.vit_checkpoint import POSEMB

ENCODER = "Transformer/encoderblock"
ATTENTION = "MultiHeadDotProductAttention_1"


def _attention(g: ops.Graph, x: str, f: Mapping[str, np.ndarray], blk: str, fold: bool) -> str:
    """Block `blk`'s LayerNorm_0 and multi-head self-attention: x [N, T, D] -> [N, T, D]."""
    att, d = f"{blk}/{ATTENTION}", _width(f)
    heads = f[f"{att}/query/kernel"].shape[1]
    depth = d // heads
    parts = ("query", "key", "value")
    kernel = np.concatenate(
        [f[f"{att}/{n}/kernel"].reshape(d, d).astype(np.float64) for n in parts], axis=1
    )  # [D, 3D]
    bias = np.concatenate([f[f"{att}/{n}/bias"].reshape(d).astype(np.float64) for n in parts])
    kernel[:, :d] /= math.sqrt(depth)  # the scores' scale, on the queries
    bias[:d] /= math.sqrt(depth)
    norm = (f[f"{blk}/LayerNorm_0/scale"], f[f"{blk}/LayerNorm_0/bias"])
    y, kernel, bias = ops.norm_then(g, x, *norm, kernel, bias, fold)
    qkv = ops.dense(g, y, kernel, bias)  # [N, T, 3D]
    qkv = g.op("Reshape", [qkv, g.shape([0, 0, 3, heads, depth])])
    qkv = g.op("Transpose", [qkv], perm=[2, 0, 3, 1, 4])  # [3, N, H, T, D/H]
    q, k, v = (g.op("Gather", [qkv, g.const(np.array(n, np.int64), "index")]) for n in range(3))
    k = g.op("Transpose", [k], perm=[0, 1, 3, 2])  # [N, H, D/H, T]
    weights = g.op("Softmax", [g.op("MatMul", [q, k], "scores")], axis=-1)  # [N, H, T, T]
    h = g.op("MatMul", [weights, v], "attended")  # [N, H, T, D/H]
    h = g.op("Transpose", [h], perm=[0, 2, 1, 3])  # [N, T, H, D/H]
    h = g.op("Reshape", [h, g.shape([0, 0, d])])
    return ops.dense(g, h, f[f"{att}/out/kernel"].reshape(d, d), f[f"{att}/out/bias"])


def _width(f: Mapping[str, np.ndarray]) -> int:
    """The model's width D."""
    return f["embedding/kernel"].shape[-1]


def vit_graph(
    flat: Mapping[str, np.ndarray],
    resolution: int,
    *,
    gelu: str = "tanh",
    batch_size: int | None = None,
    uint8_input: bool = False,
    fold: bool = True,
) -> Any:
    """An onnx.ModelProto computing the ViT's logits (pre_logits without a head).

    `flat` holds Google's released-layout arrays; `batch_size` None makes the batch dynamic.
    """
    g, f, x = ops.start(flat, resolution, batch_size, uint8_input, "embedding")  # [N, S, D]
    d = _width(f)
    token = "cls" in f
    if token:  # the class token, one per image, before the patches
        rows = g.op("Concat", [g.op("Shape", [x], start=0, end=1), g.shape([1, d])], axis=0)
        cls = g.op("Expand", [g.const(f["cls"], "cls"), rows])  # [N, 1, D]
        x = g.op("Concat", [cls, x], axis=1)  # [N, 1 + S, D]
    x = g.op("Add", [x, g.const(f[POSEMB], "pos_embedding")])

    i = 0
    while f"{ENCODER}_{i}/LayerNorm_0/scale" in f:
        blk = f"{ENCODER}_{i}"
        h = _attention(g, x, f, blk, fold)
        x = g.op("Add", [x, h], "residual")
        mlp = f"{blk}/MlpBlock_3"
        norm = (f[f"{blk}/LayerNorm_2/scale"], f[f"{blk}/LayerNorm_2/bias"])
        kernel, bias = f[f"{mlp}/Dense_0/kernel"], f[f"{mlp}/Dense_0/bias"]
        y, kernel, bias = ops.norm_then(g, x, *norm, kernel, bias, fold)
        h = ops.gelu(g, ops.dense(g, y, kernel, bias), gelu)
        h = ops.dense(g, h, f[f"{mlp}/Dense_1/kernel"], f[f"{mlp}/Dense_1/bias"])
        x = g.op("Add", [x, h], "residual")
        i += 1

    # the final LayerNorm, folded into the first Dense after it (pre_logits or head)
    after = next((p for p in ("pre_logits", "head") if f"{p}/kernel" in f), None)
    norm = (f["Transformer/encoder_norm/scale"], f["Transformer/encoder_norm/bias"])
    if token:  # the class token's output (LayerNorm is per token: pick it first)
        x = g.op("Gather", [x, g.const(np.array(0, np.int64), "index")], axis=1)  # [N, D]
    kernel, bias = (f[f"{after}/kernel"], f[f"{after}/bias"]) if after else (None, None)
    if after:
        x, kernel, bias = ops.norm_then(g, x, *norm, kernel, bias, fold)
    else:
        x = ops.layer_norm(g, x, *norm)
    if not token:
        x = g.op("ReduceMean", [x], "pre_logits", axes=[1], keepdims=0)  # [N, D]
    width = d
    if after == "pre_logits":
        x = g.op("Tanh", [ops.dense(g, x, kernel, bias)], "pre_logits")
        width = kernel.shape[1]
        kernel, bias = (f["head/kernel"], f["head/bias"]) if "head/kernel" in f else (None, None)
    if kernel is not None:
        x = ops.dense(g, x, kernel, bias)
        width = kernel.shape[1]
    return ops.model(g, x, width, "vision_transformer")
