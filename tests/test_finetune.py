"""Fine-tuning: the high-resolution rule (exact mosaic identity), transfer, the lr sweep, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml
from numpy_mixer import numpy_mixer, official_layout_params

from mixer_cli import load_pretrained
from mixer_cli.cli import run
from mixer_cli.core.errors import ConfigError
from mixer_cli.data import open_dataset
from mixer_cli.models import abstract_params, create_model
from mixer_cli.models.mixer_checkpoint import (
    adapt_resolution,
    infer_architecture,
    part_major_order,
    transfer_params,
)
from mixer_cli.weights.arrays import read_npz, write_npz

FAST = [
    "--steps=3",
    "--batch-size=16",
    "--set=optim.warmup_steps=1",
    "--set=train.eval_batch_size=360",
    "--set=train.log_every=1",
]


def mosaic(images: np.ndarray, k: int) -> np.ndarray:
    """k*k images [k*k, r, r, 3] -> one [1, k*r, k*r, 3] image, part (i, j) = image i*k+j."""
    rows = [np.concatenate(list(images[i * k : (i + 1) * k]), axis=1) for i in range(k)]
    return np.concatenate(rows, axis=0)[None]


def pre_logits(model, images: np.ndarray) -> np.ndarray:
    return np.asarray(model.model.apply({"params": model.params}, images)[1]["pre_logits"])


@pytest.mark.parametrize("k", [2, 3])
def test_mosaic_identity_from_an_official_npz(official_npz, k: int) -> None:
    path, flat = official_npz
    original = load_pretrained(path)
    adapted = load_pretrained(path, resolution=k * original.resolution)
    assert adapted.architecture.grid_factor == k
    images = np.random.default_rng(k).uniform(-1, 1, (k * k, 16, 16, 3)).astype(np.float32)
    want = pre_logits(original, images).mean(axis=0)
    np.testing.assert_allclose(pre_logits(adapted, mosaic(images, k))[0], want, atol=1e-5)
    # The adapted weights are a plain Mixer in the official layout: the reference
    # formulation runs them at the new resolution without knowing k.
    bigger = adapt_resolution(flat, side=4, factor=k)
    _, reference = numpy_mixer(bigger, mosaic(images, k).astype(np.float64))
    np.testing.assert_allclose(reference[0], want, atol=1e-5)


def test_adaptation_composes_and_is_read_back_from_the_shapes(official_npz, tmp_path) -> None:
    # A 2x checkpoint adapted 2x again is the 4x model: part (i, j) of a 4x4 mosaic still
    # sees image i*4+j alone. Needs a size of the variant table to read K back.
    flat = official_layout_params(2, 4, 128, 16, 64, 512, 10, seed=1)  # N/2 at 8 px
    twice = write_npz(adapt_resolution(flat, side=4, factor=2), tmp_path / "x2.npz")
    arch = infer_architecture(read_npz(twice))
    assert (arch.spec.name, arch.resolution, arch.grid_factor) == ("N/2", 16, 2)
    assert arch.native_resolution == 8
    four = load_pretrained(twice, resolution=32)
    assert four.architecture.grid_factor == 4
    write_npz(flat, tmp_path / "x1.npz")
    original = load_pretrained(tmp_path / "x1.npz")
    images = np.random.default_rng(0).uniform(-1, 1, (16, 8, 8, 3)).astype(np.float32)
    want = pre_logits(original, images).mean(axis=0)
    np.testing.assert_allclose(pre_logits(four, mosaic(images, 4))[0], want, atol=1e-5)


def test_part_major_order_lists_each_part_in_raster_order() -> None:
    # A 4x4 token grid in 2x2 parts: part (0,0) holds raster tokens 0, 1, 4, 5.
    assert part_major_order(2, 2).tolist() == [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15]


def test_transfer_keeps_the_backbone_and_takes_the_fresh_zero_head(official_npz) -> None:
    path, flat = official_npz
    arch = infer_architecture(flat)
    # The fresh model is at 32 px: twice the checkpoint's 16.
    model = create_model(arch.spec, num_classes=3, grid_factor=2)
    fresh = jax.device_get(model.init(jax.random.key(0), np.zeros((1, 32, 32, 3)))["params"])
    params = transfer_params(path, fresh)
    assert params["head"]["kernel"].shape == (16, 3) and not params["head"]["kernel"].any()
    adapted = adapt_resolution(flat, side=4, factor=2)
    got = params["MixerBlock_1"]["token_mixing"]["Dense_1"]["kernel"]
    np.testing.assert_array_equal(got, adapted["MixerBlock_1/token_mixing/Dense_1/kernel"])
    np.testing.assert_array_equal(params["stem"]["kernel"], flat["stem/kernel"])


@pytest.fixture(scope="module")
def google_like_npz(tmp_path_factory) -> Path:
    """An official-layout N/2 checkpoint at 8 px with a 1000-class head, as Google ships."""
    flat = official_layout_params(2, 4, 128, 16, 64, 512, 1000, seed=2)
    return write_npz(flat, tmp_path_factory.mktemp("google") / "Mixer-N_2.npz")


def finetune(capsys, workdir: Path, *argv: str) -> tuple[int, dict, str]:
    code = run(["finetune", "--workdir", str(workdir), *FAST, *argv])
    err = capsys.readouterr().err
    path = workdir / "results.json"
    return code, json.loads(path.read_text()) if path.exists() else {}, err


@pytest.mark.parametrize("resolution", [16])  # 1x: the resume and lr-sweep tests below
def test_finetune_an_official_npz(capsys, tmp_path, google_like_npz, resolution) -> None:
    code, results, err = finetune(
        capsys, tmp_path, "--init", str(google_like_npz), "--resolution", str(resolution)
    )
    assert code == 0, err
    assert results["grid_factor"] == resolution // 8 and results["resolution"] == resolution
    assert results["num_classes"] == 10 and results["finished"]
    # Zero head: every logit is 0 at step 0 and argmax picks class 0 (36 of the 360 digits).
    assert results["at_step0"]["test/top1"] == pytest.approx(36 / 360)
    assert results["init"] == str(google_like_npz) and results["native_resolution"] == 8
    assert ("upsampled" in err) == (resolution > 8)
    tuned = load_pretrained(tmp_path)  # the run's params.npz: K read back from the shapes
    assert tuned.architecture.resolution == resolution
    assert tuned.architecture.grid_factor == resolution // 8
    assert tuned.architecture.num_classes == 10


def test_finetune_our_own_runs_finished_or_not(
    capsys, tmp_path, monkeypatch, stopped: Path, uninterrupted: Path
) -> None:
    pre = tmp_path / "runs" / "pre"
    shutil.copytree(stopped, pre)  # the shared tiny run, stopped at step 10
    # Unfinished: no params.npz yet, so the newest training checkpoint (step 10) is used.
    code, results, err = finetune(capsys, tmp_path / "a", "--init", str(pre), "--resolution=16")
    assert code == 0, err
    assert results["grid_factor"] == 2
    shutil.rmtree(pre)
    shutil.copytree(uninterrupted, pre)  # the same run, finished
    # Finished, found as the newest pretrain run under ./runs when --init is not given.
    monkeypatch.chdir(tmp_path)
    code, results, err = finetune(capsys, tmp_path / "b")
    assert code == 0, err
    assert "runs/pre" in err and results["init"] == "runs/pre" and results["grid_factor"] == 1


def test_step0_accuracy_survives_a_resume(capsys, tmp_path, google_like_npz) -> None:
    init = ["--init", str(google_like_npz), "--set=train.checkpoint_every=1"]
    code, results, _ = finetune(capsys, tmp_path, *init, "--stop-after=1")
    assert code == 0 and not results["finished"]
    code, results, _ = finetune(capsys, tmp_path, *init)
    assert code == 0 and results["finished"]
    metrics = (tmp_path / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in metrics]
    assert results["at_step0"]["test/top1"] == records[0]["test/top1"] and records[0]["step"] == 0


def test_lr_sweep_chooses_on_the_held_out_slice(capsys, tmp_path, google_like_npz) -> None:
    code, results, err = finetune(
        capsys, tmp_path, "--init", str(google_like_npz), "--lr-sweep=0.001,0.1", "--holdout=0.1"
    )
    assert code == 0, err
    trials = results["lr_sweep"]
    assert [t["lr"] for t in trials] == [0.001, 0.1]
    best = max(trials, key=lambda t: t["holdout_top1"])["lr"]
    assert results["selected_lr"] == best and results["holdout_split"] == "train[1293:]"
    for trial in trials:  # trained on the rest, scored on the slice; never on test
        seen = json.loads((Path(trial["workdir"]) / "results.json").read_text())
        assert (seen["train_split"], seen["eval_split"]) == ("train[:1293]", "train[1293:]")
        assert seen["test/examples"] == 144
    assert results["train_split"] == "train" and results["eval_split"] == "test"
    config = (tmp_path / "config.yaml").read_text()
    assert f"lr: {best}" in config


def test_held_out_slices_of_a_folder_mix_all_classes(tmp_path) -> None:
    from datasets import write_image_folder

    root = write_image_folder(tmp_path, {"train": 10})
    source = open_dataset(f"folder:{root}")
    labels = source._labels[source._indices("train[24:]")]
    assert len(set(labels.tolist())) > 1  # not just the last class folder


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--resolution=12"], "not an integer multiple of the checkpoint's 8; try 8 or 16"),
        (["--resolution=4"], "below the checkpoint's 8"),
        (["--init=nowhere.npz"], "'nowhere.npz' does not exist"),
        (["--init=NOTNPZ"], "cannot read"),
        (["--init=EMPTYDIR"], "not a mixer run"),
        (["--set=model.variant=B/16"], "the model comes from --init"),
        (["--lr-sweep=0.1,x"], "comma-separated numbers"),
        (["--lr-sweep=0.1,-1"], "--lr-sweep needs distinct positive numbers"),
        (["--lr-sweep=0.1", "--holdout=1.5"], "held-out fraction must be in (0, 1)"),
        (["--init=NORUNS"], "no --init given and no finished `mixer pretrain` run"),
    ],
)
def test_bad_finetune_input(capsys, tmp_path, monkeypatch, google_like_npz, argv, needle) -> None:
    (tmp_path / "not.npz").write_text("hello")
    (tmp_path / "empty").mkdir()
    replace = {
        "NOTNPZ": str(tmp_path / "not.npz"),
        "EMPTYDIR": str(tmp_path / "empty"),
    }
    monkeypatch.chdir(tmp_path)
    if argv == ["--init=NORUNS"]:
        argv = []
    elif not any(a.startswith("--init") for a in argv):
        argv = [*argv, f"--init={google_like_npz}"]
    argv = [next((a.replace(k, v) for k, v in replace.items() if k in a), a) for a in argv]
    code = run(["finetune", "--workdir", str(tmp_path / "run"), *FAST, *argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ") and needle in err, err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_abstract_shapes_of_an_adapted_model() -> None:
    model = create_model("N/2", num_classes=10, grid_factor=3)
    params = abstract_params(model, 24)
    assert params["MixerBlock_0"]["token_mixing"]["Dense_0"]["kernel"].shape == (144, 576)


def test_timm_weights_of_an_architecture_outside_the_table_fine_tune_and_fine_tune_again(
    capsys, tmp_path, timm_hub
) -> None:
    # hf-hub:timm/..., from the hub cache offline: 2 blocks, C=16, D_S=8, D_C=32, patch 4,
    # 16 px, no size of the table; timm's exact GELU carried into the run and on from it
    code, results, err = finetune(capsys, tmp_path / "a", "--init", timm_hub["name"])
    assert code == 0, err
    assert results["variant"] == "2x16-8-32/4" and results["finished"]
    saved = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())
    assert saved["model"]["variant"] == "2x16-8-32/4"  # the architecture, in the config
    assert saved["model"]["gelu"] == "exact" and saved["model"]["init"] == timm_hub["name"]
    code, again, err = finetune(capsys, tmp_path / "b", "--init", str(tmp_path / "a"))
    assert code == 0, err  # the fine-tuned run is read back and fine-tuned once more
    assert again["variant"] == "2x16-8-32/4" and again["init"] == str(tmp_path / "a")
    saved = yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())
    assert saved["model"]["gelu"] == "exact"


def test_refused_key_names_the_first_setting_the_checkpoint_decides() -> None:
    from mixer_cli.tasks.finetune import MODEL_KEYS, refused_key

    assert refused_key(None, MODEL_KEYS) is None
    assert refused_key(["model.gelu=exact", "optim.lr=0.1"], MODEL_KEYS) is None
    assert refused_key(["model.gelu=exact", " model.variant = B/16"], MODEL_KEYS) == (
        "model.variant"
    )


def test_finetune_config_layers_the_dataset_preset_over_the_recipe() -> None:
    from types import SimpleNamespace

    from mixer_cli.tasks.finetune import PRESETS, finetune_config

    layers = []

    def resolve(flags, base):
        layers.append([name for name, _ in base])
        return SimpleNamespace(data=SimpleNamespace(name="cifar10:3.0.2"))

    _, preset = finetune_config({"model.variant": "B/16"}, resolve)
    assert preset is PRESETS["cifar10"]
    assert len(layers[0]) == 1 and layers[0][0].endswith("finetune.yaml")
    assert layers[1] == [layers[0][0], "the dataset's fine-tuning preset"]


@pytest.mark.parametrize("family", ["resmlp", "gmlp"])
def test_the_mosaic_identity_holds_for_every_all_mlp_family(tmp_path, family: str) -> None:
    """Appendix C for the Mixer's peers: a checkpoint read at 2 x 16 px (its [S, S] token
    Linears block-diagonal) gives, on a 2 x 2 mosaic, the mean of the original model's
    pre_logits of the parts; fine-tuning there starts from the same arrays; a resolution
    that is no multiple is refused."""
    from numpy_gmlp import timm_gmlp_state
    from numpy_resmlp import resmlp_state_dict
    from safetensors.numpy import save_file

    from mixer_cli.models import registry
    from mixer_cli.weights.arrays import as_tree, flat_params

    state = {
        "resmlp": lambda: resmlp_state_dict(4, 2, 16, 16, 64, 5, seed=6),
        "gmlp": lambda: timm_gmlp_state(4, 2, 16, 6, 16, 5, seed=6),
    }[family]()
    path = tmp_path / "timm.safetensors"
    save_file(state, str(path))
    original, adapted = registry.load_checkpoint(path), registry.load_checkpoint(path, 32)
    assert (adapted.resolution, adapted.details["native_resolution"]) == (32, 16)
    images = np.random.default_rng(2).uniform(-1, 1, (4, 16, 16, 3)).astype(np.float32)
    want = np.asarray(pre_logits(original, images)).mean(axis=0)
    np.testing.assert_allclose(pre_logits(adapted, mosaic(images, 2))[0], want, atol=1e-5)
    assert registry.settings_at_resolution(original, 32) == {"model.resolution": 32}
    fresh = flat_params(adapted.params)
    started = flat_params(registry.get(family).warm_start(str(path), as_tree(fresh), "backbone"))
    assert all(np.array_equal(started[k], fresh[k]) for k in fresh if not k.startswith("head/"))
    with pytest.raises(ConfigError, match="not an integer multiple of the checkpoint's 16"):
        registry.settings_at_resolution(original, 24)
