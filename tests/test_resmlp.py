"""The `resmlp` family: timm's (and Facebook's) state dicts against an independent NumPy
ResMLP, the layout's round trip, variants and parameter counts, one tiny model through
pretrain -> eval -> plot weights, and (slow) timm itself both ways."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from numpy_resmlp import facebook_state_dict, resmlp_state_dict, timm_resmlp
from safetensors.numpy import load_file, save_file
from test_cli import run_cli
from timm_process import timm_run, timm_runs_ours

from mixer_cli.core.errors import CheckpointMismatch, ConfigError
from mixer_cli.models import registry
from mixer_cli.models.resmlp import parse_resmlp
from mixer_cli.models.resmlp_timm import from_timm, to_timm
from mixer_cli.weights.arrays import as_tree, flat_params

# patch 4, 2 blocks, D 16, 16 tokens (16 px), MLP 64 (4D), 5 classes
TINY = {"patch": 4, "num_blocks": 2, "hidden": 16, "seq_len": 16, "mlp": 64, "num_classes": 5}
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}  # Facebook's inputs


def images01(n: int = 3, size: int = 16, seed: int = 0) -> np.ndarray:
    """Images with values in [0, 1] (what timm normalises), NHWC."""
    return np.random.default_rng(seed).uniform(0, 1, (n, size, size, 3)).astype(np.float32)


def test_timm_and_facebook_state_dicts_give_the_numpy_logits(tmp_path: Path) -> None:
    """Both namings of one random state dict (ImageNet's normalisation, as Facebook's weights
    take) read to the same arrays, whose logits on mixer's [-1, 1] inputs are the NumPy
    statement's on timm's normalised ones."""
    state = resmlp_state_dict(**TINY, seed=1)
    metadata = {"format": "pt", **{k: json.dumps(v) for k, v in IMAGENET.items()}}
    loaded = {}
    for naming, named in (("timm", state), ("facebook", facebook_state_dict(state))):
        path = tmp_path / f"{naming}.safetensors"
        save_file(named, str(path), metadata=metadata)
        loaded[naming] = registry.load_checkpoint(path)
    ours = loaded["timm"]
    assert (ours.family, ours.name, ours.resolution, ours.num_classes) == (
        "resmlp",
        "2x16/4",
        16,
        5,
    )
    assert ours.details["gelu"] == "exact"  # a timm file runs with timm's GELU
    timm_flat, fb_flat = flat_params(ours.params), flat_params(loaded["facebook"].params)
    assert timm_flat.keys() == fb_flat.keys()
    for key in timm_flat:
        np.testing.assert_array_equal(fb_flat[key], timm_flat[key])

    x01 = images01()
    mean, std = (np.asarray(IMAGENET[k]) for k in ("mean", "std"))
    want = timm_resmlp(state, ((x01 - mean) / std).transpose(0, 3, 1, 2))
    logits, out = jax.jit(ours.model.apply)({"params": ours.params}, x01 * 2 - 1)
    np.testing.assert_allclose(np.asarray(logits), want, rtol=1e-5, atol=1e-5)
    assert out["tokens"].shape == (3, 16, 16) and out["pre_logits"].shape == (3, 16)
    assert [k for k in out if k.startswith("block_")] == ["block_0", "block_1"]


def test_the_timm_layout_round_trips_exactly_and_token_weights_are_the_linear() -> None:
    state = resmlp_state_dict(**TINY, seed=2)
    flat = from_timm(state, "x")
    back = to_timm(flat)
    assert list(back) == list(state)  # timm's names, in its order
    for key, value in state.items():
        assert back[key].shape == value.shape and back[key].dtype == value.dtype
        np.testing.assert_array_equal(back[key], value)
    weights = registry.get("resmlp").token_weights(flat)
    assert sorted(weights) == [0, 1] and weights[1].shape == (16, 16)
    # column j: output token j's weights over the input tokens (timm's weight row j)
    np.testing.assert_array_equal(weights[1][:, 3], state["blocks.1.linear_tokens.weight"][3])
    with pytest.raises(
        CheckpointMismatch, match=r"key 'blocks\.0\.attn\.qkv\.weight' does not fit"
    ):
        from_timm({**state, "blocks.0.attn.qkv.weight": np.zeros((3, 3), np.float32)}, "x")


def test_mixer_convert_takes_a_timm_resmlp_to_npz_and_back_exactly(capsys, tmp_path) -> None:
    state = resmlp_state_dict(**TINY, seed=3)
    save_file(state, str(tmp_path / "timm.safetensors"), metadata={"format": "pt"})
    npz, again = tmp_path / "ours.npz", tmp_path / "again.safetensors"
    code, _, err = run_cli(capsys, "convert", str(tmp_path / "timm.safetensors"), str(npz))
    assert code == 0, err
    with np.load(npz) as archive:
        assert "ResBlock_1/token_mixing/kernel" in archive.files  # our layout
    code, _, err = run_cli(capsys, "convert", str(npz), str(again))
    assert code == 0, err
    back = load_file(str(again))
    assert back.keys() == state.keys()
    for key, value in state.items():
        np.testing.assert_array_equal(back[key], value)


@pytest.mark.parametrize(
    ("variant", "name", "layers", "width", "init"),
    [
        ("S12/16", "S12/16", 12, 384, 0.1),
        ("12/16", "S12/16", 12, 384, 0.1),
        ("resmlp_24_224", "S24/16", 24, 384, 1e-5),
        ("ResMLP-S36/16", "S36/16", 36, 384, 1e-6),
        ("big-24/8", "B24/8", 24, 768, 1e-6),
        ("resmlp_big_24_224", "B24/8", 24, 768, 1e-6),
        ("2x16/4", "2x16/4", 2, 16, 0.1),
        ("20x32-48/2", "20x32-48/2", 20, 32, 1e-5),
    ],
)
def test_variants_parse_with_the_papers_layer_scale_start(variant, name, layers, width, init):
    spec = parse_resmlp(variant)
    assert (spec.name, spec.num_blocks, spec.hidden_dim, spec.init_values) == (
        name,
        layers,
        width,
        init,
    )
    assert spec.mlp_dim == (48 if "-48" in variant else 4 * width)


@pytest.mark.parametrize("variant", ["B12/16", "Q/16", "S12/0", "2x16", "resmlp_12"])
def test_a_variant_that_does_not_parse_lists_the_valid_ones(variant) -> None:
    with pytest.raises(
        ConfigError, match=r"expected SIZE/PATCH with SIZE one of S12, S24, S36, B24"
    ):
        parse_resmlp(variant)


# timm 1.0.31: sum(p.numel() for p in timm.create_model(NAME).parameters()) less the
# 1000-class head's 385,000 (D 384) or 769,000 (D 768) parameters.
TIMM_PARAMS = {
    "S12/16": 15_350_872 - 385_000,
    "S24/16": 30_020_680 - 385_000,
    "S36/16": 44_690_488 - 385_000,
    "B24/8": 129_138_280 - 769_000,
}


def test_info_counts_timms_parameters_for_the_listed_sizes(capsys) -> None:
    code, out, err = run_cli(capsys, "info", "--family", "resmlp", "--json")
    assert code == 0, err
    rows = {row["model"]: row for row in json.loads(out)}
    assert {name: row["params"] for name, row in rows.items()} == TIMM_PARAMS
    assert 5.9 < rows["S12/16"]["gflops"] < 6.2  # timm lists 3.0 GMACs
    assert rows["B24/8"]["gflops"] > 30 * rows["S12/16"]["gflops"]  # measured, not copied


def test_a_warm_start_keeps_the_backbone_and_refuses_another_familys_checkpoint(
    tmp_path, official_npz
) -> None:
    state = resmlp_state_dict(**TINY, seed=4)
    save_file(state, str(tmp_path / "timm.safetensors"))
    fresh = from_timm(resmlp_state_dict(**{**TINY, "num_classes": 3}, seed=5), "fresh")
    family = registry.get("resmlp")
    started = flat_params(
        family.warm_start(str(tmp_path / "timm.safetensors"), as_tree(fresh), "backbone")
    )
    np.testing.assert_array_equal(started["head/kernel"], fresh["head/kernel"])  # fresh head
    np.testing.assert_array_equal(started["ResBlock_1/layer_scale_channels"], state["blocks.1.ls2"])
    with pytest.raises(CheckpointMismatch, match=r"Mixer-custom\.npz is not a ResMLP checkpoint"):
        family.warm_start(official_npz[0], as_tree(fresh), "all")


FAST = ["--steps=2", "--batch-size=16", "--set=optim.warmup_steps=1", "--set=train.log_every=1"]
FAST += ["--set=evals.fewshot=none", "--set=evals.test=none"]


@pytest.mark.slow  # 6 s of compiling: the family's tests above and the ONNX CLI test
# read, run and convert it through the CLI; benchmarks/family_tour.sh runs every command
def test_a_tiny_resmlp_pretrains_evaluates_and_plots_its_token_weights(capsys, tmp_path) -> None:
    work = tmp_path / "run"
    pretrain = ["pretrain", "--set", "model.family=resmlp", "--variant", "1x16/4"]
    code, _, err = run_cli(capsys, *pretrain, "--resolution=16", f"--workdir={work}", *FAST)
    assert code == 0, err
    results = json.loads((work / "results.json").read_text())
    assert (results["family"], results["finished"]) == ("resmlp", True)
    evaluated = ["eval", "--init", str(work), f"--workdir={tmp_path / 'eval'}", "--json"]
    code, out, err = run_cli(capsys, *evaluated)
    assert code == 0, err
    row = json.loads(out)
    assert (row["family"], row["variant"], row["resolution"]) == ("resmlp", "1x16/4", 16)
    assert 0.0 <= row["test/top1"] <= 1.0 and row["test/examples"] == 360
    code, out, err = run_cli(capsys, "plot", "weights", "--init", str(work), "--units", "4")
    assert code == 0, err
    assert (work / "weights.png").stat().st_size > 0


@pytest.mark.slow
def test_logits_equal_timm_itself_for_a_random_resmlp_12_224(tmp_path: Path) -> None:
    # timm starts the head at zero, the layer scales at 1e-4 and the Affines at (1, 0)
    drawn = {"alpha": (1.0, 0.2), "^head|\\.ls|beta": (0.0, 0.2)}
    weights, x01, want = timm_run(tmp_path, "resmlp_12_224", drawn)
    loaded = registry.load_checkpoint(weights)
    assert (loaded.family, loaded.name, loaded.resolution) == ("resmlp", "S12/16", 224)
    got = np.asarray(loaded.model.apply({"params": loaded.params}, x01 * 2 - 1)[0])
    diff = float(np.abs(got - want).max())
    rel = diff / float(np.abs(want).max())
    print(f"resmlp_12_224, 4 images: max |mixer - timm| = {diff:.2e} ({rel:.2e} of max |timm|)")
    assert rel < 1e-5
    back = timm_runs_ours(tmp_path, "resmlp_12_224", "resmlp", loaded.params)
    diff_back = float(np.abs(back - got).max())
    rel_back = diff_back / float(np.abs(got).max())
    print(f"written by mixer, run by timm: max |timm - mixer| = {diff_back:.2e} ({rel_back:.2e})")
    assert rel_back < 1e-5
