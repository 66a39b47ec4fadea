"""`mixer predict`: classify image files with a checkpoint (top-K labels and probabilities)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mixer_cli.commands import options

Paths = Annotated[
    list[Path],
    typer.Argument(
        help="Image files and folders (searched recursively for JPEG/PNG/GIF/BMP).",
        show_default=False,
    ),
]
PredictInit = Annotated[
    Optional[Path],
    typer.Option(
        "--init",
        help="The model: Google's official .npz or its released name, timm's .safetensors or "
        "hf-hub:timm/NAME, ours, or a run directory. "
        "[default: the newest finished run under ./runs]",
        show_default=False,
    ),
]
Top = Annotated[int, typer.Option("--top", help="Classes to show per image.", min=1)]
PredictBatch = Annotated[
    int, typer.Option("--batch-size", help="Images per batch (global).", min=1)
]


def predict(
    paths: Paths,
    init: PredictInit = None,
    top: Top = 5,
    resolution: options.AdaptedResolution = None,
    batch_size: PredictBatch = 64,
    workdir: options.Workdir = None,
    json_: options.Json = False,
) -> None:
    """Classify your image files: each one's top-K classes with probabilities, with the
    reference evaluation crop, in batches over all devices.

    Class names come from the run's dataset, ImageNet-1k's synsets for a 1,000-class head,
    else the class index. A damaged file is named and skipped; the others still run.
    --json prints one JSON object per image. Also writes results.json in the run directory.
    """
    from mixer_cli.tasks.predict import PredictRequest, print_predictions, run_predict

    request = PredictRequest(tuple(paths), init, top, resolution, batch_size, workdir)
    print_predictions(run_predict(request), as_json=json_)
