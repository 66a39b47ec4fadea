"""A user sees mixer's own output: TensorFlow's native start-up lines are dropped,
everything else written to stderr meanwhile is passed on."""

from __future__ import annotations

import os
import subprocess
import sys

from mixer_cli.core.tf_cpu import quiet_native_start_up

NOISE = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1796287786.458714    1902 port.cc:153] oneDNN custom operations are on. "
    "You may see slightly different numerical results.\n"
)


def test_native_start_up_notices_are_dropped_and_the_rest_passed_on(capfd, monkeypatch) -> None:
    monkeypatch.delenv("MIXER_DEBUG", raising=False)
    with quiet_native_start_up():
        os.write(2, (NOISE + "E0000 a real native error\n").encode())
    assert capfd.readouterr().err == "E0000 a real native error\n"
    monkeypatch.setenv("MIXER_DEBUG", "1")  # --debug's environment: everything shows
    with quiet_native_start_up():
        os.write(2, NOISE.encode())
    assert capfd.readouterr().err == NOISE


def test_importing_tensorflow_the_mixer_way_prints_nothing() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MIXER_DEBUG"}
    proc = subprocess.run(
        [sys.executable, "-c", "import mixer_cli.core.tf_cpu"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0 and proc.stderr == "" and proc.stdout == ""
