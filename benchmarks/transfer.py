"""Transfer benchmark: fine-tune at 1x and 2x resolution against training from scratch.

Pre-train a small Mixer on half of CIFAR-10's classes (`mixer pretrain`, given as
--pretrained), then on the other half: fine-tune it at the native 32 px, fine-tune it
at 64 px (grid factor 2), and train the same model from scratch at 32 px with the same
steps and batch. Prints step-0 and final test top-1 and wall times (recorded in
benchmarks/RESULTS.md). Not part of the tests: it takes tens of CPU minutes.

    python benchmarks/transfer.py --pretrained RUN --data folder:CIFAR_5B --out DIR
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table


def mixer(*argv: str) -> float:
    """Run one `mixer` command in its own process; returns its wall time in seconds."""
    started = time.time()
    subprocess.run([sys.executable, "-m", "mixer_cli", *argv], check=True)
    return time.time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrained", required=True, help="run directory or .npz")
    parser.add_argument("--data", required=True, help="the other classes, e.g. folder:DIR")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.01)
    args = parser.parse_args()

    common = [
        "--data",
        args.data,
        "--steps",
        str(args.steps),
        "--batch-size",
        str(args.batch_size),
        "--set=train.eval_batch_size=1000",
        "--set=optim.warmup_steps=50",
        "--set=data.crop_min_area=0.35",  # as in pre-training: 5% crops of 32 px are noise
    ]
    finetune = ["finetune", "--init", args.pretrained, "--lr", str(args.lr), *common]
    runs = {
        "fine-tune 32 px": [*finetune, "--resolution", "32"],
        "fine-tune 64 px (K=2)": [*finetune, "--resolution", "64"],
        "from scratch 32 px": ["pretrain", "--recipe", "cifar10_cpu", *common],
    }
    rows = []
    for name, argv in runs.items():
        workdir = args.out / name.split(" (")[0].replace(" ", "-")
        seconds = mixer(*argv, "--workdir", str(workdir))
        results = json.loads((workdir / "results.json").read_text())
        rows.append((name, results, seconds))

    table = Table(title=f"transfer to {args.data}: {args.steps} steps of {args.batch_size}")
    for header in ("run", "step-0 top-1", "final top-1", "train s", "wall s"):
        table.add_column(header, justify="right" if header != "run" else "left")
    for name, results, seconds in rows:
        step0 = results.get("at_step0", {}).get("test/top1")
        table.add_row(
            name,
            "-" if step0 is None else f"{step0:.2%}",
            f"{results['test/top1']:.2%}",
            f"{results['train_seconds']:.0f}",
            f"{seconds:.0f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
