"""The export formats: one entry each, read by `mixer export` and `mixer bench --mode latency`.

An entry says everything the commands ask of a format: the file it writes, the Python
modules writing and checking it need, whether (and how) it carries int8, what it asks of
a model family, how to write it (the writers are the per-format modules, and for ONNX
the family's own graph, `Family.onnx`, then `quantize`), and how its runtime loads a file
as a callable `images -> logits`. Adding a format is its writer module plus one entry in `REGISTRY`.

Nothing heavy is imported here: a format's modules load when it is used (the latency
child that times an ONNX file imports ONNX Runtime, not JAX or TensorFlow).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mixer_cli.core.errors import ConfigError

if TYPE_CHECKING:
    from mixer_cli.models.registry import Loaded

INT8_MODES = ("dynamic", "static")
INSTALL_HINT = "pip install 'mixer-cli[export]'"

Runner = Callable[[np.ndarray], np.ndarray]  # images -> logits, in the format's runtime


@dataclass(frozen=True)
class WriteRequest:
    """What a writer gets besides the path: the model and the export's settings."""

    loaded: Loaded
    batch: int | None  # None: any batch
    uint8_input: bool
    int8: str | None = None
    calibration: Iterator[np.ndarray] | None = None  # static int8's images
    float_token_mixing: bool = False


@dataclass(frozen=True)
class ExportFormat:
    name: str
    file: str  # the model file in the export directory
    requires: tuple[str, ...]  # modules that writing and checking the file need
    # (request, path): write the float model file.
    write: Callable[[WriteRequest, Path], None]
    # (path, threads; 0 = the runtime's default) -> images -> logits.
    load: Callable[[Path, int], Runner]
    # (request, float file, int8 file): write the int8 model; None: no int8.
    write_int8: Callable[[WriteRequest, Path, Path], None] | None = None
    int8_modes: tuple[str, ...] = ()  # the modes of INT8_MODES it writes
    int8_refusals: Mapping[str, str] = field(default_factory=dict)  # mode -> why not
    float_token_mixing: bool = False  # takes --float-token-mixing (with int8)
    default_batch: int | None = None  # the batch when none is given (None: dynamic)
    # A family capability (`registry.Family` field) the format needs, and the refusal.
    family_capability: str | None = None
    family_refusal: str = ""  # formatted with covered, source, family
    install: str = INSTALL_HINT

    @property
    def int8_file(self) -> str:
        path = Path(self.file)
        return f"{path.stem}.int8{path.suffix}"

    @property
    def suffix(self) -> str:
        return Path(self.file).suffix


# ONNX: the family's graph from its parameter tree (`Family.onnx`), int8 by ONNX
# Runtime's quantizer.


def _write_onnx(request: WriteRequest, path: Path) -> None:
    from mixer_cli.models import registry

    loaded = request.loaded
    family = registry.get(loaded.family)
    assert family.onnx is not None  # refused before: check_family
    graph = family.onnx(loaded, batch_size=request.batch, uint8_input=request.uint8_input)
    path.write_bytes(graph.SerializeToString())


def _quantize_onnx(request: WriteRequest, float_path: Path, int8_path: Path) -> None:
    from mixer_cli.export.quantize import quantize

    assert request.int8 is not None
    quantize(float_path, int8_path, request.int8, request.calibration, request.float_token_mixing)


def _load_onnx(path: Path, threads: int) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda images: session.run(None, {"images": images})[0]


# StableHLO and TFLite: any family's forward pass, through jax.export (and jax2tf).


def _export_args(request: WriteRequest) -> tuple[Any, ...]:
    loaded = request.loaded
    return (loaded.model, loaded.params, loaded.resolution, request.batch, request.uint8_input)


def _write_stablehlo(request: WriteRequest, path: Path) -> None:
    from mixer_cli.export import stablehlo

    path.write_bytes(stablehlo.export_bytes(*_export_args(request)))


def _load_stablehlo(path: Path, threads: int) -> Runner:
    from mixer_cli.export import stablehlo

    return stablehlo.load(str(path), threads)


def _write_tflite(request: WriteRequest, path: Path) -> None:
    from mixer_cli.export import tflite

    path.write_bytes(tflite.export_bytes(*_export_args(request)))


def _write_tflite_int8(request: WriteRequest, float_path: Path, int8_path: Path) -> None:
    from mixer_cli.export import tflite

    int8_path.write_bytes(tflite.export_bytes(*_export_args(request), request.int8))


def _load_tflite(path: Path, threads: int) -> Runner:
    from mixer_cli.export import tflite

    return tflite.load(str(path), threads)


REGISTRY: dict[str, ExportFormat] = {
    f.name: f
    for f in (
        ExportFormat(
            name="onnx",
            file="model.onnx",
            requires=("onnx", "onnxruntime"),
            write=_write_onnx,
            load=_load_onnx,
            write_int8=_quantize_onnx,
            int8_modes=("dynamic", "static"),
            float_token_mixing=True,
            family_capability="onnx",
            family_refusal="ONNX export covers the families {covered}; {source} is a {family}: "
            "use --format stablehlo",
        ),
        ExportFormat(
            name="stablehlo",
            file="model.stablehlo",
            requires=("jax", "onnxruntime"),
            write=_write_stablehlo,
            load=_load_stablehlo,
        ),
        ExportFormat(
            name="tflite",
            file="model.tflite",
            requires=("tensorflow", "onnxruntime"),
            write=_write_tflite,
            load=_load_tflite,
            write_int8=_write_tflite_int8,
            int8_modes=("dynamic",),
            int8_refusals={
                "static": "--int8 static with --format tflite: TFLite's full-integer conversion "
                "also quantizes every LayerNorm and GELU (top-1 agreed with float on 73% of "
                "digits' test split); use --int8 dynamic, or --format onnx for static int8"
            },
            default_batch=1,  # TFLite wants a fixed batch: 1 unless one is given
        ),
    )
}

FORMATS = tuple(REGISTRY)
INT8_FORMATS = tuple(name for name, f in REGISTRY.items() if f.write_int8 is not None)


def get(name: str) -> ExportFormat:
    """The format called `name`, refusing unknown ones with the valid names."""
    if name not in REGISTRY:
        raise ConfigError(f"unknown format {name!r}: expected one of {', '.join(FORMATS)}")
    return REGISTRY[name]


def for_file(path: Path) -> ExportFormat:
    """The format of a model file, by its suffix (float or int8: model.int8.onnx is ONNX)."""
    for f in REGISTRY.values():
        if Path(path).suffix == f.suffix:
            return f
    raise ConfigError(
        f"{path} is not a file mixer export writes ({', '.join(f.file for f in REGISTRY.values())})"
    )


def check_int8(f: ExportFormat, mode: str | None, float_token_mixing: bool) -> None:
    """Refuse an int8 setting the format cannot write (the mode itself is valid)."""
    if mode is not None and f.write_int8 is None:
        raise ConfigError(
            f"--int8: the {f.name} format cannot carry int8 here; use --format "
            f"{' or '.join(INT8_FORMATS)}"
        )
    if mode is not None and mode not in f.int8_modes:
        raise ConfigError(
            f.int8_refusals.get(mode, f"--int8 {mode} with --format {f.name}: not available")
        )
    if float_token_mixing and (mode is None or not f.float_token_mixing):
        takes = " or ".join(n for n, g in REGISTRY.items() if g.float_token_mixing)
        raise ConfigError(f"--float-token-mixing applies to --format {takes} with --int8")


def require(f: ExportFormat) -> None:
    """Refuse a format whose modules are not installed, saying how to install them."""
    import importlib.util

    missing = [m for m in f.requires if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"mixer export needs {' and '.join(missing)}: {f.install}")


def check_family(f: ExportFormat, family: str, source: str) -> None:
    """Refuse a model family the format does not cover (asked of the family registry)."""
    if f.family_capability is None:
        return
    from mixer_cli.models import registry

    if not getattr(registry.get(family), f.family_capability):
        covered = ", ".join(registry.families_that(f.family_capability))
        raise ConfigError(f.family_refusal.format(covered=covered, source=source, family=family))
