"""`mixer transfer --executor local|slurm`: the suite's runs as submitit jobs. A one-task
suite as local jobs (real processes, reading a genuinely prepared dSprites: the TFDS
mock lives only in the test's process) equals the inline run; the SLURM path's
submission (the sweep as one job array, the options as sbatch's) without a cluster."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from datasets import write_catalog_tfds
from test_transfer import tasks_of, transfer

from mixer_cli.config import Config
from mixer_cli.core.errors import ConfigError
from mixer_cli.tasks.transfer_jobs import JobRuns, JobSettings, JobSuite, make_executor, suite_rows


def dsprites_files(data_dir: Path) -> Path:
    """dSprites as test_transfer mocks it (1000 train rows), prepared in real files."""

    def example(split: str, i: int) -> dict:
        image = (np.random.default_rng(i).random((64, 64, 1)) < 0.1).astype(np.uint8)
        return {"image": image, "label_orientation": i % 40}

    return write_catalog_tfds(data_dir, "dsprites", {"train": 1000}, example)


@pytest.mark.slow  # 70-95 s here: 4 job processes (each imports JAX and TF), the inline run
def test_a_one_task_suite_as_local_jobs_equals_the_inline_run(
    capsys, tmp_path, official_npz
) -> None:
    npz, _ = official_npz
    data_dir = dsprites_files(tmp_path / "tfds")
    code, err = transfer(capsys, data_dir, tmp_path / "inline", npz)
    assert code == 0, err

    jobs = ("--executor", "local")
    code, err = transfer(capsys, data_dir, tmp_path / "suite", npz, *jobs)
    assert code == 0, err
    assert tasks_of(tmp_path / "suite") == tasks_of(tmp_path / "inline")  # the same numbers
    assert json.loads((tmp_path / "suite" / "results.json").read_text())["finished"]
    logs = sorted((tmp_path / "suite" / "jobs").glob("*_log.err"))
    assert len(logs) == 4, logs  # the 3 sweep runs, then the final run
    submitted = [err.index(f"lr {lr}: train800 -> val200: job") for lr in (0.003, 0.01, 0.03)]
    assert max(submitted) < err.index("finished in job")  # the sweep at once, not in turn
    assert err.count("finished in job") == 4 and "[4/4]" in err, err

    # A rerun reads everything back and submits nothing.
    code, err = transfer(capsys, data_dir, tmp_path / "suite", npz, *jobs)
    assert code == 0 and "[4/4]" in err and "finished, read back" in err, err
    assert ": job " not in err and "finished in job" not in err, err
    assert len(list((tmp_path / "suite" / "jobs").glob("*_log.err"))) == 4
    assert tasks_of(tmp_path / "suite") == tasks_of(tmp_path / "inline")


@pytest.fixture
def cluster_commands(tmp_path, monkeypatch) -> Path:
    """`srun` and `sbatch` on PATH, standing in for a login node's: sbatch keeps each
    script it is given in ./submitted and answers as SLURM does."""
    bin_dir, submitted = tmp_path / "bin", tmp_path / "submitted"
    bin_dir.mkdir()
    submitted.mkdir()
    scripts = {
        "srun": "#!/bin/sh\nexit 0\n",
        "sbatch": f'#!/bin/sh\ncp "$1" {submitted}/$(ls {submitted} | wc -l).sh\n'
        'echo "Submitted batch job 4242"\n',
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return submitted


def test_the_slurm_path_submits_the_sweep_as_one_array_with_the_options(
    tmp_path, cluster_commands
) -> None:
    jobs = JobSettings(
        executor="slurm",
        partition="gpu",
        gpus_per_job=1,
        cpus_per_job=8,
        time_limit=240,
        slurm_args=("qos=high", "array-parallelism=2"),
    )
    assert isinstance(suite_rows(jobs), JobSuite)
    assert not (tmp_path / "suite").exists()  # checked, nothing written
    found = make_executor(jobs, tmp_path / "suite" / "jobs")
    assert found.parameters == {
        "job_name": "mixer-transfer",
        "time": 240,
        "gpus_per_node": 1,
        "cpus_per_task": 8,
        "partition": "gpu",
        "qos": "high",
        "array_parallelism": 2,
    }
    runs = JobRuns(4, None, found)
    for lr in (1, 2, 3):
        assert not runs(Config(), tmp_path / "suite" / "task" / f"lr-{lr}")["finished"]
    assert not any(cluster_commands.iterdir())  # queued: one batch when the pass ends
    runs.submit()
    (script,) = cluster_commands.iterdir()  # one sbatch call: a job array of 3
    lines = set(script.read_text().splitlines())
    assert {
        "#SBATCH --array=0-2%2",
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --time=240",
        "#SBATCH --qos=high",
        "#SBATCH --signal=USR2@90",  # submitit's notice before the limit: requeue, resume
        f"#SBATCH --output={tmp_path}/suite/jobs/%A_%a_0_log.out",
    } <= lines, lines
    assert sorted(j.job_id for _, j in runs.pending.values()) == ["4242_0", "4242_1", "4242_2"]

    unknown = dataclasses.replace(jobs, slurm_args=("colour=red",))
    with pytest.raises(ConfigError, match="Unknown argument 'colour' for executor 'slurm'"):
        suite_rows(unknown)
