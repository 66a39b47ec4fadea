"""Old code vs new on the same inputs: every number and array must be identical.

A redesign moves code; it must not move results. This runs the same `mixer` commands
with two checkouts (`PYTHONPATH=CHECKOUT python -m mixer_cli ...`, a fresh run directory
each) and compares what they wrote: arrays of params.npz exactly, every number of
results.json / export.json exactly (times, speeds and paths left out), the exported
ONNX file byte for byte.

    python benchmarks/unchanged.py --old 13ca551 --out /work/unchanged   # old: a commit

The old checkout is a `git worktree` of that commit under OUT (made once); a rerun
skips the commands whose run directory is complete, so the work can be done in parts.
Writes OUT/results.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
# (name, arguments with RUN for its run directory and PRE for the pre-training's, what it
# writes that must match)
COMMANDS = [
    ("pretrain", "pretrain --steps 100 --workdir RUN", ["params.npz", "results.json"]),
    (
        "fewshot",
        "fewshot --init PRE --shots 1,5,10 --no-cache --workdir RUN",
        ["results.json"],
    ),
    (
        "finetune at 2x",
        "finetune --init PRE --steps 20 --resolution 16 --workdir RUN",
        ["params.npz", "results.json"],
    ),
    (
        "permute",
        "permute --mode patch --no-reference --steps 20 --batch-size 32 --workdir RUN",
        ["results.json"],
    ),
    ("segment", "segment --steps 20 --batch-size 32 --workdir RUN", ["params.npz", "results.json"]),
    ("export onnx", "export --init PRE --format onnx --out RUN", ["model.onnx", "export.json"]),
]
# Keys whose values measure the machine or name places, not results.
UNCOMPARED = {
    "seconds",
    "solve_seconds",
    "figure",
    "train_seconds",
    "images_per_sec",
    "img_per_sec",
    "init",
    "workdir",
    "path",
    "files",
    "out",
    "source",
    "latency",
}


def checkout(commit: str, out: Path) -> Path:
    """A worktree of `commit` (made once)."""
    where = out / f"checkout-{commit}"
    if not where.exists():
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(where), commit], cwd=REPO, check=True
        )
    return where


def run(code: Path, runs: Path) -> dict[str, float]:
    """Every command with `code` first on the path; seconds per command."""
    env = {**os.environ, "PYTHONPATH": str(code), "MIXER_CACHE_DIR": str(runs / "cache")}
    seconds = {}
    for name, arguments, outputs in COMMANDS:
        workdir = runs / name.replace(" ", "-")
        workdir.parent.mkdir(parents=True, exist_ok=True)
        if all((workdir / o).exists() for o in outputs):
            continue
        argv = arguments.replace("RUN", str(workdir)).replace("PRE", str(runs / "pretrain"))
        started = time.time()
        subprocess.run(
            [sys.executable, "-m", "mixer_cli", *argv.split()], env=env, check=True, cwd=runs
        )
        seconds[name] = time.time() - started
    return seconds


def differences(old: Any, new: Any, where: str = "") -> list[str]:
    """Where two JSON trees differ (numbers exactly), skipping UNCOMPARED keys."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = [f"{where}/{k}: only in one" for k in set(old) ^ set(new) if k not in UNCOMPARED]
        for key in sorted(set(old) & set(new) - UNCOMPARED):
            found += differences(old[key], new[key], f"{where}/{key}")
        return found
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [
            d
            for i, (a, b) in enumerate(zip(old, new, strict=True))
            for d in differences(a, b, f"{where}[{i}]")
        ]
    return [] if old == new or (old != old and new != new) else [f"{where}: {old!r} != {new!r}"]


def compare(old: Path, new: Path) -> tuple[int, list[str]]:
    """(values compared, differences) of one output file."""
    if old.suffix == ".npz":
        with np.load(old) as a, np.load(new) as b:
            diffs = [
                k
                for k in set(a.files) | set(b.files)
                if k not in a or k not in b or not np.array_equal(a[k], b[k])
            ]
            return sum(a[k].size for k in a.files), diffs
    if old.suffix == ".json":
        a, b = json.loads(old.read_text()), json.loads(new.read_text())
        return len(json.dumps(a)), differences(a, b)
    return old.stat().st_size, [] if old.read_bytes() == new.read_bytes() else ["bytes differ"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", required=True, help="the commit before the change")
    parser.add_argument("--new", default=str(REPO), help="the checkout after it")
    parser.add_argument("--out", type=Path, required=True, help="kept run directories")
    parser.add_argument("--only", choices=("old", "new"), help="run one side, compare nothing")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sides = {"old": checkout(args.old, args.out), "new": Path(args.new)}
    if args.only:
        run(sides[args.only], args.out / args.only)
        return
    seconds = {side: run(code, args.out / side) for side, code in sides.items()}
    rows = []
    for name, _, outputs in COMMANDS:
        for output in outputs:
            folder = name.replace(" ", "-")
            size, diffs = compare(
                args.out / "old" / folder / output, args.out / "new" / folder / output
            )
            rows.append({"command": name, "file": output, "compared": size, "differences": diffs})
            verdict = "identical" if not diffs else f"{len(diffs)} differ: {diffs[:3]}"
            print(f"{name:16s} {output:13s} {verdict}")
    (args.out / "results.json").write_text(json.dumps({"rows": rows, "seconds": seconds}, indent=2))
    sys.exit(1 if any(r["differences"] for r in rows) else 0)


if __name__ == "__main__":
    main()
