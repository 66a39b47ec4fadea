"""`mixer bench`: images/s, FLOPs, MFU and memory of a Mixer on this machine's devices."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from mixer_cli.commands import options

if TYPE_CHECKING:
    from mixer_cli.tasks.bench import BenchSettings, InputSettings
    from mixer_cli.tasks.latency import LatencySettings

BenchMode = Annotated[
    str,
    typer.Option(
        "--mode",
        help="forward (evaluation), train (the engine's full step), both, latency "
        "(p50/p90/p99 per call, batch 1 unless --batch-size, on 1 core and on all), or input "
        "(the training input pipeline's img/s per host core beside its decode-crop-resize "
        "floor, and the device augmentation's share of a train step; needs --data or a "
        "--recipe/--config).",
    ),
]
BenchSet = Annotated[
    Optional[list[str]],
    typer.Option(
        "--set",
        help="A model option, e.g. --set model.stem=conv (repeatable); with --mode input any "
        "config key, e.g. --set data.randaug_layers=2 --set data.augment_on=host.",
        show_default=False,
    ),
]
# --mode input without a recipe: bench's model (the paper's B/16 at 224 px). A config
# needs a length; the bench trains nothing (a recipe's own length replaces this one).
INPUT_BASE = {"model.variant": "B/16", "model.resolution": 224, "train.steps": 1}
Exported = Annotated[
    Optional[Path],
    typer.Option(
        "--exported",
        help="With --mode latency: time this `mixer export` directory (or its model file) in "
        "its runtime instead of the JAX model.",
        show_default=False,
    ),
]
Calls = Annotated[
    int, typer.Option("--calls", help="With --mode latency: timed calls per setting.", min=10)
]
Windows = Annotated[int, typer.Option("--windows", help="Timed windows; the median counts.", min=1)]
StepsPerWindow = Annotated[
    Optional[int],
    typer.Option(
        "--steps",
        help="Steps per timed window, in whole executions (see --steps-per-execution). "
        "[default: enough for about 2 s]",
        min=1,
        show_default=False,
    ),
]
PeakSize = Annotated[
    Optional[int],
    typer.Option(
        "--peak-size",
        help="Side of the square matmul that measures the peak. "
        "[default: 4096 on CPUs, 8192 on accelerators]",
        min=1,
        show_default=False,
    ),
]


def bench(
    variant: options.Variant = None,
    resolution: options.Resolution = None,
    batch_size: options.BatchSize = None,
    dtype: options.Dtype = None,
    mode: BenchMode = "both",
    num_classes: Annotated[
        int,
        typer.Option(
            "--num-classes", help="Classes of the head (--mode input: the dataset's).", min=1
        ),
    ] = 1000,
    windows: Windows = 5,
    steps: StepsPerWindow = None,
    peak_size: PeakSize = None,
    steps_per_execution: options.StepsPerExecution = None,
    set_: BenchSet = None,
    exported: Exported = None,
    calls: Calls = 200,
    data: options.Data = None,
    data_dir: options.DataDir = None,
    recipe: options.Recipe = None,
    config: options.ConfigFile = None,
    workdir: options.Workdir = None,
    json: options.Json = False,
) -> None:
    """Time a model's forward pass and train step on synthetic batches over all devices,
    or (--mode latency) its per-call latency, also of an exported file, or (--mode input)
    the training input pipeline.

    Reports images/s (median of timed windows after compilation and warm-up), FLOPs per
    image from XLA's cost analysis, achieved GFLOP/s, a square matmul's peak measured in
    the same run and dtype, MFU = achieved / peak, and memory; on CPUs also page faults and
    the kernel's share of CPU time per step. Defaults: B/16 at 224 px, batch 32, float32.
    Saves results.json in the run directory. Any model family's options go with --set
    (e.g. --set model.token_mixing=sum). --mode input reads its data, augmentation and
    model as pretrain does (--recipe/--config < flags < --set).
    """
    from mixer_cli.tasks.bench import BenchSettings
    from mixer_cli.tasks.latency import LatencySettings

    inputs = {"data": data, "data_dir": data_dir, "recipe": recipe, "config": config}
    if mode == "input":
        run = options.TrainingOptions(**inputs, dtype=dtype, set_=set_)
        timing = (variant, resolution, batch_size, windows, steps, steps_per_execution)
        return input_throughput(input_settings(run, *timing), workdir, json)
    refuse_input_options(inputs)
    model = {  # what both modes measure: B/16 at 224 px in float32 unless told
        "variant": variant or "B/16",
        "resolution": resolution or 224,
        "dtype": dtype or "float32",
        "num_classes": num_classes,
        "model_options": tuple(set_ or ()),
    }
    if mode == "latency" or exported is not None:
        latency_settings = LatencySettings(
            **model, batch_size=batch_size or 1, exported=exported, calls=calls
        )
        latency(latency_settings, workdir, json)
        return
    settings = BenchSettings(
        **model,
        batch_size=batch_size or 32,
        mode=mode,
        windows=windows,
        steps=steps or 0,
        peak_size=peak_size or 0,
        steps_per_execution=steps_per_execution or BenchSettings.steps_per_execution,
    )
    throughput(settings, workdir, json)


def throughput(settings: BenchSettings, workdir: Path | None, json: bool) -> None:
    """`--mode forward | train | both`: images/s, FLOPs, MFU and memory."""
    from mixer_cli.core import report
    from mixer_cli.tasks.bench import page_fault_hint, run_bench, validate
    from mixer_cli.train.workdir import default_workdir

    validate(settings)  # before the progress bar, so an error stays one line
    workdir = Path(workdir or default_workdir("bench", settings.variant, str(settings.resolution)))
    with report.progress() as bar:
        task = bar.add_task("benchmark", total=None)
        results = run_bench(settings, lambda phase: bar.update(task, description=phase))
    results["workdir"] = str(workdir)
    save_and_show(results, workdir, json, print_bench_table, page_fault_hint(results))


def save_and_show(
    results: dict, workdir: Path, json: bool, table: Callable[[dict], None], hint: str | None = None
) -> None:
    """Every mode's ending: results.json, then the JSON or the table (and a hint) on stdout."""
    from mixer_cli.core import report

    report.write_json(workdir / "results.json", results)
    if json:
        report.print_json(results)
        return
    table(results)
    if hint:
        report.stderr.print(hint)
    report.stderr.print(f"results in {workdir / 'results.json'}")


def refuse_input_options(inputs: dict[str, object]) -> None:
    """Options that only --mode input reads: given to another mode, they would do nothing."""
    from mixer_cli.core.errors import ConfigError

    given = [f"--{k.replace('_', '-')}" for k, v in inputs.items() if v is not None]
    if given:
        raise ConfigError(f"{', '.join(given)}: only --mode input reads a dataset or recipe")


def input_settings(
    run: options.TrainingOptions,
    variant: str | None,
    resolution: int | None,
    batch_size: int | None,
    windows: int,
    steps: int | None,
    steps_per_execution: int | None,
) -> InputSettings:
    """--mode input's config, resolved as pretrain's is (defaults < B/16 at 224 px <
    --recipe/--config < flags < --set), and how long to time."""
    from mixer_cli.commands.options import resolve_config
    from mixer_cli.core.errors import ConfigError
    from mixer_cli.tasks.bench import InputSettings

    if run.data is None and run.recipe is None and run.config is None:
        raise ConfigError(
            "--mode input times a dataset's pipeline: give --data (folder:PATH, a TFDS name) "
            "or a --recipe/--config that names one"
        )
    flags = {"model.variant": variant, "model.resolution": resolution}
    config = resolve_config(run, flags, [("mixer bench", INPUT_BASE)], default_recipe=None)
    return InputSettings(
        config,
        batch_size=batch_size or InputSettings.batch_size,
        windows=windows,
        steps=steps or 0,
        steps_per_execution=steps_per_execution or InputSettings.steps_per_execution,
    )


def input_throughput(settings: InputSettings, workdir: Path | None, json: bool) -> None:
    """`--mode input`: the host pipeline beside its floor, the device augmentation's share."""
    from mixer_cli.core import report
    from mixer_cli.tasks.bench import InputBench
    from mixer_cli.train.workdir import default_workdir

    bench = InputBench(settings)  # refuses bad data, model or batch before the progress bar
    c = settings.config
    workdir = Path(workdir or default_workdir("bench-input", c.model.variant, c.data.name))
    with report.progress() as bar:
        task = bar.add_task("benchmark", total=None)
        results = bench.run(lambda phase: bar.update(task, description=phase))
    results["workdir"] = str(workdir)
    save_and_show(results, workdir, json, print_input_tables)


def print_input_tables(results: dict) -> None:
    from mixer_cli.core import report

    a, host = results["augmentation"], results["host"]
    steps = [f"{a['crop']} crop", "flip" if a["flip"] else "no flip"]
    if a["randaug_layers"] and a["randaug_magnitude"]:
        steps.append(f"RandAugment({a['randaug_layers']}, {a['randaug_magnitude']:g})")
    steps += [f"{k} {a[k]:g}" for k in ("mixup", "cutmix") if a[k]]
    report.print_table(
        f"{results['data']} {results['split']} at {results['resolution']} px, batch "
        f"{results['batch_size']}: {', '.join(steps)}, augmented on the {a['augment_on']}; "
        f"{host['cores']} host cores",
        [
            report.Column("stage", "Host", justify="left"),
            report.Column("images_per_sec", "img/s", lambda v: f"{v:,.1f}"),
            report.Column("images_per_sec_per_core", "img/s/core", lambda v: f"{v:,.1f}"),
        ],
        [
            {"stage": "training pipeline", **host["pipeline"]},
            {"stage": "floor: decode, crop, resize", **host["floor"]},
        ],
    )
    report.stdout.print(f"pipeline time / floor time: {host['time_vs_floor']:.2f}x")
    device = results["device"]
    report.print_table(
        f"augmentation on the device in a {results['model']} train step, "
        f"{len(results['devices'])} x {results['device_kind']}",
        [
            report.Column("part", "Device", justify="left"),
            report.Column("gflops_per_image", "GFLOP/img", lambda v: f"{v:,.4g}"),
            report.Column("images_per_sec", "img/s", lambda v: f"{v:,.1f}"),
            report.Column("images_per_sec_per_core", "img/s/core", lambda v: f"{v:,.1f}"),
        ],
        [
            {"part": "augmentation alone", **device["augment"]},
            {"part": "train step (with it)", **device["train_step"]},
        ],
    )
    report.stdout.print(
        f"augmentation's share of the step: {device['flops_share']:.2%} of its FLOPs, "
        f"{device['time_share']:.2%} of its time"
    )


def latency(settings: LatencySettings, workdir: Path | None, json: bool) -> None:
    """`--mode latency`: per-call percentiles of the JAX model or an exported file."""
    from mixer_cli.core import report
    from mixer_cli.tasks.latency import describe, measure
    from mixer_cli.train.workdir import default_workdir

    what = describe(settings)  # refuses a bad variant or file before the progress bar
    with report.progress() as bar:
        bar.add_task(f"timing {what}, batch {settings.batch_size}", total=None)
        results = measure(settings, what)
    workdir = Path(workdir or default_workdir("bench", settings.name(), "latency"))
    save_and_show(results, workdir, json, print_latency_table)


def print_latency_table(results: dict) -> None:
    from mixer_cli.core import report

    batch = results["batch_size"]
    report.print_table(
        f"latency of {results['model']}, batch {batch}, {results['calls']} calls after warm-up",
        [
            report.Column("setting", "", justify="left"),
            report.Column("p50_ms", "p50 ms", lambda v: f"{v:,.3f}"),
            report.Column("p90_ms", "p90 ms", lambda v: f"{v:,.3f}"),
            report.Column("p99_ms", "p99 ms", lambda v: f"{v:,.3f}"),
            report.Column("ips", "img/s at p50", lambda v: f"{v:,.1f}"),
        ],
        [
            {"setting": k, **v, "ips": batch * 1e3 / v["p50_ms"]}
            for k, v in results["latency"].items()
        ],
    )


def print_bench_table(results: dict) -> None:
    from mixer_cli.core import report

    def gib(n: int | None) -> str:
        if n is None:
            return "n/a"
        return f"{n / 2**30:,.2f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"

    rows = [{"mode": mode, **results[mode]} for mode in ("forward", "train") if mode in results]
    grouped = (
        f", {results['steps_per_execution']} train steps per execution"
        if "train" in results
        else ""
    )
    report.print_table(
        f"{results.get('family', 'mixer').capitalize()}-{results.get('model', results['variant'])}"
        f" at {results['resolution']} px, batch "
        f"{results['batch_size']}, {results['dtype']}{grouped}, on {len(results['devices'])} x "
        f"{results['device_kind']}; matmul peak {results['matmul_peak_gflops']:,.0f} GFLOP/s",
        [
            report.Column("mode", "Mode", justify="left"),
            report.Column("images_per_sec", "img/s", lambda v: f"{v:,.2f}"),
            report.Column("images_per_sec_per_core", "img/s/core", lambda v: f"{v:,.2f}"),
            report.Column("gflops_per_image", "GFLOP/img", lambda v: f"{v:,.2f}"),
            report.Column("achieved_gflops", "GFLOP/s", lambda v: f"{v:,.0f}"),
            report.Column("mfu", "MFU", lambda v: f"{v:.1%}"),
            report.Column("compile_seconds", "Compile", lambda v: f"{v:,.1f} s"),
            report.Column("program_memory_bytes", "Program memory", gib),
        ],
        rows,
    )
    if results.get("peak_memory_bytes") is not None:
        report.stdout.print(f"peak device memory: {gib(results['peak_memory_bytes'])}")
