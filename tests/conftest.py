"""Test setup: CPU only, 8 forced host devices (real sharding), small shared fixtures."""

from __future__ import annotations

import json
import os

from xla_env import session_dir, xla_flags

# Before JAX is imported anywhere: 8 CPU devices so sharding is exercised for real.
os.environ.setdefault("XLA_FLAGS", xla_flags(8))
os.environ.setdefault("JAX_PLATFORMS", "cpu")


# Many tests (and the CLI subprocesses, which inherit this) compile the same tiny steps:
# a session-wide persistent compilation cache compiles each of them once.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", session_dir("JAX_COMPILATION_CACHE_DIR", "mixer-tests-xla-")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# mixer's own cache (features, the prepared digits) in one place per session, not in ~.
os.environ.setdefault("MIXER_CACHE_DIR", session_dir("MIXER_CACHE_DIR", "mixer-tests-cache-"))

from pathlib import Path

import numpy as np
import pytest
from numpy_mixer import official_layout_params
from training import pretrain_command, shared_run, tiny

from mixer_cli.cli import run
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
    """The tiny digits run, trained once without a stop (`mixer pretrain` in this process):
    what every resume must equal, and a finished pretrain run to start others from."""

    def pretrain(workdir: Path) -> None:
        assert run(pretrain_command(workdir)[3:]) == 0

    return shared_run(tmp_path_factory, "uninterrupted", pretrain)


@pytest.fixture(scope="session")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run stopped at step 10: complete checkpoints at steps 5 and 10."""
    return shared_run(
        tmp_path_factory, "stopped", lambda w: train_and_evaluate(tiny(), w, stop_after=10)
    )


TIMM_REPO = "timm/mixer_custom_test.in1k"  # a hand-made timm Mixer in a hub cache


@pytest.fixture
def timm_hub(tmp_path, monkeypatch) -> dict:
    """A Hugging Face hub cache holding one timm Mixer (2 blocks, C=16, patch 4, 16 px,
    10 classes, inputs normalised like miil's: mean 0, std 1), in the hub's own layout
    (refs/main -> snapshots/COMMIT/{model.safetensors, config.json}), read offline."""
    from numpy_timm import timm_state_dict
    from safetensors.numpy import save_file

    state = timm_state_dict(4, 2, 16, 16, 8, 32, 10, seed=3)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf-cache" / f"models--{TIMM_REPO.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    save_file(state, str(snapshot / "model.safetensors"), metadata={"format": "pt"})
    pretrained_cfg = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "num_classes": 10}
    config = {"architecture": "mixer_custom", "pretrained_cfg": pretrained_cfg}
    (snapshot / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return {"name": f"hf-hub:{TIMM_REPO}", "state": state, "mean": 0.0, "std": 1.0}


# The longest tests (real processes; two models; every hybrid option) start first:
# pytest-xdist hands tests out in collection order, and one of them started near the end
# would leave the other worker idle while it finishes.
LONGEST_FIRST = ("test_reliability.py", "test_permute.py", "test_hybrid.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.path.name not in LONGEST_FIRST)  # stable otherwise
