"""`mixer convert`: one checkpoint's weights in another layout (Google's npz, timm's)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mixer_cli.commands import options

Source = Annotated[
    str,
    typer.Argument(
        help="The checkpoint: any form --init takes (.npz, .safetensors, a run directory, "
        "imagenet21k/Mixer-B_16, hf-hub:timm/NAME).",
        show_default=False,
    ),
]
Output = Annotated[
    Path,
    typer.Argument(
        help="Where to write: NAME.npz (Google's layout) or NAME.safetensors (timm's "
        "state dict, with the GELU form and input normalisation in its metadata).",
        show_default=False,
    ),
]


def convert(source: Source, output: Output, overwrite: options.Overwrite = False) -> None:
    """Write a Mixer's weights in Google's npz layout or as a timm state dict.

    Input normalisation is folded into the stem when reading, so every output takes
    [-1, 1] inputs (timm: mean = std = 0.5). An npz does not record the GELU form: one
    made from timm's weights needs `--set model.gelu=exact` (library: gelu='exact') to run
    as timm runs it; a .safetensors file carries it.
    """
    from mixer_cli.core import report
    from mixer_cli.tasks.convert import convert_checkpoint, gelu_of

    loaded = convert_checkpoint(source, output, overwrite)
    gelu = gelu_of(loaded)
    report.stderr.print(
        f"wrote {output}: {loaded.family} {loaded.name}, {loaded.resolution} px, "
        f"{loaded.num_classes} classes"
    )
    if output.suffix == ".npz" and gelu != "tanh":
        report.stderr.print(
            f"note: these weights run with the {gelu} GELU, which an npz cannot record: "
            f"train from it with --set model.gelu={gelu}, load it with gelu={gelu!r}, or keep "
            "a .safetensors copy, which carries it"
        )
