"""XLA settings for test processes: forced host devices, quick compiles.

Tests run tiny models for a few steps, so XLA's compile time, not the run, is most of
their cost: backend optimisation level 0 compiles a ResNet14 init in ~3 s instead of
~10 s, and the tests compare runs made under the same setting. No JAX import here:
this must be read before JAX starts.
"""

from __future__ import annotations

import os
import tempfile

QUICK_COMPILE = "--xla_backend_optimization_level=0"


def xla_flags(devices: int) -> str:
    return f"--xla_force_host_platform_device_count={devices} {QUICK_COMPILE}"


def session_dir(prefix: str) -> str:
    """A directory for this test session, one for all pytest-xdist workers of a run (so
    they share the compilation and feature caches)."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run is None:
        return tempfile.mkdtemp(prefix=prefix)
    path = os.path.join(tempfile.gettempdir(), f"{prefix}{run}")
    os.makedirs(path, exist_ok=True)
    return path
