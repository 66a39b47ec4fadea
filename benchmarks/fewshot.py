"""Few-shot benchmarks: the ridge solve at ImageNet scale, and CIFAR-10 few-shot accuracy.

    python benchmarks/fewshot.py solve                      # 1000 classes x 25 shots, 1024-d
    python benchmarks/fewshot.py quality --init RUN --data folder:DIR --out OUT
    python benchmarks/fewshot.py extraction --init RUN --data folder:DIR

`quality` runs `mixer fewshot` (1/5/10/25 shots, 3 seeds) on the given checkpoint and on a
random-initialised model of the same shape (the floor), and prints both tables; the
timings of a second, cached run show what the feature cache saves. Not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def solve(args: argparse.Namespace) -> None:
    from mixer_cli.evals.ridge import Ridge, sample_shots

    rng = np.random.default_rng(0)
    classes, shots, dim = args.classes, args.shots, args.dim
    train_labels = np.repeat(np.arange(classes), 30)
    train = rng.standard_normal((len(train_labels), dim)).astype(np.float32)
    test = rng.standard_normal((args.test, dim)).astype(np.float32)
    timings = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        chosen = sample_shots(train_labels, shots, seed=0, num_classes=classes)
        ridge = Ridge.fit(train[chosen], train_labels[chosen], classes)
        ridge.predict(test, 1024.0)
        timings.append(time.perf_counter() - started)
    each = ", ".join(f"{t:.2f}" for t in timings)
    print(
        f"{classes} classes x {shots} shots, {dim}-d features, {args.test:,} test images: "
        f"median {np.median(timings):.2f} s over {args.repeats} ({each})"
    )


def random_init_npz(like: Path, out: Path) -> Path:
    """A random-initialised model of the checkpoint's shape, as our initialiser makes it."""
    import jax

    from mixer_cli.models.mixer_checkpoint import read_checked
    from mixer_cli.weights.arrays import write_npz

    _, arch = read_checked(like)
    model = arch.create_model()
    images = np.zeros((1, arch.resolution, arch.resolution, 3), np.float32)
    params = jax.device_get(model.init(jax.random.key(0), images)["params"])
    return write_npz(params, out / "random-init.npz")


def quality(args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    floor = random_init_npz(args.init, args.out)
    for name, init in (("pre-trained", args.init), ("random init", floor)):
        for attempt in ("first", "cached"):
            workdir = args.out / f"{name.replace(' ', '-')}-{attempt}"
            started = time.time()
            argv = ["fewshot", "--init", str(init), "--data", args.data, "--workdir", str(workdir)]
            subprocess.run([sys.executable, "-m", "mixer_cli", *argv], check=True)
            results = json.loads((workdir / "results.json").read_text())
            print(f"{name} ({attempt} run): {time.time() - started:.0f} s wall")
            (dataset,) = results["datasets"].values()
            print(json.dumps({k: v["mean"] for k, v in dataset["shots"].items()}))


def extraction(args: argparse.Namespace) -> None:
    """Feature extraction against its two parts alone: the forward pass and the pipeline."""
    import jax
    import jax.numpy as jnp

    from mixer_cli.core.distributed import make_mesh
    from mixer_cli.data import EvalBatches, Preprocessing, open_dataset
    from mixer_cli.evals.base import FEATURES, Split
    from mixer_cli.evals.forward import run_pass
    from mixer_cli.models.mixer_checkpoint import load_pretrained

    model = load_pretrained(args.init)
    r, b = model.resolution, args.batch_size
    forward = jax.jit(lambda p, x: model.model.apply({"params": p}, x)[1]["pre_logits"])
    images = jnp.zeros((b, r, r, 3))
    forward(model.params, images).block_until_ready()
    started = time.perf_counter()
    for _ in range(20):
        out = forward(model.params, images)
    out.block_until_ready()
    forward_rate = 20 * b / (time.perf_counter() - started)
    source = open_dataset(args.data)
    split = source.eval_split
    batches = EvalBatches(source, split, Preprocessing(resolution=r), b, make_mesh())
    started = time.perf_counter()
    count = sum(len(batch["image"]) for batch in batches.host_batches())
    pipeline_rate = count / (time.perf_counter() - started)
    started = time.perf_counter()
    whole = Split(source, split, Preprocessing(resolution=r))
    run_pass(model.model, model.params, whole, frozenset({FEATURES}), b)
    extraction_rate = count / (time.perf_counter() - started)
    serial = 1 / (1 / forward_rate + 1 / pipeline_rate)
    print(
        f"{split}: forward {forward_rate:.0f} img/s, pipeline {pipeline_rate:.0f} img/s, "
        f"both in series {serial:.0f} img/s; extraction {extraction_rate:.0f} img/s "
        f"({extraction_rate / serial:.0%} of the series, {extraction_rate / forward_rate:.0%} "
        "of the forward pass)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("solve")
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--shots", type=int, default=25)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--test", type=int, default=50_000)
    p.add_argument("--repeats", type=int, default=3)
    p = commands.add_parser("quality")
    p.add_argument("--init", type=Path, required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", type=Path, required=True)
    p = commands.add_parser("extraction")
    p.add_argument("--init", type=Path, required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    {"solve": solve, "quality": quality, "extraction": extraction}[args.command](args)


if __name__ == "__main__":
    main()
