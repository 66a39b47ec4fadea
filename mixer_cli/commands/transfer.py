"""`mixer transfer`: the paper's transfer tables (Avg 5, VTAB-1k) for one checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mixer_cli.commands import options as opts

Suite = Annotated[
    str,
    typer.Option(
        "--suite",
        help="avg5 (ImageNet, CIFAR-10/100, Pets, Flowers), vtab1k (the 19 VTAB-1k tasks), "
        "or tasks separated by commas: vtab:NAME, avg5:NAME (e.g. vtab:dtd,avg5:cifar10).",
        show_default=False,
    ),
]
StepsScale = Annotated[
    float,
    typer.Option(
        "--steps-scale",
        help="Scale every task's steps and warmup by F (> 0) for a small machine; results "
        "with F != 1 are marked not comparable to the paper.",
    ),
]
Init = Annotated[
    Path,
    typer.Option(
        "--init",
        help="The checkpoint: Google's .npz or released name (imagenet21k/Mixer-B_16: the "
        "paper's numbers are shown beside ours), timm's weights, ours, or a run directory.",
        show_default=False,
    ),
]
Resolution = Annotated[
    Optional[int],
    typer.Option(
        "--resolution",
        help="Fine-tune every task at this resolution [default: Avg 5 at 224; VTAB-1k at "
        "224 for images below 96x96 px, else 448 (the BiT-HyperRule)].",
        show_default=False,
    ),
]
FixedLr = Annotated[
    Optional[float],
    typer.Option(
        "--lr",
        help="Train every task at this learning rate, skipping the sweep (a budget for a "
        "small machine: marked not comparable to the paper). [default: the protocols' sweep]",
        show_default=False,
    ),
]
Throughput = Annotated[
    bool,
    typer.Option(
        "--throughput/--no-throughput",
        help="At the suite's end, measure img/s per core (mixer bench's forward pass) at "
        "each resolution it fine-tuned at: the paper's throughput column.",
    ),
]
MicroBatch = Annotated[
    Optional[int],
    typer.Option(
        "--batch-size",
        help="Examples per micro-batch: the protocols' batch of 512 is kept with gradient "
        "accumulation (a divisor of 512). [default: 512]",
        show_default=False,
        min=1,
    ),
]
Executor = Annotated[
    str,
    typer.Option(
        "--executor",
        help="Where the runs run: inline (one after another in this process), local (each "
        "run a job on this machine) or slurm (each run a SLURM job; the sweeps of every "
        "task at once as one job array), through submitit.",
    ),
]
Partition = Annotated[
    Optional[str],
    typer.Option("--partition", help="SLURM partition of the jobs.", show_default=False),
]
GpusPerJob = Annotated[
    Optional[int],
    typer.Option("--gpus-per-job", help="GPUs per SLURM job.", show_default=False, min=0),
]
CpusPerJob = Annotated[
    Optional[int],
    typer.Option("--cpus-per-job", help="CPUs per SLURM job.", show_default=False, min=1),
]
TimeLimit = Annotated[
    Optional[int],
    typer.Option(
        "--time-limit",
        metavar="MINUTES",
        help="Each job's wall-clock limit (needed with slurm); a job reaching it is requeued "
        "and resumes its run. [default: local: none]",
        show_default=False,
        min=1,
    ),
]
SlurmArg = Annotated[
    Optional[list[str]],
    typer.Option(
        "--slurm-arg",
        metavar="KEY=VALUE",
        help="Any other submitit SLURM parameter, repeatable: qos=high, account=NAME, "
        "mem=64GB, constraint=a100, array_parallelism=8, ...",
        show_default=False,
    ),
]


def transfer(
    init: Init,
    suite: Suite,
    workdir: opts.Workdir = None,
    steps_scale: StepsScale = 1.0,
    resolution: Resolution = None,
    batch_size: MicroBatch = None,
    data_dir: opts.DataDir = None,
    lr: FixedLr = None,
    throughput: Throughput = True,
    stop_after: opts.StopAfter = None,
    executor: Executor = "inline",
    partition: Partition = None,
    gpus_per_job: GpusPerJob = None,
    cpus_per_job: CpusPerJob = None,
    time_limit: TimeLimit = None,
    slurm_arg: SlurmArg = None,
) -> None:
    """Run the paper's transfer protocols: per task an lr sweep (each lr of the task's grid
    fine-tuned on train800 / train minus dev, scored on val200 / dev), the chosen lr
    fine-tuned on train800val200 / train and scored on test.

    One run directory per run under the suite's (TASK/lr-LR, TASK/final); the same
    command resumes a stopped suite and never re-runs a finished run. The table shows each
    task's test top-1 and chosen lr, VTAB-1k's group means, each suite's mean and, for
    Google's released checkpoints given by name, the paper's numbers beside ours.
    With --executor local or slurm each run is a job (submitit; logs in SUITE/jobs/).
    """
    from mixer_cli.tasks.transfer import TransferSettings, run_transfer
    from mixer_cli.tasks.transfer_jobs import JobSettings, suite_rows

    jobs = JobSettings(
        executor=executor,
        partition=partition,
        gpus_per_job=gpus_per_job,
        cpus_per_job=cpus_per_job,
        time_limit=time_limit,
        slurm_args=tuple(slurm_arg or ()),
    )
    rows = suite_rows(jobs)  # checked before anything is written
    settings = TransferSettings(
        init=init,
        suite=suite,
        workdir=workdir,
        steps_scale=steps_scale,
        resolution=resolution,
        batch_size=batch_size,
        data_dir=data_dir,
        lr=lr,
        throughput=throughput,
        stop_after=stop_after,
    )
    results = run_transfer(settings, arrived=print_arrived, rows=rows)
    print_results(results)


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def print_arrived(row: dict[str, Any]) -> None:
    from mixer_cli.core import report

    report.stderr.print(
        f"{row['task']}: test top-1 {pct(row['test_top1'])} (lr {row['selected_lr']:g})"
    )


def print_results(results: dict[str, Any]) -> None:
    """The table per task, then the means beside the paper's numbers."""
    from mixer_cli.core import report

    scale, lr = results["steps_scale"], results["fixed_lr"]
    budget = ([f"steps x {scale:g}"] if scale != 1 else []) + (
        [f"lr {lr:g}, no sweep"] if lr is not None else []
    )
    note = f" ({', '.join(budget)}: NOT comparable to the paper)" if budget else ""
    report.print_table(
        f"mixer transfer {results['suite']}: {results['init']}{note}",
        [
            report.Column("task", "task", justify="left"),
            report.Column("group", "group", justify="left"),
            report.Column("resolution", "px"),
            report.Column("steps", "steps", "{:,}".format),
            report.Column("selected_lr", "lr", "{:g}".format),
            report.Column("test_top1", "test top-1", pct),
        ],
        results["tasks"],
    )
    paper = results["paper"] or {}
    means = [
        *((g, v, None) for g, v in results["group_means"].items()),
        ("ImageNet", results["imagenet"], paper.get("imagenet")),
        ("ReaL", results["real"], paper.get("real")),
        ("ImageNet-v2", results["imagenet_v2"], None),
    ]
    for name, m in results["suite_means"].items():
        tasks = f"{m['tasks']} task{'s' * (m['tasks'] != 1)}" + ", incomplete" * (not m["complete"])
        means.append((f"{name} ({tasks})", m["mean"], paper.get(name)))
    rows = [{"what": w, "ours": o, "paper": p} for w, o, p in means if (o, p) != (None, None)]
    source = f"paper: {paper['source']}" if paper else "no published numbers for this checkpoint"
    report.print_table(
        f"means{note}; {source}",
        [
            report.Column("what", "", justify="left"),
            report.Column("ours", "ours", pct),
            report.Column("paper", "paper", pct),
        ],
        rows,
    )
    if results.get("throughput"):
        print_throughput(results["throughput"], paper)
    if not results["finished"]:
        report.stderr.print("stopped before the suite's end; the same command resumes it")
    report.stderr.print(f"results in {results['workdir']}/results.json")


def print_throughput(measured: dict[str, Any], paper: dict[str, Any]) -> None:
    """img/s per core at each resolution, beside the paper's (TPU-v3) for its checkpoints."""
    from mixer_cli.core import report

    first = next(iter(measured.values()))
    report.print_table(
        f"throughput: mixer bench's forward pass, batch {first['batch_size']}, {first['dtype']}, "
        f"{first['cores']} x {first['device_kind']} (paper: TPU-v3 cores)",
        [
            report.Column("px", "px"),
            report.Column("ours", "img/s/core", "{:,.1f}".format),
            report.Column("paper", "paper", lambda v: "-" if v is None else f"{v:,.0f}"),
        ],
        [
            {
                "px": int(px),
                "ours": m["images_per_sec_per_core"],
                "paper": paper.get("throughput") if int(px) == paper.get("resolution") else None,
            }
            for px, m in measured.items()
        ],
    )
