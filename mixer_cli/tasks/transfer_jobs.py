"""`mixer transfer --executor local|slurm`: the suite's runs as jobs, through submitit.

Each run of the suite (tasks/transfer.py: every lr of a task's sweep, then its final run)
becomes one job: `Run`, the engine's `train_and_evaluate(config, workdir)` on the run's
own directory, so a job that starts again resumes the run exactly and a finished run is
read back. The sweep runs of every task are submitted at once (`executor.batch()`: one
SLURM job array); as a task's sweep jobs end, its lr is chosen (tasks/finetune.py
`lr_sweep` and `choose_lr`, as inline) and its final run submitted; each task's row
arrives when its final job ends. Preemption and time limits are submitit's business: SLURM
signals the job, submitit calls `Run.checkpoint` (`helpers.Checkpointable`: the same run,
resubmitted) and requeues it, and the run resumes from its last checkpoint. Jobs keep
their logs (submitit's) in SUITE/jobs/. The orchestration stays resumable: a rerun
of the same command skips finished runs and tasks and submits what is left.

`local` runs each job as a process on this machine (its CPUs; for trying the job path,
and the tests); `slurm` submits with sbatch (the executor refuses a machine without it).
"""

from __future__ import annotations

import importlib
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from mixer_cli.config import Config
from mixer_cli.core import report
from mixer_cli.core.errors import ConfigError, JobFailed, MixerError, Preempted
from mixer_cli.data.transfer_tasks import TransferTask
from mixer_cli.tasks.finetune import sweep_runs
from mixer_cli.tasks.transfer import (
    SPLITS,
    SWEEP_FILE,
    THROUGHPUT_FILE,
    Rows,
    Runs,
    TransferSettings,
    in_turn,
    lrs_of,
    run_task,
    throughput,
)


def quiet_import() -> ModuleType:
    """submitit, without the logging set-up it makes when imported: its
    `logging.config.dictConfig` closes every handler already in the process (pytest's,
    absl's; cpython issue 127567). `SUBMITIT_LOG_LEVEL=NOCONFIG` is its own switch, set
    for the import only: jobs, fresh processes, keep submitit's lines in their logs."""
    ours = "SUBMITIT_LOG_LEVEL" not in os.environ  # a user's own setting stays
    os.environ.setdefault("SUBMITIT_LOG_LEVEL", "NOCONFIG")
    try:
        return importlib.import_module("submitit")
    finally:
        if ours:
            os.environ.pop("SUBMITIT_LOG_LEVEL")


submitit = quiet_import()

EXECUTORS = ("inline", "local", "slurm")
SLURM_ONLY = ("--partition", "--gpus-per-job", "--cpus-per-job", "--slurm-arg")
LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # no limit unless asked (submitit's local default is 2 min)
POLL_S = {"local": 0.5, "slurm": 10.0}  # how often the suite looks for ended jobs
JOB_NAME = "mixer-transfer"


@dataclass(frozen=True)
class JobSettings:
    """Where `mixer transfer` runs its runs, and what each job asks of the scheduler."""

    executor: str = "inline"  # inline (this process), local or slurm
    partition: str | None = None
    gpus_per_job: int | None = None
    cpus_per_job: int | None = None
    time_limit: int | None = None  # minutes per job (a requeued job gets as many again)
    slurm_args: tuple[str, ...] = ()  # KEY=VALUE: submitit's slurm_KEY parameters

    def given(self) -> list[str]:
        """The job options given, as the command line names them."""
        values = {
            "--partition": self.partition,
            "--gpus-per-job": self.gpus_per_job,
            "--cpus-per-job": self.cpus_per_job,
            "--time-limit": self.time_limit,
            "--slurm-arg": self.slurm_args or None,
        }
        return [name for name, value in values.items() if value is not None]


def suite_rows(jobs: JobSettings) -> Rows:
    """How `run_transfer` runs the suite's runs: in this process (inline), else as jobs.
    Everything is checked here, before the suite writes anything."""
    if jobs.executor not in EXECUTORS:
        raise ConfigError(
            f"--executor {jobs.executor!r}: expected inline (every run in this process), "
            "local (each run a job on this machine) or slurm (each run a SLURM job)"
        )
    given = jobs.given()
    if jobs.executor == "inline":
        if given:
            raise ConfigError(
                f"{', '.join(given)}: job settings, for --executor local or slurm; "
                "--executor inline (the default) runs every run in this process"
            )
        return in_turn
    if jobs.executor == "local":
        refused = [name for name in given if name in SLURM_ONLY]
        if refused:
            raise ConfigError(
                f"{', '.join(refused)}: SLURM settings, for --executor slurm; --executor "
                "local runs each job on this machine's CPUs (--time-limit applies)"
            )
    else:
        if shutil.which("sbatch") is None:
            raise ConfigError(
                "--executor slurm: no `sbatch` on this machine's PATH; submit from a SLURM "
                "login node, or use --executor local (this machine) or inline"
            )
        if jobs.time_limit is None:
            raise ConfigError(
                "--executor slurm needs --time-limit MINUTES, each job's wall-clock limit "
                "(a job reaching it is requeued and resumes its run)"
            )
        make_executor(jobs, Path("SUITE", "jobs"))  # its parameters checked; nothing written
    return JobSuite(jobs)


def slurm_parameters(items: tuple[str, ...]) -> dict[str, Any]:
    """--slurm-arg KEY=VALUE items as submitit's slurm_KEY parameters (values read as
    YAML scalars: 8 an int, true a bool, gpu a string)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"--slurm-arg expects KEY=VALUE (a submitit SLURM parameter, e.g. qos=high or "
                f"mem=64GB), got {item!r}"
            )
        out["slurm_" + key.strip().replace("-", "_")] = yaml.safe_load(value.strip())
    return out


def make_executor(jobs: JobSettings, folder: Path) -> submitit.AutoExecutor:
    """submitit's executor for `jobs`, its logs and pickles in `folder` (JOB_ID_0_log.err,
    ...). A local one makes the folder; a SLURM one writes nothing until a job is submitted."""
    cluster = jobs.executor
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    except RuntimeError as err:  # submitit's own check of the cluster's commands (srun)
        raise ConfigError(f"--executor {cluster}: {err}") from None
    minutes = jobs.time_limit or LOCAL_TIMEOUT_MIN
    settings: dict[str, Any] = {"name": JOB_NAME, "timeout_min": minutes}
    if cluster == "slurm":
        settings.update(
            gpus_per_node=jobs.gpus_per_job,
            cpus_per_task=jobs.cpus_per_job,
            slurm_partition=jobs.partition,
            **slurm_parameters(jobs.slurm_args),
        )
    try:
        executor.update_parameters(**settings)
    except (NameError, ValueError, TypeError, AssertionError) as err:  # unknown, ill-typed
        raise ConfigError(f"--slurm-arg: submitit refused it: {err}") from None
    return executor


class Run(submitit.helpers.Checkpointable):
    """One run of the suite as a job: the engine on the run's directory (a new run starts,
    a stopped one resumes, a finished one is read back). When the scheduler preempts it
    or its time is up, submitit calls `checkpoint` (Checkpointable's: this same run,
    resubmitted) and requeues the job: the run resumes from its last checkpoint."""

    def __init__(self, config: Config, workdir: Path, stop_after: int | None) -> None:
        self.config, self.workdir, self.stop_after = config, workdir, stop_after

    def __call__(self) -> dict[str, Any]:
        from mixer_cli.train.engine import train_and_evaluate

        try:
            return train_and_evaluate(self.config, self.workdir, stop_after=self.stop_after)
        except Preempted:
            # SIGTERM (the engine stopped at a step with a checkpoint): leave no result, so
            # the job is not over for submitit while SLURM requeues it, and the run resumes
            raise SystemExit(Preempted.exit_code) from None
        except MixerError as err:  # mixer's own one-line errors come back as results
            return {"finished": False, "error": " ".join(str(err).split())}


class JobRuns(Runs):
    """The suite's runs as jobs (what `run_task` and `lr_sweep` call): a finished run is
    read back, a run whose job has ended returns that job's results, any other is queued
    for submission (once; `submit` sends the queue as one batch) and returns as unfinished
    until its job ends."""

    def __init__(self, total: int, stop_after: int | None, executor: submitit.AutoExecutor) -> None:
        super().__init__(total, stop_after)
        self.executor, self.poll_s = executor, POLL_S[executor.cluster]
        self.queued: list[tuple[Config, Path]] = []
        self.pending: dict[Path, tuple[Config, submitit.Job]] = {}
        self.ended: dict[Path, dict[str, Any]] = {}
        self.failed: list[str] = []
        self.settled = 0  # runs finished (or read back) so far

    def __call__(self, config: Config, where: Path) -> dict[str, Any]:
        if where in self.ended:
            return self.ended[where]
        if where not in self.pending and all(where != w for _, w in self.queued):
            results = self.finished(where)
            if results is not None:
                return self.end(config, where, results, "finished, read back")
            self.queued.append((config, where))
        return {"finished": False}

    def submit(self) -> None:
        """The queued runs as one batch (a SLURM job array; local: a process each)."""
        runs, self.queued = self.queued, []
        if not runs:
            return
        with self.executor.batch():
            jobs = [self.executor.submit(Run(c, w, self.stop_after)) for c, w in runs]
        for (config, where), job in zip(runs, jobs, strict=True):
            self.pending[where] = (config, job)
            report.stderr.print(f"{self.what(config)}: job {job.job_id}, run in {where}")

    def end(self, config: Config, where: Path, results: dict[str, Any], how: str) -> dict:
        self.ended[where] = results
        self.settled += results["finished"]
        report.stderr.print(f"[{self.settled}/{self.total}] {self.what(config)}: {how}")
        return results

    def busy(self, taskdir: Path) -> bool:
        """Whether a run under `taskdir` is queued, or its job has not ended yet."""
        runs = [*self.pending, *(where for _, where in self.queued)]
        return any(where.parent == taskdir for where in runs)

    def wait(self) -> None:
        """Until at least one pending job has ended; each ended one's results recorded."""
        while True:
            ended = [where for where, (_, job) in self.pending.items() if job.done()]
            if ended:
                break
            time.sleep(self.poll_s)
        for where in ended:
            config, job = self.pending.pop(where)
            log = job.paths.stderr
            err = job.exception()
            if err is not None:  # not one of mixer's errors: a crash, a cancel, a kill
                results = {"finished": False, "error": why(err, job)}
            else:
                results = job.result()
            if "error" in results:
                self.failed.append(f"{where}: {results['error']} (log: {log})")
                self.end(config, where, results, f"job {job.job_id} failed, its log: {log}")
            elif results["finished"]:
                self.end(config, where, results, f"finished in job {job.job_id}")
            else:
                self.end(config, where, results, f"stopped at step {results.get('step')}")


def why(err: Exception, job: submitit.Job) -> str:
    """Why a job ended without results: its traceback's last line (the exception), or
    the scheduler's state when it left none (killed, cancelled, preempted)."""
    if isinstance(err, submitit.core.utils.FailedJobError):  # the trace between two rules
        parts = str(err).split("-" * 22)
        trace = parts[1].split("\n") if len(parts) > 2 else []
        lines = [line.strip() for line in trace if line.strip()]
        if lines:
            return lines[-1]
    return f"it ended without a result (state {job.state})"


class JobSuite:
    """`Rows` through jobs: every task's unfinished sweep runs submitted at once, each
    task's lr chosen as its sweep jobs end, its final run submitted then (the finals ready
    together, e.g. every one at a fixed --lr, as one batch), its row yielded when that
    ends; then the throughput column, measured in a job. A task whose run stopped or
    failed yields nothing (a rerun resumes it); failed jobs are listed at the end."""

    def __init__(self, jobs: JobSettings) -> None:
        self.jobs = jobs

    def __call__(
        self,
        tasks: list[tuple[TransferTask, Config]],
        workdir: Path,
        runs: Runs,
        s: TransferSettings,
    ) -> Iterator[dict[str, Any]]:
        executor = make_executor(self.jobs, workdir / "jobs")
        job_runs = JobRuns(runs.total, runs.stop_after, executor)
        sweeps = []
        for task, config in tasks:
            taskdir, lrs = workdir / task.name, lrs_of(task, s)  # no sweep at a fixed --lr
            if lrs and (taskdir / SWEEP_FILE).exists():  # its sweep is done: counted, as inline
                job_runs.settled += len(lrs)
            else:
                trials = sweep_runs(config, taskdir, lrs, SPLITS[task.suite][0])
                sweeps += [(c, w) for _, c, w in trials]
        for config, where in sweeps:
            job_runs(config, where)  # queued unless finished
        waiting, done = list(tasks), 0
        while waiting:
            for task, config in list(waiting):
                taskdir = workdir / task.name
                if job_runs.busy(taskdir):
                    continue
                row = run_task(task, config, taskdir, job_runs, s)  # may queue the final
                if row is not None:
                    done += 1
                    yield row
                if row is not None or not job_runs.busy(taskdir):  # done, or stopped / failed
                    waiting.remove((task, config))
            job_runs.submit()  # what this pass queued, as one batch (the first: every sweep)
            if waiting and job_runs.pending:
                job_runs.wait()
        if done == len(tasks) and s.throughput and not (workdir / THROUGHPUT_FILE).exists():
            # measured where the runs ran, not here; run_transfer reads back its file
            report.stderr.print("measuring throughput in a job (mixer bench, forward)")
            job = executor.submit(throughput, tasks, workdir)
            if job.exception() is not None:
                job_runs.failed.append(f"throughput: {why(job.exception(), job)}")
        failed = job_runs.failed
        if failed:
            raise JobFailed(
                f"{len(failed)} run(s) failed in their jobs: {'; '.join(failed)}; the same "
                "command submits them again (each resumes its run)"
            )
