"""`mixer export`: a checkpoint as a deployable file (StableHLO, ONNX, int8 ONNX)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mixer_cli.commands import options

ExportInit = Annotated[
    Optional[str],
    typer.Option(
        "--init",
        help="The model: any form --init takes (.npz, .safetensors, a run directory, "
        "imagenet21k/Mixer-B_16, hf-hub:timm/NAME). [default: the newest finished run]",
        show_default=False,
    ),
]
Format = Annotated[
    str,
    typer.Option(
        "--format", help="onnx (ONNX Runtime), stablehlo (jax.export) or tflite (LiteRT)."
    ),
]
Int8 = Annotated[
    Optional[str],
    typer.Option(
        "--int8",
        help="Also write an int8 model: dynamic (weights int8, activations per call; ONNX, "
        "TFLite) or static (activations calibrated on --data's training images; ONNX).",
        show_default=False,
    ),
]
Batch = Annotated[
    str, typer.Option("--batch-size", help="A fixed batch size, or dynamic (any batch).")
]
Out = Annotated[Path, typer.Option("--out", help="The export directory to write.")]
Uint8Input = Annotated[
    bool,
    typer.Option(
        "--uint8-input", help="Take uint8 pixels and scale them inside the graph (for apps)."
    ),
]
FloatTokenMixing = Annotated[
    bool,
    typer.Option(
        "--float-token-mixing",
        help="With --int8 (ONNX): keep token mixing's MatMuls in float, closer to the float "
        "model's top-1 and slower (CIFAR-10 N/4: 99.1% agreement instead of 98.7%).",
    ),
]
Check = Annotated[
    int,
    typer.Option("--check", help="Images of --data's test split to compare runtimes on.", min=8),
]


def export(
    out: Out,
    init: ExportInit = None,
    format_: Format = "onnx",
    int8: Int8 = None,
    batch_size: Batch = "dynamic",
    resolution: options.AdaptedResolution = None,
    uint8_input: Uint8Input = False,
    float_token_mixing: FloatTokenMixing = False,
    data: options.Data = None,
    data_dir: options.DataDir = None,
    check: Check = 512,
    overwrite: options.Overwrite = False,
    json: options.Json = False,
) -> None:
    """Export a checkpoint as ONNX (Mixers), StableHLO or TFLite (any family), optionally
    int8 too; each file is run in its runtime against JAX's logits (on --data's test
    images, else random ones) before the directory appears, with export.json.

    The directory appears only when complete. export.json says the input contract
    (NHWC, [-1, 1] or uint8 pixels), the largest logit difference to JAX, and for int8 the
    top-1 agreement with the float model (and top-1 on --data's labels).
    """
    from mixer_cli.core import report
    from mixer_cli.models.registry import load_checkpoint
    from mixer_cli.tasks.export import ExportSettings, check_inputs, parse_batch_size, write_export
    from mixer_cli.train.workdir import latest_run

    settings = ExportSettings(
        format=format_,
        out=out,
        int8=int8,
        batch_size=parse_batch_size(batch_size),
        uint8_input=uint8_input,
        overwrite=overwrite,
        float_token_mixing=float_token_mixing,
    )
    settings.check()  # before anything is loaded
    if init is None:
        init = str(latest_run(Path("runs")))
        report.stderr.print(f"exporting {init} (the newest finished run; --init picks another)")
    loaded = load_checkpoint(init, resolution)
    images, labels, calibration = check_inputs(loaded, data, data_dir, check, settings.int8)
    with report.progress() as bar:
        bar.add_task(f"exporting {loaded.name} as {format_}", total=None)
        record = write_export(loaded, settings, images, labels, calibration, str(init))
    if json:
        report.print_json(record)
        return
    print_export_table(record, f"{loaded.name} exported to {out}")


def print_export_table(record: dict, title: str) -> None:
    """The files written and how close each came to JAX's logits."""
    from mixer_cli.core import report

    rows = [{"file": record["file"], "what": "float", "diff": record["max_abs_diff"],
             "agree": None, "top1": record.get("top1")}]  # fmt: skip
    if "int8" in record:
        q = record["int8"]
        rows.append({"file": q["file"], "what": f"int8 ({q['mode']})", "diff": q["max_abs_diff"],
                     "agree": q["top1_agreement"], "top1": q.get("top1")})  # fmt: skip
    pct = lambda v: "-" if v is None else f"{v:.2%}"  # noqa: E731
    report.print_table(
        f"{title} (checked on {record['checked_on']} images)",
        [
            report.Column("file", "file", justify="left"),
            report.Column("what", "", justify="left"),
            report.Column("diff", "max |logit - JAX|", lambda v: f"{v:.2e}"),
            report.Column("agree", "top-1 = float", pct),
            report.Column("top1", "top-1", pct),
        ],
        rows,
    )
