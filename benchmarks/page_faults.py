"""Page faults, kernel time and heap size per train step on a CPU, optionally with glibc's
malloc told to keep freed memory.

    python benchmarks/page_faults.py --variant S/32 --batch-size 32
    python benchmarks/page_faults.py --variant S/32 --batch-size 32 --retain
    python benchmarks/page_faults.py --variant S/32 --batch-size 32 --steps-per-execution 10

XLA's CPU client allocates each execution's temporary buffer (~1 GB for S/32 at batch 32)
with posix_memalign on a worker thread and frees it at the end; glibc serves blocks that
large with mmap and returns them with munmap, so every step faults the whole buffer in
again. `--retain` sets, before JAX starts its threads, one malloc arena, no mmap and no
trimming (mallopt), so the buffer stays in the heap; `--eval-every N` adds an evaluation
forward pass (another temporary size) every N steps, the pattern under which the retained
heap fragments. Under a preloaded jemalloc (README, "On a CPU") the heap columns read 0:
they are glibc's counters. Results in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import ctypes
import resource
import time


class _MallInfo2(ctypes.Structure):
    _fields_ = [  # glibc's struct mallinfo2: arena = heap size, fordblks = free in it
        (name, ctypes.c_size_t)
        for name in (
            *("arena", "ordblks", "smblks", "hblks", "hblkhd"),
            *("usmblks", "fsmblks", "uordblks", "fordblks", "keepcost"),
        )
    ]


def retain_freed_memory() -> None:
    """One malloc arena, no mmap, no trimming (mallopt; -1 is SIZE_MAX to glibc): freed
    blocks stay in the heap. Only for threads that make their first allocation after it."""
    libc = ctypes.CDLL(None)
    settings = ((-8, 1), (-4, 0), (-1, -1))  # M_ARENA_MAX, M_MMAP_MAX, M_TRIM_THRESHOLD
    if not all(libc.mallopt(param, value) == 1 for param, value in settings):
        raise RuntimeError("mallopt refused a setting (not glibc?)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="S/32")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--eval-every", type=int, default=0)
    parser.add_argument("--retain", action="store_true")
    parser.add_argument(
        "--steps-per-execution", type=int, default=1, help="train steps per program"
    )
    args = parser.parse_args()

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = _MallInfo2
    if args.retain:
        retain_freed_memory()

    import jax

    from mixer_cli.train.throughput import BenchSettings, Workload

    def settings(batch: int) -> BenchSettings:
        return BenchSettings(
            variant=args.variant,
            resolution=args.resolution,
            batch_size=batch,
            steps_per_execution=args.steps_per_execution,
        )

    train = Workload(settings(args.batch_size)).train()
    evaluate = Workload(settings(2 * args.batch_size)).forward() if args.eval_every else None
    temp = train.compiled.memory_analysis().temp_size_in_bytes
    print(f"{args.variant}, batch {args.batch_size}: temporaries {temp / 2**20:,.0f} MiB")
    k = train.steps_per_call  # figures below are per train step
    for step in range(args.steps):
        usage, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        jax.block_until_ready(train.step())
        if evaluate is not None and (step + 1) % args.eval_every == 0:
            jax.block_until_ready(evaluate.step())
        after, heap = resource.getrusage(resource.RUSAGE_SELF), libc.mallinfo2()
        with open("/proc/self/statm") as statm:
            rss = int(statm.read().split()[1]) * resource.getpagesize()
        print(
            f"step {step * k}{f'-{step * k + k - 1}' if k > 1 else ''}, per step: "
            f"{(time.perf_counter() - start) / k:.2f} s, "
            f"{(after.ru_minflt - usage.ru_minflt) // k:,} page faults, "
            f"kernel {(after.ru_stime - usage.ru_stime) / k:.2f} s, "
            f"user {(after.ru_utime - usage.ru_utime) / k:.2f} s, "
            f"heap {heap.arena / 2**20:,.0f} MiB ({heap.fordblks / 2**20:,.0f} free), "
            f"rss {rss / 2**20:,.0f} MiB",
            flush=True,
        )


if __name__ == "__main__":
    main()
