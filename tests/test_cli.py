"""The `mixer` command as users meet it: `info`, errors as one line with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_variants import TABLE_1_MILLIONS

from mixer_cli.cli import run


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = run(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_info_lists_the_paper_variants_with_table1_counts(capsys) -> None:
    code, out, _ = run_cli(capsys, "info", "--json")
    assert code == 0
    rows = {row["variant"]: row for row in json.loads(out)}
    for variant, millions in TABLE_1_MILLIONS.items():
        assert round(rows[variant]["params"] / 1e6) == millions
    assert {"N/16", "Ti/16"} <= set(rows)
    b16 = rows["B/16"]
    assert (b16["seq_len"], b16["tokens_mlp_dim"], b16["channels_mlp_dim"]) == (196, 384, 3072)
    assert 24.5 < b16["gflops"] < 26.0  # about 12.6 GMACs, as public counts say
    assert rows["L/16"]["gflops"] > 3.4 * b16["gflops"]  # FLOPs are measured, not copied


def test_info_table_for_one_variant_with_head(capsys) -> None:
    code, out, _ = run_cli(capsys, "info", "--variant", "B/16", "--num-classes", "1000")
    assert code == 0
    assert "B/16" in out and "59.9M" in out and "1000-class head" in out


def test_info_flops_follow_the_resolution(capsys) -> None:
    code, out, _ = run_cli(capsys, "info", "--variant", "S/32", "--resolution", "448", "--json")
    (row,) = json.loads(out)
    assert code == 0 and row["seq_len"] == 196 and row["resolution"] == 448


def test_info_describes_a_checkpoint(capsys, official_npz) -> None:
    code, out, _ = run_cli(capsys, "info", "--checkpoint", official_npz[0], "--json")
    (row,) = json.loads(out)
    assert code == 0
    assert (row["patch"], row["layers"], row["hidden_dim"], row["num_classes"]) == (4, 2, 16, 10)
    assert row["resolution"] == 16


@pytest.fixture
def bad_npz(tmp_path: Path, official_npz) -> str:
    flat = dict(official_npz[1])
    flat["MixerBlock_0/token_mixing/Dense_0/kernel"] = np.zeros((16, 9), np.float32)
    np.savez(tmp_path / "bad.npz", **flat)
    return str(tmp_path / "bad.npz")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["info", "--variant", "X/7"], "unknown variant 'X/7'"),
        (["info", "--variant", "B/16", "--resolution", "225"], "try 224 or 240"),
        (["info", "--checkpoint", "/no/such/file.npz"], "does not exist"),
        (["info", "--checkpoint", "BAD_NPZ"], "Dense_1/kernel' has shape (8, 16)"),
        (["info", "--variant", "B/16", "--checkpoint", "BAD_NPZ"], "at most one of"),
        (["info", "--resolution", "abc"], "--resolution"),
        (["info", "--num-classes", "-1"], "--num-classes"),
        (["info", "--bogus"], "--bogus"),
        (["frobnicate"], "frobnicate"),
        (["info", "--data", "cifar11", "--data-dir", "EMPTY_DIR"], "did you mean cifar10"),
        (["info", "--data", "cifar10", "--data-dir", "EMPTY_DIR"], "--data-dir DIR"),
        (["info", "--data", "folder:/no/such/folder"], "does not exist"),
        (["info", "--data", "folder:ONE_CLASS"], "1 class folder(s) (only)"),
        (["info", "--data", "digits", "--variant", "B/16"], "at most one of"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, bad_npz, argv, needle) -> None:
    one_class = tmp_path / "one"
    (one_class / "train" / "only").mkdir(parents=True)
    names = {
        "BAD_NPZ": bad_npz,
        "EMPTY_DIR": str(tmp_path),
        "folder:ONE_CLASS": f"folder:{one_class}",
    }
    argv = [names.get(a, a) for a in argv]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0]
    assert "Traceback" not in err and out == ""


def test_info_describes_a_dataset(capsys) -> None:
    code, out, _ = run_cli(capsys, "info", "--data", "digits", "--json")
    summary = json.loads(out)
    assert code == 0 and summary["splits"] == {"train": 1437, "test": 360}
    assert (summary["num_classes"], summary["image_shape"]) == (10, [8, 8, 3])
    code, out, _ = run_cli(capsys, "info", "--data", "digit-scenes", "--json")
    summary = json.loads(out)
    assert code == 0 and summary["task"] == "segment" and summary["num_classes"] == 11
    assert summary["splits"] == {"train": 2000, "test": 500}
    code, out, _ = run_cli(capsys, "info", "--data", "digits-placed", "--json")
    summary = json.loads(out)
    assert code == 0 and summary["task"] == "classify" and summary["image_shape"] == [16, 16, 3]


def test_debug_shows_the_traceback(capsys) -> None:
    code, _, err = run_cli(capsys, "--debug", "info", "--variant", "X/7")
    assert code == 2 and "Traceback" in err and "ConfigError" in err


def test_console_entry_point_and_lazy_imports() -> None:
    # The real process: exit code and stderr as a shell sees them.
    proc = subprocess.run(
        [sys.executable, "-m", "mixer_cli", "info", "--variant", "X/7"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    # `mixer --help` must not pay for JAX.
    probe = "import sys, mixer_cli.cli; print('jax' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "False"


def test_version_and_bare_command(capsys) -> None:
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out.startswith("mixer ")
    code, out, _ = run_cli(capsys)
    assert code == 0 and "info" in out
