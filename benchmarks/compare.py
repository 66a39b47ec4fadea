"""mixer's forward pass and train step against a plain Flax Mixer and timm's, side by side.

    python benchmarks/compare.py --variant S/32 --batch-size 32
    python benchmarks/compare.py --variant B/16 --batch-size 8

Same variant, resolution (224), batch, 1000-class head and fixed synthetic batch for all:
- mixer: the engine's steps (`mixer_cli.train.throughput.Workload`: eval forward; train = forward,
  backward, global-norm clipping, AdamW, donated state, `--steps-per-execution` steps to
  a program as `mixer pretrain` runs them; 1 = one step per call);
- plain: the model written here the simplest way (linen, transposes around the token
  MLP), `jax.jit` of value_and_grad + optax.adam, nothing else;
- timm: `timm.create_model('mixer_s32_224' | 'mixer_b16_224')` in PyTorch (if torch and
  timm are installed), torch.optim.Adam, `torch.inference_mode` for the forward pass.
Timed windows alternate between the implementations (A B C, C B A, ...), with a pause and
an untimed step (`--settle`) before each, so drifts of a shared machine hit all of them
alike; timm runs in a process of its own. With `--isolated`, every window runs in a fresh
process of its own instead (each compiles and warms up first), so that nothing one
implementation leaves behind (thread pools, caches, allocator state) reaches another:

    python benchmarks/compare.py --variant S/32 --batch-size 32 --mode train --isolated

Prints medians and ratios against mixer. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import atexit
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from page_faults import retain_freed_memory

from mixer_cli.models import parse_variant
from mixer_cli.train.throughput import BenchSettings, Workload, synthetic_batch, time_window

Window = Callable[[int], float]  # calls -> seconds they took
IMPLEMENTATIONS = ("mixer", "plain", "timm")

TIMM_NAMES = {
    "S/32": "mixer_s32_224",
    "S/16": "mixer_s16_224",
    "B/32": "mixer_b32_224",
    "B/16": "mixer_b16_224",
    "L/32": "mixer_l32_224",
    "L/16": "mixer_l16_224",
}


class PlainMlp(nn.Module):
    hidden: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = nn.gelu(nn.Dense(self.hidden)(x))
        return nn.Dense(x.shape[-1])(y)


class PlainMixer(nn.Module):
    patch: int
    dim: int
    blocks: int
    tokens_hidden: int
    channels_hidden: int
    classes: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Conv(self.dim, (self.patch, self.patch), strides=self.patch)(x)
        x = x.reshape(x.shape[0], -1, self.dim)
        for _ in range(self.blocks):
            y = nn.LayerNorm(epsilon=1e-6)(x).transpose(0, 2, 1)
            x = x + PlainMlp(self.tokens_hidden)(y).transpose(0, 2, 1)
            x = x + PlainMlp(self.channels_hidden)(nn.LayerNorm(epsilon=1e-6)(x))
        x = nn.LayerNorm(epsilon=1e-6)(x).mean(axis=1)
        return nn.Dense(self.classes, kernel_init=nn.initializers.zeros)(x)


def plain_steps(variant: str, images: np.ndarray, labels: np.ndarray) -> dict[str, Callable]:
    spec = parse_variant(variant)
    model = PlainMixer(
        spec.patch_size,
        spec.hidden_dim,
        spec.num_blocks,
        spec.tokens_mlp_dim,
        spec.channels_mlp_dim,
        labels.shape[1],
    )
    x, y = jnp.asarray(images), jnp.asarray(labels)
    params = model.init(jax.random.key(0), x[:1])
    tx = optax.adam(1e-3)
    opt_state = tx.init(params)

    def loss_fn(params: Any) -> jax.Array:
        return optax.softmax_cross_entropy(model.apply(params, x), y).mean()

    @jax.jit
    def train(params: Any, opt_state: Any) -> tuple[Any, Any, jax.Array]:
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    forward = jax.jit(model.apply)
    state = [params, opt_state]

    def train_step() -> jax.Array:
        state[0], state[1], loss = train(*state)
        return loss

    return {"forward": lambda: forward(state[0], x), "train": train_step}


def timm_steps(variant: str, images: np.ndarray, labels: np.ndarray) -> dict[str, Callable]:
    """timm's forward pass and train step (Adam) on the same batch."""
    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model(TIMM_NAMES[variant], pretrained=False, num_classes=labels.shape[1])
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    y = torch.from_numpy(labels.argmax(1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def forward() -> None:
        model.eval()
        with torch.inference_mode():
            model(x)

    def train() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()

    return {"forward": forward, "train": train}


def timm_worker(
    conn: Any, variant: str, images: np.ndarray, labels: np.ndarray, retain: bool
) -> None:
    """timm in its own process: PyTorch's thread pool and allocator then cannot slow the
    JAX steps (in one process, loading torch cost the engine's step a quarter of its speed
    on this CPU). Answers (mode, steps) with the seconds those steps took."""
    if retain:
        retain_freed_memory()
    steps = timm_steps(variant, images, labels)
    conn.send("ready")
    while (request := conn.recv()) is not None:  # None or a closed pipe: done
        mode, n = request
        conn.send(seconds_of(steps[mode], n))


def seconds_of(step: Callable[[], Any], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        step()
    return time.perf_counter() - start


def timm_windows(
    variant: str, images: np.ndarray, labels: np.ndarray, retain: bool
) -> dict[str, Window]:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    conn, child = ctx.Pipe()
    worker = ctx.Process(
        target=timm_worker, args=(child, variant, images, labels, retain), daemon=True
    )
    worker.start()
    if not conn.poll(600) or conn.recv() != "ready":
        raise RuntimeError("the timm worker did not start")
    atexit.register(conn.send, None)  # let it finish quietly

    def window(mode: str) -> Window:
        def run(n: int) -> float:
            conn.send((mode, n))
            return conn.recv()

        return run

    return {"forward": window("forward"), "train": window("train")}


def jax_windows(steps: dict[str, Callable[[], Any]]) -> dict[str, Window]:
    return {mode: partial(time_window, step) for mode, step in steps.items()}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="S/32", choices=sorted(TIMM_NAMES))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--mode", default="both", choices=["forward", "train", "both"])
    parser.add_argument("--rounds", type=int, default=5, help="timed windows per implementation")
    parser.add_argument("--seconds", type=float, default=3.0, help="about this long per window")
    parser.add_argument(
        "--settle", type=int, default=1, help="untimed steps at the start of every window"
    )
    parser.add_argument(
        "--steps-per-execution",
        type=int,
        default=BenchSettings.steps_per_execution,
        help="mixer's train steps per program, as the engine runs them (1: one per call)",
    )
    parser.add_argument("--no-timm", action="store_true")
    parser.add_argument(
        "--isolated",
        action="store_true",
        help="every window in a fresh process of its own, alternating between implementations",
    )
    parser.add_argument("--only", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)  # --isolated
    parser.add_argument(
        "--retain-freed-memory",
        action="store_true",
        help="glibc's malloc keeps freed memory, in every process (benchmarks/page_faults.py)",
    )
    return parser.parse_args()


def timm_installed() -> bool:
    try:
        import timm  # noqa: F401
    except ImportError:
        print("timm/torch not installed: comparing with the plain formulation only")
        return False
    return True


def measure(
    windows: dict[str, Window], args: argparse.Namespace, steps_per_call: dict[str, int]
) -> dict[str, list[float]]:
    """img/s of `args.rounds` windows of each, alternating A B C, C B A, ...: whatever one
    leaves behind (warm or busy threads, caches) falls on each of the others alike.
    A call is one train step, or for mixer's train mode `steps_per_call[name]` of them."""
    counts = {}
    for name, window in windows.items():  # compile, warm up, size the windows
        window(2)
        counts[name] = max(1, round(args.seconds / window(1)))
    rates: dict[str, list[float]] = {name: [] for name in windows}
    for round_ in range(args.rounds):
        for name in list(windows)[:: 1 if round_ % 2 == 0 else -1]:
            time.sleep(1.0)
            windows[name](args.settle)  # untimed: what the previous one left behind fades
            images = counts[name] * steps_per_call.get(name, 1) * args.batch_size
            rates[name].append(images / windows[name](counts[name]))
    return rates


def in_process(args: argparse.Namespace, modes: tuple[str, ...]) -> None:
    """All implementations timed from this process (timm from a worker process)."""
    names = [args.only] if args.only else list(IMPLEMENTATIONS)
    if "timm" in names and not args.only and (args.no_timm or not timm_installed()):
        names.remove("timm")
    settings = BenchSettings(
        variant=args.variant,
        resolution=args.resolution,
        batch_size=args.batch_size,
        steps_per_execution=args.steps_per_execution,
    )
    batch = synthetic_batch(settings)
    images, labels = batch["image"], batch["label"]
    impls: dict[str, dict[str, Window]] = {}
    if "plain" in names:
        impls["plain"] = jax_windows(plain_steps(args.variant, images, labels))
    if "timm" in names:
        if args.only:  # a process of its own already
            steps = timm_steps(args.variant, images, labels)
            impls["timm"] = {mode: partial(seconds_of, step) for mode, step in steps.items()}
        else:
            impls["timm"] = timm_windows(args.variant, images, labels, args.retain_freed_memory)
    work = Workload(settings) if "mixer" in names else None
    for mode in modes:
        windows, steps_per_call = {}, {}
        if work is not None:
            timed = work.forward() if mode == "forward" else work.train()
            windows["mixer"] = jax_windows({mode: timed.step})[mode]
            steps_per_call["mixer"] = timed.steps_per_call
        windows.update({name: impl[mode] for name, impl in impls.items()})
        rates = measure(windows, args, steps_per_call)
        if args.only:
            print(json.dumps({"mode": mode, "rates": rates[args.only]}))
        else:
            summarise(args, mode, rates)


def isolated(args: argparse.Namespace, modes: tuple[str, ...]) -> None:
    """One fresh process per window, alternating between implementations."""
    names = list(IMPLEMENTATIONS)
    if args.no_timm or not timm_installed():
        names.remove("timm")
    common = [
        *("--variant", args.variant, "--batch-size", str(args.batch_size)),
        *("--resolution", str(args.resolution), "--seconds", str(args.seconds)),
        *("--settle", str(args.settle), "--rounds", "1"),
        *("--steps-per-execution", str(args.steps_per_execution)),
        *(["--retain-freed-memory"] if args.retain_freed_memory else []),
    ]
    for mode in modes:
        rates: dict[str, list[float]] = {name: [] for name in names}
        for round_ in range(args.rounds):
            for name in names[:: 1 if round_ % 2 == 0 else -1]:
                command = [sys.executable, __file__, *common, "--mode", mode, "--only", name]
                out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
                rates[name] += json.loads(out.strip().splitlines()[-1])["rates"]
        summarise(args, mode, rates)


def summarise(args: argparse.Namespace, mode: str, rates: dict[str, list[float]]) -> None:
    medians = {name: statistics.median(r) for name, r in rates.items()}
    where = "fresh processes" if args.isolated else "one run"
    print(f"\n{args.variant} @ {args.resolution}px, batch {args.batch_size}, {mode} ({where}):")
    for name, median in medians.items():
        windows = ", ".join(f"{r:.2f}" for r in rates[name])
        ratio = medians["mixer"] / median
        print(f"  {name:6s} {median:8.2f} img/s  (mixer/{name} = {ratio:.2f}x; {windows})")


def main() -> None:
    args = parse_args()
    if args.retain_freed_memory:
        retain_freed_memory()  # before JAX starts its threads
    modes = ("forward", "train") if args.mode == "both" else (args.mode,)
    if args.isolated and not args.only:
        isolated(args, modes)
    else:
        in_process(args, modes)


if __name__ == "__main__":
    main()
