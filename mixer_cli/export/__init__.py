"""Deployable files of a checkpoint: StableHLO (`jax.export`) and ONNX (float, int8).

`write_export` writes a directory atomically (built beside it, renamed into place when
complete): the model file, and export.json saying what it takes and gives and how close
it came to JAX's logits when written. `onnx_graph` emits the ONNX graph of a Mixer from
its parameters; `quantize` makes int8 ONNX with ONNX Runtime's quantizer; `stablehlo`
serializes any family's forward pass with its weights inside; `tflite` converts it
through jax2tf to TensorFlow Lite (LiteRT), float or int8.
"""

FORMATS = ("onnx", "stablehlo", "tflite")
INT8_FORMATS = ("onnx", "tflite")
INT8_MODES = ("dynamic", "static")
