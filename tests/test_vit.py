"""The `vit` family: Google's layout against an independent NumPy ViT, the position-embedding
interpolation vit_jax fine-tunes with, a released-layout ViT fine-tuned at twice its
resolution, and (slow) one ViT through pretrain and the registry's round trip (our npz read
back, and by the NumPy ViT)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
import yaml
from numpy_vit import google_vit_params, linen_names, numpy_vit
from scipy import ndimage
from test_cli import run_cli

from mixer_cli.cli import run
from mixer_cli.core.errors import CheckpointMismatch
from mixer_cli.models import registry
from mixer_cli.models.vit_checkpoint import POSEMB, with_grid
from mixer_cli.weights.arrays import as_tree, flatten

TINY = {"patch": 4, "layers": 2, "width": 16, "mlp": 32, "heads": 2, "side": 3}


@pytest.mark.parametrize(
    ("options", "layout"),
    [
        ({"classifier": "token", "representation": 12}, "released"),
        ({"classifier": "gap"}, "released"),
        ({"classifier": "token"}, "linen"),
    ],
    ids=["token+pre_logits", "gap", "token-linen-names"],
)
def test_our_vit_is_the_numpy_statement_on_googles_layout(options: dict, layout: str) -> None:
    flat = google_vit_params(**TINY, num_classes=5, seed=1, **options)
    stored = linen_names(flat) if layout == "linen" else flat
    family = registry.family_of(stored, "vit.npz")
    loaded = family.load(stored, "vit.npz", None, {})
    assert (family.name, loaded.name, loaded.resolution) == ("vit", "2x16-32-2/4", 12)
    assert loaded.config["classifier"] == options["classifier"]
    images = np.random.default_rng(0).uniform(-1, 1, (3, 12, 12, 3)).astype(np.float32)
    logits, out = jax.jit(loaded.model.apply)({"params": loaded.params}, images)
    want_logits, want_features = numpy_vit(flat, images)
    np.testing.assert_allclose(np.asarray(logits), want_logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out["pre_logits"]), want_features, rtol=1e-5, atol=1e-5)
    assert out["tokens"].shape == (3, 9, 16)  # the grid's tokens, the class token left out


@pytest.mark.parametrize("classifier", ["token", "gap"])
def test_position_embeddings_are_interpolated_as_vit_jax_does(classifier: str) -> None:
    flat = google_vit_params(**TINY, num_classes=0, classifier=classifier)
    keep = int(classifier == "token")
    posemb = flat[POSEMB]
    assert with_grid(flat, 3, "x")[POSEMB] is posemb  # the same grid: untouched
    for side in (5, 2):
        resized = with_grid(flat, side, "x")[POSEMB]
        assert resized.shape == (1, keep + side * side, 16)
        np.testing.assert_array_equal(resized[:, :keep], posemb[:, :keep])  # the class token
        grid = posemb[0, keep:].reshape(3, 3, 16).astype(np.float64)
        want = ndimage.zoom(grid, (side / 3, side / 3, 1), order=1)  # vit_jax's resize
        np.testing.assert_allclose(resized[0, keep:].reshape(side, side, 16), want, atol=1e-6)
    constant = {**flat, POSEMB: np.full_like(posemb, 0.7)}
    np.testing.assert_allclose(with_grid(constant, 7, "x")[POSEMB], 0.7, rtol=1e-6)


def test_info_lists_vit_b16_with_its_published_parameter_count(capsys) -> None:
    code, out, _ = run_cli(capsys, "info", "--family", "vit", "--variant", "ViT-B_16", "--json")
    assert code == 0
    (row,) = json.loads(out)
    assert (row["family"], row["model"], row["resolution"]) == ("vit", "B/16", 224)
    assert row["params"] == 86_567_656 - 769_000  # timm's ViT-B/16 less its 1000-class head
    assert 34.5 < row["gflops"] < 36.0  # about 17.6 GMACs, as public counts say


def test_a_warm_start_resizes_the_grid_drops_pre_logits_and_refuses_other_families(
    tmp_path, official_npz
) -> None:
    flat = google_vit_params(**TINY, num_classes=5, representation=12)
    np.savez(tmp_path / "vit.npz", **linen_names(flat))  # as vit_jax's linen code writes it
    fresh = google_vit_params(**{**TINY, "side": 5}, num_classes=3, seed=2)
    family = registry.get("vit")
    started = flatten(family.warm_start(str(tmp_path / "vit.npz"), as_tree(fresh), "backbone"))
    assert set(started) == set(fresh)  # pre_logits dropped, as vit_jax fine-tunes
    np.testing.assert_array_equal(started["head/kernel"], fresh["head/kernel"])
    np.testing.assert_array_equal(started["cls"], flat["cls"])
    assert started[POSEMB].shape == (1, 1 + 25, 16)
    np.testing.assert_array_equal(started[POSEMB][:, :1], flat[POSEMB][:, :1])
    with pytest.raises(CheckpointMismatch, match=r"Mixer-custom\.npz is not a ViT checkpoint"):
        family.warm_start(official_npz[0], as_tree(fresh), "backbone")


FAST = ["--batch-size=16", "--set=optim.warmup_steps=1", "--set=train.log_every=1"]
FAST += ["--set=evals.fewshot=none", "--set=evals.test=none"]  # the evaluators know no family


def test_a_vit_in_googles_layout_fine_tunes_at_twice_its_resolution(capsys, tmp_path) -> None:
    """A ViT npz as Google releases them (one encoder block, 8 px) -> finetune at 16 px:
    the position embeddings interpolated to the 8x8 grid, the class token kept."""
    flat = google_vit_params(patch=2, layers=1, width=32, mlp=64, heads=2, side=4, num_classes=10)
    np.savez(tmp_path / "vit.npz", **flat)
    finetune = ["finetune", "--init", str(tmp_path / "vit.npz"), "--resolution", "16"]
    code = run([*finetune, "--workdir", str(tmp_path / "ft"), *FAST, "--steps=1"])
    assert code == 0, capsys.readouterr().err
    saved = yaml.safe_load((tmp_path / "ft" / "config.yaml").read_text())["model"]
    assert (saved["family"], saved["variant"], saved["resolution"]) == ("vit", "1x32-64-2/2", 16)
    with np.load(tmp_path / "ft" / "params.npz") as tuned:
        assert tuned[POSEMB].shape == (1, 1 + 8 * 8, 32)


@pytest.mark.slow  # a second ViT compile (Adam, 8 px): 10 s; the test above fine-tunes one
def test_a_tiny_vit_pretrains_and_round_trips(capsys, tmp_path) -> None:
    """pretrain -> params.npz in Google's layout (the NumPy ViT reads it: same logits) ->
    loaded at twice the resolution. One encoder block (the nano N/2 compiles its 4 for ~4 s
    more per run)."""
    pretrain = ["pretrain", "--set", "model.family=vit", "--variant", "1x32-64-2/2"]
    assert run([*pretrain, "--workdir", str(tmp_path / "pre"), *FAST, "--steps=2"]) == 0
    results = json.loads((tmp_path / "pre" / "results.json").read_text())
    assert (results["family"], results["finished"]) == ("vit", True)
    capsys.readouterr()

    loaded = registry.load_checkpoint(tmp_path / "pre")
    assert loaded.config == {
        "family": "vit",
        "variant": "1x32-64-2/2",
        "resolution": 8,
        "classifier": "token",
    }
    with np.load(tmp_path / "pre" / "params.npz") as archive:
        flat = {key: archive[key] for key in archive.files}
    images = np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
    forward = jax.jit(lambda p, x: loaded.model.apply({"params": p}, x)[1]["pre_logits"])
    want = numpy_vit(flat, images)[1]
    np.testing.assert_allclose(forward(loaded.params, images), want, rtol=1e-5, atol=1e-5)

    larger = registry.load_checkpoint(tmp_path / "pre", resolution=16)
    assert (larger.resolution, larger.details["native_resolution"]) == (16, 8)
    posemb = larger.params["Transformer"]["posembed_input"]["pos_embedding"]
    assert posemb.shape == (1, 1 + 8 * 8, 32)  # the class token and an 8x8 grid
    np.testing.assert_array_equal(posemb[:, :1], flat[POSEMB][:, :1])
