"""The tiny digits run that training tests share, and ways to run and compare it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from mixer_cli.config import Config, resolve

TINY = {
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
