"""Options shared by several subcommands, declared once so they mean the same everywhere."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mixer_cli.config import Config, TrainConfig, recipes

Variant = Annotated[
    Optional[str],
    typer.Option(
        "--variant",
        help="Variant SIZE/PATCH, any patch size, e.g. B/16: Mixer sizes N, Ti (ours, for "
        "CPUs), S, B, L, H (paper); ViT sizes (--set model.family=vit) N (ours), Ti, S, B, "
        "L, H.",
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
        help="Input resolution: the checkpoint's or, for a Mixer, an integer multiple K of it "
        "(the paper's high-resolution rule: K x K parts, block-diagonal token mixing); for a "
        "ViT any multiple of its patch size (position embeddings interpolated). "
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
        help="A checkpoint: an .npz in the official layout (Google's or ours), a released "
        "checkpoint's name (see --checkpoints), timm's .safetensors or hf-hub:timm/NAME.",
        show_default=False,
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
Overwrite = Annotated[
    bool,
    typer.Option(
        "--overwrite", help="Replace the output if it exists (only once the new one is complete)."
    ),
]
Data = Annotated[
    Optional[str],
    typer.Option(
        "--data",
        help="Dataset: 'digits' (embedded, offline; 'digits-placed': each digit somewhere on a "
        "16 px canvas; for segment: 'digit-scenes'); folder:PATH "
        "laid out as `PATH/<split>/<class>/<image>` (JPEG/PNG/GIF/BMP; a file that is not an "
        "image stops the run with an error naming it; for segment: `PATH/<split>/images/` + "
        "`masks/`); or a TFDS name[:version] such as cifar10 (segment: oxford_iiit_pet).",
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
        help="A YAML recipe file (sections model, data, optim, train, evals).",
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
        help="Start from these weights: an .npz in the official layout (Google's or ours), "
        "a released checkpoint's name (imagenet21k/Mixer-B_16, imagenet21k/ViT-B_16; "
        "`mixer info --checkpoints`), "
        "timm's weights (.safetensors, hf-hub:timm/NAME; then set model.gelu=exact), "
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
ModelSet = Annotated[
    Optional[list[str]],
    typer.Option(
        "--set",
        help="A model option, e.g. --set model.stem=conv or --set model.pattern=MAMA "
        "(repeatable; model.* keys only).",
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


@dataclass(frozen=True)
class TrainingOptions:
    """The options `pretrain` and `finetune` share, declared once (see `training_command`)."""

    recipe: Recipe = None
    config: ConfigFile = None
    data: Data = None
    data_dir: DataDir = None
    steps: Steps = None
    epochs: Epochs = None
    batch_size: BatchSize = None
    accum_steps: AccumSteps = None
    steps_per_execution: StepsPerExecution = None
    lr: LearningRate = None
    dtype: Dtype = None
    seed: Seed = None
    set_: Set = None
    workdir: Workdir = None
    stop_after: StopAfter = None
    coordinator: Coordinator = None
    num_processes: NumProcesses = None
    process_id: ProcessId = None
    peer_timeout: PeerTimeout = 120.0

    def flags(self) -> dict[str, Any]:
        """The config keys these flags set (None: not given)."""
        return {
            "model.dtype": self.dtype,
            "data.name": self.data,
            "data.data_dir": None if self.data_dir is None else str(self.data_dir),
            "train.steps": self.steps,
            "train.epochs": self.epochs,
            "train.batch_size": self.batch_size,
            "train.accum_steps": self.accum_steps,
            "train.steps_per_execution": self.steps_per_execution,
            "train.seed": self.seed,
            "optim.lr": self.lr,
        }

    def start_processes(self) -> None:
        """Join a multi-process run when the flags (or JAX_* variables) ask for one."""
        from mixer_cli.core import distributed

        distributed.initialize(
            self.coordinator, self.num_processes, self.process_id, self.peer_timeout
        )


def training_command(command: Callable[..., None]) -> Callable[..., None]:
    """`command(own options..., options: TrainingOptions)` as a Typer command whose
    signature is its own options followed by every TrainingOptions field."""
    own = [
        p
        for p in inspect.signature(command, eval_str=True).parameters.values()
        if p.name != "options"
    ]
    hints = typing.get_type_hints(TrainingOptions, include_extras=True)
    shared = [
        inspect.Parameter(
            f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[f.name]
        )
        for f in dataclasses.fields(TrainingOptions)
    ]
    names = {p.name for p in own}

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        mine = {k: v for k, v in kwargs.items() if k in names}
        rest = {k: v for k, v in kwargs.items() if k not in names}
        command(**mine, options=TrainingOptions(**rest))

    parameters = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + shared
    wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    del wrapper.__wrapped__  # Typer must read the composed signature, not the original
    return wrapper


def resolve_config(
    options: TrainingOptions,
    flags: dict[str, Any],
    base: list[tuple[str, dict[str, Any]]] = (),
    default_recipe: str | None = "demo",
) -> Config:
    """defaults < base layers < --recipe/--config (else the default recipe) < flags < --set."""
    from mixer_cli.config import parse_assignments, resolve

    overrides = {k: v for k, v in {**options.flags(), **flags}.items() if v is not None}
    overrides.update(parse_assignments(options.set_ or []))
    chosen = options.recipe or (None if options.config else default_recipe)
    return resolve(chosen, options.config, overrides, base)
