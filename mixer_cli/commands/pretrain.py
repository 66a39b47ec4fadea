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
    steps_per_execution: options.StepsPerExecution = None,
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
    peer_timeout: options.PeerTimeout = 120.0,
) -> None:
    """Pre-train a Mixer: Adam, warmup + linear decay, clipping at 1, the paper's augmentation.

    With no arguments, the demo recipe trains a nano Mixer on the embedded digits set in
    about a minute. Settings come from defaults < --recipe/--config < flags < --set.
    """
    from functools import partial

    from mixer_cli import distributed
    from mixer_cli.checkpoints import load_params
    from mixer_cli.commands.training import resolve_config, run_training, training_flags

    flags = {
        "model.variant": variant,
        "model.resolution": resolution,
        **training_flags(
            data=data,
            data_dir=data_dir,
            steps=steps,
            epochs=epochs,
            batch_size=batch_size,
            accum_steps=accum_steps,
            steps_per_execution=steps_per_execution,
            lr=lr,
            dtype=dtype,
            seed=seed,
        ),
    }
    distributed.initialize(coordinator, num_processes, process_id, peer_timeout)
    resolved = resolve_config(
        recipe=recipe, config_file=config, flags=flags, assignments=set_ or []
    )
    run_training(
        "pretrain",
        resolved,
        workdir=workdir,
        stop_after=stop_after,
        init=None if init is None else partial(load_params, init),
    )
