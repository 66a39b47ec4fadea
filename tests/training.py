"""The tiny digits run that training tests share, and ways to run and compare it."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock

from mixer_cli.config import Config, resolve

TINY = {
    "train.batch_size": 32,  # the demo's 64 halved: 4 per device, and the loss still falls
    "train.steps": 20,
    "train.log_every": 5,
    "train.checkpoint_every": 5,
    "optim.warmup_steps": 5,
}


def tiny(**overrides: object) -> Config:
    return resolve("demo", None, {**TINY, **overrides})


def params_of(workdir: Path) -> dict[str, np.ndarray]:
    with np.load(workdir / "params.npz") as archive:
        return {key: archive[key] for key in archive.files}


def pretrain_command(workdir: Path, *extra: str) -> list[str]:
    """The real CLI in a fresh process (its own device count), with TINY's settings."""
    settings = [f"--set={key}={value}" for key, value in TINY.items()]
    return [
        sys.executable,
        "-m",
        "mixer_cli",
        "pretrain",
        "--workdir",
        str(workdir),
        *settings,
        *extra,
    ]


def assert_same_training(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    """Equal up to the order of cross-device sums: 1e-4 relative per tensor and overall.

    Exempt per tensor: the token-mixing output biases, whose exact gradient is zero (a
    per-token constant is removed by the next LayerNorm); Adam turns their rounding noise
    into updates of its own.
    """
    for key in want:
        if not key.endswith("token_mixing/Dense_1/bias"):
            np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-5)
    diff = np.sqrt(sum(((got[k] - want[k]) ** 2).sum() for k in want))
    assert diff / np.sqrt(sum((want[k] ** 2).sum() for k in want)) < 1e-4


def assert_same_results(workdir: Path, uninterrupted: Path) -> None:
    """results.json (every evaluator's metrics) and params.npz as the uninterrupted run's
    (params to 1e-6 relative)."""
    got = json.loads((workdir / "results.json").read_text())
    want = json.loads((uninterrupted / "results.json").read_text())
    assert got["finished"] and got["step"] == want["step"]
    assert got["final_train_loss"] == want["final_train_loss"]
    metrics = [k for k in want if "/" in k]  # every evaluator's metrics (test/, fewshot/)
    assert metrics and {k: got[k] for k in metrics} == {k: want[k] for k in metrics}
    assert got["params_norm"] == pytest.approx(want["params_norm"], rel=1e-6)
    ours, theirs = params_of(workdir), params_of(uninterrupted)
    for key in theirs:
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-6, atol=1e-7)


def shared_run(
    tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], object]
) -> Path:
    """The directory `make` fills, made once for the whole session: under pytest-xdist the
    first worker to ask makes it (in the base directory all workers share) while the others
    wait on a file lock, instead of each worker training the same run again. Tests only
    read it (or copy it)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # .../pytest-N/popen-gwK -> .../pytest-N, common to the workers
    workdir, done = base / f"shared-{name}", base / f"shared-{name}.done"
    with FileLock(str(base / f"shared-{name}.lock")):
        if not done.exists():
            shutil.rmtree(workdir, ignore_errors=True)  # what a crashed maker left
            workdir.mkdir()
            make(workdir)
            done.touch()
    return workdir
