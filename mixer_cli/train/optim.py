"""Optimizers and learning-rate schedules from the paper's recipes, built with optax.

Pre-training: Adam(0.9, 0.999) with decoupled weight decay on the kernels, linear
warmup, then linear (or cosine) decay to a floor, global-norm clipping at 1.
Fine-tuning: SGD with momentum 0.9, the same warmup and clipping, no weight decay.
LAMB (You et al.; ResMLP's pre-training) takes Adam's step scaled per layer by the trust
ratio |w| / |step|.
Either may be wrapped in optax.contrib's SAM (`optim.sam_rho`): each step then takes its
gradient at the adversarial point rho * g / |g| away, on the same batch (twice the cost).
"""

from __future__ import annotations

import functools

import jax
import optax
import optax.contrib

from mixer_cli.config import OptimConfig


def make_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
    decay_steps = max(total_steps - warmup, 1)
    if cfg.schedule == "cosine":
        decay = optax.cosine_decay_schedule(cfg.lr, decay_steps, alpha=cfg.end_lr / cfg.lr)
    else:
        decay = optax.linear_schedule(cfg.lr, cfg.end_lr, decay_steps)
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, warmup), decay], [warmup])


def _kernels(params: optax.Params) -> optax.Params:
    """Weight decay applies to weight matrices only, never to biases or LayerNorm scales."""
    return jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key == "kernel", params)


@functools.lru_cache(maxsize=8)
def make_optimizer(
    cfg: OptimConfig, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The run's optimizer and schedule; the same objects for the same settings, so that
    runs in one process (a sweep's trials, permute's modes) reuse each other's traced
    steps (`steps.compile_steps` is keyed on them)."""
    schedule = make_schedule(cfg, total_steps)
    if cfg.optimizer == "sgd":
        core = optax.sgd(schedule, momentum=cfg.momentum)
    elif cfg.optimizer == "lamb":  # Adam's step scaled per layer to |w| (ResMLP's recipe)
        core = optax.lamb(
            schedule, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay, mask=_kernels
        )
    else:
        core = optax.adamw(
            schedule, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay, mask=_kernels
        )
    clip = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm > 0 else []
    tx = optax.chain(*clip, core)
    if cfg.sam_rho > 0:  # the gradient at w + rho * g / |g| updates w (Foret et al.)
        adversary = optax.chain(optax.contrib.normalize(), optax.sgd(cfg.sam_rho))
        tx = optax.contrib.sam(tx, adversary, sync_period=2, opaque_mode=True)
    return tx, schedule
