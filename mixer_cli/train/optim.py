"""Optimizers and learning-rate schedules from the paper's recipes, built with optax.

Pre-training: Adam(0.9, 0.999) with decoupled weight decay on the kernels, linear
warmup, then linear (or cosine) decay to a floor, global-norm clipping at 1.
Fine-tuning: SGD with momentum 0.9, the same warmup and clipping, no weight decay.
LAMB (You et al.; ResMLP's pre-training) takes Adam's step scaled per layer by the trust
ratio |w| / |step|.
Either may be wrapped in optax.contrib's SAM (`optim.sam_rho`): each step then takes its
gradient at the adversarial point rho * g / |g| away, on the same batch (twice the cost).

An optimizer is split in two: its kind and shape (`Optimizer`, part of the compiled
program) and its numbers (`Numbers`: the schedule's and the weight decay, arguments of
the compiled step). A sweep's trials, and runs that differ only in length, lr or warmup,
share one compiled step instead of each compiling its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib

from mixer_cli.config import OptimConfig


class Numbers(NamedTuple):
    """The optimizer's numbers, float32 scalars passed to the compiled step."""

    lr: Any
    end_lr: Any
    warmup: Any  # steps of linear warmup from 0 (0: none)
    decay_steps: Any  # steps of decay after the warmup
    weight_decay: Any


def numbers(cfg: OptimConfig, total_steps: int) -> Numbers:
    """The run's numbers: warmup ends at least one step before the run does."""
    warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
    values = (cfg.lr, cfg.end_lr, warmup, max(total_steps - warmup, 1), cfg.weight_decay)
    return Numbers(*(np.float32(v) for v in values))


def _linear(count: jax.Array, start: Any, end: Any, steps: Any) -> jax.Array:
    """optax.linear_schedule's formula, with traced ends and length."""
    frac = 1 - jnp.clip(count, 0, steps) / steps
    return (start - end) * frac + end


def _cosine(count: jax.Array, start: Any, end: Any, steps: Any) -> jax.Array:
    """optax.cosine_decay_schedule's formula (alpha = end / start), traced."""
    alpha = end / start
    cosine = 0.5 * (1 + jnp.cos(jnp.pi * jnp.minimum(count, steps) / steps))
    return start * ((1 - alpha) * cosine + alpha)


def _kernels(params: optax.Params) -> optax.Params:
    """Weight decay applies to weight matrices only, never to biases or LayerNorm scales."""
    return jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key == "kernel", params)


@dataclass(frozen=True)
class Optimizer:
    """What the compiled step depends on: the optimizer's kind, its decay's shape and the
    settings that are rarely swept. Equal for runs that differ only in `Numbers`."""

    kind: str  # adam, lamb or sgd
    schedule: str  # linear or cosine decay after the warmup
    b1: float
    b2: float
    momentum: float
    clip_norm: float
    sam_rho: float

    @classmethod
    def of(cls, cfg: OptimConfig) -> Optimizer:
        return cls(
            cfg.optimizer, cfg.schedule, cfg.b1, cfg.b2, cfg.momentum, cfg.clip_norm, cfg.sam_rho
        )

    def learning_rate(self, step: jax.Array, n: Numbers) -> jax.Array:
        """Linear warmup from 0 to lr over `warmup` steps, then the decay to end_lr
        (optax.join_schedules of the two, as the recipes always had)."""
        count = jnp.asarray(step, jnp.float32)
        warm = _linear(count, 0.0, n.lr, jnp.maximum(n.warmup, 1.0))
        decay = (_cosine if self.schedule == "cosine" else _linear)(
            count - n.warmup, n.lr, n.end_lr, n.decay_steps
        )
        return jnp.where(count < n.warmup, warm, decay)

    def transform(self, n: Numbers) -> optax.GradientTransformation:
        """The optax transformation with these numbers (traced inside the step)."""
        schedule = lambda step: self.learning_rate(step, n)  # noqa: E731
        if self.kind == "sgd":
            core = optax.sgd(schedule, momentum=self.momentum)
        elif self.kind == "lamb":  # Adam's step scaled per layer to |w| (ResMLP's recipe)
            core = optax.lamb(
                schedule, b1=self.b1, b2=self.b2, weight_decay=n.weight_decay, mask=_kernels
            )
        else:
            core = optax.adamw(
                schedule, b1=self.b1, b2=self.b2, weight_decay=n.weight_decay, mask=_kernels
            )
        clip = [optax.clip_by_global_norm(self.clip_norm)] if self.clip_norm > 0 else []
        tx = optax.chain(*clip, core)
        if self.sam_rho > 0:  # the gradient at w + rho * g / |g| updates w (Foret et al.)
            adversary = optax.chain(optax.contrib.normalize(), optax.sgd(self.sam_rho))
            tx = optax.contrib.sam(tx, adversary, sync_period=2, opaque_mode=True)
        return tx

    def init(self, params: optax.Params) -> optax.OptState:
        """The optimizer state of `params` (its shape does not depend on the numbers)."""
        return self.transform(Numbers(*(np.float32(1) for _ in Numbers._fields))).init(params)
