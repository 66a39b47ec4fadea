"""Train-step throughput of the engine's step, its FLOPs per image, and MFU on this machine.

    python benchmarks/train_step.py --variant S/32 --batch-size 32
    python benchmarks/train_step.py --variant B/16 --batch-size 8

The step is the engine's (`mixer_cli.train.steps.train_step`: forward, backward, global-
norm clipping, AdamW), jit-compiled with donated buffers on one device, at 224 px with a
1000-class head, on a fixed batch (the input pipeline is measured separately). FLOPs come
from XLA's cost analysis of the compiled step; the peak is a 4096x4096 float32 matmul timed
in the same run; MFU = achieved FLOP/s / peak. Median over windows after compilation.
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from mixer_cli.config import OptimConfig
from mixer_cli.models import create_model
from mixer_cli.train.optim import make_optimizer
from mixer_cli.train.steps import TrainState, train_step


def matmul_peak(n: int = 4096, repeats: int = 5) -> float:
    """FLOP/s of the best of several large square float32 matmuls."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    mm = jax.jit(lambda x: x @ x)
    mm(a).block_until_ready()
    best = min(_timed(lambda: mm(a).block_until_ready()) for _ in range(repeats))
    return 2 * n**3 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="S/32")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed window")
    parser.add_argument("--windows", type=int, default=5)
    args = parser.parse_args()

    model = create_model(args.variant, num_classes=1000)
    tx, schedule = make_optimizer(OptimConfig(warmup_steps=10), 10_000)
    r, b = args.resolution, args.batch_size
    key = jax.random.key(0)
    params = model.init(key, jnp.zeros((1, r, r, 3)))["params"]
    state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), jax.random.key_data(key))
    rng = np.random.default_rng(0)
    batch = {
        "image": jnp.asarray(rng.uniform(-1, 1, (b, r, r, 3)), jnp.float32),
        "label": jax.nn.one_hot(rng.integers(0, 1000, b), 1000),
    }
    step = jax.jit(
        partial(
            train_step, model=model, tx=tx, schedule=schedule, loss_kind="softmax", accum_steps=1
        ),
        donate_argnums=0,
    )
    compiled = step.lower(state, batch).compile()
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    flops_per_image = float(analysis["flops"]) / b

    for _ in range(2):  # warm-up
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    rates = []
    for _ in range(args.windows):
        start = time.perf_counter()
        for _ in range(args.steps):
            state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        rates.append(args.steps * b / (time.perf_counter() - start))
    peak = matmul_peak()
    ips = statistics.median(rates)
    achieved = ips * flops_per_image
    print(
        f"{args.variant} @ {r}px, batch {b}, {jax.devices()[0].platform} x{jax.device_count()}: "
        f"{ips:.2f} img/s (windows {', '.join(f'{x:.2f}' for x in rates)}); "
        f"{flops_per_image / 1e9:.1f} GFLOP/img (train step); {achieved / 1e9:.0f} GFLOP/s; "
        f"matmul peak {peak / 1e9:.0f} GFLOP/s; MFU {achieved / peak:.0%}; "
        f"ceiling {peak / flops_per_image:.2f} img/s"
    )


if __name__ == "__main__":
    main()
