"""The small-data recipe options, each against what it must do: CutMix pastes one box whose
area is the label weight, label smoothing moves the targets and nothing else, the weight
average follows its recursion and resumes exactly, SAM steps from the adversarial point."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import partial
from pathlib import Path

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from training import params_of, shared_run, tiny

from mixer_cli.core.errors import ConfigError
from mixer_cli.core.tf_cpu import tf
from mixer_cli.data import Preprocessing, open_dataset
from mixer_cli.data.device_augment import DeviceAugment
from mixer_cli.data.preprocess import Transforms
from mixer_cli.train.engine import build, train_and_evaluate
from mixer_cli.train.steps import ema_decay_at, initial_state, smooth, train_step

BATCH = 8


def mixed_batches(
    pre: Preprocessing, count: int, place: str
) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` train batches of images whose every pixel is its example's index, mixed
    on the host or on the device (there back from [-1, 1] to pixel values)."""
    if place == "device":
        augment = jax.jit(DeviceAugment(pre, num_classes=10, flip=False))
        pixels = np.arange(BATCH, dtype=np.uint8)[:, None, None, None]
        batch = {
            "image": jnp.asarray(np.broadcast_to(pixels, (BATCH, 8, 8, 3))),
            "label": jnp.arange(BATCH) % 10,
        }
        mixed = [augment(batch, jax.random.key(n)) for n in range(count)]
        return [(np.round((np.asarray(b["image"]) + 1) * 127.5, 4), b["label"]) for b in mixed]
    transforms = Transforms(open_dataset("digits"), replace(pre, augment_on="host"), seed=0)
    images = tf.constant(np.arange(BATCH, dtype=np.float32)[:, None, None, None] * np.ones(
        (1, 8, 8, 3), np.float32))  # fmt: skip
    labels = tf.constant(np.arange(BATCH) % 10, tf.int64)
    out = []
    for n in range(count):
        positions = tf.constant(np.arange(BATCH) + BATCH * n, tf.int64)
        batch = transforms.train_batch(images, labels, positions, tf.zeros(BATCH, tf.int64))
        out.append((batch["image"].numpy(), batch["label"].numpy()))
    return out


@pytest.mark.parametrize("place", ["host", "device"])
def test_cutmix_pastes_one_neighbour_box_weighted_by_its_area(place: str) -> None:
    boxes = 0
    for images, labels in mixed_batches(Preprocessing(resolution=8, cutmix=1.0), 12, place):
        own = np.arange(BATCH)[:, None, None]
        pasted = images[..., 0] != own
        np.testing.assert_array_equal(images[..., 0][pasted], np.roll(own, 1, 0).repeat(8, 1)
                                      .repeat(8, 2)[pasted])  # fmt: skip
        assert (pasted == pasted[0]).all()  # one box for the batch
        rows, cols = np.flatnonzero(pasted[0].any(1)), np.flatnonzero(pasted[0].any(0))
        if len(rows):
            boxes += 1
            assert pasted[0][rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].all()  # a rectangle
        area = pasted[0].mean()
        for i in range(BATCH):
            want = np.zeros(10)
            want[i % 10] += 1 - area
            want[(i - 1) % BATCH % 10] += area
            np.testing.assert_allclose(labels[i], want, atol=1e-6)
    assert boxes >= 6


@pytest.mark.parametrize("place", ["host", "device"])
def test_mixup_and_cutmix_together_take_turns_by_batch(place: str) -> None:
    kinds = set()
    pre = Preprocessing(resolution=8, cutmix=1.0, mixup=1.0)
    for images, _ in mixed_batches(pre, 16, place):
        fractional = not np.allclose(images, np.round(images))
        kinds.add("mixup" if fractional else "cutmix")
    assert kinds == {"mixup", "cutmix"}


def test_label_smoothing_moves_only_the_training_targets() -> None:
    labels = jnp.array([[0.0, 1.0, 0.0, 0.0], [0.25, 0.75, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(
        smooth(labels, 0.1),
        [[0.025, 0.925, 0.025, 0.025], [0.25, 0.7, 0.025, 0.025], [0, 0, 0, 0]],
        atol=1e-7,
    )
    built = build(tiny())
    state = initial_state(built.model, built.optimizer, 8, jax.random.key(0))
    rng = np.random.default_rng(0)
    batch = {
        "image": jnp.asarray(rng.uniform(-1, 1, (BATCH, 8, 8, 3)), jnp.float32),
        "label": jax.nn.one_hot(rng.integers(0, 10, BATCH), 10),
    }
    step = partial(
        train_step, model=built.model, optimizer=built.optimizer,
        loss_kind="softmax", accum_steps=1, label_smoothing=0.2,
    )  # fmt: skip
    _, metrics = jax.jit(step)(state, batch, built.numbers)
    logits, _ = jax.jit(built.model.apply)({"params": state.params}, batch["image"])
    want = optax.softmax_cross_entropy(logits, 0.8 * batch["label"] + 0.02).mean()
    np.testing.assert_allclose(metrics["loss"], want, rtol=1e-5)


def test_the_weight_average_follows_its_recursion() -> None:
    built = build(tiny())
    state = initial_state(built.model, built.optimizer, 8, jax.random.key(0), ema=True)
    step = jax.jit(partial(
        train_step, model=built.model, optimizer=built.optimizer,
        loss_kind="softmax", accum_steps=1, ema_decay=0.9,
    ))  # fmt: skip
    rng = np.random.default_rng(0)
    want = state.params
    for t in range(4):
        batch = {
            "image": jnp.asarray(rng.uniform(-1, 1, (BATCH, 8, 8, 3)), jnp.float32),
            "label": jax.nn.one_hot(rng.integers(0, 10, BATCH), 10),
        }
        state, _ = step(state, batch, built.numbers)
        d = min(0.9, (1 + t) / (10 + t))
        assert float(ema_decay_at(jnp.array(t), 0.9)) == pytest.approx(d)
        want = jax.tree.map(lambda e, p, d=d: d * e + (1 - d) * p, want, state.params)
    for got, expected in zip(jax.tree.leaves(state.ema), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_sam_steps_with_the_gradient_at_the_adversarial_point() -> None:
    sgd = {"optim.optimizer": "sgd", "optim.lr": 0.1, "optim.warmup_steps": 0}  # linear in g
    built = build(tiny(**sgd, **{"optim.sam_rho": 0.05}))
    plain = build(tiny(**sgd))  # the same optimizer without SAM
    state = initial_state(built.model, built.optimizer, 8, jax.random.key(0))
    rng = np.random.default_rng(0)
    batch = {
        "image": jnp.asarray(rng.uniform(-1, 1, (BATCH, 8, 8, 3)), jnp.float32),
        "label": jax.nn.one_hot(rng.integers(0, 10, BATCH), 10),
    }
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

    def loss(params):
        logits, _ = built.model.apply({"params": params}, batch["image"], train=True,
                                      rngs={"dropout": key})  # fmt: skip
        return optax.softmax_cross_entropy(logits, batch["label"]).mean()

    grad = jax.jit(jax.grad(loss))  # one compile for both points, not an op at a time
    g = grad(state.params)
    norm = optax.tree.norm(g)
    uphill = jax.tree.map(lambda w, gi: w + 0.05 * gi / norm, state.params, g)
    g_adv = grad(uphill)
    tx = plain.optimizer.transform(plain.numbers)
    update = jax.jit(lambda g: tx.update(g, tx.init(state.params), state.params)[0])
    want, at_w = update(g_adv), update(g)  # at_w: the step without SAM
    step = partial(
        train_step, model=built.model, optimizer=built.optimizer,
        loss_kind="softmax", accum_steps=1, sam=True,
    )  # fmt: skip
    new, _ = jax.jit(step)(state, batch, built.numbers)
    got = jax.tree.map(jnp.subtract, new.params, state.params)
    flat = partial(jax.flatten_util.ravel_pytree)
    got, want, at_w = flat(got)[0], flat(want)[0], flat(at_w)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
    assert np.abs(np.asarray(at_w - want)).max() > 1e-4  # and the plain step's is not it


OPTIONS = {  # augmented on the device (the default): RandAugment, mixup and CutMix
    "train.steps": 10,
    "data.randaug_layers": 2,
    "data.randaug_magnitude": 5,
    "data.cutmix": 1.0,
    "data.mixup": 0.2,
    "train.label_smoothing": 0.1,
    "train.ema_decay": 0.99,
    "optim.sam_rho": 0.05,
    "evals.fewshot": "none",
}


@pytest.fixture(scope="session")
def with_options(tmp_path_factory) -> Path:
    return shared_run(tmp_path_factory, "options", lambda w: train_and_evaluate(tiny(**OPTIONS), w))


def test_a_run_with_every_option_records_them_and_its_average(with_options: Path) -> None:
    results = json.loads((with_options / "results.json").read_text())
    assert results["regularisation"] == {
        "mixup": 0.2, "cutmix": 1.0, "label_smoothing": 0.1, "ema_decay": 0.99, "sam_rho": 0.05,
    }  # fmt: skip
    assert {"test/top1", "ema/test/top1"} <= set(results)
    raw, average = params_of(with_options), dict(np.load(with_options / "params_ema.npz"))
    assert raw.keys() == average.keys()
    assert any(not np.array_equal(raw[k], average[k]) for k in raw)


def test_a_resumed_run_with_every_option_equals_the_uninterrupted_one(
    with_options: Path, tmp_path: Path
) -> None:
    train_and_evaluate(tiny(**OPTIONS), tmp_path, stop_after=7)
    train_and_evaluate(tiny(**OPTIONS), tmp_path)
    got = json.loads((tmp_path / "results.json").read_text())
    want = json.loads((with_options / "results.json").read_text())
    assert {k: got[k] for k in want if "/" in k} == {k: want[k] for k in want if "/" in k}
    for name in ("params.npz", "params_ema.npz"):
        ours, theirs = dict(np.load(tmp_path / name)), dict(np.load(with_options / name))
        for key in theirs:
            np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("train.ema_decay", 1.0, "train.ema_decay must be < 1"),
        ("train.label_smoothing", 1.5, "train.label_smoothing must be < 1"),
        ("optim.sam_rho", -0.1, "optim.sam_rho must be >= 0"),
        ("data.cutmix", -1.0, "data.cutmix must be >= 0"),
    ],
)
def test_options_out_of_range_are_refused(key: str, value: float, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        tiny(**{key: value})


def test_the_average_starts_at_a_warm_start(with_options: Path, tmp_path: Path) -> None:
    """At step 0 the average is the warm-started weights: both score the same, what the
    run they come from scored at its end."""
    settings = {
        "model.init": str(with_options / "params.npz"),
        "train.ema_decay": 0.99,
        "train.steps": 5,
        "evals.test.at_start": True,
        "evals.fewshot": "none",
    }
    results = train_and_evaluate(tiny(**settings), tmp_path)
    start = results["at_step0"]
    finished = json.loads((with_options / "results.json").read_text())
    assert start["ema/test/top1"] == start["test/top1"] == finished["test/top1"]
    assert start["ema/test/loss"] == start["test/loss"]
    assert start["test/loss"] == pytest.approx(finished["test/loss"], rel=1e-6)
