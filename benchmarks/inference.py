"""Inference side by side: every way to run a Mixer on this CPU, against timm's, and the limit.

    /tmp/timmvenv/bin/python benchmarks/inference.py --out /tmp/inference
    /tmp/timmvenv/bin/python benchmarks/inference.py --out /tmp/inference \
        --models B/16@224 S/32@224 N/4@32=/tmp/cifar-run --rounds 2

Run by an interpreter with mixer, torch and timm installed (timm's rows are left out
without them). Each model (VARIANT@RESOLUTION, random weights with 1000 classes and the
exact GELU; or `=CKPT` for a trained checkpoint, as it was trained) is written once as a
safetensors state dict that both sides load, so every path computes the same function:
- mixer: the JAX model (jit), `mixer export` ONNX in ONNX Runtime (float, dynamic int8),
  `mixer export --format tflite` in TFLite (float, dynamic int8);
- timm: `timm.models.mlp_mixer.MlpMixer` in PyTorch eager (inference_mode), and
  exported by torch.onnx (what timm's own `onnx_export` calls) into ONNX Runtime, float
  and quantized by the same ONNX Runtime call as ours (so int8 is compared with int8).
Every (path, core count) runs in a fresh child process pinned with sched_setaffinity
before any runtime starts, the paths alternating (A B C ..., ... C B A) over --rounds;
each child checks its logits against JAX's on the same images. Batch 1 is timed on one
core and on all, batch 32 on all. The limit: the model's FLOPs per image (XLA's count)
over the matmul peak measured in the same run (float32 in XLA and ONNX Runtime; int8 in
ONNX Runtime's MatMulInteger), on one core and on all. Prints markdown rows for
RESULTS.md and writes OUT/inference.json. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from runner import machine  # benchmarks/runner.py

from mixer_cli.tasks.latency import percentiles

HERE = Path(__file__).resolve()
MIXER_PATHS = ("jax", "ort", "ort-int8", "tflite", "tflite-int8")
TIMM_PATHS = ("torch", "timm-ort", "timm-ort-int8")
SECONDS = {1: 5.0, 32: 15.0}  # timed per child and batch (at least 3 calls)
WARMUP = {1: 3, 32: 1}


# ---------------------------------------------------------------- preparing the files


def prepare(model: str, out: Path) -> dict[str, Any]:
    """Write OUT/<name>/: model.safetensors, mixer's exports, timm's ONNX; reuse what exists."""
    name, _, checkpoint = model.partition("=")
    variant, _, res = name.partition("@")
    folder = out / name.replace("/", "_").replace("@", "-")
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / "model.safetensors"
    if not weights.exists():
        write_weights(variant, int(res), checkpoint or None, weights)
    from mixer_cli.models.registry import load_checkpoint

    loaded = load_checkpoint(weights)
    for sub, args in (
        ("onnx", ["--format", "onnx", "--int8", "dynamic"]),
        ("tflite-b1", ["--format", "tflite", "--int8", "dynamic", "--batch-size", "1"]),
        ("tflite-b32", ["--format", "tflite", "--int8", "dynamic", "--batch-size", "32"]),
    ):
        if not (folder / sub).exists():
            command = [sys.executable, "-m", "mixer_cli", "export", "--init", str(weights)]
            subprocess.run([*command, *args, "--out", str(folder / sub)], check=True)
    spec = {
        "weights": str(weights),
        "folder": str(folder),
        "name": name,
        "variant": loaded.name,
        "resolution": loaded.resolution,
        "classes": loaded.num_classes,
        "gelu": loaded.details.get("gelu", "tanh"),
        "trained": checkpoint or None,
    }
    if timm_installed() and not (folder / "timm.int8.onnx").exists():
        child({**spec, "task": "timm-export"})
    from mixer_cli.models import costs

    spec["gflops"] = costs.measure(loaded.model, loaded.resolution)["gflops"]
    return spec


def write_weights(variant: str, resolution: int, checkpoint: str | None, path: Path) -> None:
    import jax
    import jax.numpy as jnp

    from mixer_cli.config import model_config
    from mixer_cli.models import registry
    from mixer_cli.models.timm_state import save

    if checkpoint:
        loaded = registry.load_checkpoint(checkpoint)
        save(loaded.family, loaded.params, path, gelu=loaded.details.get("gelu", "tanh"))
        return
    config = model_config(variant, resolution, "float32", ["model.gelu=exact"])
    model = registry.get("mixer").build(config, 1000, 0.0)
    images = jnp.zeros((1, resolution, resolution, 3), jnp.float32)
    params = model.init(jax.random.key(0), images)["params"]
    # a zero head (mixer's init) gives equal logits: random ones make the checks mean something
    head = params["head"]
    head["kernel"] = jax.random.normal(jax.random.key(1), head["kernel"].shape) * 0.02
    save("mixer", params, path, gelu="exact")


def timm_installed() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) for m in ("torch", "timm"))


def timm_model(spec: dict[str, Any]) -> Any:
    """timm's MlpMixer of the same architecture, holding the same weights."""
    from functools import partial

    import torch
    from safetensors.torch import load_file
    from timm.models.mlp_mixer import MlpMixer

    from mixer_cli.models import parse_variant

    s = parse_variant(spec["variant"])
    act = partial(torch.nn.GELU, approximate="none" if spec["gelu"] == "exact" else "tanh")
    model = MlpMixer(
        num_classes=spec["classes"],
        img_size=spec["resolution"],
        patch_size=s.patch_size,
        num_blocks=s.num_blocks,
        embed_dim=s.hidden_dim,
        mlp_ratio=(s.tokens_mlp_dim / s.hidden_dim, s.channels_mlp_dim / s.hidden_dim),
        act_layer=act,
    )
    model.load_state_dict(load_file(spec["weights"]))
    return model.eval()


def export_timm(spec: dict[str, Any]) -> None:
    import torch

    from mixer_cli.export.quantize import quantize

    folder = Path(spec["folder"])
    model = timm_model(spec)
    x = torch.zeros(1, 3, spec["resolution"], spec["resolution"])
    path = folder / "timm.onnx"
    torch.onnx.export(
        model,
        (x,),
        str(path),
        input_names=["images"],
        output_names=["logits"],
        opset_version=17,
        dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
    )
    quantize(path, folder / "timm.int8.onnx", "dynamic")


# ---------------------------------------------------------------- one child: one path


def check_images(spec: dict[str, Any], batch: int) -> np.ndarray:
    r = spec["resolution"]
    return np.random.default_rng(batch).uniform(-1, 1, (batch, r, r, 3)).astype(np.float32)


def callable_for(spec: dict[str, Any], path: str, batch: int, threads: int) -> Any:
    """A function running one batch on `path`, and returning its logits as NumPy."""
    folder = Path(spec["folder"])
    images = check_images(spec, batch)
    if path == "jax":
        import jax

        from mixer_cli.models.registry import load_checkpoint

        loaded = load_checkpoint(spec["weights"])
        forward = jax.jit(lambda p, x: loaded.model.apply({"params": p}, x)[0])
        x = jax.device_put(images)
        return lambda: np.asarray(jax.block_until_ready(forward(loaded.params, x)))
    if path in ("ort", "ort-int8", "timm-ort", "timm-ort-int8"):
        import onnxruntime as ort

        file = {
            "ort": "onnx/model.onnx",
            "ort-int8": "onnx/model.int8.onnx",
            "timm-ort": "timm.onnx",
            "timm-ort-int8": "timm.int8.onnx",
        }[path]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(
            str(folder / file), options, providers=["CPUExecutionProvider"]
        )
        feed = images.transpose(0, 3, 1, 2).copy() if path.startswith("timm") else images
        return lambda: session.run(None, {"images": feed})[0]
    if path in ("tflite", "tflite-int8"):
        import warnings

        import tensorflow as tf

        file = folder / f"tflite-b{batch}" / f"model{'.int8' if 'int8' in path else ''}.tflite"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            interpreter = tf.lite.Interpreter(model_path=str(file), num_threads=threads)
        interpreter.allocate_tensors()
        index = interpreter.get_input_details()[0]["index"]
        output = interpreter.get_output_details()[0]["index"]

        def call() -> np.ndarray:
            interpreter.set_tensor(index, images)
            interpreter.invoke()
            return interpreter.get_tensor(output)

        return call
    if path == "torch":
        import torch

        torch.set_num_threads(threads)
        model = timm_model(spec)
        x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())

        def run() -> np.ndarray:
            with torch.inference_mode():
                return model(x).numpy()

        return run
    raise ValueError(path)


def time_path(spec: dict[str, Any], path: str, cores: int) -> dict[str, Any]:
    out = {}
    for batch in spec["batches"]:
        fn = callable_for(spec, path, batch, cores)
        logits = fn()  # the first call (compiles, plans, allocates): not timed
        start = time.perf_counter()
        fn()
        once = time.perf_counter() - start
        calls = max(3, min(200, int(SECONDS[batch] / max(once, 1e-4))))
        stats = percentiles(fn, calls, WARMUP[batch])
        out[str(batch)] = {**stats, "logits": np.asarray(logits, np.float64).tolist()}
    return out


def peak(kind: str, cores: int, n: int = 2048) -> float:
    """FLOP/s (2 per multiply-add) of an n x n x n matrix product."""
    rng = np.random.default_rng(0)
    if kind == "jax-f32":
        import jax
        import jax.numpy as jnp

        a = jnp.asarray(rng.standard_normal((n, n)), jnp.float32)
        mm = jax.jit(jnp.matmul)
        fn = lambda: jax.block_until_ready(mm(a, a))  # noqa: E731
    else:
        import onnxruntime as ort
        from onnx import TensorProto, helper

        if kind == "ort-f32":
            a = rng.standard_normal((n, n)).astype(np.float32)
            b = helper.make_tensor("b", TensorProto.FLOAT, (n, n), a.ravel())
            node = helper.make_node("MatMul", ["a", "b"], ["y"])
            inputs = [helper.make_tensor_value_info("a", TensorProto.FLOAT, (n, n))]
            out = helper.make_tensor_value_info("y", TensorProto.FLOAT, (n, n))
        else:  # int8: what dynamic quantization runs (uint8 activations x int8 weights)
            a = rng.integers(0, 255, (n, n), dtype=np.uint8)
            w = rng.integers(-127, 127, (n, n), dtype=np.int8)
            b = helper.make_tensor("b", TensorProto.INT8, (n, n), w.ravel())
            node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
            inputs = [helper.make_tensor_value_info("a", TensorProto.UINT8, (n, n))]
            out = helper.make_tensor_value_info("y", TensorProto.INT32, (n, n))
        graph = helper.make_graph([node], "peak", inputs, [out], initializer=[b])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        options = ort.SessionOptions()
        options.intra_op_num_threads = cores
        session = ort.InferenceSession(
            model.SerializeToString(),
            options,
            providers=["CPUExecutionProvider"],
        )
        fn = lambda: session.run(None, {"a": a})  # noqa: E731
    stats = percentiles(fn, 10, 2)
    return 2 * n**3 / (stats["p50_ms"] / 1e3)


def child(spec: dict[str, Any]) -> Any:
    """Run one task in a fresh process, pinned to spec['cores'] cores (0: all)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, str(HERE), "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode:
        raise RuntimeError(f"{spec.get('task')} {spec.get('path', '')}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def in_child(spec: dict[str, Any]) -> Any:
    cores = spec.get("cores", 0)
    available = sorted(os.sched_getaffinity(0))
    if cores:
        os.sched_setaffinity(0, set(available[:cores]))
    threads = cores or len(available)
    if spec["task"] == "timm-export":
        export_timm(spec)
        return {}
    if spec["task"] == "peak":
        return peak(spec["kind"], threads)
    return time_path(spec, spec["path"], threads)


# ---------------------------------------------------------------- the run and its report


def run(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    cores = len(os.sched_getaffinity(0))
    paths = [*MIXER_PATHS, *(TIMM_PATHS if timm_installed() else ())]
    if args.paths:
        paths = [p for p in paths if p in args.paths]
    results: dict[str, Any] = {"machine": machine(), "cores": cores, "models": {}}
    peaks: dict[str, dict[str, list[float]]] = {}
    for _ in range(args.rounds):
        for kind in ("jax-f32", "ort-f32", "ort-int8"):
            for c in (1, cores):
                rate = child({"task": "peak", "kind": kind, "cores": c})
                peaks.setdefault(kind, {}).setdefault(str(c), []).append(rate)
    results["peak_gflops"] = {
        k: {c: statistics.median(v) / 1e9 for c, v in by.items()} for k, by in peaks.items()
    }
    for model in args.models:
        spec = prepare(model, out)
        timings: dict[str, dict[str, dict[str, list]]] = {}
        for r in range(args.rounds):
            order = paths if r % 2 == 0 else paths[::-1]
            for path in order:
                for c in (1, cores):
                    batches = [1] if c == 1 else [1, 32]
                    got = child({**spec, "task": "time", "path": path, "cores": c,
                                 "batches": batches})  # fmt: skip
                    for batch, stats in got.items():
                        slot = timings.setdefault(path, {}).setdefault(f"{c}/{batch}", {})
                        for key, value in stats.items():
                            slot.setdefault(key, []).append(value)
                    print(f"{spec['name']} round {r} {path} {c} core(s): "
                          f"{ {b: round(s['p50_ms'], 2) for b, s in got.items()} } ms",
                          flush=True)  # fmt: skip
        results["models"][spec["name"]] = summarise(spec, timings)
    (out / "inference.json").write_text(json.dumps(results, indent=1) + "\n")
    return results


def summarise(spec: dict[str, Any], timings: dict[str, Any]) -> dict[str, Any]:
    """Median p50 (and p90) over rounds per path and setting, logits checked against JAX."""
    rows: dict[str, Any] = {}
    reference = {k: np.asarray(v["logits"][0]) for k, v in timings["jax"].items()}
    for path, settings in timings.items():
        for setting, stats in settings.items():
            logits = np.asarray(stats["logits"][0])
            rows.setdefault(setting, {})[path] = {
                "p50_ms": statistics.median(stats["p50_ms"]),
                "p90_ms": statistics.median(stats["p90_ms"]),
                "rounds_p50_ms": stats["p50_ms"],
                "max_abs_diff_vs_jax": float(np.abs(logits - reference[setting]).max()),
                "top1_agree_vs_jax": float(
                    np.mean(logits.argmax(-1) == reference[setting].argmax(-1))
                ),
            }
    keep = ("weights", "variant", "resolution", "classes", "gelu", "gflops", "trained")
    return {**{k: spec[k] for k in keep}, "settings": rows}


def markdown(results: dict[str, Any]) -> str:
    """The RESULTS.md rows: per model and setting, each path's time and the limit."""
    lines = []
    peaks = results["peak_gflops"]
    for name, m in results["models"].items():
        for setting, row in m["settings"].items():
            cores, batch = (int(x) for x in setting.split("/"))
            f32 = max(peaks["jax-f32"][str(cores)], peaks["ort-f32"][str(cores)])
            i8 = peaks["ort-int8"][str(cores)]
            limit_f = m["gflops"] * batch / f32 * 1e3
            limit_i = m["gflops"] * batch / i8 * 1e3
            mixer = {p: v for p, v in row.items() if p in MIXER_PATHS}
            timm = {p: v for p, v in row.items() if p in TIMM_PATHS}
            best_m = min(mixer, key=lambda p: mixer[p]["p50_ms"])
            cells = []
            for path in (*MIXER_PATHS, *TIMM_PATHS):
                if path not in row:
                    cells.append("-")
                    continue
                v = row[path]["p50_ms"]
                text = f"{v:.2f}" if v < 100 else f"{v:.0f}"
                cells.append(f"**{text}**" if path == best_m else text)
            ratio = "-"
            if timm:
                best_t = min(timm, key=lambda p: timm[p]["p50_ms"])
                ratio = f"{timm[best_t]['p50_ms'] / mixer[best_m]['p50_ms']:.2f}x"
            int8 = row["ort"]["p50_ms"] / row["ort-int8"]["p50_ms"] if "ort-int8" in row else 0
            limit = limit_i if "int8" in best_m else limit_f
            close = limit / mixer[best_m]["p50_ms"]
            lines.append(
                f"| {name} | {batch} | {cores} | " + " | ".join(cells)
                + f" | {limit_f:.2f} / {limit_i:.2f} | {close:.0%} | {ratio} | {int8:.2f}x |"
            )  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/inference")
    parser.add_argument("--models", nargs="+", default=["B/16@224", "S/32@224", "N/4@32"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--paths", nargs="*", help="only these paths (default: all)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--report", action="store_true", help="print OUT/inference.json's rows")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(in_child(json.loads(args.child))))
        return
    if args.report:
        results = json.loads((Path(args.out) / "inference.json").read_text())
    else:
        results = run(args)
    print(json.dumps({"peak_gflops": results["peak_gflops"]}))
    print(markdown(results))


if __name__ == "__main__":
    main()
