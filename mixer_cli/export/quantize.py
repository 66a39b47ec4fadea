"""int8 ONNX of a float graph with ONNX Runtime's post-training quantizer.

`dynamic`: the MatMul weights stored as int8 (per output channel), activations quantized
per call from their observed range: no calibration data. `static`: activations too, at
scales calibrated on real images (`--data`'s training split through the evaluation
crop), as QDQ nodes that ONNX Runtime fuses into integer kernels.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def quantize(
    float_path: Path,
    out: Path,
    mode: str,
    calibration: Iterator[np.ndarray] | None = None,
    float_token_mixing: bool = False,
) -> None:
    """Write the int8 model of `float_path`; `float_token_mixing` leaves token mixing's
    MatMuls in float (closer to the float model's top-1, slower: benchmarks/RESULTS.md)."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    from mixer_cli.core.onnx_ops import TOKEN_MATMUL

    exclude = []
    if float_token_mixing:
        nodes = onnx.load(str(float_path), load_external_data=False).graph.node
        exclude = [n.name for n in nodes if n.op_type == "MatMul" and TOKEN_MATMUL in n.name]

    if mode == "dynamic":
        # 7-bit weights (reduce_range): on x86 CPUs without VNNI (AVX2 only) ONNX Runtime's
        # u8 x s8 kernels add pairs of products in saturating 16-bit registers, and 8-bit
        # weights overflowed them (top-1 agreement 69-92% in tests/test_export.py on such a
        # machine; 100% for ResMLP and gMLP at 7 bits): ONNX Runtime's documented setting.
        with _without_preprocessing_advice():
            quantize_dynamic(
                str(float_path), str(out), weight_type=QuantType.QInt8, per_channel=True,
                reduce_range=True, op_types_to_quantize=["MatMul"], nodes_to_exclude=exclude,
            )  # fmt: skip
        return

    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration or ())

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {"images": batch}

    with _without_preprocessing_advice():
        quantize_static(
            str(float_path), str(out), Reader(), quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
            op_types_to_quantize=["MatMul"], nodes_to_exclude=exclude,
        )  # fmt: skip


ADVICE = "Please consider to run pre-processing before quantization"


@contextlib.contextmanager
def _without_preprocessing_advice() -> Iterator[None]:
    """ONNX Runtime's quantizer logs advice (shape inference before quantizing) on the root
    logger at every call: our graphs are written whole and need none, and a user should
    see mixer's own output only (MIXER_DEBUG=1 shows it)."""
    import logging
    import os

    def keep(record: logging.LogRecord) -> bool:
        return os.environ.get("MIXER_DEBUG") == "1" or not record.getMessage().startswith(ADVICE)

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)
