"""timm's Mixer and ViT weights: safetensors state dicts read and written, hf-hub names offline.

The default suite compares against an independent NumPy statement of timm's forward
(numpy_timm.py); the slow test against timm itself, run by the interpreter in
MIXER_TIMM_PYTHON (one with torch and timm; default: this one).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from numpy_mixer import numpy_mixer
from numpy_timm import timm_mixer, timm_state_dict, timm_vit, timm_vit_state_dict
from numpy_vit import google_vit_params
from safetensors.numpy import load_file, save_file
from timm_process import timm_run, timm_runs_ours

from mixer_cli import load_pretrained
from mixer_cli.core.errors import CheckpointMismatch, CheckpointNotFound
from mixer_cli.models.registry import load_checkpoint
from mixer_cli.models.timm_state import save as save_timm
from mixer_cli.models.vit_timm import LAYOUT_OF_VIT
from mixer_cli.weights import timm as timm_layout


def images(n: int = 3, size: int = 16, seed: int = 0) -> np.ndarray:
    """Images with values in [0, 1] (what timm normalises), NHWC."""
    return np.random.default_rng(seed).uniform(0, 1, (n, size, size, 3)).astype(np.float32)


def timm_logits(state: dict, x01: np.ndarray, mean: float, std: float) -> np.ndarray:
    return timm_mixer(state, ((x01 - mean) / std).transpose(0, 3, 1, 2))


@pytest.mark.parametrize(
    ("mean", "std"), [(0.5, 0.5), (0.0, 1.0), ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]
)
def test_timm_weights_give_timm_logits_from_mixer_inputs(tmp_path: Path, mean, std) -> None:
    state = timm_state_dict(4, 2, 16, 16, 8, 32, 7, seed=1)
    path = tmp_path / "model.safetensors"
    save_file(state, str(path), metadata={"format": "pt"})
    cfg = {"mean": list(np.broadcast_to(mean, 3)), "std": list(np.broadcast_to(std, 3))}
    (tmp_path / "config.json").write_text(json.dumps({"pretrained_cfg": cfg}))
    x01 = images()
    want = timm_logits(state, x01, np.asarray(mean), np.asarray(std))

    model = load_pretrained(path)  # exact GELU by default: timm's
    assert model.model.gelu == "exact" and model.architecture.spec.name == "2x16-8-32/4"
    got = np.asarray(model(x01 * 2 - 1))  # mixer's [-1, 1] inputs
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    tanh = np.asarray(load_pretrained(path, gelu="tanh")(x01 * 2 - 1))
    # the form matters: tanh misses timm's logits by far more than float32 rounding
    assert np.abs(tanh - want).max() > 20 * np.abs(got - want).max()


def test_ours_in_timm_layout_read_back_exactly_and_run_as_timm(
    tmp_path: Path, official_npz
) -> None:
    npz, flat = official_npz
    out = save_timm(
        "mixer", load_pretrained(npz).params, tmp_path / "ours.safetensors", gelu="tanh"
    )
    state = load_file(str(out))
    want = timm_state_dict(4, 2, 16, 16, 8, 32, 10, seed=0)
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in want.items()}
    back = load_pretrained(out)
    assert back.model.gelu == "tanh"  # recorded in the metadata: runs as it was trained
    x = images() * 2 - 1
    np.testing.assert_array_equal(np.asarray(back(x)), np.asarray(load_pretrained(npz)(x)))
    np.testing.assert_allclose(np.asarray(back(x)), numpy_mixer(flat, x)[0], atol=1e-4)


def test_an_hf_hub_name_loads_from_the_hub_cache_offline(timm_hub) -> None:
    loaded = load_checkpoint(timm_hub["name"])
    assert loaded.family == "mixer" and loaded.details["gelu"] == "exact"
    assert loaded.name == "2x16-8-32/4" and loaded.num_classes == 10
    x01 = images(seed=4)
    got = loaded.model.apply({"params": loaded.params}, x01 * 2 - 1)[0]
    want = timm_logits(timm_hub["state"], x01, timm_hub["mean"], timm_hub["std"])
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=0)
    with pytest.raises(CheckpointNotFound, match=r"HF_HUB_OFFLINE is set.*hf download timm/x"):
        load_pretrained("hf-hub:timm/x")


def test_a_safetensors_file_that_is_no_mixer_names_the_first_odd_key(tmp_path: Path) -> None:
    state = timm_state_dict(4, 1, 16, 16, 8, 32, 7, seed=1)
    save_file({"cls_token": np.zeros((1, 1, 16), np.float32), **state}, str(tmp_path / "v.st"))
    (tmp_path / "v.st").rename(tmp_path / "vit.safetensors")
    with pytest.raises(CheckpointMismatch, match="key 'cls_token' does not fit"):
        load_pretrained(tmp_path / "vit.safetensors")


HEAD_DRAWN = {"^head\\.": (0.0, 0.02)}  # timm zero-initialises the head


@pytest.mark.slow
def test_logits_equal_timm_itself_for_a_random_mixer_s16_224(tmp_path: Path) -> None:
    weights, x01, want = timm_run(tmp_path, "mixer_s16_224", HEAD_DRAWN)
    model = load_pretrained(weights)
    assert model.architecture.spec.name == "S/16" and model.resolution == 224
    got = np.asarray(model(x01 * 2 - 1))
    diff = float(np.abs(got - want).max())
    print(f"mixer_s16_224, 4 images: max |mixer - timm| = {diff:.2e}")
    assert diff < 1e-4
    # and back: our layout written, loaded by timm, timm's logits again
    back = timm_runs_ours(tmp_path, "mixer_s16_224", "mixer", model.params)
    diff_back = float(np.abs(back - got).max())
    print(f"written by mixer, run by timm: max |timm - mixer| = {diff_back:.2e}")
    assert diff_back < 1e-4


def test_mixer_convert_writes_either_layout_and_back_exactly(
    capsys, tmp_path: Path, timm_hub
) -> None:
    from mixer_cli.cli import run

    out = tmp_path / "ours.npz"
    assert run(["convert", timm_hub["name"], str(out)]) == 0
    assert "exact GELU" in capsys.readouterr().err  # what the npz cannot carry, said
    assert run(["convert", str(out), str(tmp_path / "timm.safetensors")]) == 0
    state = load_file(str(tmp_path / "timm.safetensors"))
    assert set(state) == set(timm_hub["state"])
    x01 = images(seed=5)
    direct = load_pretrained(timm_hub["name"])(x01 * 2 - 1)
    via_npz = load_pretrained(out, gelu="exact")(x01 * 2 - 1)
    np.testing.assert_array_equal(np.asarray(direct), np.asarray(via_npz))
    assert run(["convert", str(out), str(tmp_path / "x.onnx")]) == 2
    timm_file = tmp_path / "timm.safetensors"
    capsys.readouterr()
    assert run(["convert", str(out), str(timm_file)]) == 2  # exists: refused, untouched
    assert "timm.safetensors exists: choose another output or pass --overwrite" in (
        capsys.readouterr().err
    )
    assert timm_layout.read_settings(timm_file) == {"gelu": "tanh"}  # written from the npz
    assert run(["convert", timm_hub["name"], str(timm_file), "--overwrite"]) == 0
    assert timm_layout.read_settings(timm_file) == {"gelu": "exact"}  # now timm's weights


@pytest.mark.parametrize(
    ("options", "width", "heads", "metadata"),
    [
        ({"representation": 12}, 128, 2, {}),  # heads unrecorded: 64 wide, as timm's ViTs
        ({"class_token": False}, 32, 4, {"attention_heads": "4"}),  # gap; heads recorded
    ],
    ids=["token+pre_logits", "gap+recorded-heads"],
)
def test_timm_vit_weights_give_timm_logits_and_map_back_exactly(
    tmp_path: Path, options: dict, width: int, heads: int, metadata: dict
) -> None:
    state = timm_vit_state_dict(4, 1, width, 48, 2, 5, seed=1, **options)
    back = LAYOUT_OF_VIT.to_timm(LAYOUT_OF_VIT.from_timm(state, "x"))
    assert set(back) == set(state)
    assert all(np.array_equal(back[k], state[k]) for k in state)
    path = tmp_path / "vit.safetensors"
    save_file(state, str(path), metadata={"format": "pt", **metadata})
    loaded = load_checkpoint(path)
    assert (loaded.family, loaded.details["gelu"]) == ("vit", "exact")  # timm's GELU
    assert loaded.config["classifier"] == ("gap" if "class_token" in options else "token")
    x01 = images(size=8)
    got = np.asarray(loaded.model.apply({"params": loaded.params}, x01 * 2 - 1)[0])
    nchw = ((x01 - 0.5) / 0.5).transpose(0, 3, 1, 2)
    want = timm_vit(state, nchw, heads)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    # the heads matter: one head instead misses by far more than float32 rounding
    assert np.abs(timm_vit(state, nchw, 1) - want).max() > 1e3 * np.abs(got - want).max()


def test_mixer_convert_takes_a_vit_to_timms_layout_and_back_exactly(capsys, tmp_path: Path) -> None:
    from test_cli import run_cli

    flat = google_vit_params(
        patch=4, layers=1, width=16, mlp=32, heads=2, side=2, num_classes=5, seed=2
    )
    npz, timm_file, back = tmp_path / "vit.npz", tmp_path / "vit.safetensors", tmp_path / "b.npz"
    np.savez(npz, **flat)
    assert run_cli(capsys, "convert", str(npz), str(timm_file))[0] == 0
    state = load_file(str(timm_file))
    want = timm_vit_state_dict(4, 1, 16, 32, 2, 5)
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in want.items()}
    # the heads, which a state dict does not hold, and the GELU form travel in the metadata
    assert timm_layout.read_settings(timm_file) == {"gelu": "tanh", "attention_heads": 2}
    assert run_cli(capsys, "convert", str(timm_file), str(back))[0] == 0
    with np.load(back) as read_back:
        assert set(read_back.files) == set(flat)
        assert all(np.array_equal(read_back[k], flat[k]) for k in flat)


@pytest.mark.slow
def test_logits_equal_timm_itself_for_a_random_vit_tiny_patch16_224(tmp_path: Path) -> None:
    weights, x01, want = timm_run(tmp_path, "vit_tiny_patch16_224", HEAD_DRAWN)
    loaded = load_checkpoint(weights)
    assert (loaded.family, loaded.name, loaded.resolution) == ("vit", "Ti/16", 224)
    got = np.asarray(loaded.model.apply({"params": loaded.params}, x01 * 2 - 1)[0])
    diff = float(np.abs(got - want).max())
    scale = float(np.abs(want).max())
    print(
        f"vit_tiny_patch16_224, 4 images: max |mixer - timm| = {diff:.2e} (max |logit| {scale:.2f})"
    )
    assert diff <= 1e-5 * scale
    back = timm_runs_ours(tmp_path, "vit_tiny_patch16_224", "vit", loaded.params)
    diff_back = float(np.abs(back - got).max())
    print(f"written by mixer, run by timm: max |timm - mixer| = {diff_back:.2e}")
    assert diff_back <= 1e-5 * scale
