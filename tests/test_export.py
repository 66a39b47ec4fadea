"""`mixer export`: the exported files run in their own runtimes (ONNX Runtime, jax.export's
deserializer) and give JAX's logits; int8 agrees with float on a real test split."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from jax import export as jax_export
from numpy_gmlp import timm_gmlp_state
from numpy_resmlp import resmlp_state_dict
from numpy_vit import google_vit_params
from safetensors.numpy import save_file

from mixer_cli.cli import run
from mixer_cli.export.quantize import quantize
from mixer_cli.models import registry
from mixer_cli.models.gmlp_onnx import gmlp_graph
from mixer_cli.models.mixer_onnx import mixer_graph
from mixer_cli.models.registry import load_checkpoint
from mixer_cli.models.resmlp_onnx import resmlp_graph
from mixer_cli.models.vit_onnx import vit_graph
from mixer_cli.tasks.export import run_onnx
from mixer_cli.weights.arrays import flat_params


def logits(loaded, images: np.ndarray) -> np.ndarray:
    return np.asarray(jax.jit(loaded.model.apply)({"params": loaded.params}, images)[0])


@pytest.mark.parametrize("fold", [True, False], ids=["layernorms-folded", "as-trained"])
@pytest.mark.parametrize("gelu", ["tanh", "exact"])
def test_the_onnx_graph_gives_jax_logits(tmp_path: Path, official_npz, fold, gelu) -> None:
    from mixer_cli.models.mixer_checkpoint import pretrained_from_flat

    _, flat = official_npz
    model = pretrained_from_flat(flat, "official", gelu=gelu)
    path = tmp_path / "m.onnx"
    path.write_bytes(mixer_graph(flat, 16, gelu=gelu, fold=fold).SerializeToString())
    images = np.random.default_rng(0).uniform(-1, 1, (5, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(path, images), np.asarray(model(images)), atol=1e-4)


VIT = {"patch": 4, "layers": 2, "width": 16, "mlp": 32, "heads": 2}  # 2 blocks, 2 heads


@pytest.mark.parametrize(
    ("options", "fold", "gelu"),
    [
        ({"classifier": "gap", "num_classes": 5}, False, "exact"),
        ({"classifier": "token", "num_classes": 0}, True, "tanh"),
    ],
    ids=["gap-exact-as-trained", "token-no-head-tanh-layernorms-folded"],
)
def test_the_vit_onnx_graph_gives_jax_logits(tmp_path: Path, options, fold, gelu) -> None:
    flat = google_vit_params(**VIT, side=3, seed=1, **options)
    loaded = registry.family_of(flat, "vit.npz").load(flat, "vit.npz", None, {"gelu": gelu})
    path = tmp_path / "v.onnx"
    path.write_bytes(vit_graph(flat, 12, fold=fold, gelu=gelu).SerializeToString())
    images = np.random.default_rng(0).uniform(-1, 1, (3, 12, 12, 3)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(path, images), logits(loaded, images), atol=1e-4)


def test_a_vit_exports_onnx_float_and_int8_through_the_cli(capfd, tmp_path: Path) -> None:
    """The class token and pre_logits, uint8 pixels, a fixed batch: the float file gives
    JAX's logits; dynamic int8 makes every weight's MatMul an integer product (attention's
    products of activations stay float) and keeps the float model's top-1. ONNX Runtime's
    quantizer's advice is not shown."""
    flat = google_vit_params(**VIT, side=4, num_classes=10, representation=12)
    np.savez(tmp_path / "vit.npz", **flat)
    out = tmp_path / "onnx"
    argv = ["export", "--init", str(tmp_path / "vit.npz"), "--int8", "dynamic", "--uint8-input"]
    assert run([*argv, "--batch-size", "4", "--out", str(out)]) == 0
    assert "pre-processing before quantization" not in capfd.readouterr().err
    record = json.loads((out / "export.json").read_text())
    assert record["family"] == "vit" and record["input"]["shape"] == [4, 16, 16, 3]
    assert record["max_abs_diff"] <= 1e-4, record
    assert record["int8"]["top1_agreement"] >= 0.9, record["int8"]  # 16 random images
    ops = [node.op_type for node in onnx.load(out / "model.int8.onnx").graph.node]
    kernels = [k for k in flat if k.endswith("kernel")]
    assert ops.count("MatMulInteger") == len(kernels) - 2 * 2  # q, k, v: one MatMul
    assert ops.count("MatMul") == 2 * 2 and ops.count("Softmax") == 2  # 2 blocks


# The all-MLP families with token-mixing weights besides the Mixer: (timm's state dict of a
# random 2-block model at 16 px, patch 4; its graph writer; int8 MatMuls with token mixing
# float: the stem, each block's Dense layers, the head).
TIMM_MLPS = {
    "resmlp": (
        lambda: resmlp_state_dict(patch=4, num_blocks=2, hidden=16, seq_len=16, mlp=64,
                                  num_classes=5, seed=1),
        resmlp_graph,
        1 + 2 * 2 + 1,
    ),
    "gmlp": (
        lambda: timm_gmlp_state(patch=4, blocks=2, dim=16, ratio=6, seq_len=16, classes=7,
                                seed=1),
        gmlp_graph,
        1 + 2 * 3 + 1,  # channel_in is two MatMuls, one per half
    ),
}  # fmt: skip


@pytest.mark.parametrize("family", TIMM_MLPS)
def test_an_mlp_family_exports_onnx_float_and_int8_through_the_cli(tmp_path: Path, family) -> None:
    """timm's ResMLP and gMLP (random Affines, layer scales and LayerNorms, the exact GELU):
    the graph gives JAX's logits with its norms and scales folded (the export) and as
    trained; dynamic int8 makes every Dense an integer product but, with
    --float-token-mixing, the Dense layers across tokens."""
    state, graph_of, integer_matmuls = TIMM_MLPS[family]
    path, out = tmp_path / f"{family}.safetensors", tmp_path / "onnx"
    save_file(state(), str(path), metadata={"format": "pt"})
    argv = ["export", "--init", str(path), "--int8", "dynamic", "--float-token-mixing"]
    assert run([*argv, "--out", str(out)]) == 0
    record = json.loads((out / "export.json").read_text())
    assert record["family"] == family and record["gelu"] == "exact"
    assert record["max_abs_diff"] <= 1e-4 and record["int8"]["top1_agreement"] >= 0.9, record
    nodes = onnx.load(out / "model.int8.onnx").graph.node
    kept = [node.name for node in nodes if node.op_type == "MatMul"]
    assert len(kept) == 2 and all(name.startswith("token_matmul") for name in kept)
    assert [node.op_type for node in nodes].count("MatMulInteger") == integer_matmuls
    loaded = load_checkpoint(path)
    graph = graph_of(flat_params(loaded.params), 16, gelu="exact", fold=False)
    (tmp_path / "as-trained.onnx").write_bytes(graph.SerializeToString())
    images = np.random.default_rng(1).uniform(-1, 1, (3, 16, 16, 3)).astype(np.float32)
    got = run_onnx(tmp_path / "as-trained.onnx", images)
    np.testing.assert_allclose(got, logits(loaded, images), atol=1e-4)


def test_export_writes_onnx_float_and_int8_that_agree_on_real_images(
    capsys, tmp_path: Path, uninterrupted: Path
) -> None:
    out = tmp_path / "onnx"
    argv = ["export", "--init", str(uninterrupted), "--format", "onnx", "--int8", "dynamic"]
    assert run([*argv, "--data", "digits", "--out", str(out), "--json"]) == 0
    record = json.loads((out / "export.json").read_text())
    assert record["checked_on"] == 360 and record["max_abs_diff"] <= 1e-4  # digits' test split
    assert record["int8"]["top1_agreement"] >= 0.99, record["int8"]
    assert (out / "model.int8.onnx").stat().st_size < (out / "model.onnx").stat().st_size / 2
    # every Dense is an integer product, token mixing's too (its weights are on the right)
    kernels = [k for k in flat_params(load_checkpoint(uninterrupted).params) if "kernel" in k]
    ops = [node.op_type for node in onnx.load(out / "model.int8.onnx").graph.node]
    assert ops.count("MatMulInteger") == len(kernels) and "MatMul" not in ops
    quantize(out / "model.onnx", tmp_path / "q.onnx", "dynamic", float_token_mixing=True)
    kept = [node.op_type for node in onnx.load(tmp_path / "q.onnx").graph.node]
    assert kept.count("MatMul") == 2 * 4 == len(kernels) - kept.count("MatMulInteger")  # N/2
    # and ONNX Runtime fuses every GELU of the float graph into one kernel
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(str(out / "model.onnx"), options, providers=["CPUExecutionProvider"])
    raw = [node.op_type for node in onnx.load(out / "model.onnx").graph.node]
    fused = [node.op_type for node in onnx.load(tmp_path / "optimised.onnx").graph.node]
    gelus = raw.count("Tanh") + raw.count("Erf")
    assert gelus == 2 * 4 and not {"Tanh", "Erf"} & set(fused)  # N/2: 4 blocks
    assert sum(fused.count(op) for op in ("Gelu", "BiasGelu", "FastGelu")) == gelus
    capsys.readouterr()
    assert run([*argv, "--data", "digits", "--out", str(out)]) == 2  # exists: refused
    assert "pass --overwrite" in capsys.readouterr().err
    assert json.loads((out / "export.json").read_text()) == record  # untouched


def test_stablehlo_runs_with_jax_alone_at_any_batch_and_uint8_onnx_takes_pixels(
    tmp_path: Path, official_npz
) -> None:
    path, _ = official_npz
    loaded = load_checkpoint(path)
    assert (
        run(["export", "--init", path, "--format", "stablehlo", "--out", str(tmp_path / "s")]) == 0
    )
    exported = jax_export.deserialize(bytearray((tmp_path / "s" / "model.stablehlo").read_bytes()))
    for batch in (1, 7):
        images = np.random.default_rng(batch).uniform(-1, 1, (batch, 16, 16, 3)).astype("f4")
        np.testing.assert_allclose(
            np.asarray(exported.call(images)), logits(loaded, images), atol=1e-4
        )
    argv = ["export", "--init", path, "--uint8-input", "--batch-size", "4"]
    assert run([*argv, "--out", str(tmp_path / "u")]) == 0
    pixels = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3)).astype(np.uint8)
    want = logits(loaded, pixels.astype(np.float32) / 127.5 - 1)
    np.testing.assert_allclose(run_onnx(tmp_path / "u" / "model.onnx", pixels), want, atol=1e-4)
    contract = json.loads((tmp_path / "u" / "export.json").read_text())["input"]
    assert contract["dtype"] == "uint8" and contract["shape"] == [4, 16, 16, 3]


def test_static_int8_calibrates_on_what_a_fixed_batch_uint8_graph_takes(
    tmp_path: Path, official_npz
) -> None:
    """Calibration batches of 3 images in [-1, 1] reach a batch-4 uint8 graph as batches of
    4 uint8 pixels (the last filled up with its own images): ONNX Runtime takes them."""
    from mixer_cli.tasks.export import ExportSettings, write_export

    loaded = load_checkpoint(official_npz[0])
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (8, 16, 16, 3)).astype(np.float32)
    calibration = iter([rng.uniform(-1, 1, (3, 16, 16, 3)).astype(np.float32)] * 3)
    settings = ExportSettings("onnx", tmp_path / "q", "static", 4, uint8_input=True)
    record = write_export(loaded, settings, images, None, calibration, official_npz[0])
    assert record["int8"]["mode"] == "static" and record["input"]["shape"][0] == 4
    assert record["int8"]["max_abs_diff"] < 0.5, record["int8"]  # int8, yet close to float


def test_overwrite_replaces_a_file_or_a_directory_and_keeps_no_copy(
    tmp_path: Path, official_npz
) -> None:
    out = tmp_path / "old_export"
    out.write_text("a file where the export goes")
    argv = ["export", "--init", official_npz[0], "--out", str(out), "--overwrite"]
    for _ in ("over a file", "over a directory"):
        assert run(argv) == 0
        assert [p.name for p in tmp_path.iterdir()] == ["old_export"]  # no .old_export.*
        assert json.loads((out / "export.json").read_text())["file"] == "model.onnx"


@pytest.mark.slow  # TensorFlow's converter: ~10 s; the default suite must stay under 10 min
def test_tflite_float_and_dynamic_int8_run_in_the_tflite_interpreter(
    tmp_path: Path, official_npz
) -> None:
    from mixer_cli.export import tflite

    path, _ = official_npz
    loaded = load_checkpoint(path)
    argv = ["export", "--init", path, "--format", "tflite", "--int8", "dynamic"]
    assert run([*argv, "--batch-size", "2", "--out", str(tmp_path / "t")]) == 0
    images = np.random.default_rng(3).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    got = tflite.run(str(tmp_path / "t" / "model.tflite"), images)
    np.testing.assert_allclose(got, logits(loaded, images), atol=1e-4)
    record = json.loads((tmp_path / "t" / "export.json").read_text())
    assert record["int8"]["file"] == "model.int8.tflite" and record["input"]["shape"][0] == 2
    quantized = tflite.run(str(tmp_path / "t" / "model.int8.tflite"), images)
    assert quantized.shape == got.shape and np.abs(quantized - got).max() < 0.5


@pytest.mark.slow  # four child processes, two of them importing JAX: ~16 s
def test_latency_of_the_jax_model_and_of_an_exported_file(tmp_path: Path, official_npz) -> None:
    path, _ = official_npz
    assert run(["export", "--init", path, "--out", str(tmp_path / "e")]) == 0
    for source in (["--exported", str(tmp_path / "e")], ["--variant", "N/2", "--resolution", "8"]):
        where = tmp_path / f"bench-{len(source)}"
        argv = ["bench", "--mode", "latency", "--calls", "10", *source, "--workdir", str(where)]
        assert run(argv) == 0
        timings = json.loads((where / "results.json").read_text())["latency"]
        assert len(timings) == 2  # one core, all cores
        for row in timings.values():
            assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] and row["calls"] == 10


def test_one_table_entry_is_a_format_for_export_and_latency(
    monkeypatch, tmp_path: Path, official_npz
) -> None:
    """A format is its entry in `export.formats.REGISTRY`: `mixer export` writes and checks
    it, and the latency child loads it, with nothing else to change (here StableHLO's
    writer and runtime under another name and suffix)."""
    from dataclasses import replace

    from mixer_cli.core.errors import ConfigError
    from mixer_cli.export import formats
    from mixer_cli.tasks.latency import child

    fake = replace(formats.REGISTRY["stablehlo"], name="fake", file="model.fake")
    monkeypatch.setitem(formats.REGISTRY, "fake", fake)
    path, _ = official_npz
    assert run(["export", "--init", path, "--format", "fake", "--out", str(tmp_path / "f")]) == 0
    record = json.loads((tmp_path / "f" / "export.json").read_text())
    assert record["file"] == "model.fake" and record["max_abs_diff"] <= 1e-4
    spec = {"exported": str(tmp_path / "f"), "cores": 0, "batch_size": 3, "calls": 10}
    timing = child({**spec, "warmup": 1})  # in this process: all cores, no pinning
    assert timing["calls"] == 10 and 0 < timing["p50_ms"] <= timing["p99_ms"]
    # what no entry covers is refused: a foreign file, a family without the capability
    (tmp_path / "f" / "model.fake").rename(tmp_path / "f" / "model.bin")
    (tmp_path / "f" / "export.json").write_text(json.dumps({**record, "file": "model.bin"}))
    with pytest.raises(ConfigError, match="not a file mixer export writes"):
        child({**spec, "warmup": 1})
    with pytest.raises(
        ConfigError, match=r"families mixer, vit, resmlp, gmlp; r\.npz is a resnet: use"
    ):
        formats.check_family(formats.get("onnx"), "resnet", "r.npz")
