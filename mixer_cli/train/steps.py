"""The pure train and eval steps. The engine binds their arguments and jits them.

Gradient accumulation runs the micro-batches through `lax.scan` inside the one
compiled step, taking every accum-th row so that each micro-batch stays spread
over all devices (no resharding).

Several train steps can run in one execution (`train_steps`, a `lax.scan` over steps):
the host dispatches once per group, and XLA's CPU client allocates and faults in a
step's temporaries once per execution rather than once per step (RESULTS.md). The
updates are the same, bit for bit, as one execution per step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding

from mixer_cli.evals.losses import per_example_loss
from mixer_cli.train.optim import Numbers, Optimizer


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array  # raw uint32 key data: checkpointable as a plain array
    ema: Any = None  # the moving average of params (train.ema_decay > 0), else None


def smooth(labels: jax.Array, amount: float) -> jax.Array:
    """Label smoothing of (possibly mixed) one-hot rows: (1 - a) y + a / K. An all-zero row
    (an ignored pixel) stays zero: the uniform share is scaled by the row's mass."""
    if not amount:
        return labels
    mass = labels.sum(axis=-1, keepdims=True)
    return (1.0 - amount) * labels + amount * mass / labels.shape[-1]


def ema_decay_at(step: jax.Array, decay: float) -> jax.Array:
    """The average's decay at `step`: min(decay, (1 + t) / (10 + t)), timm's warmup, so a
    short run's average is not dominated by the initial weights."""
    t = step.astype(jnp.float32)
    return jnp.minimum(decay, (1.0 + t) / (10.0 + t))


# The device augmentation's keys: the state's key folded with this, then with the step
# (dropout's fold the step alone).
AUGMENT_STREAM = 0x61756731


def cross_entropy(logits: jax.Array, labels: jax.Array, kind: str) -> jax.Array:
    """Mean over examples."""
    return per_example_loss(logits, labels, kind).mean()


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    numbers: Numbers,
    *,
    model: nn.Module,
    optimizer: Optimizer,
    loss_kind: str,
    accum_steps: int,
    label_smoothing: float = 0.0,
    sam: bool = False,
    ema_decay: float = 0.0,
    augment: Callable[[dict[str, jax.Array], jax.Array], dict[str, jax.Array]] | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One update with the optimizer's `numbers` (its lr schedule's, weight decay's). With
    `sam`, the optimizer is optax.contrib's SAM (opaque mode): it asks for the gradient
    again at the adversarial point, on the same batch; with `ema_decay`, the
    moving average of the new parameters is kept in the state; with `augment` (the data's
    device-side transform), the batch becomes the model's inputs first, with a key of its
    own drawn from the state's (so a resumed run augments exactly as it would have)."""
    key = jax.random.wrap_key_data(state.rng)
    rng = jax.random.fold_in(key, state.step)
    if augment is not None:
        stream = jax.random.fold_in(key, AUGMENT_STREAM)
        batch = augment(batch, jax.random.fold_in(stream, state.step))

    def loss_fn(params: Any, images: jax.Array, labels: jax.Array, key: jax.Array) -> jax.Array:
        logits, _ = model.apply({"params": params}, images, train=True, rngs={"dropout": key})
        return cross_entropy(logits, smooth(labels, label_smoothing), loss_kind)

    grad_fn = jax.value_and_grad(loss_fn)

    def gradient(params: Any) -> tuple[jax.Array, Any]:
        """(loss, gradient) of the whole batch at `params`, micro-batch by micro-batch."""
        if accum_steps == 1:
            return grad_fn(params, batch["image"], batch["label"], rng)
        # [B, ...] -> [accum, B/accum, ...], micro-batch m = rows m, m+accum, ...
        micro = jax.tree.map(
            lambda x: x.reshape(x.shape[0] // accum_steps, accum_steps, *x.shape[1:]).swapaxes(
                0, 1
            ),
            batch,
        )

        def add(carry: tuple, inputs: tuple) -> tuple:
            loss_sum, grad_sum = carry
            images, labels, key = inputs
            loss, grads = grad_fn(params, images, labels, key)
            return (loss_sum + loss, jax.tree.map(jnp.add, grad_sum, grads)), None

        zeros = jax.tree.map(jnp.zeros_like, params)
        keys = jax.random.split(rng, accum_steps)
        (loss, grads), _ = jax.lax.scan(
            add, (jnp.zeros(()), zeros), (micro["image"], micro["label"], keys)
        )
        return loss / accum_steps, jax.tree.map(lambda g: g / accum_steps, grads)

    loss, grads = gradient(state.params)
    extra = {"grad_fn": lambda params, _: gradient(params)[1]} if sam else {}
    tx = optimizer.transform(numbers)
    updates, opt_state = tx.update(grads, state.opt_state, state.params, **extra)
    params = optax.apply_updates(state.params, updates)
    lr = optimizer.learning_rate(state.step, numbers)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "lr": lr}
    ema = state.ema
    if ema_decay:
        ema = optax.incremental_update(params, ema, 1.0 - ema_decay_at(state.step, ema_decay))
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema=ema)
    return new_state, metrics


def train_steps(
    state: TrainState,
    batches: tuple[dict[str, jax.Array], ...],
    numbers: Numbers,
    **step_args: Any,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """`len(batches)` train steps in one program; the metrics are the last step's."""
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *batches)
    one = partial(train_step, numbers=numbers, **step_args)
    state, metrics = jax.lax.scan(one, state, stacked)
    return state, jax.tree.map(lambda m: m[-1], metrics)


def initial_state(
    model: Any, optimizer: Optimizer, resolution: int, key: jax.Array, ema: bool = False
) -> TrainState:
    """A fresh state: initialised parameters, their optimizer state, step 0, a data RNG
    (and, with `ema`, the average, starting at the parameters)."""
    params = model.init(key, jnp.zeros((1, resolution, resolution, 3), jnp.float32))["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        rng=jax.random.key_data(jax.random.fold_in(key, 1)),
        ema=params if ema else None,
    )


@dataclass(frozen=True)
class Steps:
    """The jitted steps of a run: `train` takes one batch, `train_many` a tuple of
    batches (as many steps, one execution), both the optimizer's numbers. Evaluation is
    `evals.forward`'s."""

    train: Any  # (state, batch, numbers) -> (state, metrics)
    train_many: Any  # (state, batches, numbers) -> (state, the last step's metrics)


@functools.lru_cache(maxsize=8)
def compile_steps(
    model: Any,
    optimizer: Optimizer,
    *,
    replicated: NamedSharding,
    rows: NamedSharding,
    **options: Any,
) -> Steps:
    """The jitted steps over a mesh: state, params and the optimizer's numbers replicated,
    batches split by rows, the train state's buffers donated. `options` are `train_step`'s
    (loss_kind and accum_steps; label_smoothing, sam, ema_decay, augment). Training and
    `mixer bench` use these.
    Memoised: another run of the same model and optimizer in this process (a sweep's
    trials and final run, at any lr or length; permute's next mode) reuses the compiled
    steps instead of tracing again."""
    step_args = dict(model=model, optimizer=optimizer, **options)
    train_jit = partial(
        jax.jit,
        in_shardings=(replicated, rows, replicated),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )
    return Steps(
        train=train_jit(partial(train_step, **step_args)),
        train_many=train_jit(partial(train_steps, **step_args)),
    )
