"""`mixer eval`: any checkpoint on any dataset and split, by the shared evaluators."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mixer_cli.commands import options

EvalInit = Annotated[
    Optional[Path],
    typer.Option(
        "--init",
        help="The model: Google's official .npz or its released name (imagenet21k/Mixer-B_16), "
        "timm's .safetensors or hf-hub:timm/NAME, ours, a run directory (finished, or its "
        "newest training checkpoint; a ResNet run too), a fine-tuned higher-resolution one. "
        "[default: the newest finished run under ./runs]",
        show_default=False,
    ),
]
EvalData = Annotated[
    Optional[str],
    typer.Option(
        "--data",
        help="Dataset: digits, folder:PATH or a TFDS name[:version]. "
        "[default: the run's own dataset, else digits]",
        show_default=False,
    ),
]
Split = Annotated[
    Optional[str],
    typer.Option(
        "--split",
        help="Split to score, TFDS syntax (test, validation, train[:10%]). "
        "[default: the dataset's evaluation split]",
        show_default=False,
    ),
]
Evals = Annotated[
    Optional[str],
    typer.Option(
        "--evals",
        help="Also these evaluators, comma-separated types, each on its own dataset with its "
        "defaults: real (ImageNet ReaL), imagenet_v2, imagenet_r, imagenet_a (any type of a "
        "config's evals:). Without --data only these run.",
        show_default=False,
    ),
]
EvalSet = Annotated[
    Optional[list[str]],
    typer.Option(
        "--set",
        help="An evaluator's key, as in a config's evals: (repeatable), e.g. "
        "--set evals.real.data=DIR --set evals.real.real_json=real.json (ReaL from a folder "
        "of ImageNet's validation images) or --set evals.imagenet_v2.config=topimages.",
        show_default=False,
    ),
]
Fewshot = Annotated[
    bool,
    typer.Option(
        "--fewshot", help="Also the linear few-shot table (shots from the training split)."
    ),
]
Shots = Annotated[
    str, typer.Option("--shots", help="Few-shot: comma-separated examples per class.")
]
EvalBatch = Annotated[
    int, typer.Option("--batch-size", help="Images per evaluation batch (global).", min=1)
]


def eval_(
    init: EvalInit = None,
    data: EvalData = None,
    data_dir: options.DataDir = None,
    split: Split = None,
    evals: Evals = None,
    set_: EvalSet = None,
    resolution: options.AdaptedResolution = None,
    fewshot: Fewshot = False,
    shots: Shots = "1,5,10,25",
    batch_size: EvalBatch = 256,
    workdir: options.Workdir = None,
    json_: options.Json = False,
) -> None:
    """Evaluate a checkpoint: top-1, top-5 and mean loss over every image of a split, with
    the reference evaluation crop (resize to 256/224 of the resolution, centre crop).

    Use it to tell a checkpoint's accuracy from your preprocessing's. When the head does not
    match the dataset's classes, only the representation (few-shot) evaluators run.
    --evals real,imagenet_v2 scores the paper's ReaL and robustness sets (TFDS; ReaL also
    from a folder of the validation images with real.json, see --set).
    Table + results.json in the run directory; features are cached for few-shot reruns.
    """
    from mixer_cli.config import named_evals, parse_number_list
    from mixer_cli.core import report
    from mixer_cli.core.report import save_results
    from mixer_cli.tasks.evaluate import EvalRequest, evaluate, print_eval

    request = EvalRequest(
        init=init,
        data=data,
        data_dir=None if data_dir is None else str(data_dir),
        split=split,
        evals=named_evals(
            tuple(e.strip() for e in (evals or "").split(",") if e.strip()), set_ or []
        ),
        resolution=resolution,
        fewshot=fewshot,
        shots=tuple(sorted(parse_number_list(shots, int, "--shots"))),
        batch_size=batch_size,
        workdir=workdir,
    )
    result = evaluate(request)
    if not json_:
        print_eval(result)
    save_results(result.workdir, result.results)
    if json_:
        report.print_json(result.results)
