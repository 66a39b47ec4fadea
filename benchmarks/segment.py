"""`mixer segment` benchmark: mIoU from a random init against a classification warm start,
at 1x and 2x the checkpoint's grid, on the offline digit scenes and on CIFAR-10 mosaics.

    python benchmarks/segment.py mosaics --cifar /tmp/cifar --out /tmp/cifar-mosaics
    python benchmarks/segment.py run --init /tmp/cifar-run --mosaics /tmp/cifar-mosaics \\
        --out /tmp/segment-bench --steps 800
    python benchmarks/segment.py report --out /tmp/segment-bench

CIFAR-10 mosaics are a real-image segmentation set built here: every 64 px canvas is
split at a random point into four rectangles, each filled with one CIFAR-10 image
(resized into it) and labelled with that image's class: real photographs, exact masks,
region boundaries that do not follow the token grid. Train mosaics come from CIFAR-10's
train split, test mosaics from its test split. Each run is one `mixer segment` in a fresh
process, timed from start to results.json. Not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CANVAS = 64
MOSAICS = {"train": 10_000, "test": 2_000}


def build_mosaics(args: argparse.Namespace) -> None:
    from mixer_cli.core.tf_cpu import tf

    cifar, out = Path(args.cifar), Path(args.out)
    classes = sorted(d.name for d in (cifar / "train").iterdir() if d.is_dir())
    (out).mkdir(parents=True, exist_ok=True)
    (out / "classes.txt").write_text("\n".join(classes) + "\n")
    rng = np.random.default_rng(0)
    for split, count in MOSAICS.items():
        files = [(f, c) for c, name in enumerate(classes) for f in (cifar / split / name).iterdir()]
        order = rng.permutation(len(files))[: 4 * count]
        (out / split / "images").mkdir(parents=True, exist_ok=True)
        (out / split / "masks").mkdir(parents=True, exist_ok=True)
        for n in range(count):
            picks = [files[i] for i in order[4 * n : 4 * n + 4]]
            y, x = rng.integers(16, CANVAS - 15, size=2)
            image = np.zeros((CANVAS, CANVAS, 3), np.uint8)
            mask = np.zeros((CANVAS, CANVAS, 1), np.uint8)
            boxes = [(0, y, 0, x), (0, y, x, CANVAS), (y, CANVAS, 0, x), (y, CANVAS, x, CANVAS)]
            for (top, bottom, left, right), (path, label) in zip(boxes, picks, strict=True):
                pixels = tf.io.decode_image(path.read_bytes(), channels=3)
                resized = tf.image.resize(pixels, [bottom - top, right - left], antialias=True)
                image[top:bottom, left:right] = np.clip(resized.numpy().round(), 0, 255)
                mask[top:bottom, left:right] = label
            (out / split / "images" / f"{n}.png").write_bytes(tf.io.encode_png(image).numpy())
            (out / split / "masks" / f"{n}.png").write_bytes(tf.io.encode_png(mask).numpy())
        print(f"{split}: {count} mosaics in {out / split}")


def runs(args: argparse.Namespace) -> list[dict]:
    """The matrix: dataset x (random, warm) x grid factor (1, 2)."""
    sets = [("digit-scenes", "digit-scenes", 32), ("cifar-mosaics", f"folder:{args.mosaics}", 32)]
    matrix = []
    for label, data, base in sets:
        for start in ("random", "warm"):
            for factor in (1, 2):
                row = {"data": label, "spec": data, "start": start, "factor": factor}
                matrix.append({**row, "resolution": base * factor})
    return matrix


def run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for row in runs(args):
        name = f"{row['data']}-{row['start']}-{row['factor']}x"
        workdir = out / name
        if (workdir / "results.json").exists():
            print(f"{name}: done")
            continue
        cmd = [sys.executable, "-m", "mixer_cli", "segment", "--data", row["spec"],
               "--steps", str(args.steps), "--workdir", str(workdir)]  # fmt: skip
        if row["start"] == "warm":
            cmd += ["--init", args.init, "--resolution", str(row["resolution"])]
        else:
            cmd += ["--resolution", str(row["resolution"])]
            cmd += ["--set", f"model.grid_factor={row['factor']}"]  # the warm model's shape
        started = time.time()
        subprocess.run(cmd, check=True)
        results = json.loads((workdir / "results.json").read_text())
        results["wall_seconds"] = time.time() - started
        (workdir / "results.json").write_text(json.dumps(results, indent=2))
        print(f"{name}: mIoU {results['test/miou']:.3f} in {results['wall_seconds']:.0f} s")


def report(args: argparse.Namespace) -> None:
    out = Path(args.out)
    print("| data | start | grid | resolution | mIoU | pixel acc. | train s | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for workdir in sorted(out.glob("*-*x")):
        r = json.loads((workdir / "results.json").read_text())
        start = "warm" if r.get("init") else "random"
        print(
            f"| {r['dataset'].removeprefix('folder:')} | {start} | {r['grid_factor']}x | "
            f"{r['resolution']} | {r['test/miou']:.3f} | {r['test/pixel_accuracy']:.3f} | "
            f"{r['train_seconds']:.0f} | {r.get('wall_seconds', float('nan')):.0f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    mosaics = sub.add_parser("mosaics", help="build CIFAR-10 mosaics (a segmentation folder)")
    mosaics.add_argument("--cifar", required=True, help="CIFAR-10 as ROOT/<split>/<class>/")
    mosaics.add_argument("--out", required=True)
    matrix = sub.add_parser("run", help="train and score every configuration")
    matrix.add_argument("--init", required=True, help="a 32 px classification checkpoint")
    matrix.add_argument("--mosaics", required=True)
    matrix.add_argument("--out", required=True)
    matrix.add_argument("--steps", type=int, default=800)
    table = sub.add_parser("report", help="the results as a markdown table")
    table.add_argument("--out", required=True)
    args = parser.parse_args()
    {"mosaics": build_mosaics, "run": run, "report": report}[args.what](args)


if __name__ == "__main__":
    main()
