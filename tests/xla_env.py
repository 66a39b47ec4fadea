"""XLA settings for test processes: forced host devices, quick compiles.

Tests run tiny models for a few steps, so XLA's compile time, not the run, is most of
their cost: backend optimisation level 0 compiles a ResNet14 init in ~3 s instead of
~10 s, LLVM's expensive passes off takes another ~10% off a CLI run's compiles, and the
tests compare runs made under the same settings. No JAX import here:
this must be read before JAX starts.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

QUICK_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def xla_flags(devices: int) -> str:
    return f"--xla_force_host_platform_device_count={devices} {QUICK_COMPILE}"


def session_dir(variable: str, prefix: str) -> str:
    """The directory `variable` names for the whole test session: the inherited one, else a
    new one (for `os.environ.setdefault`).

    The process that makes it (pytest's main process, or the only one) removes it when it
    exits; pytest-xdist's workers and the CLI processes that tests start inherit the
    variable, so all of them share its caches.
    """
    if variable in os.environ:
        return os.environ[variable]
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path
