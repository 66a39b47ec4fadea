"""A Mixer's ONNX graph, emitted straight from its parameter tree (opset 17).

Why not a converter: jax2onnx and tf2onnx (over a jax2tf SavedModel) translate whatever
the traced program holds, including XLA's own spellings of the token mixing; a Mixer is
a dozen kinds of node, so writing them out gives a small graph ONNX Runtime optimises
well (MatMul, LayerNormalization, its Gelu fusions), with nothing to install but `onnx`.
The graph is checked against JAX's logits by the tests.

Inference-time simplifications, exact up to float rounding: each channel-mixing
LayerNorm's scale and shift fold into the Dense after it, and the pre-head LayerNorm's
into the head (mean pooling is linear). Token mixing keeps its LayerNorm's affine: it is
per channel while that Dense mixes tokens.

Written for ONNX Runtime's fusions and quantizer, as measured (benchmarks/RESULTS.md):
GELU in the forms its Gelu and FastGelu fusions match (x / sqrt 2, not x * 1/sqrt 2;
Pow(x, 3), not x * x * x), and token mixing as Transpose, MatMul(x, W), Transpose.
`W^T @ x` needs no transposes but puts the weight first, which the int8 quantizer skips:
those MatMuls stayed float and B/16's dynamic int8 took 121 ms a call instead of 89 ms
(1 core; float: equal).

Input contract: float32 images NHWC in [-1, 1], or with `uint8_input` the raw uint8
pixels, scaled inside the graph (an app then needs no preprocessing but the crop).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

OPSET = 17
EPSILON = 1e-6


class _Graph:
    """Nodes and initializers under unique names."""

    def __init__(self) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value: np.ndarray, hint: str) -> str:
        name = self.name(hint)
        self.initializers.append(self.numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, kind: str, inputs: list[str], hint: str = "", **attributes: Any) -> str:
        out = self.name(hint or kind.lower())
        self.nodes.append(self.helper.make_node(kind, inputs, [out], name=out, **attributes))
        return out


def _gelu(g: _Graph, x: str, form: str) -> str:
    half_x = g.op("Mul", [x, g.const(np.float32(0.5), "half")])
    if form == "exact":
        inner = g.op("Erf", [g.op("Div", [x, g.const(np.float32(math.sqrt(2)), "sqrt2")])])
    else:
        cube = g.op("Pow", [x, g.const(np.float32(3.0), "three")])
        poly = g.op("Add", [x, g.op("Mul", [cube, g.const(np.float32(0.044715), "c")])])
        inner = g.op(
            "Tanh", [g.op("Mul", [poly, g.const(np.float32(math.sqrt(2 / math.pi)), "k")])]
        )
    return g.op("Mul", [half_x, g.op("Add", [inner, g.const(np.float32(1.0), "one")])])


def _layer_norm(g: _Graph, x: str, scale: np.ndarray, bias: np.ndarray) -> str:
    return g.op(
        "LayerNormalization",
        [
            x,
            g.const(scale.astype(np.float32), "ln_scale"),
            g.const(bias.astype(np.float32), "ln_bias"),
        ],
        axis=-1,
        epsilon=EPSILON,
    )


TOKEN_MATMUL = "token_matmul"  # the names of token mixing's MatMul nodes start so


def _dense(g: _Graph, x: str, kernel: np.ndarray, bias: np.ndarray, hint: str = "") -> str:
    product = g.op("MatMul", [x, g.const(kernel.astype(np.float32), "kernel")], hint)
    return g.op("Add", [product, g.const(bias.astype(np.float32), "bias")])


def _folded(scale: np.ndarray, shift: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> tuple:
    """(n * scale + shift) @ K + b = n @ (scale[:, None] K) + (shift @ K + b), in float64."""
    k64 = kernel.astype(np.float64)
    return (scale[:, None] * k64), (shift.astype(np.float64) @ k64 + bias)


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
    from onnx import TensorProto, checker, helper

    g = _Graph()
    f = {k: np.asarray(v, np.float32) for k, v in flat.items()}
    p, c = f["stem/kernel"].shape[0], f["stem/kernel"].shape[-1]
    side = resolution // p
    seq = side * side
    batch = batch_size if batch_size else "batch"
    dtype = TensorProto.UINT8 if uint8_input else TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("images", dtype, [batch, resolution, resolution, 3])]

    x = "images"
    if uint8_input:
        x = g.op("Cast", [x], to=TensorProto.FLOAT)
        x = g.op("Sub", [g.op("Mul", [x, g.const(np.float32(2 / 255), "scale")]),
                         g.const(np.float32(1.0), "one")])  # fmt: skip
    grid = g.const(np.array([-1, side, p, side, p, 3], np.int64), "grid")
    x = g.op("Transpose", [g.op("Reshape", [x, grid])], perm=[0, 1, 3, 2, 4, 5])
    x = g.op("Reshape", [x, g.const(np.array([-1, seq, p * p * 3], np.int64), "tokens")])
    x = _dense(g, x, f["stem/kernel"].reshape(p * p * 3, c), f["stem/bias"])

    i = 0
    while f"MixerBlock_{i}/LayerNorm_0/scale" in f:
        blk = f"MixerBlock_{i}"
        y = _layer_norm(g, x, f[f"{blk}/LayerNorm_0/scale"], f[f"{blk}/LayerNorm_0/bias"])
        tm = f"{blk}/token_mixing"
        # over tokens with the weights on the right (see the module's docstring)
        h = g.op("Transpose", [y], perm=[0, 2, 1])  # [N, C, S]
        h = _dense(g, h, f[f"{tm}/Dense_0/kernel"], f[f"{tm}/Dense_0/bias"], TOKEN_MATMUL)
        h = _dense(g, _gelu(g, h, gelu), f[f"{tm}/Dense_1/kernel"], f[f"{tm}/Dense_1/bias"],
                   TOKEN_MATMUL)  # fmt: skip
        h = g.op("Transpose", [h], perm=[0, 2, 1])  # [N, S, C]
        x = g.op("Add", [x, h], "residual")
        cm = f"{blk}/channel_mixing"
        scale, shift = f[f"{blk}/LayerNorm_1/scale"], f[f"{blk}/LayerNorm_1/bias"]
        kernel, bias = f[f"{cm}/Dense_0/kernel"], f[f"{cm}/Dense_0/bias"]
        if fold:
            y = _layer_norm(g, x, np.ones(c, np.float32), np.zeros(c, np.float32))
            kernel, bias = _folded(scale, shift, kernel, bias)
        else:
            y = _layer_norm(g, x, scale, shift)
        h = _gelu(g, _dense(g, y, kernel, bias), gelu)
        h = _dense(g, h, f[f"{cm}/Dense_1/kernel"], f[f"{cm}/Dense_1/bias"])
        x = g.op("Add", [x, h], "residual")
        i += 1

    scale, shift = f["pre_head_layer_norm/scale"], f["pre_head_layer_norm/bias"]
    has_head = "head/kernel" in f
    if has_head and fold:
        y = _layer_norm(g, x, np.ones(c, np.float32), np.zeros(c, np.float32))
        kernel, bias = _folded(scale, shift, f["head/kernel"], f["head/bias"])
    else:
        y = _layer_norm(g, x, scale, shift)
        kernel, bias = (f["head/kernel"], f["head/bias"]) if has_head else (None, None)
    pooled = g.op("ReduceMean", [y], "pre_logits", axes=[1], keepdims=0)
    out = _dense(g, pooled, kernel, bias) if has_head else pooled
    width = f["head/kernel"].shape[1] if has_head else c
    g.nodes.append(helper.make_node("Identity", [out], ["logits"]))
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, width])]
    graph = helper.make_graph(g.nodes, "mlp_mixer", inputs, outputs, g.initializers)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="mixer-cli"
    )
    model.ir_version = 8  # readable by every ONNX Runtime of the last years
    checker.check_model(model)
    return model
