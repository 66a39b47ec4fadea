"""`mixer pretrain`: train a Mixer from scratch with the paper's recipe."""

from __future__ import annotations

from mixer_cli.commands import options


def pretrain(
    recipe: options.Recipe = None,
    config: options.ConfigFile = None,
    variant: options.Variant = None,
    resolution: options.Resolution = None,
    data: options.Data = None,
    data_dir: options.DataDir = None,
    steps: options.Steps = None,
    epochs: options.Epochs = None,
    batch_size: options.BatchSize = None,
    accum_steps: options.AccumSteps = None,
    lr: options.LearningRate = None,
    dtype: options.Dtype = None,
    seed: options.Seed = None,
    set_: options.Set = None,
    workdir: options.Workdir = None,
    init: options.Init = None,
    stop_after: options.StopAfter = None,
    coordinator: options.Coordinator = None,
    num_processes: options.NumProcesses = None,
    process_id: options.ProcessId = None,
) -> None:
    """Pre-train a Mixer: Adam, warmup + linear decay, clipping at 1, the paper's augmentation.

    With no arguments, the demo recipe trains a nano Mixer on the embedded digits set in
    about a minute. Settings come from defaults < --recipe/--config < flags < --set.
    """
    from mixer_cli.commands.training import run_training

    flags = {
        "model.variant": variant,
        "model.resolution": resolution,
        "model.dtype": dtype,
        "data.name": data,
        "data.data_dir": None if data_dir is None else str(data_dir),
        "train.steps": steps,
        "train.epochs": epochs,
        "train.batch_size": batch_size,
        "train.accum_steps": accum_steps,
        "train.seed": seed,
        "optim.lr": lr,
    }
    if steps is not None and epochs is None:
        flags["train.epochs"] = 0.0
    if epochs is not None and steps is None:
        flags["train.steps"] = 0
    run_training(
        "pretrain",
        recipe=recipe,
        config_file=config,
        flags=flags,
        assignments=set_ or [],
        workdir=workdir,
        init=init,
        stop_after=stop_after,
        distributed=(coordinator, num_processes, process_id),
    )
