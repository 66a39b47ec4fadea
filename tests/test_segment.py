"""`mixer segment` end to end: digit scenes and a mocked oxford_iiit_pet through the engine,
every labelled test pixel scored exactly once at its image's own size, warm starts from a
classification checkpoint at 1x and 2x, and segmentation folders' checks."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from datasets import mock_pets, pet_example, write_image, write_mask_folder
from test_cli import run_cli

from mixer_cli.config import resolve
from mixer_cli.core.distributed import make_mesh
from mixer_cli.core.errors import DataError
from mixer_cli.data import EvalBatches, Preprocessing, open_dataset
from mixer_cli.data.digit_scenes import scenes
from mixer_cli.data.sources import IGNORE
from mixer_cli.evals.iou import score_batch
from mixer_cli.models import create_model, registry, segment_head
from mixer_cli.models.segment_head import build_segmenter
from mixer_cli.weights.arrays import write_npz

QUICK = [
    "--steps",
    "4",
    "--set",
    "train.log_every=2",
    "--set",
    "train.checkpoint_every=4",
    "--set",
    "optim.warmup_steps=1",
]


def labelled(masks: np.ndarray) -> int:
    return int((np.asarray(masks) != IGNORE).sum())


def test_digit_scenes_train_evaluate_draw_and_resume(capsys, tmp_path) -> None:
    workdir = tmp_path / "run"
    argv = ["segment", "--workdir", str(workdir), "--examples", "3", *QUICK]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    results = json.loads((workdir / "results.json").read_text())
    assert results["command"] == "segment" and results["head"] == "segment"
    assert results["dataset"] == "digit-scenes" and results["step"] == 4
    # Every labelled pixel of the 500 test scenes, scored once (ignored rims left out).
    assert results["test/pixels"] == labelled(scenes("test")[1])
    assert 0 <= results["test/miou"] <= 1 and 0 <= results["test/pixel_accuracy"] <= 1
    assert "test/iou_background" in results and "test/miou" in out
    figure = workdir / "segmentation.png"
    assert figure.stat().st_size > 10_000 and str(figure) in out
    with np.load(workdir / "params.npz") as archive:
        assert {k.split("/")[0] for k in archive.files} == {"backbone", "segment_head"}
    code, _, err = run_cli(capsys, *argv)  # a finished run reports its results again
    assert code == 0 and "has finished its 4 steps" in " ".join(err.split())
    assert json.loads((workdir / "results.json").read_text())["test/miou"] == results["test/miou"]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    """Our N/4 classification checkpoint at 16 px (10 classes)."""
    path = tmp_path_factory.mktemp("classifier") / "n4.npz"
    model = create_model("N/4", num_classes=10)
    write_npz(model.init(jax.random.key(3), jnp.zeros((1, 16, 16, 3)))["params"], path)
    return path


def test_a_warm_start_at_twice_the_resolution_from_the_command(capsys, tmp_path, classifier):
    workdir = tmp_path / "warm"
    code, _, err = run_cli(
        capsys, "segment", "--init", str(classifier), "--resolution", "32",
        "--workdir", str(workdir), "--examples", "0", *QUICK,
    )  # fmt: skip
    assert code == 0, err
    results = json.loads((workdir / "results.json").read_text())
    assert (results["resolution"], results["grid_factor"], results["native_resolution"]) == (
        32, 2, 16,
    )  # fmt: skip
    assert results["init"] == str(classifier) and not (workdir / "segmentation.png").exists()


@pytest.mark.parametrize("factor", [1, 2])
def test_a_warm_start_carries_the_backbone_and_a_zero_head(classifier, factor) -> None:
    config = resolve(
        "segment", None, {"model.resolution": 16 * factor, "model.grid_factor": factor}
    )
    model = build_segmenter(registry.get(config.model.family), config.model, classes=11)
    r = 16 * factor
    fresh = model.init(jax.random.key(0), jnp.zeros((1, r, r, 3)))["params"]
    params = segment_head.warm_start(registry.get("mixer"), str(classifier), fresh)
    np.testing.assert_array_equal(
        params["segment_head"]["dense"]["kernel"], fresh["segment_head"]["dense"]["kernel"]
    )
    images = jax.random.uniform(jax.random.key(1), (2, r, r, 3), minval=-1, maxval=1)
    scores, out = model.apply({"params": params}, images)
    assert scores.shape == (2, r, r, 11) and not np.asarray(scores).any()
    with np.load(classifier) as archive:
        stem = archive["stem/kernel"]
    np.testing.assert_array_equal(params["backbone"]["stem"]["kernel"], stem)
    if factor == 1:  # the classifier's own tokens, bit for bit
        classifier_model = create_model("N/4", num_classes=10)
        with np.load(classifier) as archive:
            flat = {tuple(k.split("/")): archive[k] for k in archive.files}
        from flax import traverse_util

        _, want = classifier_model.apply({"params": traverse_util.unflatten_dict(flat)}, images)
        np.testing.assert_array_equal(np.asarray(out["tokens"]), np.asarray(want["tokens"]))


def test_a_segmentation_model_is_a_backbone_elsewhere_and_keeps_its_head_here(tmp_path):
    """Its file read by the classification commands is a headless Mixer (the backbone's
    arrays); `mixer segment --init` continues from it whole where the classes match (the
    same scores, bit for bit), and puts a fresh head on it for other classes."""
    from mixer_cli.models.checkpoints import read_params
    from mixer_cli.weights.arrays import flat_params

    config = resolve("segment", None, {"model.resolution": 16})
    model = build_segmenter(registry.get(config.model.family), config.model, classes=11)
    params = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))["params"]
    head = params["segment_head"]["dense"]
    head["kernel"] = jax.random.normal(jax.random.key(1), head["kernel"].shape)  # not zero
    path = tmp_path / "segmenter.npz"
    write_npz(params, path)

    flat, _ = read_params(path)
    assert flat.keys() == flat_params(params["backbone"]).keys()
    loaded = registry.load_checkpoint(path)
    assert (loaded.family, loaded.num_classes, loaded.resolution) == ("mixer", 0, 16)

    fresh = model.init(jax.random.key(2), jnp.zeros((1, 16, 16, 3)))["params"]
    continued = segment_head.warm_start(registry.get("mixer"), str(path), fresh)
    images = jax.random.uniform(jax.random.key(3), (2, 16, 16, 3), minval=-1, maxval=1)
    np.testing.assert_array_equal(
        np.asarray(model.apply({"params": continued}, images)[0]),
        np.asarray(model.apply({"params": params}, images)[0]),
    )
    other = build_segmenter(registry.get(config.model.family), config.model, classes=3)
    fresh3 = other.init(jax.random.key(2), jnp.zeros((1, 16, 16, 3)))["params"]
    restarted = segment_head.warm_start(registry.get("mixer"), str(path), fresh3)
    np.testing.assert_array_equal(
        restarted["segment_head"]["dense"]["kernel"], fresh3["segment_head"]["dense"]["kernel"]
    )
    np.testing.assert_array_equal(
        restarted["backbone"]["stem"]["kernel"], params["backbone"]["stem"]["kernel"]
    )


def test_scores_are_resized_back_and_padding_and_ignore_count_nowhere() -> None:
    # Image 0: 4 x 4, scored from a 2 x 2 map of quadrants (class = quadrant index);
    # image 1: 2 x 2 at the model's resolution; row 2 is padding.
    scores = np.zeros((3, 2, 2, 4), np.float32)
    for q in range(4):
        scores[0, q // 2, q % 2, q] = 5.0
    scores[1, :, :, 1] = 1.0  # predicts class 1 everywhere
    scores[2, :, :, 3] = 9.0  # padding: must not count
    truth = np.full((3, 4, 4), IGNORE, np.uint8)
    truth[0] = [[0, 0, 1, 1], [0, 2, 1, 1], [2, 2, 3, 3], [2, 2, 3, IGNORE]]
    truth[1, :2, :2] = [[1, 0], [1, 1]]
    sizes = np.array([[4, 4], [2, 2], [0, 0]])
    matrix = score_batch(scores, truth, sizes, np.array([True, True, False]))
    want = np.zeros((4, 4), int)
    for t, p in [(0, 0)] * 3 + [(2, 0)] + [(1, 1)] * 4 + [(2, 2)] * 4 + [(3, 3)] * 3:
        want[t, p] += 1
    want[1, 1] += 3  # image 1: three 1s predicted 1
    want[0, 1] += 1  # and its 0 predicted 1
    np.testing.assert_array_equal(matrix, want)


def test_mocked_oxford_pets_trains_and_scores_every_non_border_pixel(capsys, tmp_path) -> None:
    sizes = {"train": 16, "test": 6}
    with mock_pets(tmp_path / "tfds", sizes) as data_dir:
        workdir = tmp_path / "pets"
        code, _, err = run_cli(
            capsys, "segment", "--data", "oxford_iiit_pet", "--data-dir", str(data_dir),
            "--resolution", "16", "--batch-size", "8", "--set", "train.eval_batch_size=8",
            "--workdir", str(workdir), "--examples", "2", *QUICK,
        )  # fmt: skip
    assert code == 0, err
    results = json.loads((workdir / "results.json").read_text())
    test = [pet_example(1000 + i)["segmentation_mask"] for i in range(sizes["test"])]
    assert results["test/pixels"] == sum(int((t != 3).sum()) for t in test)
    assert results["num_classes"] == 2
    assert {"test/iou_pet", "test/iou_background"} <= set(results)
    assert (workdir / "segmentation.png").is_file()


def test_a_mask_folder_reads_classes_masks_and_sizes(tmp_path) -> None:
    shapes = {"train": [(12, 12), (16, 10), (9, 14)], "test": [(20, 16), (8, 8)]}
    masks = write_mask_folder(tmp_path / "seg", shapes, classes=3)
    source = open_dataset(f"folder:{tmp_path / 'seg'}", task="segment")
    assert source.task == "segment" and source.num_classes == 3
    (tmp_path / "seg" / "classes.txt").write_text("sky\nroad\ncar\ntree\n")
    source = open_dataset(f"folder:{tmp_path / 'seg'}", task="segment")
    assert source.classes == ("sky", "road", "car", "tree") and source.num_classes == 4
    (batch,) = EvalBatches(
        source, "test", Preprocessing(resolution=8), 8, make_mesh()
    ).host_batches()
    got = {tuple(batch["size"][i]): batch["truth"][i] for i in range(2)}
    for mask in masks["test"]:
        h, w = mask.shape
        np.testing.assert_array_equal(got[(h, w)][:h, :w], mask)
        assert (got[(h, w)][h:] == IGNORE).all() and (got[(h, w)][:, w:] == IGNORE).all()
    assert not batch["mask"][2:].any() and batch["mask"][:2].all()


def test_a_mask_folder_refuses_what_it_cannot_score(tmp_path) -> None:
    root = tmp_path / "seg"
    write_mask_folder(root, {"train": [(8, 8), (8, 8)]}, classes=3)
    (root / "classes.txt").write_text("a\nb\n")
    with pytest.raises(DataError, match="has label 2, outside the 2 classes"):
        open_dataset(f"folder:{root}", task="segment")
    (root / "classes.txt").unlink()
    write_image(root / "train" / "masks" / "1.png", np.zeros((8, 6, 1), np.uint8))
    with pytest.raises(DataError, match="is 8x6 but its image is 8x8"):
        open_dataset(f"folder:{root}", task="segment")
    write_image(root / "train" / "masks" / "1.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DataError, match="an RGB PNG"):
        open_dataset(f"folder:{root}", task="segment")
    (root / "train" / "masks" / "1.png").unlink()
    with pytest.raises(DataError, match=r"1 image\(s\) of .* have no mask"):
        open_dataset(f"folder:{root}", task="segment")
