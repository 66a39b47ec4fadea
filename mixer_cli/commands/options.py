"""Options shared by several subcommands, declared once so they mean the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

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
        "ROOT/<split>/<class>/<image> (JPEG/PNG/GIF/BMP; a file that is not an image stops "
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
