"""GFLOP/s of one matmul shape and its two gradients, XLA:CPU against PyTorch, alternating.

    python benchmarks/matmul_shapes.py 1568 768 3072   # B/16 batch 8, channel-mixing Dense_0
    python benchmarks/matmul_shapes.py 1568 512 2048   # S/32 batch 32

M x K x N: forward x[M, K] @ w[K, N]; dX = g[M, N] @ w^T; dW = x^T @ g; and the forward
with bias + tanh-GELU, as a Dense layer of the model computes it. Each is jitted alone
(XLA) or run eagerly (PyTorch, if installed). Median of 5 alternating windows of 10 calls.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import jax
import numpy as np


def seconds_per_call(fn: Callable[[], object], calls: int = 10) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("m", type=int)
    parser.add_argument("k", type=int)
    parser.add_argument("n", type=int)
    args = parser.parse_args()
    m, k, n = args.m, args.k, args.n
    rng = np.random.default_rng(0)
    x, w, g = (rng.standard_normal(s, dtype=np.float32) for s in ((m, k), (k, n), (m, n)))
    try:
        import torch

        gelu = torch.nn.functional.gelu
    except ImportError:
        torch = None
    # name: (operands, the XLA function, the PyTorch function)
    cases = {
        "forward x @ w": ((x, w), lambda a, b: a @ b, lambda a, b: a @ b),
        "dX g @ w^T": ((g, w), lambda a, b: a @ b.T, lambda a, b: a @ b.T),
        "dW x^T @ g": ((x, g), lambda a, b: a.T @ b, lambda a, b: a.T @ b),
        "forward + bias + GELU": (
            (x, w),
            lambda a, b: jax.nn.gelu(a @ b + 1.0, approximate=True),
            lambda a, b: gelu(a @ b + 1.0, approximate="tanh"),
        ),
    }
    flops = 2 * m * k * n
    print(f"{m} x {k} x {n}: GFLOP/s, median of 5")
    for name, (operands, xla_fn, torch_fn) in cases.items():
        jitted, on_device = jax.jit(xla_fn), [jax.device_put(a) for a in operands]
        runs = {"xla": lambda j=jitted, o=on_device: j(*o).block_until_ready()}
        if torch is not None:
            tensors = [torch.from_numpy(a) for a in operands]
            runs["torch"] = lambda f=torch_fn, t=tensors: f(*t)
        rates: dict[str, list[float]] = {impl: [] for impl in runs}
        for _ in range(5):
            for impl, run in runs.items():
                rates[impl].append(flops / seconds_per_call(run) / 1e9)
        line = "  ".join(f"{impl} {statistics.median(r):6.1f}" for impl, r in rates.items())
        print(f"  {name:22s} {line}")


if __name__ == "__main__":
    main()
