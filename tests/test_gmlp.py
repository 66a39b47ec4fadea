"""The `gmlp` family: timm's state dicts against an independent NumPy gMLP (numpy_gmlp.py),
the layout both ways, `mixer convert`, variants and parameter counts against timm's, one
tiny model through pretrain, eval and plot weights, and (slow) timm itself both ways."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy_gmlp import timm_gmlp, timm_gmlp_state
from safetensors.numpy import load_file, save_file
from test_cli import run_cli
from timm_process import timm_run, timm_runs_ours

from mixer_cli.core.errors import CheckpointMismatch, ConfigError
from mixer_cli.models import registry
from mixer_cli.models.gmlp import parse_gmlp
from mixer_cli.models.settings import ModelConfig
from mixer_cli.weights.arrays import flat_params

# patch 4, 2 blocks, D 16, ratio 6, 16 tokens (16 px), 7 classes.
TINY = {"patch": 4, "blocks": 2, "dim": 16, "ratio": 6, "seq_len": 16, "classes": 7}


def images(n: int = 3, size: int = 16, seed: int = 0) -> np.ndarray:
    """Images with values in [0, 1] (what timm normalises, 0.5/0.5 for gMLP), NHWC."""
    return np.random.default_rng(seed).uniform(0, 1, (n, size, size, 3)).astype(np.float32)


def timm_logits(state: dict, x01: np.ndarray) -> np.ndarray:
    return timm_gmlp(state, ((x01 - 0.5) / 0.5).transpose(0, 3, 1, 2))


def test_a_timm_gmlp_state_dict_gives_the_numpy_statements_logits(tmp_path: Path) -> None:
    state = timm_gmlp_state(**TINY, seed=1)
    save_file(state, str(tmp_path / "gmlp.safetensors"), metadata={"format": "pt"})
    loaded = registry.load_checkpoint(tmp_path / "gmlp.safetensors")
    assert (loaded.family, loaded.name, loaded.resolution) == ("gmlp", "2x16-6/4", 16)
    assert loaded.details["gelu"] == "exact" and loaded.num_classes == 7  # timm's GELU
    x01 = images()
    want = timm_logits(state, x01)
    logits, out = jax.jit(loaded.model.apply)({"params": loaded.params}, x01 * 2 - 1)
    np.testing.assert_allclose(np.asarray(logits), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    assert out["pre_logits"].shape == (3, 16) and out["tokens"].shape == (3, 16, 16)
    tanh = registry.get("gmlp").load(flat_params(loaded.params), "x", None, {"gelu": "tanh"})
    tanh_logits = jax.jit(tanh.model.apply)({"params": tanh.params}, x01 * 2 - 1)[0]
    missed = np.abs(np.asarray(tanh_logits) - want)
    assert missed.max() > 20 * np.abs(np.asarray(logits) - want).max()  # the form matters
    # plot weights' input: each block's gate as [S in, S out], a column per output token
    gates = registry.get("gmlp").token_weights(flat_params(loaded.params))
    assert sorted(gates) == [0, 1] and gates[1].shape == (16, 16)
    np.testing.assert_array_equal(gates[1], state["blocks.1.mlp_channels.gate.proj.weight"].T)


def test_the_timm_layout_round_trips_exactly_and_convert_goes_both_ways(
    capsys, tmp_path: Path, official_npz
) -> None:
    layout = registry.get("gmlp").timm
    state = timm_gmlp_state(**TINY, seed=2)
    back = layout.to_timm(layout.from_timm(state, "x"))
    assert list(back) == list(state)
    for key, value in state.items():
        np.testing.assert_array_equal(back[key], value)
    assert not registry.get("mixer").timm.owns(state) and layout.owns(state)

    save_file(state, str(tmp_path / "timm.safetensors"))
    npz, again = tmp_path / "ours.npz", tmp_path / "again.safetensors"
    assert run_cli(capsys, "convert", str(tmp_path / "timm.safetensors"), str(npz))[0] == 0
    with np.load(npz) as archive:
        assert "GatingBlock_1/gate_proj/kernel" in archive.files
    assert run_cli(capsys, "convert", str(npz), str(again))[0] == 0
    written = load_file(str(again))
    assert set(written) == set(state)  # safetensors sorts its keys
    for key, value in state.items():
        np.testing.assert_array_equal(written[key], value)
    with pytest.raises(CheckpointMismatch, match=r"Mixer-custom\.npz is not a gMLP checkpoint"):
        registry.get("gmlp").warm_start(official_npz[0], {}, "all")  # a Mixer's --init


@pytest.mark.parametrize(
    ("variant", "name", "dims"),
    [
        ("Ti/16", "Ti/16", (16, 30, 128, 768)),
        ("S/16", "S/16", (16, 30, 256, 1536)),
        ("B/16", "B/16", (16, 30, 512, 3072)),
        ("gmlp_s16_224", "S/16", (16, 30, 256, 1536)),  # timm's name
        ("gMLP-B/16", "B/16", (16, 30, 512, 3072)),
        ("ti_8", "Ti/8", (8, 30, 128, 768)),
        ("2x16-6/4", "2x16-6/4", (4, 2, 16, 96)),  # LAYERSxD-RATIO/PATCH
        ("30x256-6/16", "S/16", (16, 30, 256, 1536)),
    ],
)
def test_variants_parse(variant: str, name: str, dims: tuple) -> None:
    spec = parse_gmlp(variant)
    assert spec.name == name
    assert (spec.patch_size, spec.num_blocks, spec.hidden_dim, spec.channel_dim) == dims


@pytest.mark.parametrize(
    ("variant", "words"),
    [
        ("L/16", "unknown gMLP variant 'L/16': expected SIZE/PATCH with SIZE one of Ti, S, B "
         "(listed: Ti/16, S/16, B/16; timm's gmlp_s16_224 too)"),
        ("2x15-3/4", "gMLP width 15 x ratio 3 is odd"),
        ("mixer_s16_224", "unknown gMLP variant"),
    ],
)  # fmt: skip
def test_bad_variants_list_the_valid_ones(variant: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        parse_gmlp(variant)


def test_parameters_are_timms_for_the_listed_sizes() -> None:
    # timm 1.0.31: sum(p.numel() for p in timm.create_model(NAME).parameters()), 1000 classes
    timm_counts = {"Ti/16": 5_867_328, "S/16": 19_422_656, "B/16": 73_075_392}
    family = registry.get("gmlp")
    assert family.variants == tuple(timm_counts)
    rows = {v: family.count(ModelConfig("gmlp", v, 224), 1000) for v in timm_counts}
    assert {v: row["params"] for v, row in rows.items()} == timm_counts
    assert 8.5 < rows["S/16"]["gflops"] < 9.5  # timm's table: 4.4 GMACs


def test_the_run_options_and_timms_initialisation_reach_the_model() -> None:
    m = ModelConfig("gmlp", "1x16-2/4", 16, dropout=0.5, stoch_depth=0.5)
    model = registry.build(m, 3, -2.0)  # the head bias a sigmoid loss starts from
    x = jnp.asarray(images(2) * 2 - 1)

    @jax.jit  # one compile: eager init and apply dispatch hundreds of small programs
    def run(key: jax.Array) -> tuple:
        params = model.init(key, x)["params"]
        block = model.apply({"params": params}, x)[1]["block_0"]
        trained = model.apply({"params": params}, x, train=True, rngs={"dropout": key})[1]
        return params, block, trained["block_0"]

    params, block, trained = run(jax.random.key(0))
    gate = params["GatingBlock_0"]["gate_proj"]
    assert gate["kernel"].shape == (16, 16) and float(jnp.abs(gate["kernel"]).max()) < 1e-5
    np.testing.assert_array_equal(gate["bias"], 1.0)  # each block starts near u * 1
    np.testing.assert_array_equal(params["head"]["bias"], -2.0)
    assert not np.allclose(trained, block)  # dropout and drop path on in training
    bf16 = registry.build(dataclasses.replace(m, dtype="bfloat16"), 3, 0.0)
    (logits, out), _ = jax.eval_shape(bf16.init_with_output, jax.random.key(0), x)
    assert out["block_0"].dtype == jnp.bfloat16 and logits.dtype == jnp.float32


FAST = ["--set=optim.warmup_steps=1", "--set=train.log_every=1"]
FAST += ["--set=evals.fewshot=none", "--set=evals.test=none"]


@pytest.mark.slow  # 6 s of compiling: the family's tests above and the ONNX CLI test
# read, run and convert it through the CLI; benchmarks/family_tour.sh runs every command
def test_a_tiny_gmlp_pretrains_evaluates_and_draws_its_gates(capsys, tmp_path: Path) -> None:
    run_dir = tmp_path / "pre"
    code, _, err = run_cli(
        capsys, "pretrain", "--set", "model.family=gmlp", "--variant", "1x16-2/4",
        "--resolution", "16", "--steps", "2", "--batch-size", "8",
        "--workdir", str(run_dir), *FAST,
    )  # fmt: skip
    assert code == 0, err
    config = json.loads((run_dir / "results.json").read_text())
    assert (config["family"], config["finished"]) == ("gmlp", True)
    code, _, err = run_cli(capsys, "eval", "--init", str(run_dir), "--workdir", str(tmp_path / "e"))
    assert code == 0, err
    results = json.loads((tmp_path / "e" / "results.json").read_text())
    assert results["resolution"] == 16 and 0 <= results["test/top1"] <= 1
    figure = tmp_path / "gates.png"
    code, out, err = run_cli(
        capsys, "plot", "weights", "--init", str(run_dir), "--out", str(figure)
    )
    assert code == 0 and figure.stat().st_size > 0, err
    assert "1x16-2/4: first token-mixing layer" in out and out.split()[-1] == str(figure)


@pytest.mark.slow
def test_logits_equal_timm_itself_for_a_random_gmlp_s16_224(tmp_path: Path) -> None:
    # timm's init leaves the gates at 1 and the head 0: both drawn at random
    weights, x01, want = timm_run(tmp_path, "gmlp_s16_224", {"gate\\.proj|^head": (0.0, 0.02)})
    loaded = registry.load_checkpoint(weights)
    assert (loaded.family, loaded.name, loaded.resolution) == ("gmlp", "S/16", 224)
    apply = jax.jit(lambda p, x: loaded.model.apply({"params": p}, x)[0])
    got = np.asarray(apply(loaded.params, x01 * 2 - 1))
    diff = float(np.abs(got - want).max() / np.abs(want).max())
    print(f"gmlp_s16_224, 4 images: max |mixer - timm| = {np.abs(got - want).max():.2e}, "
          f"{diff:.2e} of max |timm| = {np.abs(want).max():.3f}")  # fmt: skip
    assert diff < 1e-5
    # and back: our layout written, loaded strictly by timm, the same logits
    back = timm_runs_ours(tmp_path, "gmlp_s16_224", "gmlp", loaded.params)
    diff_back = float(np.abs(back - got).max() / np.abs(got).max())
    print(f"written by mixer, run by timm: max |timm - mixer| = {diff_back:.2e} of max |mixer|")
    assert diff_back < 1e-5
