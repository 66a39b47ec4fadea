"""Run configuration: precedence, validation, and recipes that all load."""

from __future__ import annotations

from pathlib import Path

import pytest

from mixer_cli.config import parse_assignments, recipes, resolve
from mixer_cli.core.errors import ConfigError


def test_precedence_defaults_then_yaml_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(
        "model:\n  variant: Ti/4\n  resolution: 16\noptim:\n  lr: 3e-3\ntrain:\n  steps: 10\n"
    )
    config = resolve(None, path, {"model.resolution": "32", "train.seed": 7})
    assert config.model.variant == "Ti/4"  # from the file
    assert config.optim.lr == 0.003  # YAML 1.1's '3e-3' string is read as a float
    assert config.model.resolution == 32 and config.train.seed == 7  # flags win
    assert config.optim.b2 == 0.999  # untouched default


@pytest.mark.parametrize("name", recipes())
def test_every_recipe_resolves(name: str) -> None:
    config = resolve(name, None, {})
    assert config.train.steps > 0 or config.train.epochs > 0


@pytest.mark.parametrize(
    ("yaml_text", "overrides", "message"),
    [
        ("model:\n  variant: B/16\n  colour: red\n", {}, "unknown config key 'model.colour'"),
        ("modle:\n  variant: B/16\n", {}, "unknown config key 'modle.variant'"),
        ("model: [1, 2\n", {}, "malformed YAML"),
        ("model: 3\n", {}, "must be a mapping"),
        ("", {"train.steps": "many"}, "train.steps must be int, got 'many'"),
        ("", {"optim.lr": "-1"}, "optim.lr must be > 0"),
        ("", {"train.loss": "hinge"}, "train.loss must be one of softmax, sigmoid"),
        ("", {"train.epochs": "3", "train.steps": "5"}, "exactly one of train.steps and"),
        ("", {"train.steps": "0"}, "exactly one of train.steps and train.epochs"),
    ],
)
def test_bad_configs_are_refused(tmp_path: Path, yaml_text, overrides, message) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        resolve("demo" if not yaml_text else None, None if not yaml_text else path, overrides)


def test_the_latest_layer_chooses_steps_or_epochs(tmp_path: Path) -> None:
    base = [("preset", {"train.steps": 500, "optim.lr": 0.03})]
    assert resolve(None, None, {}, base).train.steps == 500
    config = resolve(None, None, {"train.epochs": "2"}, base)  # a flag's epochs beat steps
    assert (config.train.steps, config.train.epochs, config.optim.lr) == (0, 2.0, 0.03)
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  epochs: 4\n")
    config = resolve(None, path, {"train.steps": "7"}, base)
    assert (config.train.steps, config.train.epochs) == (7, 0.0)


def test_unknown_recipe_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown recipe 'b16'; recipes: .*demo"):
        resolve("b16", None, {})


def test_set_needs_key_value() -> None:
    assert parse_assignments(["optim.lr=3e-3"]) == {"optim.lr": "3e-3"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_assignments(["optim.lr"])


def test_a_paper_variant_without_a_recipe_gets_the_papers_settings() -> None:
    from mixer_cli.config import implied_settings

    recipe, settings, note = implied_settings("L/16", "imagenet21k")
    assert recipe == "l16_imagenet21k" and settings == {} and "l16_imagenet21k" in note
    config = resolve(recipe, None, {"model.variant": "L/16", "data.name": "imagenet21k"})
    assert (config.model.variant, config.model.resolution) == ("L/16", 224)
    assert implied_settings("S/32", "imagenet2012")[0] == "b16_imagenet"
    assert implied_settings("B/16", "cifar10") == (
        None,
        {"model.resolution": 224},
        "B/16 at the paper's 224 px (--resolution picks another)",
    )
    assert implied_settings("N/4", "imagenet2012") == (None, {}, "")  # ours: no paper size
    # the family the run's --set names reads the variant: a ViT gets the ViT paper's recipe
    vit = ["model.family=vit"]
    assert implied_settings("B/16", "imagenet2012", vit)[0] == "vit_b16_imagenet"
    assert implied_settings("Ti/16", "imagenet21k", vit)[0] == "vit_b16_imagenet21k"
    assert implied_settings("Ti/16", "cifar10", vit)[1] == {"model.resolution": 224}
    assert implied_settings("Ti/16", "imagenet2012") == (None, {}, "")  # no Mixer size: left
    resmlp = ["model.family=resmlp"]
    assert implied_settings("S12/16", "imagenet2012", resmlp)[0] == "resmlp_s24_imagenet"
    assert implied_settings("8x96/4", "imagenet2012", resmlp) == (None, {}, "")  # ours
    for recipe in ("vit_b16_imagenet", "vit_b16_imagenet21k"):
        config = resolve(recipe, None, {"model.variant": "Ti/16"})
        assert (config.model.family, config.model.variant) == ("vit", "Ti/16")


def test_the_headline_command_reaches_the_dataset(capsys, tmp_path) -> None:
    """`mixer pretrain --variant L/16 --data imagenet21k` once failed on the demo's 8 px."""
    from mixer_cli.cli import run

    argv = ["pretrain", "--variant", "L/16", "--data", "imagenet21k", "--data-dir"]
    code = run([*argv, str(tmp_path), "--workdir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "no prepared copy in" in err and "resolution" not in err, err


def test_a_run_directory_of_an_older_mixer_resumes_with_the_defaults_of_newer_keys() -> None:
    from mixer_cli.config import upgrade
    from mixer_cli.train.workdir import _first_difference

    config = resolve("demo", None, {"data.augment_on": "host"})  # as older runs augmented
    old = config.to_dict()
    old["model"]["kind"] = old["model"].pop("family")  # before model families
    for key in ("gelu", "stem", "pattern", "token_mixing", "conv_after", "heads"):
        del old["model"][key]  # keys added since
    del old["data"]["augment_on"]
    assert _first_difference(upgrade(old, config), config.to_dict()) is None
    today = resolve("demo", None, {})  # augments on the device: not the run it resumes
    assert "data.augment_on: 'host' before, 'device' now" in _first_difference(
        upgrade(old, today), today.to_dict()
    )
    changed = resolve("demo", None, {"model.gelu": "exact", "data.augment_on": "host"})
    assert "model.gelu: 'tanh' before" in _first_difference(
        upgrade(old, changed), changed.to_dict()
    )
