"""Test setup: CPU only, 8 forced host devices (real sharding), small shared fixtures."""

from __future__ import annotations

import os

from xla_env import session_dir, xla_flags

# Before JAX is imported anywhere: 8 CPU devices so sharding is exercised for real.
os.environ.setdefault("XLA_FLAGS", xla_flags(8))
os.environ.setdefault("JAX_PLATFORMS", "cpu")


# Many tests (and the CLI subprocesses, which inherit this) compile the same tiny steps:
# a session-wide persistent compilation cache compiles each of them once.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", session_dir("mixer-tests-xla-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# mixer's own cache (features, the prepared digits) in one place per session, not in ~.
os.environ.setdefault("MIXER_CACHE_DIR", session_dir("mixer-tests-cache-"))

from pathlib import Path

import numpy as np
import pytest
from numpy_mixer import official_layout_params
from training import tiny

from mixer_cli.train.engine import train_and_evaluate


@pytest.fixture(scope="session")
def official_npz(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, np.ndarray]]:
    """A hand-made checkpoint in Google's npz layout: patch 4, 2 blocks, 16 px, 10 classes."""
    flat = official_layout_params(
        patch=4,
        num_blocks=2,
        hidden=16,
        seq_len=16,
        tokens_mlp=8,
        channels_mlp=32,
        num_classes=10,
        seed=0,
    )
    path = tmp_path_factory.mktemp("official") / "Mixer-custom.npz"
    np.savez(path, **flat)
    return str(path), flat


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny digits run, trained once without a stop: what every resume must equal."""
    workdir = tmp_path_factory.mktemp("uninterrupted")
    train_and_evaluate(tiny(), workdir)
    return workdir
