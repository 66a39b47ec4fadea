"""Options shared by several subcommands, declared once so they mean the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mixer_cli.config import TrainConfig, recipes

Variant = Annotated[
    Optional[str],
    typer.Option(
        "--variant",
        help="Mixer variant SIZE/PATCH: sizes N, Ti (ours, for CPUs), S, B, L, H (paper); "
        "any patch size, e.g. B/16.",
        show_default=False,
    ),
]
Resolution = Annotated[
    Optional[int],
    typer.Option("--resolution", help="Square input resolution in pixels.", show_default=False),
]
AdaptedResolution = Annotated[
    Optional[int],
    typer.Option(
        "--resolution",
        help="Input resolution: the checkpoint's or an integer multiple K of it (the paper's "
        "high-resolution rule: K x K parts, block-diagonal token mixing). "
        "[default: the checkpoint's]",
        show_default=False,
    ),
]
NumClasses = Annotated[
    int, typer.Option("--num-classes", help="Classes of the head; 0 = no head.", min=0)
]
Checkpoint = Annotated[
    Optional[Path],
    typer.Option(
        "--checkpoint",
        help="An .npz checkpoint in the official layout (Google's or ours).",
        show_default=False,
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
Data = Annotated[
    Optional[str],
    typer.Option(
        "--data",
        help="Dataset: 'digits' (embedded, offline); folder:PATH laid out as "
        "`PATH/<split>/<class>/<image>` (JPEG/PNG/GIF/BMP; a file that is not an image stops "
        "the run with an error naming it); or a TFDS name[:version] such as cifar10.",
        show_default=False,
    ),
]
DataDir = Annotated[
    Optional[Path],
    typer.Option(
        "--data-dir",
        help="TFDS data directory holding prepared datasets "
        "[default: $TFDS_DATA_DIR or ~/tensorflow_datasets].",
        show_default=False,
    ),
]
Recipe = Annotated[
    Optional[str],
    typer.Option(
        "--recipe",
        help=f"A built-in recipe (YAML in examples/recipes): {', '.join(recipes())}. "
        "pretrain's default is demo; finetune applies it over its own recipe and the "
        "dataset's preset.",
        show_default=False,
    ),
]
ConfigFile = Annotated[
    Optional[Path],
    typer.Option(
        "--config",
        help="A YAML recipe file (sections model, data, optim, train).",
        show_default=False,
    ),
]
Workdir = Annotated[
    Optional[Path],
    typer.Option(
        "--workdir",
        help="Run directory, where results.json goes; for training, the same command on "
        "the same directory resumes. [default: runs/COMMAND-VARIANT-DATA-TIME]",
        show_default=False,
    ),
]
Init = Annotated[
    Optional[Path],
    typer.Option(
        "--init",
        help="Start from these weights: an .npz in the official layout (Google's or ours) "
        "or a run directory (finished, or its newest training checkpoint).",
        show_default=False,
    ),
]
Set = Annotated[
    Optional[list[str]],
    typer.Option(
        "--set",
        help="Override any config key, e.g. --set optim.lr=3e-3 (repeatable).",
        show_default=False,
    ),
]
Steps = Annotated[
    Optional[int], typer.Option("--steps", help="Total training steps.", show_default=False, min=1)
]
Epochs = Annotated[
    Optional[float], typer.Option("--epochs", help="Training length in epochs.", show_default=False)
]
BatchSize = Annotated[
    Optional[int],
    typer.Option("--batch-size", help="Global batch size.", show_default=False, min=1),
]
AccumSteps = Annotated[
    Optional[int],
    typer.Option(
        "--accum-steps",
        help="Micro-batches per step (gradient accumulation).",
        show_default=False,
        min=1,
    ),
]
StepsPerExecution = Annotated[
    Optional[int],
    typer.Option(
        "--steps-per-execution",
        help="Train steps run as one program between log, eval and checkpoint points "
        "(same results; fewer dispatches and, on CPUs, fewer page faults). "
        f"[default: {TrainConfig.steps_per_execution}]",
        show_default=False,
        min=1,
    ),
]
LearningRate = Annotated[
    Optional[float], typer.Option("--lr", help="Peak learning rate.", show_default=False)
]
Dtype = Annotated[
    Optional[str],
    typer.Option(
        "--dtype",
        help="Compute dtype: float32 or bfloat16 (parameters stay float32).",
        show_default=False,
    ),
]
Seed = Annotated[
    Optional[int],
    typer.Option("--seed", help="Seed of initialisation and data.", show_default=False),
]
StopAfter = Annotated[
    Optional[int],
    typer.Option(
        "--stop-after",
        help="Stop after this many steps of this invocation, with a checkpoint (for "
        "time-limited jobs); the same command resumes.",
        show_default=False,
        min=1,
    ),
]
Coordinator = Annotated[
    Optional[str],
    typer.Option(
        "--coordinator",
        help="Multi-process run: the coordinator's HOST:PORT (or JAX_COORDINATOR_ADDRESS), "
        "with --num-processes and --process-id.",
        show_default=False,
    ),
]
NumProcesses = Annotated[
    Optional[int],
    typer.Option("--num-processes", show_default=False, help="Processes in a multi-process run."),
]
ProcessId = Annotated[
    Optional[int],
    typer.Option("--process-id", show_default=False, help="This process's index, from 0."),
]
PeerTimeout = Annotated[
    float,
    typer.Option(
        "--peer-timeout",
        metavar="SECONDS",
        help="Multi-process run: seconds without a sign of life from another process "
        "before this one stops with an error (instead of waiting forever).",
        min=1,
    ),
]
