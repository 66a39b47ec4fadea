"""What each option of the `cifar10_cpu` recipe buys: the recipe, and the recipe with one
option taken out, each a fresh `mixer pretrain` at a shorter budget (the weight average's
share is read from every run itself: `ema/test/top1` against `test/top1`).

    python benchmarks/cifar_ablation.py --data folder:/tmp/cifar --out /tmp/ablation --steps 1400

Each arm's run directory resumes if the script is stopped. Prints a table of test top-1
(raw weights and their average) and wall time per arm. Not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ARMS = {
    "recipe (conv stem, label smoothing 0.1, EMA 0.999)": [],
    "linear stem": ["--set", "model.stem=linear"],
    "no label smoothing": ["--set", "train.label_smoothing=0"],
    "linear stem, no label smoothing (the old recipe + EMA)": [
        *["--set", "model.stem=linear", "--set", "train.label_smoothing=0"],
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=1400)
    parser.add_argument("--arms", type=int, default=len(ARMS), help="Run the first N arms.")
    args = parser.parse_args()
    rows = []
    for i, (arm, options) in enumerate(list(ARMS.items())[: args.arms]):
        where = args.out / f"arm{i}"
        command = [sys.executable, "-m", "mixer_cli", "pretrain", "--recipe", "cifar10_cpu"]
        command += ["--data", args.data, "--steps", str(args.steps), "--workdir", str(where)]
        command += ["--set", f"train.eval_every={args.steps}"]
        command += ["--set", f"train.checkpoint_every={args.steps}", *options]
        start = time.perf_counter()
        subprocess.run(command, check=True)
        seconds = time.perf_counter() - start
        results = json.loads((where / "results.json").read_text())
        rows.append((arm, results["test/top1"], results["ema/test/top1"], seconds))
        print(json.dumps({"arm": arm, "top1": rows[-1][1], "ema_top1": rows[-1][2], "s": seconds}))
    print(f"\n| arm ({args.steps} steps of 128) | test top-1 | EMA test top-1 | wall |")
    print("|---|---|---|---|")
    for arm, top1, ema, seconds in rows:
        print(f"| {arm} | {top1:.1%} | {ema:.1%} | {seconds / 60:.1f} min |")


if __name__ == "__main__":
    main()
