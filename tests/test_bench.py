"""`mixer bench`: throughput, FLOPs counted for the whole sharded program, MFU, bad input."""

from __future__ import annotations

import json
import mmap
import os
import subprocess
import sys

import numpy as np
import pytest
from datasets import write_image_folder
from test_cli import run_cli
from xla_env import xla_flags

from mixer_cli.commands.bench import print_input_tables
from mixer_cli.models import (
    LISTED_VARIANTS,
    abstract_params,
    count_params,
    create_model,
    parse_variant,
)
from mixer_cli.models.costs import by_blocks, describe, forward_flops
from mixer_cli.tasks.bench import page_fault_hint
from mixer_cli.train.throughput import HostUsage

TINY = ["--variant", "N/4", "--resolution", "16", "--batch-size", "8", "--num-classes", "10"]
QUICK = ["--windows", "2", "--steps", "2", "--peak-size", "64"]


def test_bench_cli_measures_both_modes_and_saves_results(capsys, tmp_path) -> None:
    code, out, err = run_cli(
        capsys,
        "bench",
        *TINY,
        *QUICK,
        "--steps-per-execution",
        "2",
        "--workdir",
        str(tmp_path),
        "--json",
    )
    assert code == 0, err
    results = json.loads(out)
    assert results == json.loads((tmp_path / "results.json").read_text())
    assert len(results["devices"]) == 8 and results["batch_size"] == 8
    assert results["cores"] == len(os.sched_getaffinity(0))  # host cores, not forced devices
    assert results["steps_per_execution"] == 2
    for mode in ("forward", "train"):
        m = results[mode]
        # --steps 2: two forward calls, or one train call of two steps
        assert len(m["windows"]) == 2 and m["steps_per_window"] == 2
        assert m["images_per_sec"] > 0 and m["program_memory_bytes"] > 0
        assert m["images_per_sec_per_core"] == m["images_per_sec"] / results["cores"]
        assert m["page_faults_per_step"] >= 0 and 0 <= m["kernel_time_share"] <= 1
        assert m["mfu"] == pytest.approx(
            m["achieved_gflops"] / results["matmul_peak_gflops"], rel=1e-9
        )
    # FLOPs per image are the model's, counted once: the sharded forward costs what the
    # one-device forward of one image costs (plus the argmax of the eval step).
    one_image = forward_flops(create_model("N/4", num_classes=10), 16) / 1e9
    assert results["forward"]["gflops_per_image"] == pytest.approx(one_image, rel=0.02)
    # Backward is about twice the forward; with the optimizer update, counted once and not
    # once per device, a little over 3x in all.
    assert 2.8 < results["train"]["gflops_per_image"] / one_image < 3.3


def test_host_usage_counts_the_pages_each_step_faults_in() -> None:
    """Steps that each write 64 MiB of fresh anonymous memory, as XLA's CPU steps write
    their temporaries: at least one fault per 2 MiB (huge pages) or per 4 KiB page."""
    size, steps = 2**26, 3
    host = HostUsage()
    for _ in range(steps):
        with mmap.mmap(-1, size) as fresh:
            view = np.frombuffer(fresh, np.uint8)
            view[:] = 1
            del view
    usage = host.per_step(steps)
    assert usage["page_faults_per_step"] >= size / 2**21
    assert 0 < usage["kernel_time_share"] <= 1


def test_a_cpu_step_that_mostly_faults_in_pages_points_to_the_fix() -> None:
    def results(platform: str, share: float) -> dict:
        usage = {"kernel_time_share": share, "page_faults_per_step": 249_000}
        return {"platform": platform, "train": usage, "forward": {**usage, "kernel_time_share": 0}}

    hint = page_fault_hint(results("cpu", 0.17))
    assert hint is not None
    assert "train step spent 17% of its CPU time in the kernel" in hint
    assert "249,000 page faults per step" in hint and "On a CPU" in hint
    assert page_fault_hint(results("cpu", 0.05)) is None
    assert page_fault_hint(results("gpu", 0.5)) is None  # the host's time is not the step's


def test_counts_from_one_and_two_blocks_equal_the_whole_models() -> None:
    spec, resolution = parse_variant("S/32"), 64  # 8 blocks
    model = create_model(spec, num_classes=10)
    row = describe(spec, resolution, num_classes=10)
    assert row["params"] == count_params(abstract_params(model, resolution))
    assert row["gflops"] * 1e9 == pytest.approx(forward_flops(model, resolution), rel=1e-5)
    calls = []
    assert by_blocks(lambda s: calls.append(s.num_blocks) or s.num_blocks, spec) == 8
    assert calls == [1, 2]


def test_bench_table_names_the_setting(capsys, tmp_path) -> None:
    code, out, _ = run_cli(
        capsys, "bench", *TINY, *QUICK, "--mode", "forward", "--workdir", str(tmp_path)
    )
    assert code == 0
    assert "N/4" in out and "forward" in out and "MFU" in out and "train" not in out
    assert "train" not in json.loads((tmp_path / "results.json").read_text())


# ~15 s: compiling the train step with the augmentation in it is most of it
@pytest.mark.slow
def test_bench_input_times_the_host_pipeline_beside_its_floor_and_the_device_share(
    capsys, tmp_path
) -> None:
    """--mode input on a folder of JPEGs and PNGs (300: a tiny folder's stream would hold
    ~100k shuffled epochs), augmenting on the host: both host figures per host core, and
    the device augmentation inside the train step of the same model."""
    root = write_image_folder(tmp_path / "images", {"train": 100})
    code, out, err = run_cli(
        capsys,
        "bench",
        "--mode",
        "input",
        "--data",
        f"folder:{root}",
        "--variant",
        "N/4",
        "--resolution",
        "16",
        "--batch-size",
        "8",
        "--windows",
        "2",
        "--steps",
        "1",
        "--set",
        "data.augment_on=host",
        "--set",
        "data.mixup=0.2",
        "--workdir",
        str(tmp_path / "w"),
        "--json",
    )
    assert code == 0, err
    results = json.loads(out)
    assert results == json.loads((tmp_path / "w" / "results.json").read_text())
    assert results["model"] == "N/4" and results["resolution"] == 16
    assert results["augmentation"]["augment_on"] == "host"
    assert results["augmentation"]["mixup"] == 0.2
    host = results["host"]
    assert host["cores"] == len(os.sched_getaffinity(0))  # host cores, not forced devices
    for stage in ("pipeline", "floor"):
        h = host[stage]
        assert h["images_per_sec"] > 0 and len(h["windows"]) == 2 and h["batches_per_window"] == 1
        assert h["images_per_sec_per_core"] == h["images_per_sec"] / host["cores"]
    speeds = host["floor"]["images_per_sec"], host["pipeline"]["images_per_sec"]
    assert host["time_vs_floor"] == speeds[0] / speeds[1]
    device = results["device"]
    augment, step = device["augment"], device["train_step"]
    for part in (augment, step):
        assert part["images_per_sec"] > 0 and part["gflops_per_image"] > 0
        assert len(part["windows"]) == 2 and part["steps_per_window"] == 1
    # The step runs the augmentation, then the model's train step (3x its forward, about).
    one_image = forward_flops(create_model("N/4", num_classes=3), 16)
    model_part = step["gflops_per_image"] - augment["gflops_per_image"]
    assert 2.8 < model_part * 1e9 / one_image < 3.3
    assert device["flops_share"] == augment["gflops_per_image"] / step["gflops_per_image"]
    assert device["time_share"] == step["images_per_sec"] / augment["images_per_sec"]
    print_input_tables(results)
    table = " ".join(capsys.readouterr().out.split())  # rich wraps at the terminal's width
    assert "floor: decode, crop, resize" in table and "augmented on the host" in table
    assert "mixup 0.2" in table and "of its FLOPs" in table


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch-size", "12"], "not a positive multiple of the 8 devices; try 8 or 16"),
        (["--dtype", "float16"], "model.dtype must be one of float32, bfloat16, got 'float16'"),
        (["--resolution", "30"], "resolution 30 is not a positive multiple"),
        (
            ["--mode", "fast"],
            "unknown mode 'fast': expected forward, train, both, latency or input",
        ),
        (["--steps-per-execution", "0"], "--steps-per-execution"),
        (["--variant", "Q/16"], "Q/16"),
    ],
)
def test_bench_bad_input_is_one_line(capsys, tmp_path, argv: list[str], message: str) -> None:
    code, out, err = run_cli(capsys, "bench", *TINY, *argv, "--workdir", str(tmp_path / "w"))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error:") and message in err
    assert not (tmp_path / "w").exists()  # refused before anything is written


@pytest.mark.slow
@pytest.mark.parametrize("variant", LISTED_VARIANTS)
def test_bench_runs_every_variant(variant: str, tmp_path) -> None:
    """The CLI on one device (8 forced devices would hold 8 replicas of H/14's 10 GB of
    parameters, gradients and Adam moments), at two patches per side."""
    patch = parse_variant(variant).patch_size
    argv = ["--variant", variant, "--resolution", str(2 * patch), "--batch-size", "1"]
    quick = ["--windows", "1", "--steps", "2", "--steps-per-execution", "2", "--peak-size", "64"]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mixer_cli",
            "bench",
            *argv,
            *quick,
            "--workdir",
            str(tmp_path),
            "--json",
        ],
        env={**os.environ, "XLA_FLAGS": xla_flags(1)},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout)
    assert results["variant"] == variant and len(results["devices"]) == 1
    assert results["forward"]["images_per_sec"] > 0 and results["train"]["images_per_sec"] > 0
