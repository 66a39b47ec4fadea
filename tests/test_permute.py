"""The shuffle experiment: the Mixer's and the ViT's exact invariance to patch shuffles, the
ResNet, the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixer_cli.cli import run
from mixer_cli.core.errors import ConfigError
from mixer_cli.data.permutations import make_permutation, permute_numpy
from mixer_cli.models import create_model, registry
from mixer_cli.models.resnet import create_resnet, parse_resnet
from mixer_cli.models.vit import create_vit, parse_vit
from mixer_cli.tasks.permute import parse_modes, relative_drops


def orders_of(idx: np.ndarray, resolution: int, patch: int) -> tuple[np.ndarray, np.ndarray]:
    """(patch order, in-patch pixel order) of a patch permutation's index map, checking that
    it is one: every output patch takes one whole input patch, reordered the same way."""
    grid = resolution // patch
    source = idx.reshape(grid, patch, grid, patch).transpose(0, 2, 1, 3).reshape(grid**2, -1)
    rows, cols = np.divmod(source, resolution)
    patches = (rows // patch) * grid + cols // patch
    pixels = (rows % patch) * patch + cols % patch
    assert (patches == patches[:, :1]).all() and (pixels == pixels[:1]).all()
    return patches[:, 0], pixels[0]


def assert_absorbs_a_patch_shuffle(
    apply: Callable, params: Any, stem: str, move_tokens: Callable, seed: int
) -> None:
    """A model class absorbs a patch shuffle exactly: with its stem's pixels reordered and,
    by `move_tokens(params, patch_order)`, its per-token weights, the shuffled images give
    the original logits; unmoved, the shuffle changes them (so the check can fail)."""
    resolution, patch = 16, 4
    params = jax.tree.map(  # a non-zero head (and class token), so the logits say something
        lambda p: p + 0.05 * jax.random.normal(jax.random.key(9), p.shape), params
    )
    idx = make_permutation("patch", resolution, patch, seed)
    patch_order, pixel_order = orders_of(idx, resolution, patch)
    moved = jax.tree.map(np.asarray, params)
    kernel = moved[stem]["kernel"]  # [P, P, 3, D]
    moved[stem]["kernel"] = kernel.reshape(patch * patch, 3, -1)[pixel_order].reshape(kernel.shape)
    move_tokens(moved, patch_order)
    images = np.random.default_rng(seed).uniform(-1, 1, (3, resolution, resolution, 3))
    images = images.astype(np.float32)
    shuffled = permute_numpy(images, idx)
    want = apply(params, images)
    np.testing.assert_allclose(apply(moved, shuffled), want, atol=1e-5)
    assert not np.allclose(apply(params, shuffled), want, atol=1e-3)


@pytest.mark.parametrize("seed", [0, 1])
def test_mixer_absorbs_a_patch_shuffle_exactly(seed: int) -> None:
    model = create_model("N/4", num_classes=7)
    params = model.init(jax.random.key(seed), jnp.zeros((1, 16, 16, 3)))["params"]

    def move_tokens(moved: dict, order: np.ndarray) -> None:
        for i in range(4):
            tokens = moved[f"MixerBlock_{i}"]["token_mixing"]
            tokens["Dense_0"]["kernel"] = tokens["Dense_0"]["kernel"][order]
            tokens["Dense_1"]["kernel"] = tokens["Dense_1"]["kernel"][:, order]
            tokens["Dense_1"]["bias"] = tokens["Dense_1"]["bias"][order]

    apply = lambda p, x: model.apply({"params": p}, x)[0]  # noqa: E731
    assert_absorbs_a_patch_shuffle(apply, params, "stem", move_tokens, seed)


def test_vit_with_learned_position_embeddings_absorbs_a_patch_shuffle_exactly() -> None:
    """The ViT arm's premise: a patch shuffle is a reordering of its position embeddings
    (and of the stem's pixels), so the model class cannot tell it apart from the original."""
    model = create_vit(parse_vit("2x16-32-2/4"), num_classes=7)
    params = model.init(jax.random.key(3), jnp.zeros((1, 16, 16, 3)), train=False)["params"]

    def move_tokens(moved: dict, order: np.ndarray) -> None:
        embeddings = moved["Transformer"]["posembed_input"]  # [1, 1 + N, D]: the class token first
        pos = embeddings["pos_embedding"]
        embeddings["pos_embedding"] = np.concatenate([pos[:, :1], pos[:, 1:][:, order]], axis=1)

    apply = lambda p, x: model.apply({"params": p}, x, train=False)[0]  # noqa: E731
    assert_absorbs_a_patch_shuffle(apply, params, "embedding", move_tokens, seed=3)


def test_resnet_shapes_and_names() -> None:
    assert parse_resnet("ResNet50x1").stage_sizes == (3, 4, 6, 3)
    assert parse_resnet("r26", width=16).name == "ResNet26 (width 16)"
    with pytest.raises(ConfigError, match="unknown ResNet"):
        parse_resnet("VGG16")
    model = create_resnet("ResNet14", width=16, num_classes=5)
    for resolution, stem in ((8, (3, 3, 3, 16)), (64, (7, 7, 3, 16))):  # shapes only: no compile
        images = jax.ShapeDtypeStruct((2, resolution, resolution, 3), jnp.float32)
        variables = jax.eval_shape(model.init, jax.random.key(0), images)
        logits, out = jax.eval_shape(model.apply, variables, images)
        assert logits.shape == (2, 5) and out["pre_logits"].shape == (2, 16 * 8 * 4)
        assert variables["params"]["stem"]["kernel"].shape == stem
    # Weight standardisation: scaling a kernel changes nothing downstream of it.
    images = np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
    params = jax.jit(model.init)(jax.random.key(0), images)["params"]
    scaled = jax.tree.map(lambda p: p, params)
    scaled["stage1_unit0"]["conv2"]["kernel"] = 3.0 * params["stage1_unit0"]["conv2"]["kernel"]
    features_of = jax.jit(lambda p: model.apply({"params": p}, images)[1]["pre_logits"])
    features = [features_of(p) for p in (params, scaled)]  # one compile, two runs
    np.testing.assert_allclose(features[0], features[1], rtol=1e-4, atol=1e-5)


def run_patch_mode(capsys, tmp_path: Path, *extra: str) -> tuple[dict, str]:
    """One mode without its reference, one step (the reference and the drops are checked on
    their own below): results.json and what was printed."""
    argv = ["permute", "--mode", "patch", "--no-reference", "--steps", "1", "--batch-size", "32"]
    code = run([*argv, *extra, "--workdir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["modes"] == ["patch"]
    # The default data: digits placed on 16 px canvases, the Mixer at lr 1e-3 there.
    assert (results["data"], results["resolution"], results["mixer_lr"]) == (
        "digits-placed",
        16,
        1e-3,
    )
    for model in results["models"].values():
        runs = model["runs"]["patch"]
        assert [p["step"] for p in runs["curve"]] == [0, 1]
        assert 0 <= runs["fewshot/5shot"] <= 1 and 0 <= runs["test/top1"] <= 1
        assert runs["curve"][-1]["fewshot/5shot"] == runs["fewshot/5shot"]
    assert (tmp_path / "permute.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "patch" in out
    return results, out


def test_permute_trains_the_mixer_arm_alone_and_writes_the_figure(capsys, tmp_path) -> None:
    results, out = run_patch_mode(capsys, tmp_path, "--baseline", "none")
    assert set(results["models"]) == {"mixer"} and results["baselines"] == []
    assert results["models"]["mixer"]["name"] == "Mixer N/4" and "Mixer N/4" in out
    assert "ResNet" not in out


def test_tables_name_each_family_as_prose_does() -> None:
    """The shuffle table's and figure's model names: the family's title and the variant,
    or the variant alone where it names its family already."""
    assert registry.get("mixer").label("N/4") == "Mixer N/4"
    assert registry.get("vit").label("N/4") == "ViT N/4"
    assert registry.get("gmlp").label("6x96-6/4") == "gMLP 6x96-6/4"
    assert registry.get("resnet").label("ResNet14 (width 16)") == "ResNet14 (width 16)"
    assert all(registry.get(name).title for name in registry.FAMILY_NAMES)


@pytest.mark.slow  # ResNet14's training step alone compiles for ~10 s
def test_permute_trains_both_models_and_writes_the_figure(capsys, tmp_path: Path) -> None:
    results, out = run_patch_mode(capsys, tmp_path)
    assert set(results["models"]) == {"mixer", "resnet"} and "ResNet14" in out


def test_modes_run_with_the_original_as_reference_and_drops_are_relative() -> None:
    assert parse_modes("global", reference=True) == ["original", "global"]
    assert parse_modes("global", reference=False) == ["global"]
    assert parse_modes("all", reference=False) == ["original", "patch", "global"]
    runs = {
        "original": {"fewshot/5shot": 0.8, "test/top1": 0.9},
        "global": {"fewshot/5shot": 0.2, "test/top1": 0.45},
    }
    drops = relative_drops({"resnet": {"runs": runs}}, ["original", "global"])
    assert drops["resnet"]["global"] == pytest.approx({"fewshot/5shot": 0.75, "test/top1": 0.5})


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--mode", "diagonal"], "unknown mode 'diagonal'"),
        (["--mode", "patch", "--variant", "N/3"], "not a positive multiple of N/3's patch size 3"),
        (["--baseline", "vgg"], "unknown baseline 'vgg': expected resnet, vit, none"),
        (["--baseline", "cnn:ResNet14"], "unknown model family 'cnn'; families: mixer"),
        (["--baseline", "vit:Q/4"], "unknown ViT variant 'Q/4'"),
        (
            ["--mode", "patch", "--set", "model.family=resnet", "--variant", "ResNet14"],
            "a resnet has none",
        ),
        (["--data", "nosuchset"], "nosuchset"),
    ],
)
def test_bad_permute_input(capsys, tmp_path: Path, argv: list[str], needle: str) -> None:
    code = run(["permute", *argv, "--workdir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ") and needle in err, err
    assert not (tmp_path / "run").exists()


def test_plan_fills_what_was_not_asked_with_the_data_defaults() -> None:
    from mixer_cli.tasks.permute import Baseline, PermuteSettings, arms, plan

    experiment, modes = plan(PermuteSettings())
    assert modes == ["original", "global"]
    assert (experiment.data, experiment.variant, experiment.resolution) == (
        "digits-placed",
        "N/4",
        16,
    )
    assert experiment.steps == 300 and experiment.patch_size == 4
    assert experiment.baselines == (Baseline("resnet", "ResNet14", (("model.width", 16),)),)
    assert list(arms(experiment)) == ["mixer", "resnet"]
    experiment, modes = plan(PermuteSettings(mode="patch", reference=False, resolution=128))
    assert modes == ["patch"] and experiment.baselines == (Baseline("resnet", "ResNet50x1"),)
    # any family first, any beside it; a family twice gets a numbered arm
    settings = PermuteSettings(
        model_options=("model.family=vit",), baselines=("vit", "mixer:S/8", "resnet")
    )
    experiment, _ = plan(settings)
    assert experiment.baselines[:2] == (Baseline("vit", "N/4"), Baseline("mixer", "S/8"))
    assert list(arms(experiment)) == ["vit", "vit-2", "mixer", "resnet"]
