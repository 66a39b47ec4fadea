"""Any family's forward pass as a TensorFlow Lite (LiteRT) flatbuffer, through jax2tf.

jax2tf still converts in the installed JAX, and TensorFlow's converter takes the result:
float, or int8 with `Optimize.DEFAULT` (dynamic range: int8 weights, activations
quantized per call). Static full-integer conversion is refused upstream (writer.py): it
quantizes every op, LayerNorm and GELU included, and lost top-1 agreement with float
(73% on digits). TFLite wants a fixed batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _converter(model: Any, params: Any, resolution: int, batch: int, uint8_input: bool) -> Any:
    from jax.experimental import jax2tf

    from mixer_cli.core.tf_cpu import tf
    from mixer_cli.export.stablehlo import forward_function

    fn = jax2tf.convert(forward_function(model, params, uint8_input), with_gradient=False)
    dtype = tf.uint8 if uint8_input else tf.float32
    spec = tf.TensorSpec([batch, resolution, resolution, 3], dtype, name="images")
    traced = tf.function(fn, input_signature=[spec], autograph=False)
    return tf.lite.TFLiteConverter.from_concrete_functions([traced.get_concrete_function()], traced)


def export_bytes(
    model: Any,
    params: Any,
    resolution: int,
    batch: int,
    uint8_input: bool,
    int8: str | None = None,
) -> bytes:
    """The flatbuffer: float, or with `int8='dynamic'` int8 weights."""
    from mixer_cli.core.tf_cpu import tf

    converter = _converter(model, params, resolution, batch, uint8_input)
    if int8 is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return bytes(converter.convert())


def load(path: str, threads: int = 0) -> Any:
    """images -> logits of a .tflite file, for exactly its batch of images, on `threads`
    threads (0: TFLite's default)."""
    import warnings

    from mixer_cli.core.tf_cpu import tf

    with warnings.catch_warnings():  # tf.lite.Interpreter's move-to-LiteRT notice
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=path, num_threads=threads or None)
    interpreter.allocate_tensors()
    given = interpreter.get_input_details()[0]["index"]
    logits = interpreter.get_output_details()[0]["index"]

    def call(images: np.ndarray) -> np.ndarray:
        interpreter.set_tensor(given, images)
        interpreter.invoke()
        return interpreter.get_tensor(logits)

    return call


def run(path: str, images: np.ndarray) -> np.ndarray:
    """Logits of a .tflite file for exactly its batch of images."""
    return load(path)(images)
