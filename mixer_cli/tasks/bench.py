"""`mixer bench`'s throughput workflows: the model's (train/throughput.py, which `mixer
transfer`'s throughput column shares) and the advice its table ends with; the input
pipeline's (`--mode input`, train/input_throughput.py)."""

from __future__ import annotations

from mixer_cli.train.input_throughput import InputBench, InputSettings
from mixer_cli.train.throughput import BenchSettings, run_bench, validate

__all__ = [
    "BenchSettings",
    "InputBench",
    "InputSettings",
    "page_fault_hint",
    "run_bench",
    "validate",
]


# Above this share of a CPU step's time in the kernel, say how to get it back.
KERNEL_SHARE_HINT = 0.1


def page_fault_hint(results: dict) -> str | None:
    """A note when a CPU step spends a noticeable share of its time faulting in pages."""
    if results["platform"] != "cpu":
        return None
    modes = [m for m in ("train", "forward") if m in results]
    worst = max(modes, key=lambda m: results[m]["kernel_time_share"])
    share, faults = results[worst]["kernel_time_share"], results[worst]["page_faults_per_step"]
    if share < KERNEL_SHARE_HINT:
        return None
    return (
        f"note: the {worst} step spent {share:.0%} of its CPU time in the kernel "
        f"({faults:,.0f} page faults per step): the system allocator hands XLA's temporaries "
        "back after every program. More --steps-per-execution or a caching malloc keep "
        "them: README.md, 'On a CPU'."
    )
