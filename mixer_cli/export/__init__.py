"""Deployable files of a checkpoint: StableHLO (`jax.export`) and ONNX (float, int8).

`tasks.export.write_export` writes a directory atomically (built beside it, renamed into
place when complete): the model file, and export.json saying what it takes and gives and
how close it came to JAX's logits when written. `formats` is the table of formats (file,
requirements, writer, runtime), read by `mixer export` and `mixer bench --mode latency`.
A family's ONNX graph is its own (`Family.onnx`, models/NAME_onnx.py); `quantize` makes int8
ONNX with ONNX Runtime's quantizer; `stablehlo` serializes any family's forward pass with
its weights inside; `tflite` converts it through jax2tf to TensorFlow Lite (LiteRT),
float or int8.
"""

from mixer_cli.export.formats import FORMATS, INT8_FORMATS, INT8_MODES

__all__ = ["FORMATS", "INT8_FORMATS", "INT8_MODES"]
