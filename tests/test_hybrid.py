"""The follow-up architectures (the `hybrid` family): exact warm starts from a Mixer, the
options' parameter trees, and one hybrid through pretrain, finetune, fewshot and bench."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from flax import traverse_util
from numpy_mixer import numpy_mixer

from mixer_cli.cli import run
from mixer_cli.config import ModelConfig, resolve
from mixer_cli.core.errors import CheckpointMismatch
from mixer_cli.models import registry
from mixer_cli.models.hybrid import conv_stem_widths, sincos_2d

# official_npz: Google's layout, 2 blocks, C=16, D_S=8, D_C=32, patch 4, 16 px, 10 classes.
MIXER = ModelConfig(family="hybrid", variant="2x16-8-32/4", resolution=16)


def start_from(npz: str, m: ModelConfig, scope: str = "all") -> tuple[object, dict]:
    family = registry.get("hybrid")
    model = family.build(m, 10, 0.0)
    fresh = model.init(jax.random.key(7), jnp.zeros((1, 16, 16, 3)))["params"]
    return model, family.warm_start(npz, fresh, scope)


@pytest.mark.parametrize(
    "options",
    [
        {"token_mixing": "sum"},
        {"conv_after": (0, 1)},
        {"token_mixing": "sum", "conv_after": (1,), "heads": 2},
        {},  # no option at all: the Mixer itself
    ],
    ids=["sum", "conv-after", "sum+conv-after", "none"],
)
def test_summed_and_conv_after_models_start_exactly_as_the_mixer(
    official_npz, capsys, options
) -> None:
    path, flat = official_npz
    model, params = start_from(path, dataclasses.replace(MIXER, **options))
    images = np.random.default_rng(0).uniform(-1, 1, (4, 16, 16, 3)).astype(np.float32)
    got = np.asarray(model.apply({"params": params}, images)[0])
    want = numpy_mixer(flat, images)[0]  # the independent NumPy Mixer
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    note = capsys.readouterr().err
    if options:
        assert "new parameters: " in note and "new parameters: none" not in note, note
    # the new parts do change the function once they move off their zero start
    if options:
        # random, since a constant pointwise kernel adds a per-token constant that the
        # next LayerNorm removes
        rng, flat_params = np.random.default_rng(1), traverse_util.flatten_dict(params)
        moved = {
            k: v + 0.3 * rng.standard_normal(np.shape(v))
            if k[-1] == "gate" or "pointwise" in k
            else v
            for k, v in flat_params.items()
        }
        out = model.apply({"params": traverse_util.unflatten_dict(moved)}, images)[0]
        assert np.abs(np.asarray(out) - want).max() > 1e-3


def test_conv_stem_and_patterned_models_share_their_blocks_and_name_what_is_new(
    official_npz, capsys
) -> None:
    path, flat = official_npz
    m = dataclasses.replace(MIXER, stem="conv", pattern="MA")
    model, params = start_from(path, m, scope="backbone")
    note = capsys.readouterr().err
    assert "new parameters: conv_stem" in note and "token_attention in blocks 1" in note, note
    assert "not used: stem, token_mixing in blocks 1" in note, note
    got = params["MixerBlock_0"]["token_mixing"]["Dense_0"]["kernel"]
    np.testing.assert_array_equal(got, flat["MixerBlock_0/token_mixing/Dense_0/kernel"])
    np.testing.assert_array_equal(params["head"]["kernel"], 0)  # a fresh head: backbone only
    # conv stem: 2 stride-2 layers reach patch 4 (16 and 16 channels, at least 16), 1x1 to C
    assert conv_stem_widths(16, 4) == (16, 16) and conv_stem_widths(512, 16) == (32, 64, 128, 256)
    assert set(params["conv_stem"]) == {"conv_0", "norm_0", "conv_1", "norm_1", "proj"}
    assert "token_mixing" not in params["MixerBlock_1"]
    out = model.apply({"params": params}, jnp.zeros((2, 16, 16, 3)))[0]
    assert out.shape == (2, 10) and bool(jnp.all(jnp.isfinite(out)))


def test_a_warm_start_whose_shared_parts_do_not_fit_names_the_key(official_npz) -> None:
    m = ModelConfig(family="hybrid", variant="N/4", resolution=16, token_mixing="sum")
    family = registry.get("hybrid")
    fresh = family.build(m, 10, 0.0).init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))["params"]
    with pytest.raises(CheckpointMismatch, match=r"'stem/kernel' has shape .* do not fit"):
        family.warm_start(official_npz[0], fresh, "all")


def test_any_follow_up_option_makes_a_mixer_a_hybrid_and_position_codes_differ() -> None:
    config = resolve("demo", None, {"model.pattern": "MAMA"})
    assert config.model.family == "hybrid" and config.model.pattern == "MAMA"
    assert resolve("demo", None, {}).model.family == "mixer"
    codes = sincos_2d(4, 16)
    assert codes.shape == (16, 16) and len({tuple(row) for row in codes.round(6)}) == 16


# every option at once on a two-block Mixer at the demo's 8 px (each block is seconds of
# compile): conv stem (one stride-2 layer), a Mixer/attention pattern, summed token
# mixing, a conv after block 1
EVERY_OPTION = [
    "--variant=2x16-8-32/2",
    "--set=model.stem=conv",
    "--set=model.pattern=MA",
    "--set=model.token_mixing=sum",
    "--set=model.conv_after=1",
]
VARIANT = "2x16-8-32/2+conv-stem+MA+sum+conv@1"


FAST = ["--steps=4", "--batch-size=16", "--set=optim.warmup_steps=1"]
FAST += ["--set=train.log_every=2", "--set=evals.fewshot=none"]


def pretrained_hybrid(tmp_path: Path) -> Path:
    workdir = tmp_path / "pre"
    assert run(["pretrain", "--workdir", str(workdir), *FAST, *EVERY_OPTION]) == 0
    results = json.loads((workdir / "results.json").read_text())
    assert results["variant"] == VARIANT and results["finished"]
    assert np.isfinite(results["final_train_loss"])
    return workdir


def few_shot_probe(init: Path, workdir: Path) -> None:
    """`mixer fewshot` of a hybrid run: it rebuilds the model from the run's config.yaml."""
    fewshot = ["fewshot", "--init", str(init), "--shots", "2", "--seeds", "1"]
    assert run([*fewshot, "--workdir", str(workdir), "--json"]) == 0
    probe = json.loads((workdir / "results.json").read_text())
    assert probe["variant"] == VARIANT
    assert 0 <= probe["average"]["2"] <= 1


def test_a_hybrid_pretrains_few_shots_and_describes_itself(capsys, tmp_path: Path) -> None:
    pre = pretrained_hybrid(tmp_path)
    few_shot_probe(pre, tmp_path / "fs")
    capsys.readouterr()
    # `mixer info` of the run: its variant and a list option (conv_after) read back from it
    assert run(["info", "--checkpoint", str(pre), "--json"]) == 0
    described = json.loads(capsys.readouterr().out)[0]
    assert (described["family"], described["model"]) == ("hybrid", VARIANT)
    assert described["params"] > 0 and described["gflops"] > 0


@pytest.mark.slow  # a second compile of every option (20 s); the pretrain test reads it back
def test_a_hybrid_fine_tunes_and_few_shots(capsys, tmp_path: Path) -> None:
    pre = pretrained_hybrid(tmp_path)
    capsys.readouterr()
    finetune = ["finetune", "--init", str(pre), "--workdir", str(tmp_path / "ft")]
    assert run([*finetune, *FAST]) == 0, capsys.readouterr().err
    saved = yaml.safe_load((tmp_path / "ft" / "config.yaml").read_text())["model"]
    assert (saved["family"], saved["stem"], saved["pattern"]) == ("hybrid", "conv", "MA")
    assert (saved["token_mixing"], saved["conv_after"]) == ("sum", [1])
    few_shot_probe(tmp_path / "ft", tmp_path / "fs")


@pytest.mark.slow  # its compile is 8 s; test_bench covers the command for the Mixer
def test_a_hybrid_benchmarks(capsys, tmp_path: Path) -> None:
    bench = ["bench", "--resolution", "8", "--batch-size", "16"]
    bench += ["--windows", "1", "--steps", "2", "--mode", "forward", "--peak-size", "64"]
    bench += EVERY_OPTION
    assert run([*bench, "--workdir", str(tmp_path / "bench"), "--json"]) == 0
    timed = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert timed["family"] == "hybrid" and timed["forward"]["images_per_sec"] > 0


@pytest.mark.parametrize(
    ("ours", "reference"),
    [
        ({"features": 5, "strides": 2}, {"features": 5, "kernel_size": (3, 3), "strides": 2}),
        (
            {"features": 6, "depthwise": True},
            {"features": 6, "kernel_size": (3, 3), "feature_group_count": 6},
        ),
        ({"features": 4, "size": 1}, {"features": 4, "kernel_size": (1, 1)}),
        (  # the ResNet baseline's: no bias, the 7x7 stride-2 stem, a strided 1x1 shortcut
            {"features": 4, "size": 7, "strides": 2, "use_bias": False},
            {"features": 4, "kernel_size": (7, 7), "strides": 2, "use_bias": False},
        ),
        (
            {"features": 8, "size": 1, "strides": 2, "use_bias": False},
            {"features": 8, "kernel_size": (1, 1), "strides": 2, "use_bias": False},
        ),
    ],
    ids=["3x3-stride-2", "depthwise-3x3", "1x1", "7x7-stride-2-no-bias", "1x1-stride-2-no-bias"],
)
def test_the_matmul_convolutions_are_flax_convolutions(ours: dict, reference: dict) -> None:
    import flax.linen as nn

    from mixer_cli.models.matmul_conv import MatmulConv

    x = jax.random.normal(jax.random.key(0), (2, 7, 7, 6))  # odd: padding at the edges
    conv = nn.Conv(padding=reference["kernel_size"][0] // 2, **reference)
    params = jax.tree.map(lambda a: a + 0.1, conv.init(jax.random.key(1), x))  # bias too
    mine = MatmulConv(**ours)
    assert jax.tree.map(jnp.shape, mine.init(jax.random.key(1), x)) == jax.tree.map(
        jnp.shape, params
    )
    np.testing.assert_allclose(mine.apply(params, x), conv.apply(params, x), atol=1e-5)
