"""The examples keep working: each runs as a user would run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_checkpoints_example_round_trips_offline() -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "checkpoints.py")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "N/16, 4 blocks, C=128, 10 classes, native resolution 64 px" in proc.stdout
    assert "round trip: identical logits" in proc.stdout
