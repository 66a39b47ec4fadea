"""Soak: a long `mixer pretrain` with evaluations and checkpoints every few minutes, watched
from outside for resident memory, open files and checkpoint disk use.

    python benchmarks/soak.py                    # 30 minutes on the embedded digits
    python benchmarks/soak.py --minutes 5 --every-seconds 60

A short calibration run measures this machine's steps per second, so that evaluation and
checkpointing happen every --every-seconds. The run then trains with far more steps than
fit, and is stopped with Ctrl-C (SIGINT) after --minutes: it saves a checkpoint and exits
130, the path users take. Every --sample-seconds the process's VmRSS, open file
descriptors, complete checkpoints and their bytes on disk are recorded. Warm-up ends when
every recurring operation has happened at least once: training, evaluation, a checkpoint
save, and the deletion of one beyond --keep (checkpoint number keep + 1). Memory growth is
the mean RSS of the last fifth of the run against that of the first fifth after warm-up.
Not a test: results go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path


def pretrain(workdir: Path, steps: int, every: int, keep: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mixer_cli",
        "pretrain",
        "--workdir",
        str(workdir),
        "--steps",
        str(steps),
        f"--set=train.checkpoint_every={every}",
        f"--set=train.eval_every={every}",
        f"--set=train.log_every={max(1, every // 10)}",
        f"--set=train.keep_checkpoints={keep}",
    ]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def disk_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def complete_steps(checkpoints: Path) -> list[int]:
    if not checkpoints.exists():
        return []
    return sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())


def calibrate(workdir: Path, seconds: float) -> float:
    """Steps per second of the demo step on this machine (compilation excluded)."""
    steps = 200
    while True:
        subprocess.run(pretrain(workdir, steps, steps, 1), check=True, capture_output=True)
        results = json.loads((workdir / "results.json").read_text())
        rate = results["images_per_sec"] / results["batch_size"]
        if steps / rate >= seconds:
            return rate
        steps = int(rate * seconds * 1.2) + 1
        workdir = workdir.with_name(workdir.name + "+")


def mean_between(samples: list[dict], start: float, end: float, key: str) -> float:
    return statistics.fmean(s[key] for s in samples if start <= s["t"] < end)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--every-seconds", type=float, default=180)
    parser.add_argument("--sample-seconds", type=float, default=5)
    parser.add_argument("--keep", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mixer-soak"))
    args = parser.parse_args()

    rate = calibrate(args.workdir / "calibration", 30)
    every = max(1, round(rate * args.every_seconds))
    run = args.workdir / "run"
    cmd = pretrain(run, 10**9, every, args.keep)
    print(f"{rate:.1f} steps/s: evaluation and checkpoint every {every} steps", flush=True)
    print(" ".join(cmd), flush=True)

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    started = time.monotonic()
    samples, most_steps = [], 0
    while time.monotonic() - started < args.minutes * 60:
        time.sleep(args.sample_seconds)
        if proc.poll() is not None:
            raise SystemExit(f"the run ended early: {proc.stderr.read()[-2000:]}")
        steps = complete_steps(run / "checkpoints")
        most_steps = max(most_steps, len(steps))
        samples.append(
            {
                "t": time.monotonic() - started,
                "rss": rss_bytes(proc.pid),
                "fds": len(os.listdir(f"/proc/{proc.pid}/fd")),
                "checkpoints": len(steps),
                "checkpoint_bytes": disk_bytes(run / "checkpoints") if steps else 0,
                "latest": steps[-1] if steps else 0,
            }
        )
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    if proc.returncode != 130:
        raise SystemExit(f"exit code {proc.returncode}: {err[-2000:]}")

    end = samples[-1]["t"]
    warm = next(s["t"] for s in samples if s["latest"] >= (args.keep + 1) * every)
    fifth = (end - warm) / 5
    early = mean_between(samples, warm, warm + fifth, "rss")
    late = mean_between(samples, end - fifth, end + 1, "rss")
    evaluations = sum(
        1 for line in (run / "metrics.jsonl").read_text().splitlines() if "test/top1" in line
    )
    summary = {
        "minutes": end / 60,
        "steps": samples[-1]["latest"],
        "steps_per_second": rate,
        "every_steps": every,
        "evaluations": evaluations,
        "checkpoints_written": samples[-1]["latest"] // every,
        "warmup_minutes": warm / 60,
        "rss_after_warmup_mib": early / 2**20,
        "rss_last_fifth_mib": late / 2**20,
        "rss_growth": late / early - 1,
        "rss_max_mib": max(s["rss"] for s in samples) / 2**20,
        "fds_min_max": [min(s["fds"] for s in samples), max(s["fds"] for s in samples)],
        "most_complete_checkpoints": most_steps,
        "keep": args.keep,
        "checkpoint_mib_max": max(s["checkpoint_bytes"] for s in samples) / 2**20,
    }
    out = args.workdir / "soak.json"
    out.write_text(json.dumps({"summary": summary, "samples": samples}, indent=1))
    for start in range(0, int(end) - 299, 300):
        window = mean_between(samples, start, start + 300, "rss") / 2**20
        print(f"RSS {start // 60:2d}-{start // 60 + 5:2d} min: {window:7.1f} MiB")
    for key, value in summary.items():
        print(f"{key:28} {value:.4g}" if isinstance(value, float) else f"{key:28} {value}")
    print(f"samples in {out}")


if __name__ == "__main__":
    main()
