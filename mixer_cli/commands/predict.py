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
    import json as json_lib

    from mixer_cli.core import report
    from mixer_cli.models.registry import load_checkpoint
    from mixer_cli.tasks import predict as library
    from mixer_cli.train.workdir import default_workdir, latest_run

    files = library.image_paths(paths)
    if init is None:
        init = latest_run(Path("runs"))
        report.stderr.print(
            f"predicting with {init} (the newest finished run; --init picks another)"
        )
    loaded = load_checkpoint(init, resolution)
    if not loaded.num_classes:
        from mixer_cli.core.errors import ConfigError

        raise ConfigError(
            f"{init} has no classifier head (a feature extractor, or a segmentation "
            "model's backbone): nothing to predict"
        )
    names = library.class_names(init, loaded.num_classes)
    records, damaged = library.predict(loaded, files, names, top, batch_size)
    for path, why in damaged:
        report.stderr.print(f"[yellow]warning:[/] skipped {path}: {why}", soft_wrap=True)
    workdir = Path(workdir or default_workdir("predict", loaded.name, "files"))
    report.write_json(
        workdir / "results.json",
        {"command": "predict", "init": str(init), "variant": loaded.name,
         "resolution": loaded.resolution, "predictions": records,
         "skipped": [{"path": p, "why": why} for p, why in damaged]},
    )  # fmt: skip
    if json_:
        for record in records:
            print(json_lib.dumps(record))
        return
    report.print_table(
        f"{loaded.name} at {loaded.resolution} px: top {top} of {loaded.num_classes} classes",
        [
            report.Column("path", "image", justify="left"),
            report.Column("classes", "classes (probability)", justify="left"),
        ],
        [
            {
                "path": r["path"],
                "classes": ", ".join(f"{t['label']} ({t['probability']:.1%})" for t in r["top"]),
            }
            for r in records
        ],
    )
    report.stderr.print(f"results in {workdir / 'results.json'}")
