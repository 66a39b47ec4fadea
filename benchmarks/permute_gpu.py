"""The shuffle experiment on CIFAR-10 with a longer budget, on one GPU in under 10 minutes
(issue 27, item 5): `mixer permute --mode all`, sized to the time it is given.

    python benchmarks/permute_gpu.py --out DIR                 # on a machine with a GPU
    python benchmarks/permute_gpu.py --out DIR --budget-s 120  # a short check anywhere

1. unpacks the CIFAR-10 JPEG folder (../shared/data/cifar10-jpeg.tar.gz) under DIR, once;
2. calibrates: `mixer permute --mode original --no-reference` for a few steps, which gives
   each model's in-run images/s (input pipeline included) and the fixed cost of a run
   (compilation, the five probes over the test split);
3. takes the most steps of `--batch-size` whose six runs (two models x original, patch,
   global) fit the rest of the budget, and runs `mixer permute --mode all` with them;
4. writes summary.md (steps, epochs, the final 5-shot and top-1 of every run, the relative
   drops, wall times) beside the command's permute.png and results.json.
The experiment's runs resume, so a second invocation after a timeout continues them
(with the steps of the first: they are kept in DIR/plan.json). Not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from mixer_cli.train.metrics import read_metrics, read_results

ROOT = Path(__file__).resolve().parents[1]
TAR = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
MODELS = ("mixer", "resnet")
MODES = ("original", "patch", "global")
RUNS = len(MODELS) * len(MODES)


def unpack(tar: Path, out: Path) -> Path:
    """The JPEG folder under out/cifar (train/ and test/), unpacked once."""
    where = out / "cifar"
    if not (where / "test").is_dir():
        partial = out / "cifar.partial"
        partial.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tar) as archive:
            archive.extractall(partial, filter="data")
        partial.rename(where)
    return where


def permute(args: argparse.Namespace, data: Path, workdir: Path, steps: int, *extra: str) -> float:
    """One `mixer permute` in a process of its own; returns its wall seconds."""
    command = [sys.executable, "-m", "mixer_cli", "permute", "--data", f"folder:{data}"]
    command += ["--variant", args.variant, "--baseline", args.baseline]
    command += ["--steps", str(steps), "--batch-size", str(args.batch_size)]
    command += ["--workdir", str(workdir), *extra]
    print("+", " ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    return time.perf_counter() - start


def rate(run: Path) -> float:
    """A run's in-run images/s: the median of its logged rates after the first."""
    rates = [row["img_per_sec"] for row in read_metrics(run) if "img_per_sec" in row][1:]
    return statistics.median(rates) if rates else read_results(run)["images_per_sec"]


def plan(args: argparse.Namespace, data: Path, left_s: float) -> dict[str, float]:
    """Steps for the experiment from a short calibration of both models."""
    calibration = args.out / "calibration"
    wall = permute(args, data, calibration, args.calibration_steps, "--mode", "original",
                   "--no-reference")  # fmt: skip
    rates = {model: rate(calibration / f"{model}-original") for model in MODELS}
    trained = sum(read_results(calibration / f"{m}-original")["train_seconds"] for m in MODELS)
    fixed = max(0.0, wall - trained) / len(MODELS)  # per run: start-up, compilation, probes
    left_s -= wall
    per_step = sum(args.batch_size / rates[model] for model in MODELS) * len(MODES)
    steps = int((left_s * args.margin - fixed * (RUNS + 1)) / per_step)  # + start-up, figure
    return {
        "steps": max(steps, args.calibration_steps),
        "calibration_s": wall,
        "fixed_s_per_run": fixed,
        **{f"{model}_img_per_sec": value for model, value in rates.items()},
    }


def summary(args: argparse.Namespace, settings: dict[str, float], wall: float) -> list[str]:
    """summary.md: the plan, then one row per model and mode."""
    results = read_results(args.out / "experiment")
    steps = int(settings["steps"])
    names = [model["name"] for model in results["models"].values()]
    first = read_results(Path(results["models"]["mixer"]["runs"]["original"]["workdir"]))
    lines = [
        f"# The shuffle experiment on CIFAR-10, {steps} steps of {args.batch_size}",
        "",
        f"{names[0]} against {names[1]}; {first['epochs']:.1f} epochs "
        f"per run; calibration {settings['calibration_s']:.0f} s "
        f"(Mixer {settings['mixer_img_per_sec']:.0f} img/s, ResNet "
        f"{settings['resnet_img_per_sec']:.0f} img/s in-run), "
        f"experiment {wall:.0f} s (this invocation).",
        "",
        "| model | mode | test top-1 | 5-shot | 5-shot drop | top-1 drop |",
        "|---|---|---|---|---|---|",
    ]
    for kind, model in results["models"].items():
        for mode in MODES:
            run = model["runs"][mode]
            drop = results["relative_drop"].get(kind, {}).get(mode, {})
            cells = [run["test/top1"], run["fewshot/5shot"]]
            cells += [drop.get("fewshot/5shot"), drop.get("test/top1")]
            shown = ["-" if value is None else f"{value:.1%}" for value in cells]
            lines.append(f"| {model['name']} | {mode} | {' | '.join(shown)} |")
    return lines


def main() -> None:
    start = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tar", type=Path, default=TAR)
    parser.add_argument("--budget-s", type=float, default=540.0, help="for all of it")
    parser.add_argument("--variant", default="N/4")
    parser.add_argument("--baseline", default="resnet")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--calibration-steps", type=int, default=100)
    parser.add_argument("--margin", type=float, default=0.9, help="share of the budget planned")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = unpack(args.tar, args.out)
    saved = args.out / "plan.json"
    if saved.exists():
        settings = json.loads(saved.read_text())
    else:
        settings = plan(args, data, args.budget_s - (time.perf_counter() - start))
        saved.write_text(json.dumps(settings, indent=2))
    print(json.dumps(settings), flush=True)
    wall = permute(args, data, args.out / "experiment", int(settings["steps"]), "--mode", "all")
    text = "\n".join(summary(args, settings, wall)) + "\n"
    (args.out / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
