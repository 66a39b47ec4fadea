"""The training engine on digits: loss falls, resume = uninterrupted, devices agree, guards."""

from __future__ import annotations

import dataclasses
import json
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import yaml
from training import assert_same_results, assert_same_training, params_of, tiny

from mixer_cli.cli import run
from mixer_cli.config import OptimConfig
from mixer_cli.core.atomic import current_umask
from mixer_cli.core.distributed import batch_sharding, make_mesh, replicated
from mixer_cli.core.errors import TrainingDiverged
from mixer_cli.models.checkpoints import read_params
from mixer_cli.tasks.train import print_summary
from mixer_cli.train import engine
from mixer_cli.train.engine import build, train_and_evaluate
from mixer_cli.train.optim import Optimizer, numbers
from mixer_cli.train.steps import compile_steps, initial_state, train_step


def test_loss_falls_and_the_run_directory_is_complete(uninterrupted: Path) -> None:
    records = [
        json.loads(line)
        for line in (uninterrupted / "metrics.jsonl").read_text().split("\n")
        if line
    ]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 4 and losses[-1] < 0.7 * losses[0]
    assert {"grad_norm", "lr", "img_per_sec"} <= set(records[0])
    results = json.loads((uninterrupted / "results.json").read_text())
    assert results["finished"] and results["step"] == 20 and results["test/examples"] == 360
    assert results["test/top1"] > 0.5  # chance is 0.1
    assert results["test/top1"] <= results["test/top5"] <= 1 and results["test/loss"] > 0
    assert 0.1 < results["fewshot/5shot"] <= 1  # the demo recipe's 5-shot probe
    final = [r for r in records if "test/top1" in r]
    assert [r["step"] for r in final] == [20]  # evaluators run at the end (eval_every 200)
    assert 0 < final[0]["time"] - records[0]["time"] < 600  # wall time of each record
    assert {k: v for k, v in final[0].items() if k not in ("step", "time")} == {
        k: v for k, v in results.items() if k.startswith(("test/", "fewshot/"))
    }
    assert (uninterrupted / "config.yaml").exists()
    umask = current_umask()  # written atomically, yet with an ordinary file's mode
    for name in ("config.yaml", "results.json", "params.npz", "metrics.jsonl"):
        assert (uninterrupted / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    assert list((uninterrupted / "tensorboard").glob("events.out.tfevents.*"))
    assert sorted(
        p.name for p in (uninterrupted / "checkpoints").iterdir() if p.name.isdigit()
    ) == ["15", "20"]  # keep_checkpoints: 2


@pytest.mark.slow  # the grouped-steps test below stops and resumes the same way (13 s)
def test_stopped_and_resumed_equals_uninterrupted(uninterrupted: Path, tmp_path: Path) -> None:
    first = train_and_evaluate(tiny(), tmp_path, stop_after=7)
    assert not first["finished"] and first["step"] == 7 and not (tmp_path / "params.npz").exists()
    train_and_evaluate(tiny(), tmp_path)
    assert_same_results(tmp_path, uninterrupted)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == [5, 7, 10, 15, 20]  # the stop at 7 logged once, nothing replayed twice


def test_a_run_resumed_at_its_end_shows_no_speed_rather_than_zero(
    uninterrupted: Path, capsys
) -> None:
    """A finished run run again (or one killed in its final evaluation) trains no step:
    its summary says so instead of "0 img/s"."""
    results = json.loads((uninterrupted / "results.json").read_text())
    print_summary("pretrain", uninterrupted, results)
    assert f"{results['images_per_sec']:,.0f}" in capsys.readouterr().out
    print_summary("pretrain", uninterrupted, {**results, "images_per_sec": 0.0})
    out = capsys.readouterr().out
    assert "no step left to run" in out and " 0 " not in out.split("train img/s")[1][:40]


def test_init_warm_starts_from_a_finished_run(uninterrupted: Path, tmp_path: Path) -> None:
    # One step at lr 1e-9 moves no weight by more than 1e-9: it evaluates the initial weights.
    config = tiny(
        **{
            "train.steps": 1,
            "optim.lr": 1e-9,
            "optim.end_lr": 1e-9,
            "model.init": str(uninterrupted),
        }
    )
    results = train_and_evaluate(config, tmp_path)
    want = json.loads((uninterrupted / "results.json").read_text())
    assert results["test/top1"] == want["test/top1"] and results["init"] == str(uninterrupted)
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["model"]["init"] == str(
        uninterrupted
    )
    for key, value in params_of(uninterrupted).items():
        np.testing.assert_allclose(params_of(tmp_path)[key], value, rtol=0, atol=1e-8)


def test_one_device_and_eight_devices_agree(stopped: Path, tmp_path: Path) -> None:
    """Ten steps on one device end where the eight-device run stopped at step 10 did."""
    train_and_evaluate(tiny(), tmp_path, devices=jax.devices()[:1], stop_after=10)
    (ours, at), (theirs, want_at) = read_params(tmp_path), read_params(stopped)
    assert at.endswith("checkpoints/10") and want_at.endswith("checkpoints/10")
    assert_same_training(ours, theirs)


def test_accumulated_micro_batches_equal_one_large_batch() -> None:
    config = tiny(**{"train.batch_size": 64})
    built = build(config)
    state = initial_state(built.model, built.optimizer, 8, jax.random.key(0))
    rng = np.random.default_rng(0)
    batch = {
        "image": jnp.asarray(rng.uniform(-1, 1, (64, 8, 8, 3)), jnp.float32),
        "label": jax.nn.one_hot(rng.integers(0, 10, 64), 10),
    }
    step = partial(train_step, model=built.model, optimizer=built.optimizer, loss_kind="softmax")
    whole, m1 = jax.jit(partial(step, accum_steps=1))(state, batch, built.numbers)
    parts, m4 = jax.jit(partial(step, accum_steps=4))(state, batch, built.numbers)
    np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-5)
    np.testing.assert_allclose(m1["grad_norm"], m4["grad_norm"], rtol=1e-4)
    for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(parts.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_runs_that_differ_in_the_optimizers_numbers_share_one_compiled_step() -> None:
    """A sweep's trials (another lr), a longer run (another schedule) and another weight
    decay share the jitted steps and first-state function: their numbers are arguments of
    the step, not constants in it. Another kind of optimizer gets its own."""
    numbers = {"optim.lr": 0.1, "train.steps": 30, "optim.warmup_steps": 2}
    first, other = build(tiny()), build(tiny(**numbers, **{"optim.weight_decay": 0.5}))
    sgd = build(tiny(**{"optim.optimizer": "sgd"}))
    assert other.optimizer == first.optimizer and other.numbers != first.numbers
    mesh = make_mesh()
    options = dict(loss_kind="softmax", accum_steps=1, replicated=replicated(mesh))

    def steps_of(built):
        return compile_steps(built.model, built.optimizer, **options, rows=batch_sharding(mesh))

    assert steps_of(other) is steps_of(first) and steps_of(sgd) is not steps_of(first)
    starts = [engine.Start(built, mesh).fresh for built in (first, other, sgd)]
    assert starts[1] is starts[0] and starts[2] is not starts[0]
    # One program for both: the HLO of the step holds neither run's numbers.
    state = initial_state(first.model, first.optimizer, 8, jax.random.key(0))
    batch = {"image": jnp.zeros((16, 8, 8, 3)), "label": jnp.zeros((16, 10))}
    texts = [steps_of(b).train.lower(state, batch, b.numbers).as_text() for b in (first, other)]
    assert texts[0] == texts[1]


def test_the_schedule_is_optaxs_warmup_and_decay() -> None:
    """The traced schedule equals optax's join of a linear warmup and the linear or cosine
    decay, at every step of a short run (the recipes' schedules before they were traced)."""
    for kind, warmup in (("linear", 3), ("cosine", 3), ("linear", 0), ("cosine", 0)):
        cfg = OptimConfig(lr=0.05, end_lr=1e-4, schedule=kind, warmup_steps=warmup)
        decay_steps = 12 - warmup
        if kind == "cosine":
            decay = optax.cosine_decay_schedule(0.05, decay_steps, alpha=1e-4 / 0.05)
        else:
            decay = optax.linear_schedule(0.05, 1e-4, decay_steps)
        want = (
            decay
            if not warmup
            else optax.join_schedules([optax.linear_schedule(0.0, 0.05, warmup), decay], [warmup])
        )
        got = jax.jit(Optimizer.of(cfg).learning_rate)(jnp.arange(14), numbers(cfg, 12))
        np.testing.assert_allclose(got, [want(t) for t in range(14)], rtol=2e-7, atol=1e-9)


def test_steps_in_one_program_equal_one_program_per_step() -> None:
    """`train_many` (a scan over steps) updates the state bit for bit as `train` does."""
    built, mesh = build(tiny()), make_mesh()
    steps = compile_steps(
        built.model,
        built.optimizer,
        loss_kind="softmax",
        accum_steps=1,
        replicated=replicated(mesh),
        rows=batch_sharding(mesh),
    )
    rng = np.random.default_rng(0)
    batches = tuple(
        {
            "image": jnp.asarray(rng.uniform(-1, 1, (16, 8, 8, 3)), jnp.float32),
            "label": jax.nn.one_hot(rng.integers(0, 10, 16), 10),
        }
        for _ in range(3)
    )
    one_by_one = initial_state(built.model, built.optimizer, 8, jax.random.key(0))
    for batch in batches:
        one_by_one, last = steps.train(one_by_one, batch, built.numbers)
    grouped, metrics = steps.train_many(
        initial_state(built.model, built.optimizer, 8, jax.random.key(0)), batches, built.numbers
    )
    assert int(grouped.step) == 3
    for key in ("loss", "grad_norm", "lr"):
        assert float(metrics[key]) == float(last[key])  # the last step's metrics
    for a, b in zip(jax.tree.leaves(one_by_one), jax.tree.leaves(grouped), strict=True):
        np.testing.assert_array_equal(a, b)


def test_grouped_steps_stopped_and_resumed_equal_uninterrupted(
    uninterrupted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Groups of 5 (TINY logs and saves every 5; the uninterrupted run's default of 10
    never fits, so it ran one step per program), a stop at 7 (steps 5 and 6 one at a
    time), a resume with groups of 3 (allowed: it changes no result)."""
    grouped_calls = []

    def counting(*args, **kwargs):
        steps = compile_steps(*args, **kwargs)

        def train_many(state, batches, numbers):
            grouped_calls.append(len(batches))
            return steps.train_many(state, batches, numbers)

        return dataclasses.replace(steps, train_many=train_many)

    monkeypatch.setattr(engine, "compile_steps", counting)
    first = train_and_evaluate(tiny(**{"train.steps_per_execution": 5}), tmp_path, stop_after=7)
    assert first["step"] == 7 and grouped_calls == [5]
    train_and_evaluate(tiny(**{"train.steps_per_execution": 3}), tmp_path)
    assert grouped_calls == [5, 3, 3, 3]  # 7-9, 10-12, (13, 14 single), 15-17, (18, 19)
    assert_same_results(tmp_path, uninterrupted)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == [5, 7, 10, 15, 20]  # the stop at 7 logged once, nothing replayed twice


def test_divergence_stops_the_run_naming_the_step(tmp_path: Path) -> None:
    with pytest.raises(TrainingDiverged, match=r"loss became (nan|inf) by step \d+"):
        train_and_evaluate(tiny(**{"optim.lr": "1e30"}), tmp_path)


def test_resume_with_another_config_is_refused(uninterrupted: Path, capsys) -> None:
    code = run(["pretrain", "--workdir", str(uninterrupted), "--set", "optim.lr=0.1"])
    err = capsys.readouterr().err
    assert code == 2 and "another config (optim.lr: 0.003 before, 0.1 now)" in err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--recipe", "nope"], "unknown recipe 'nope'"),
        (["--set", "model.colour=red"], "unknown config key 'model.colour'"),
        (["--set", "train.batch_size=big"], "train.batch_size must be int"),
        (["--steps", "0"], "--steps"),
        (["--batch-size", "60"], "batch size 60 is not a positive multiple of the 8 devices"),
        (["--variant", "X/7"], "unknown variant 'X/7'"),
        (["--resolution", "9"], "not a positive multiple of N/2's patch size 2"),
        (["--init", "WRONG_NPZ"], "'stem/kernel' has shape (4, 4, 3, 128)"),
        (["--workdir", "UNWRITABLE"], "is not writable"),
        (["--data", "imagenet21k", "--data-dir", "TMP"], "no prepared copy in"),
        (["--recipe", "demo", "--config", "x.yaml"], "--recipe or --config, not both"),
    ],
)
def test_bad_pretrain_input_is_one_line_and_exit_2(capsys, tmp_path, argv, needle) -> None:
    from mixer_cli.models import abstract_params, create_model
    from mixer_cli.weights.arrays import write_npz

    wrong = jax.tree.map(
        lambda s: np.zeros(s.shape, s.dtype),
        abstract_params(create_model("N/4", num_classes=10), 8),
    )
    write_npz(wrong, tmp_path / "wrong.npz")
    (tmp_path / "file").write_text("")
    names = {
        "WRONG_NPZ": str(tmp_path / "wrong.npz"),
        "UNWRITABLE": str(tmp_path / "file" / "run"),
        "TMP": str(tmp_path),
    }
    argv = ["pretrain", "--workdir", str(tmp_path / "run"), *[names.get(a, a) for a in argv]]
    code = run(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: ") and needle in lines[-1], err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_lamb_scales_each_layers_first_step_to_its_weights_norm() -> None:
    """LAMB's trust ratio: the first step moves each parameter by lr * |w| (Adam's first
    step is sign(g), rescaled), whatever the gradient's size (a bias's too; weight decay
    on kernels only, inside the step that is scaled)."""
    cfg = OptimConfig(optimizer="lamb", lr=0.1, end_lr=0.1, warmup_steps=0, clip_norm=0)
    tx = Optimizer.of(cfg).transform(numbers(cfg, 10))
    params = {"dense": {"kernel": jnp.full((4, 3), 2.0), "bias": jnp.ones(3)}}
    grads = {"dense": {"kernel": jnp.arange(12.0).reshape(4, 3) + 1, "bias": jnp.full(3, 1e-3)}}
    updates, _ = tx.update(grads, tx.init(params), params)
    kernel_step = float(jnp.linalg.norm(updates["dense"]["kernel"]))
    assert kernel_step == pytest.approx(0.1 * float(jnp.linalg.norm(params["dense"]["kernel"])))
    assert float(jnp.linalg.norm(updates["dense"]["bias"])) == pytest.approx(
        0.1 * float(jnp.linalg.norm(params["dense"]["bias"])), rel=1e-3
    )
