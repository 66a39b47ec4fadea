"""`mixer permute`: the paper's pixel/patch-shuffle experiment, a Mixer against a ResNet (or
any families)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from mixer_cli.commands import options

Mode = Annotated[
    str,
    typer.Option(
        "--mode",
        help="original, patch (patch order + in-patch pixels, the Mixer's patch size), "
        "global (all pixels), or all. One fixed seeded permutation for every image.",
    ),
]
Baseline = Annotated[
    Optional[list[str]],
    typer.Option(
        "--baseline",
        help="A model trained beside the first, repeatable: resnet (ResNet50x1 from 128 px, "
        "else a CPU-sized ResNet14 of width 16), vit (ViT-B/16 from 128 px, else the nano "
        "ViT at the first model's patch size), FAMILY:VARIANT (e.g. gmlp:S/16), a BiT "
        "ResNet by name (ResNet26x1), or none (the first model alone). [default: resnet]",
        show_default=False,
    ),
]
NoReference = Annotated[
    bool,
    typer.Option("--no-reference", help="Do not also train on the original images for comparison."),
]


def permute(
    mode: Mode = "global",
    data: options.Data = None,
    data_dir: options.DataDir = None,
    variant: options.Variant = None,
    resolution: options.Resolution = None,
    baseline: Baseline = None,
    steps: Annotated[
        Optional[int],
        typer.Option("--steps", help="Training steps of every model.", min=1, show_default=False),
    ] = None,
    batch_size: options.BatchSize = None,
    seed: options.Seed = None,
    no_reference: NoReference = False,
    set_: options.ModelSet = None,
    workdir: options.Workdir = None,
    stop_after: options.StopAfter = None,
) -> None:
    """Train a Mixer and a ResNet from scratch on original and permuted images, probing
    test top-1 and linear 5-shot accuracy along training (the paper's §3.4, Fig. 4).

    With no arguments: the global shuffle against the original images on digits-placed
    (each embedded digit somewhere on a 16 px canvas), about 2.5 CPU minutes. Writes
    permute.png (curves + example images) and results.json. --set model.KEY=VALUE changes
    the first model: a hybrid (--set model.stem=conv) or another family (--set
    model.family=vit --variant N/4); --baseline vit --baseline resnet trains both beside it.
    """
    from mixer_cli.core import report
    from mixer_cli.tasks.permute import PermuteSettings, print_summary, run_permute

    settings = PermuteSettings(
        mode=mode,
        data=data,
        data_dir=None if data_dir is None else str(data_dir),
        variant=variant,
        resolution=resolution,
        baselines=tuple(baseline or ("resnet",)),
        steps=steps,
        batch_size=batch_size,
        seed=seed,
        reference=not no_reference,
        model_options=tuple(set_ or ()),
        workdir=workdir,
        stop_after=stop_after,
    )
    run = run_permute(settings)
    if run.results is None:
        report.stderr.print("stopped early; the same command resumes")
        return
    print_summary(run.results)
    report.stderr.print(f"figure and results in {run.workdir}")
