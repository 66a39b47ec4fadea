"""What the benchmark scripts share: running `mixer` as a user does, and naming the machine."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path


def mixer(*argv: str, capture: bool = False) -> str:
    """`mixer ARGV...` in this interpreter; its stdout when captured (an error raises)."""
    done = subprocess.run(
        [sys.executable, "-m", "mixer_cli", *argv], check=True, capture_output=capture, text=True
    )
    return done.stdout if capture else ""


def cpuinfo() -> str:
    path = Path("/proc/cpuinfo")
    return path.read_text() if path.exists() else ""


def machine() -> str:
    """'AMD EPYC, 2 cores': the CPU model and the cores this process may use."""
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    return f"{model}, {len(os.sched_getaffinity(0))} cores"


def has_avx512() -> bool:
    """Whether the CPU has AVX-512 (this project's machines come with and without it)."""
    return " avx512f" in cpuinfo()
