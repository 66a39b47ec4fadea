"""The follow-up architectures on real CIFAR-10 under one CPU budget (benchmarks/RESULTS.md).

For each model (plain Mixer, conv stem, alternating Mixer/attention, summed hybrid,
conv after every block; all N/4 at 32 px): `mixer bench` measures its train step (img/s,
GFLOPs), `mixer info` its parameters, and `mixer pretrain` (recipe cifar10_cpu) trains it
for as many steps as BUDGET seconds of its benchmarked step buy, then scores test top-1
and linear 5-shot (3 seeds) on CIFAR-10's frozen features. Then the shuffle experiment
(`mixer permute --mode patch`) for the conv stem and the summed hybrid.
Not a test: it takes tens of CPU minutes.

    tar xzf ../shared/data/cifar10-jpeg.tar.gz -C /tmp/cifar
    python benchmarks/hybrids.py --data folder:/tmp/cifar --out /tmp/hybrids --budget 240
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from runner import mixer  # benchmarks/runner.py

ARMS: dict[str, list[str]] = {
    "plain Mixer": [],
    "conv stem": ["--set=model.stem=conv"],
    "alternating MAMA": ["--set=model.pattern=MAMA"],
    "summed (MLP + gated attention)": ["--set=model.token_mixing=sum"],
    "conv after every block": ["--set=model.conv_after=0,1,2,3"],
}
# The plain Mixer is exactly invariant to the patch shuffle (tested; measured in RESULTS.md,
# "Shuffle experiment on CIFAR-10"): only the models that lose it are run.
SHUFFLED = ("conv stem", "summed (MLP + gated attention)")
MODEL = ["--variant", "N/4", "--resolution", "32"]


def train_speed(options: list[str], batch_size: int, workdir: Path) -> float:
    """One arm's train img/s from `mixer bench --mode train` (median of 3 windows)."""
    out = mixer("bench", *MODEL, "--batch-size", str(batch_size), "--mode", "train",
                "--windows", "3", "--json", "--workdir", str(workdir), *options,
                capture=True)  # fmt: skip
    return json.loads(out)["train"]["images_per_sec"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="CIFAR-10, e.g. folder:/tmp/cifar")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget", type=float, default=240, help="train-step seconds per model")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--permute-steps", type=int, default=200)
    parser.add_argument("--only", default="", help="comma-separated arm names to run")
    parser.add_argument("--permute-only", action="store_true", help="only the shuffle runs")
    parser.add_argument(
        "--speed-rounds", type=int, default=0,
        help="re-time every arm's train step this many rounds, in turn, on a quiet machine "
        "(the table's img/s: medians); skips training",
    )  # fmt: skip
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    saved = args.out / "hybrids.json"
    rows = json.loads(saved.read_text()) if saved.exists() else []  # --only replaces rows
    arms = {k: v for k, v in ARMS.items() if not args.only or k in args.only.split(",")}
    if args.speed_rounds:
        speeds: dict[str, list[float]] = {name: [] for name in ARMS}
        for _ in range(args.speed_rounds):
            for name, options in ARMS.items():
                speeds[name].append(train_speed(options, args.batch_size, args.out / "speed"))
        for row in rows:
            row["train_img_s_quiet"] = sorted(speeds[row["model"]])[len(speeds[row["model"]]) // 2]
            row["train_img_s_rounds"] = speeds[row["model"]]
        saved.write_text(json.dumps(rows, indent=1))
        print(json.dumps({k: [round(v) for v in vs] for k, vs in speeds.items()}))
        return
    for name, options in ({} if args.permute_only else arms).items():
        slug = name.split(" (")[0].replace(" ", "-")
        ips = train_speed(options, args.batch_size, args.out / f"bench-{slug}")
        described = options or ["--set=model.family=mixer"]  # one row through the registry
        info = json.loads(mixer("info", *MODEL, "--num-classes", "10", "--json", *described,
                                capture=True))[0]  # fmt: skip
        steps = max(50, round(args.budget * ips / args.batch_size))
        run = args.out / slug
        started = time.time()
        mixer("pretrain", "--recipe", "cifar10_cpu", "--data", args.data, *MODEL,
              "--steps", str(steps), "--batch-size", str(args.batch_size), "--workdir", str(run),
              f"--set=optim.warmup_steps={max(1, steps // 10)}", f"--set=train.eval_every={steps}",
              f"--set=train.checkpoint_every={steps}", "--set=evals.fewshot.type=fewshot",
              "--set=evals.fewshot.shots=5", "--set=evals.fewshot.seeds=3", *options)  # fmt: skip
        results = json.loads((run / "results.json").read_text())
        rows = [r for r in rows if r["model"] != name]
        rows.append(
            {
                "model": name,
                "variant": results["variant"],
                "params": info["params"],
                "gflops": info["gflops"],
                "train_img_s": ips,
                "steps": steps,
                "wall_s": time.time() - started,
                "top1": results["test/top1"],
                "fewshot5": results["fewshot/5shot"],
            }
        )
        (args.out / "hybrids.json").write_text(json.dumps(rows, indent=1))
    shuffles = {}
    for name in SHUFFLED:  # whichever arms --only retrains
        slug = name.split(" (")[0].replace(" ", "-")
        where = args.out / f"permute-{slug}"
        mixer("permute", "--mode", "patch", "--data", args.data, *MODEL, "--steps",
              str(args.permute_steps), "--batch-size", "64", "--workdir", str(where),
              *ARMS[name])  # fmt: skip
        shuffles[name] = json.loads((where / "results.json").read_text())["models"]["mixer"]
        (args.out / "shuffles.json").write_text(json.dumps(shuffles, indent=1))
    table = Table(title=f"CIFAR-10, N/4 at 32 px, {args.budget:.0f} s of train steps each")
    for column in ("model", "params", "GFLOPs", "train img/s", "steps", "top-1", "5-shot"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["model"], f"{r['params']:,}", f"{r['gflops']:.3f}",
                      f"{r['train_img_s']:.0f}", str(r["steps"]), f"{r['top1']:.1%}",
                      f"{r['fewshot5']:.1%}")  # fmt: skip
    Console().print(table)
    for name, model in shuffles.items():
        runs = model["runs"]
        print(name, {mode: round(run["test/top1"], 4) for mode, run in runs.items()})


if __name__ == "__main__":
    main()
