"""Writing an ONNX graph by hand (opset 17): the pieces every family's graph is made of.

A family's graph (models/NAME_onnx.py, its `Family.onnx`) is emitted straight from its
parameter tree with these helpers; this module names no family. Why by hand, not a
converter: jax2onnx and tf2onnx (over a jax2tf SavedModel) translate whatever the traced
program holds, including XLA's own spellings; a family is a dozen kinds of node, so
writing them out gives a small graph ONNX Runtime optimises well (MatMul,
LayerNormalization, its Gelu fusions), with nothing to install but `onnx`. Each graph
is checked against JAX's logits by the tests.

Written for ONNX Runtime's fusions and quantizer, as measured (benchmarks/RESULTS.md):
GELU in the forms its Gelu and FastGelu fusions match (x / sqrt 2, not x * 1/sqrt 2;
Pow(x, 3), not x * x * x); every Dense as MatMul(x, W) with the weight on the right,
which the int8 quantizer needs: `W^T @ x` puts the weight first and the quantizer skips
it (a Mixer's token mixing stayed float that way, and B/16's dynamic int8 took 121 ms a
call instead of 89 ms; 1 core; float: equal).

Inference-time simplification, exact up to float rounding (`folded`): a LayerNorm's
scale and shift fold into a Dense that reads its output over the same (channel) axis.

Input contract: float32 images NHWC in [-1, 1], or with `uint8_input` the raw uint8
pixels, scaled inside the graph (an app then needs no preprocessing but the crop).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

OPSET = 17
IR_VERSION = 8  # readable by every ONNX Runtime of the last years
EPSILON = 1e-6
# MatMuls that mix tokens (one weight per input token) are named starting so: int8's
# `float_token_mixing` option leaves exactly these in float.
TOKEN_MATMUL = "token_matmul"


class Graph:
    """Nodes, initializers and the images input of one graph, under unique names."""

    def __init__(self, resolution: int, batch_size: int | None, uint8_input: bool) -> None:
        from onnx import TensorProto, helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0
        self.batch: int | str = batch_size if batch_size else "batch"  # None: dynamic
        self.resolution, self.uint8_input = resolution, uint8_input
        dtype = TensorProto.UINT8 if uint8_input else TensorProto.FLOAT
        shape = [self.batch, resolution, resolution, 3]
        self.inputs = [helper.make_tensor_value_info("images", dtype, shape)]

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

    def shape(self, values: list[int], hint: str = "shape") -> str:
        return self.const(np.array(values, np.int64), hint)


def gelu(g: Graph, x: str, form: str) -> str:
    """GELU, `exact` (erf) or `tanh`, in the spellings ONNX Runtime fuses."""
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


def layer_norm(
    g: Graph, x: str, scale: np.ndarray, bias: np.ndarray, epsilon: float = EPSILON
) -> str:
    """LayerNorm over the last axis (epsilon 1e-6 unless told: Google's codebases')."""
    return g.op(
        "LayerNormalization",
        [
            x,
            g.const(scale.astype(np.float32), "ln_scale"),
            g.const(bias.astype(np.float32), "ln_bias"),
        ],
        axis=-1,
        epsilon=epsilon,
    )


def plain_layer_norm(g: Graph, x: str, width: int) -> str:
    """LayerNorm without its affine (folded into the Dense after it: `folded`)."""
    return layer_norm(g, x, np.ones(width, np.float32), np.zeros(width, np.float32))


def dense(g: Graph, x: str, kernel: np.ndarray, bias: np.ndarray, hint: str = "") -> str:
    """x @ kernel + bias over the last axis, the weight on the right (see above)."""
    product = g.op("MatMul", [x, g.const(kernel.astype(np.float32), "kernel")], hint)
    return g.op("Add", [product, g.const(bias.astype(np.float32), "bias")])


def affine(g: Graph, x: str, scale: np.ndarray, shift: np.ndarray) -> str:
    """x * scale + shift per channel (the last axis)."""
    return g.op("Add", [g.op("Mul", [x, g.const(scale, "scale")]), g.const(shift, "shift")])


def norm_then(
    g: Graph, x: str, scale: np.ndarray, shift: np.ndarray, kernel: Any, bias: Any, fold: bool
) -> tuple[str, Any, Any]:
    """LayerNorm (scale, shift) of x, and the Dense (kernel, bias) after it with the
    LayerNorm's affine folded in when `fold`."""
    if fold:
        return plain_layer_norm(g, x, len(scale)), *folded(scale, shift, kernel, bias)
    return layer_norm(g, x, scale, shift), kernel, bias


def folded(scale: np.ndarray, shift: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> tuple:
    """(n * scale + shift) @ K + b = n @ (scale[:, None] K) + (shift @ K + b), in float64."""
    k64 = kernel.astype(np.float64)
    return (scale[:, None] * k64), (shift.astype(np.float64) @ k64 + bias)


def patch_tokens(g: Graph, kernel: np.ndarray, bias: np.ndarray) -> str:
    """The images input -> patch tokens [N, S, D] in raster order: a stride-P convolution
    (kernel [P, P, 3, D]) as patches x kernel, raw uint8 pixels scaled to [-1, 1] first."""
    from onnx import TensorProto

    p, width = kernel.shape[0], kernel.shape[-1]
    side = g.resolution // p
    x = "images"
    if g.uint8_input:
        x = g.op("Cast", [x], to=TensorProto.FLOAT)
        x = g.op("Sub", [g.op("Mul", [x, g.const(np.float32(2 / 255), "scale")]),
                         g.const(np.float32(1.0), "one")])  # fmt: skip
    grid = g.shape([-1, side, p, side, p, 3], "grid")
    x = g.op("Transpose", [g.op("Reshape", [x, grid])], perm=[0, 1, 3, 2, 4, 5])
    x = g.op("Reshape", [x, g.shape([-1, side * side, p * p * 3], "tokens")])
    return dense(g, x, kernel.reshape(p * p * 3, width), bias)


def start(
    flat: Mapping[str, np.ndarray], resolution: int, batch_size: int | None,
    uint8_input: bool, stem: str,
) -> tuple[Graph, dict[str, np.ndarray], str]:  # fmt: skip
    """A graph's beginning: the Graph, `flat`'s arrays in float32, and the patch tokens
    [N, S, D] of the patch embedding `stem` (its kernel and bias)."""
    g = Graph(resolution, batch_size, uint8_input)
    f = {k: np.asarray(v, np.float32) for k, v in flat.items()}
    return g, f, patch_tokens(g, f[f"{stem}/kernel"], f[f"{stem}/bias"])


def pooled_head(
    g: Graph, x: str, f: Mapping[str, np.ndarray], norm: str, name: str, *, fold: bool,
    by_affine: bool = False,
) -> Any:  # fmt: skip
    """A graph's end, tokens x [N, S, D] -> the model `name`: the final norm `norm` (a
    LayerNorm, or with `by_affine` an Affine), the mean over tokens (`pre_logits`), the
    head where `f` has one. With `fold` and a head the norm's affine folds into the head
    (the mean is linear)."""
    scale, shift = f[f"{norm}/scale"], f[f"{norm}/bias"]
    kernel, bias = (f["head/kernel"], f["head/bias"]) if "head/kernel" in f else (None, None)
    fold = fold and kernel is not None
    if not by_affine:
        x, kernel, bias = norm_then(g, x, scale, shift, kernel, bias, fold)
    elif fold:
        kernel, bias = folded(scale, shift, kernel, bias)
    else:
        x = affine(g, x, scale, shift)
    x = g.op("ReduceMean", [x], "pre_logits", axes=[1], keepdims=0)  # [N, D]
    if kernel is None:
        return model(g, x, len(scale), name)
    return model(g, dense(g, x, kernel, bias), kernel.shape[1], name)


def model(g: Graph, out: str, width: int, name: str) -> Any:
    """The checked onnx.ModelProto whose output `logits` [N, width] is `out`."""
    from onnx import TensorProto, checker, helper

    g.nodes.append(helper.make_node("Identity", [out], ["logits"]))
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [g.batch, width])]
    graph = helper.make_graph(g.nodes, name, g.inputs, outputs, g.initializers)
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="mixer-cli"
    )
    proto.ir_version = IR_VERSION
    checker.check_model(proto)
    return proto
