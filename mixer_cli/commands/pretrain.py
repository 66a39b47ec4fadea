"""`mixer pretrain`: train a Mixer from scratch with the paper's recipe."""

from __future__ import annotations

from mixer_cli.commands import options as opts


@opts.training_command
def pretrain(
    variant: opts.Variant = None,
    resolution: opts.Resolution = None,
    init: opts.Init = None,
    *,
    options: opts.TrainingOptions,
) -> None:
    """Pre-train a Mixer: Adam, warmup + linear decay, clipping at 1, the paper's augmentation.

    With no arguments, the demo recipe trains a nano Mixer on the embedded digits set in
    about a minute, with a 5-shot probe at every evaluation. Without --recipe, a paper size
    (S, B, L, H) means the paper's 224 px, and on imagenet2012 or imagenet21k that
    dataset's paper recipe (B's for S and B, L's for L and H). Settings come from defaults <
    --recipe/--config < flags < --set (evaluators too: --set evals.fewshot.shots=1,5).
    """
    from mixer_cli.commands.options import resolve_config
    from mixer_cli.config import implied_settings
    from mixer_cli.tasks.train import run_training

    flags = {
        "model.variant": variant,
        "model.resolution": resolution,
        "model.init": None if init is None else str(init),
    }
    recipe, implied, note = None, {}, ""
    if options.recipe is None and options.config is None:
        recipe, implied, note = implied_settings(variant, options.data, options.set_ or [])
    flags.update({k: v for k, v in implied.items() if flags.get(k) is None})
    options.start_processes()
    config = resolve_config(options, flags, default_recipe=recipe or "demo")
    run_training(
        "pretrain",
        config,
        workdir=options.workdir,
        stop_after=options.stop_after,
        notes=[note] if note else [],
    )
