"""B/16 training on one GPU: `mixer bench`, a per-kernel profile, and timm beside it.

    python benchmarks/gpu.py --out DIR            # on a machine with a CUDA GPU
    python benchmarks/gpu.py --out DIR --sweep    # only the XLA flag sets of SWEEP

One script for a short lease on a lent GPU (see benchmarks/RESULTS.md, "GPU"):
1. `mixer bench --variant B/16 --batch-size 256 --dtype bfloat16` (forward and train,
   MFU against a bf16 8192^3 matmul on random data, measured in the same run);
2. the same train step at batch 512, and at 256 with XLA's Triton GEMMs off (cuBLAS only),
   to see whether batch or GEMM choice moves it;
3. a profile of a few train steps: the device time per kernel, largest first, grouped into
   matmuls, fusions (elementwise, LayerNorm, GELU) and the rest, so the next change
   targets what costs most;
4. timm's `mixer_b16_224` in PyTorch on the same GPU (bf16 autocast, fused Adam, eager),
   forward and train, for the ratio.
Each part runs on its own and a failure is reported, not fatal. Writes summary.md and
the JSON of each part under DIR. `--sweep` instead times the train step once per XLA flag
set in SWEEP (the levers RESULTS.md names for the memory-bound work around the GEMMs),
each in a process of its own, about a minute each.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DTYPE = "bfloat16"
SWEEP = {
    "default": "",
    # cuBLASLt GEMMs, whose epilogues can take the bias add and the tanh-GELU
    "cublaslt": "--xla_gpu_enable_cublaslt=true",
    "cublaslt_no_triton": "--xla_gpu_enable_cublaslt=true --xla_gpu_enable_triton_gemm=false",
    "no_command_buffers": "--xla_gpu_enable_command_buffer=",  # launch overhead, if any
}


def bench(
    cfg: argparse.Namespace, name: str, batch: int, mode: str, env: dict[str, str] | None = None
) -> dict | None:
    """`mixer bench` in a process of its own (XLA flags are read at start-up)."""
    cmd = [sys.executable, "-m", "mixer_cli", "bench", "--variant", cfg.variant, "--dtype", DTYPE]
    cmd += ["--resolution", str(cfg.resolution), "--batch-size", str(batch), "--mode", mode]
    cmd += ["--workdir", str(cfg.out / name), "--json"]
    print("+", " ".join(cmd), flush=True)
    run_env = {**os.environ, "PYTHONPATH": str(ROOT), "MIXER_DEBUG": "1", **(env or {})}
    start = time.perf_counter()
    done = subprocess.run(cmd, env=run_env, capture_output=True, text=True, timeout=420)
    print(f"  exit {done.returncode} after {time.perf_counter() - start:.0f} s", flush=True)
    if done.returncode != 0:
        print(done.stderr[-3000:], flush=True)
        return None
    return json.loads((cfg.out / name / "results.json").read_text())


def profile(cfg: argparse.Namespace, steps: int = 5) -> list[tuple[str, float, int]]:
    """Device time per kernel over `steps` train steps: [(name, ms per step, count)]."""
    import jax

    from mixer_cli.train.throughput import BenchSettings, Workload

    settings = BenchSettings(
        cfg.variant,
        cfg.resolution,
        cfg.batch_size,
        DTYPE,
        "train",
        window_seconds=0.1,
        steps_per_execution=1,  # the profile is per step
    )
    work = Workload(settings)
    step = work.train().step
    for _ in range(3):
        jax.block_until_ready(step())
    trace_dir = Path(tempfile.mkdtemp(prefix="mixer-trace-"))
    jax.profiler.start_trace(str(trace_dir))
    for _ in range(steps):
        jax.block_until_ready(step())
    jax.profiler.stop_trace()
    path = max(trace_dir.rglob("*.xplane.pb"), key=lambda p: p.stat().st_mtime)
    data = jax.profiler.ProfileData.from_file(str(path))
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for plane in data.planes:
        if not plane.name.startswith(cfg.plane):
            continue
        lines = list(plane.lines)
        ops = [line for line in lines if line.name == "XLA Ops"] or [
            line for line in lines if line.name not in ("XLA Modules", "Steps", "Framework Ops")
        ]
        for line in ops:
            for event in line.events:
                totals[event.name] += event.duration_ns / 1e6 / steps
                counts[event.name] += 1
    (cfg.out / "xplane.pb").write_bytes(path.read_bytes())
    return sorted(((n, t, counts[n] // steps) for n, t in totals.items()), key=lambda r: -r[1])


def kind_of(name: str) -> str:
    lowered = name.lower()
    if any(k in lowered for k in ("nvjet", "gemm", "cublas", "xmma", "cutlass", "dot")):
        return "matmul"
    if "fusion" in lowered:
        return "reduction fusion" if "reduce" in lowered else "elementwise fusion"
    return "other"


def timm_rates(cfg: argparse.Namespace, seconds: float = 3.0) -> dict[str, float]:
    """Images/s of timm's B/16 on the GPU: bf16 autocast, fused Adam, eager."""
    import timm
    import torch

    torch.manual_seed(0)
    dev = torch.device("cuda")
    model = timm.create_model("mixer_b16_224", num_classes=1000).to(dev)
    x = torch.randn(cfg.batch_size, 3, cfg.resolution, cfg.resolution, device=dev)
    y = torch.randint(0, 1000, (cfg.batch_size,), device=dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    loss_fn = torch.nn.CrossEntropyLoss()

    def forward() -> None:
        with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16):
            model(x)

    def train() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", torch.bfloat16):
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    rates = {}
    for mode, fn in (("forward", forward), ("train", train)):
        model.train(mode == "train")
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        n = max(1, round(seconds / (time.perf_counter() - start)))
        measured = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(n):
                fn()
            torch.cuda.synchronize()
            measured.append(n * cfg.batch_size / (time.perf_counter() - start))
        rates[mode] = statistics.median(measured)
    return rates


def attempt(what: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:
        print(f"{what} failed:\n{traceback.format_exc()[-3000:]}", flush=True)
        return None


def table(runs: dict[str, dict | None]) -> list[str]:
    """One row per run and mode, as RESULTS.md records them."""
    lines = ["| run | mode | img/s | GFLOP/img | TFLOP/s | MFU | peak TFLOP/s | memory |"]
    lines.append("|---|---|---|---|---|---|---|---|")
    for name, r in runs.items():
        if r is None:
            lines.append(f"| {name} | failed | | | | | | |")
            continue
        for mode in ("forward", "train"):
            if mode in r:
                m = r[mode]
                lines.append(
                    f"| {name} | {mode} | {m['images_per_sec']:,.0f} | "
                    f"{m['gflops_per_image']:.1f} | {m['achieved_gflops'] / 1e3:,.0f} | "
                    f"{m['mfu']:.1%} | {r['matmul_peak_gflops'] / 1e3:,.0f} | "
                    f"{(r.get('peak_memory_bytes') or 0) / 2**30:.1f} GiB |"
                )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variant", default="B/16", help="timm's part needs B/16")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--plane", default="/device:", help="profile planes (CPU: /host:CPU)")
    parser.add_argument("--sweep", action="store_true", help="only the XLA flag sets of SWEEP")
    cfg = parser.parse_args()
    sys.path.insert(0, str(ROOT))  # the profile imports mixer_cli in this process
    cfg.out.mkdir(parents=True, exist_ok=True)
    b = cfg.batch_size
    lines = [f"# {cfg.variant} {DTYPE} at {cfg.resolution} px, batch {b}\n"]
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout
        lines.append(f"device: {smi.strip()}\n")

    if cfg.sweep:
        runs = {
            name: bench(cfg, f"sweep_{name}", b, "train", env={"XLA_FLAGS": flags})
            for name, flags in SWEEP.items()
        }
        lines += table(runs)
        (cfg.out / "sweep.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return
    cublas = {"XLA_FLAGS": "--xla_gpu_enable_triton_gemm=false"}
    runs = {
        f"b{b}": bench(cfg, f"b{b}", b, "both"),
        f"b{2 * b}": bench(cfg, f"b{2 * b}", 2 * b, "train"),
        f"b{b}_cublas": bench(cfg, f"b{b}_cublas", b, "train", env=cublas),
    }
    lines += table(runs)

    timm = attempt("timm", timm_rates, cfg)  # before JAX takes the GPU's memory here
    if "torch" in sys.modules:
        gc.collect()
        sys.modules["torch"].cuda.empty_cache()
    if timm and runs[f"b{b}"]:
        for mode, rate in timm.items():
            ours = runs[f"b{b}"][mode]["images_per_sec"]
            lines.append(f"\ntimm {mode}: {rate:,.0f} img/s (mixer/timm = {ours / rate:.2f}x)")
    kernels = attempt("profile", profile, cfg)
    if kernels:
        total = sum(t for _, t, _ in kernels)
        by_kind: dict[str, float] = defaultdict(float)
        for name, t, _ in kernels:
            by_kind[kind_of(name)] += t
        lines.append(f"\nprofile: {total:.1f} ms of device time per train step")
        lines += [f"- {k}: {t:.1f} ms ({t / total:.0%})" for k, t in by_kind.items()]
        lines.append("\n| kernel | ms/step | share | launches/step |\n|---|---|---|---|")
        lines += [f"| {n[:70]} | {t:.2f} | {t / total:.1%} | {c} |" for n, t, c in kernels[:30]]
        (cfg.out / "kernels.json").write_text(json.dumps(kernels))

    summary = "\n".join(lines)
    (cfg.out / "summary.md").write_text(summary + "\n")
    print(summary)


if __name__ == "__main__":
    main()
