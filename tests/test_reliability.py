"""Crashes, damaged files, failed saves and lost peers: nothing complete is lost, and a
resumed run ends exactly where an uninterrupted one does."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from damage import flip_bit_in_largest_file, truncate_arrays
from test_cli import run_cli
from training import assert_same_results, assert_same_training, params_of, pretrain_command, tiny
from xla_env import xla_flags

from mixer_cli.core.errors import CheckpointError, CheckpointSaveFailed, ConfigError
from mixer_cli.models.checkpoints import read_params
from mixer_cli.train.checkpoint import Checkpointer
from mixer_cli.train.engine import train_and_evaluate
from mixer_cli.train.workdir import check_free_space


def copy_of(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def digest(directory: Path) -> str:
    """One hash of every file's path and bytes: equal means untouched."""
    h = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(directory)).encode() + path.read_bytes())
    return h.hexdigest()


def complete_steps(workdir: Path) -> list[int]:
    folder = workdir / "checkpoints"
    return (
        sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.exists() else []
    )


# --- damaged checkpoints -------------------------------------------------------------------


def test_a_flipped_bit_in_the_latest_checkpoint_sets_it_aside_and_resumes_from_the_one_before(
    stopped: Path, uninterrupted: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = copy_of(stopped, tmp_path)
    flip_bit_in_largest_file(run / "checkpoints" / "10" / "state")
    train_and_evaluate(tiny(), run)
    err = capsys.readouterr().err
    assert re.search(r"warning: checkpoint \S+/checkpoints/10 is damaged", err), err
    assert "resuming from step 5" in err
    assert (run / "checkpoints" / "10.corrupt").is_dir()  # kept for inspection, not deleted
    assert_same_results(run, uninterrupted)


def test_a_truncated_latest_checkpoint_gives_the_parameters_of_the_one_before(
    stopped: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = copy_of(stopped, tmp_path)
    reference = copy_of(stopped, tmp_path / "reference")
    shutil.rmtree(reference / "checkpoints" / "10")
    truncate_arrays(run / "checkpoints" / "10")
    flat, source = read_params(run)
    assert source.endswith("checkpoints/5")
    assert "checkpoints/10 is damaged" in capsys.readouterr().err
    want, _ = read_params(reference)
    assert flat.keys() == want.keys()
    for key in want:
        np.testing.assert_array_equal(flat[key], want[key])


def test_a_run_whose_checkpoints_are_all_damaged_is_refused_naming_the_file(
    stopped: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = copy_of(stopped, tmp_path)
    for step in ("5", "10"):
        truncate_arrays(run / "checkpoints" / step)
    with pytest.raises(CheckpointError, match=r"checkpoints/5 is damaged .*so are the 1 newer"):
        read_params(run)
    untouched = digest(run)
    code, _, err = run_cli(capsys, "fewshot", "--init", str(run), "--shots", "1")
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: checkpoint ")
    assert "checkpoints/5 is damaged" in err.strip().splitlines()[-1]
    assert digest(run) == untouched


# --- disks that refuse to take a checkpoint ---------------------------------------------


def test_a_workdir_without_room_for_a_checkpoint_is_refused_before_training(
    tmp_path: Path,
) -> None:
    check_free_space(tmp_path, 1)
    with pytest.raises(ConfigError, match=r"MiB free; this run's checkpoint"):
        check_free_space(tmp_path, shutil.disk_usage(tmp_path).free + 2**30)


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """Every write in this process that would grow a file past `limit` bytes fails with
    EFBIG, as writes do on a full disk (Python ignores SIGXFSZ: the write only fails)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_a_failed_save_stops_the_run_and_leaves_earlier_checkpoints_intact(
    stopped: Path, uninterrupted: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = copy_of(stopped, tmp_path)
    before = {step: digest(run / "checkpoints" / step) for step in ("5", "10")}
    # Every array file of a checkpoint outgrows 64 KiB; the run's other files stay below.
    with file_size_limit(2**16):
        code, _, err = run_cli(capsys, *pretrain_command(run)[3:])
    assert code == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: could not write the checkpoint of step 15"), last
    assert "File too large" in last and "step 10 is the newest complete one" in last
    assert {step: digest(run / "checkpoints" / step) for step in ("5", "10")} == before
    assert complete_steps(run) == [5, 10]
    # Room again: the same command resumes from step 10 and ends where it always does.
    train_and_evaluate(tiny(), run)
    assert_same_results(run, uninterrupted)


def test_a_failed_save_deletes_no_older_step_even_when_it_was_due_to_go(tmp_path: Path) -> None:
    """keep=1: step 1 is deleted only once step 2 is complete, which it never is here."""
    state = {"w": jnp.arange(2**16, dtype=jnp.float32)}  # 256 KiB: past the limit below
    checkpointer = Checkpointer(tmp_path, keep=1)
    checkpointer.save(1, state, {"step": 1})
    checkpointer.wait()
    before = digest(tmp_path / "1")
    with file_size_limit(2**16):
        checkpointer.save(2, state, {"step": 2})
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:  # as the training loop does: a check per step
            try:
                checkpointer.check()
            except CheckpointSaveFailed:
                break
    for _ in range(2):  # orbax raises a failed write once; we raise it at every wait
        with pytest.raises(CheckpointSaveFailed, match=r"step 2 .*step 1 is the newest complete"):
            checkpointer.wait()
    assert digest(tmp_path / "1") == before
    assert [p.name for p in tmp_path.iterdir() if p.name.isdigit()] == ["1"]


# --- kill -9 ------------------------------------------------------------------------------


def _wait(
    proc: subprocess.Popen, condition, what: str, timeout: float = 300, every: float = 0.02
) -> None:
    """Poll `condition` every `every` seconds (the run it waits on needs the CPU more)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {what}: {proc.stderr.read()[-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def _stopped_step(err: str, workdir: Path, resume_from: int) -> int:
    """The step an interrupted run (resumed from `resume_from`) says it saved, checked to be
    the newest complete checkpoint."""
    assert f"resuming from step {resume_from} " in err, err[-2000:]
    last = err.strip().splitlines()[-1]
    step = int(re.search(r"interrupted at step (\d+); checkpoint saved", last).group(1))
    assert step == max(complete_steps(workdir))
    return step


def _strike_after_a_new_checkpoint(
    workdir: Path, sig: signal.Signals, code: int, *extra: str
) -> int:
    """Start the run (`extra` settings), let it save one new checkpoint (so it is past
    start-up), send `sig`: it must save the step it is on and exit `code`. Returns the step
    it stopped at."""
    resume_from = max(complete_steps(workdir), default=0)
    cmd = pretrain_command(workdir, *extra)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait(proc, lambda: max(complete_steps(workdir), default=0) > resume_from, "a checkpoint")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err[-2000:]
    return _stopped_step(err, workdir, resume_from)


def _ctrl_c_after_a_new_checkpoint(
    capsys: pytest.CaptureFixture, workdir: Path, *extra: str
) -> int:
    """The run in this process (no process start-up); once it has saved a new checkpoint,
    Ctrl-C (SIGINT to the process, as a terminal sends it): it must save the step it is on
    and exit 130. Returns the step it stopped at."""
    resume_from = max(complete_steps(workdir), default=0)
    finished = threading.Event()

    def strike() -> None:
        while not finished.wait(0.002):
            if max(complete_steps(workdir), default=0) > resume_from:
                os.kill(os.getpid(), signal.SIGINT)
                return

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # one after the run: not pytest's
    watcher = threading.Thread(target=strike, daemon=True)
    watcher.start()
    try:
        code, _, err = run_cli(capsys, *pretrain_command(workdir, *extra)[3:])
    finally:
        finished.set()
        watcher.join()
        signal.signal(signal.SIGINT, previous)
    assert code == 130, err[-2000:]
    return _stopped_step(err, workdir, resume_from)


def test_kill_9_mid_write_sigterm_and_ctrl_c_then_resuming_equals_an_uninterrupted_run(
    uninterrupted: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """SIGKILL the moment a checkpoint write begins (its partial directory is never
    picked), then a scheduler's SIGTERM (a checkpoint, exit 143), then Ctrl-C to a run in
    the test's own process (a checkpoint, exit 130; one process start-up fewer), resuming
    each time: the end is the uninterrupted run's.
    The soak with kills at random moments: test_kill_9_at_random_moments... (-m slow)."""
    workdir = tmp_path / "run"
    checkpoints = workdir / "checkpoints"
    cmd = pretrain_command(workdir, "--set=train.checkpoint_every=1")  # a write every step
    for attempt in range(4):  # a write that ends between seeing it and the kill: again
        resume_from = max(complete_steps(workdir), default=0)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _wait(proc, lambda past=resume_from: max(complete_steps(workdir), default=0) > past,
              "a checkpoint")  # fmt: skip
        _wait(
            proc, lambda: any(checkpoints.glob("*.orbax-checkpoint-tmp*")), "a write", every=0.002
        )
        proc.kill()
        proc.wait()
        if attempt:
            assert f"resuming from step {resume_from} " in proc.stderr.read()
        if any(checkpoints.glob("*.orbax-checkpoint-tmp*")):
            break  # killed mid-write
    else:
        raise AssertionError("no kill landed during a checkpoint write")
    # each resumes from the newest complete checkpoint, never from a partial one
    # a checkpoint a step: steps remain to interrupt after the one each strike waits for
    every_step = "--set=train.checkpoint_every=1"
    _strike_after_a_new_checkpoint(workdir, signal.SIGTERM, 143, every_step)
    stopped = _ctrl_c_after_a_new_checkpoint(capsys, workdir, every_step)
    # to the end at the usual cadence (a resume may change it)
    code, _, err = run_cli(capsys, *pretrain_command(workdir)[3:])
    assert code == 0, err[-3000:]
    assert f"resuming from step {stopped} " in err, err[-2000:]
    assert not list(checkpoints.glob("*.orbax-checkpoint-tmp*"))  # cleaned up on restart
    assert_same_results(workdir, uninterrupted)


@pytest.mark.slow
def test_kill_9_at_random_moments_and_resuming_equals_an_uninterrupted_run(
    uninterrupted: Path, tmp_path: Path
) -> None:
    """SIGKILL three or more times (at least once while a checkpoint is being written), a
    SIGTERM once (a checkpoint, exit 143), then Ctrl-C once (a checkpoint, exit 130),
    resuming each time: partial checkpoints are never picked, and the end is the
    uninterrupted run's."""
    rng = random.Random(0)
    workdir = tmp_path / "run"
    checkpoints = workdir / "checkpoints"
    # A checkpoint after every step: a write is nearly always in progress.
    cmd = pretrain_command(workdir, "--set=train.checkpoint_every=1")
    kills, mid_write, interrupted = 0, 0, False
    while True:
        resume_from = max(complete_steps(workdir), default=0)
        if interrupted:  # to the end at the usual cadence (a resume may change it)
            cmd = pretrain_command(workdir)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if interrupted:
            break
        assert kills < 8, "no kill landed during a checkpoint write"

        # Let it pass one new checkpoint (so it is past start-up), then strike.
        def saved_one(past: int = resume_from) -> bool:
            return max(complete_steps(workdir), default=0) > past

        _wait(proc, saved_one, "a checkpoint")
        if (kills >= 3 and mid_write) or kills == 2:
            # Ctrl-C at the end; a scheduler's SIGTERM once on the way (exit 128 + 15).
            sig, code = (signal.SIGINT, 130) if kills >= 3 else (signal.SIGTERM, 143)
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == code, err[-2000:]
            last = err.strip().splitlines()[-1]
            step = int(re.search(r"interrupted at step (\d+); checkpoint saved", last).group(1))
            assert step == max(complete_steps(workdir))
            interrupted, kills = sig == signal.SIGINT, kills + (sig == signal.SIGTERM)
        else:
            if kills != 1:  # the moment a write begins
                _wait(
                    proc,
                    lambda: any(checkpoints.glob("*.orbax-checkpoint-tmp*")),
                    "a write",
                    every=0.002,
                )
            else:
                time.sleep(rng.uniform(0, 0.5))
            proc.kill()
            proc.wait()
            kills += 1
            mid_write += bool(list(checkpoints.glob("*.orbax-checkpoint-tmp*")))
            err = proc.stderr.read()
        if resume_from:
            assert f"resuming from step {resume_from} " in err, err[-2000:]
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert f"resuming from step {resume_from} " in err, err[-2000:]
    assert not list(checkpoints.glob("*.orbax-checkpoint-tmp*"))  # cleaned up on restart
    assert_same_results(workdir, uninterrupted)


# In the child: the write stops half-way and waits for the kill (MARK says it is there).
_STOP_MID_WRITE = {
    "convert": "import numpy as np\n"
    "def stop(file, **arrays):\n"
    "    file.write(b'PK half an archive'); file.flush(); Path(MARK).touch(); time.sleep(600)\n"
    "np.savez = stop\n",
    "export": "import mixer_cli.tasks.export as export\n"
    "def stop(*args, **kwargs):  # the model file is written, export.json is next\n"
    "    Path(MARK).touch(); time.sleep(600)\n"
    "export.describe = stop\n",
}


@pytest.mark.slow  # a child process importing JAX: ~8 s each (the in-process default test of
# the same property: test_bad_input.py::test_a_full_disk_is_one_line_keeps_the_previous...)
@pytest.mark.parametrize("command", ["convert", "export"])
def test_kill_9_mid_write_of_convert_or_export_keeps_the_old_output_and_the_rerun_completes(
    capsys, tmp_path: Path, official_npz, command: str
) -> None:
    out = tmp_path / ("out.npz" if command == "convert" else "out")
    argv = ["convert", official_npz[0], str(out)] if command == "convert" else [
        "export", "--init", official_npz[0], "--out", str(out)]  # fmt: skip
    assert run_cli(capsys, *argv)[0] == 0
    contents = (lambda: out.read_bytes()) if command == "convert" else (lambda: digest(out))
    before = contents()
    mark = tmp_path.parent / f"{tmp_path.name}-mid-write"
    script = (
        f"import sys, time\nfrom pathlib import Path\nMARK = {str(mark)!r}\n"
        f"{_STOP_MID_WRITE[command]}from mixer_cli.cli import run\n"
        f"sys.exit(run({[*argv, '--overwrite']!r}))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    _wait(proc, mark.exists, "the write")
    proc.kill()
    proc.wait()
    assert contents() == before  # the old output, whole; the new one half-written beside it
    others = {p.name for p in tmp_path.iterdir()} - {out.name}
    assert others and all(n.startswith(f".{out.name}.") and n.endswith(".tmp") for n in others)
    code, _, err = run_cli(capsys, *argv, "--overwrite")
    assert code == 0, err
    if command == "convert":
        assert read_params(out)[0].keys() == official_npz[1].keys()
    else:
        assert json.loads((out / "export.json").read_text())["file"] == "model.onnx"


# --- a lost process in a multi-process run --------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _launch_two(workdir: Path, *extra: str) -> list[subprocess.Popen]:
    env = {**os.environ, "XLA_FLAGS": xla_flags(4)}
    port = _free_port()
    base = pretrain_command(
        workdir, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", *extra
    )
    return [
        subprocess.Popen(
            [*base, "--process-id", str(i)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]


def test_processes_agree_on_complete_checkpoints_when_a_peer_lists_late(tmp_path: Path) -> None:
    """A peer that does not see the newest step yet (process 0 renames it into place)
    must neither report the write as failed nor skip a deletion process 0 makes."""
    env = {**os.environ, "XLA_FLAGS": xla_flags(1)}
    port, script = _free_port(), Path(__file__).with_name("checkpoint_peer.py")
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(port), str(i), str(tmp_path / "checkpoints")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:  # without agreement the two deadlock in mismatched collectives
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err[-3000:]
    finally:
        for proc in procs:
            proc.kill()
    assert complete_steps(tmp_path) == [3]


def test_two_processes_train_as_one_eight_device_process(
    uninterrupted: Path, tmp_path: Path
) -> None:
    """Two processes on loopback (jax.distributed, gloo, 4 devices each) read their own
    rows of the same global batches and end as one 8-device process does. The default
    suite's multi-process run; the lost peer and the preemption sync point are the slow
    test below. One checkpoint, at the end: none is needed on the way; no few-shot probe
    (its features are not what this compares)."""
    procs = _launch_two(tmp_path, "--set=train.checkpoint_every=20", "--set=evals.fewshot=none")
    outputs = [proc.communicate(timeout=600) for proc in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
    assert_same_training(params_of(tmp_path), params_of(uninterrupted))
    assert json.loads((tmp_path / "results.json").read_text())["test/examples"] == 360


@pytest.mark.slow  # three rounds of two process launches: 107 s of the default suite
def test_a_lost_or_preempted_process_stops_its_peer_and_both_resume_to_the_same_end(
    uninterrupted: Path, tmp_path: Path
) -> None:
    """Two processes on loopback (jax.distributed, gloo, 4 devices each: the same global
    batches as one 8-device process). Process 1 is killed after the first checkpoint;
    process 0 must exit non-zero within --peer-timeout (plus slack) with one clear line,
    not hang in a collective. Started again, a scheduler's SIGTERM to process 1 stops
    both at the same step through JAX's preemption sync point: both write that checkpoint
    and exit 143. Started once more, both end as one uninterrupted process does."""
    timeout, slow = 5, "--set=train.checkpoint_every=1"  # a checkpoint a step: room to strike
    procs = _launch_two(tmp_path, f"--peer-timeout={timeout}", slow)
    _wait(procs[0], lambda: complete_steps(tmp_path), "the first checkpoint")
    procs[1].kill()
    killed_at = time.monotonic()
    _, err = procs[0].communicate(timeout=120)
    waited = time.monotonic() - killed_at
    procs[1].communicate()
    assert procs[0].returncode == 1, err[-3000:]
    assert waited < timeout + 15, waited
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: process 1 of 2 stopped responding"), err[-3000:]
    assert "resumes from its last complete checkpoint" in last

    resume_from = max(complete_steps(tmp_path))
    procs = _launch_two(tmp_path, slow)
    _wait(procs[0], lambda: max(complete_steps(tmp_path)) > resume_from, "a new checkpoint")
    procs[1].send_signal(signal.SIGTERM)
    outputs = [proc.communicate(timeout=300) for proc in procs]
    stopped = []
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 143, err[-3000:]
        last = err.strip().splitlines()[-1]
        stopped.append(int(re.search(r"interrupted at step (\d+); checkpoint saved", last)[1]))
    assert f"resuming from step {resume_from} " in outputs[0][1]
    assert stopped[0] == stopped[1] == max(complete_steps(tmp_path)) < 20, stopped

    # to the end at the usual cadence: a resume may change how often it saves
    procs = _launch_two(tmp_path)
    outputs = [proc.communicate(timeout=600) for proc in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
    assert f"resuming from step {stopped[0]} " in outputs[0][1]
    assert_same_training(params_of(tmp_path), params_of(uninterrupted))
    assert json.loads((tmp_path / "results.json").read_text())["test/examples"] == 360


# --- one run per directory ---------------------------------------------------------------


def test_a_second_run_on_a_busy_directory_is_refused_and_readers_are_not(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A real process holds the directory (suspended after its first checkpoint): a second
    `pretrain` on it (here, in the test's own process) exits at once with code 2 naming the
    holder, and `mixer eval` of the same run still works; once the holder is killed (-9:
    the kernel drops the lock) the same command resumes."""
    workdir = tmp_path / "run"
    # Long enough to be running throughout; no checkpoint deleted under the reader.
    long_run = ("--set=train.steps=2000", "--set=train.keep_checkpoints=400")
    command = pretrain_command(workdir, *long_run)
    holder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait(holder, lambda: complete_steps(workdir), "the first checkpoint")
        # Suspended (as by Ctrl-Z), the holder keeps its lock but leaves the CPUs to us.
        holder.send_signal(signal.SIGSTOP)
        code, _, err = run_cli(capsys, *command[3:])
        assert code == 2, err[-2000:]
        last = err.strip().splitlines()[-1]
        assert f"is in use by another run (pid {holder.pid} on " in last, last
        code, _, err = run_cli(
            capsys, "eval", "--init", str(workdir), "--workdir", str(tmp_path / "eval")
        )
        assert code == 0, err[-2000:]
    finally:
        holder.kill()
        holder.wait()
    code, _, err = run_cli(capsys, *command[3:], "--stop-after=1")
    assert code == 0 and "resuming from step" in err, err[-2000:]
