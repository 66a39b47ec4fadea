"""What finding damaged image files before training costs (`mixer_cli/data/image_files.py`).

    python benchmarks/image_check.py /tmp/cifar                 # CIFAR-10's 60,000 JPEGs
    python benchmarks/image_check.py /tmp/mixer-bench/imagenet-like   # 500x375 JPEGs

Each file's size, first 16 and last 4,096 bytes are read by 16 threads. Prints files,
seconds and microseconds per file for a cold-ish first pass and a second pass (page
cache warm); the median of --repeats passes after the first. Not a test: results go to
benchmarks/RESULTS.md. The imagenet-like folder is made by benchmarks/data_pipeline.py.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from mixer_cli.data.folder import IMAGE_SUFFIXES
from mixer_cli.data.image_files import find_damaged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    paths = [str(p) for p in sorted(args.root.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
    times = []
    for _ in range(args.repeats + 1):
        started = time.perf_counter()
        damaged = find_damaged(paths)
        times.append(time.perf_counter() - started)
    warm = statistics.median(times[1:])
    print(
        f"{len(paths):,} files, {len(damaged)} damaged: first pass {times[0]:.2f} s, then "
        f"median {warm:.2f} s ({warm / len(paths) * 1e6:.0f} us per file)"
    )


if __name__ == "__main__":
    main()
