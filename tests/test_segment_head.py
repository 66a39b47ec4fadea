"""The dense head: blocks land on their patch's pixels, a warm start
from a classification checkpoint keeps the backbone exactly, and mIoU counts as by hand."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixer_cli.core.errors import ConfigError
from mixer_cli.data.sources import IGNORE
from mixer_cli.evals.iou import confusion, summary
from mixer_cli.models import create_model
from mixer_cli.models.segment_head import Segmenter, assemble


def test_each_tokens_block_fills_its_own_patch() -> None:
    side, p, k = 3, 2, 2  # a 3 x 3 grid of 2 x 2 patches: 6 x 6 pixels, 2 classes
    scores = np.zeros((1, side * side, p * p * k), np.float32)
    for t in range(side * side):
        for dy in range(p):
            for dx in range(p):
                for c in range(k):
                    scores[0, t, (dy * p + dx) * k + c] = 1000 * t + 10 * (dy * p + dx) + c
    image = np.asarray(assemble(jnp.asarray(scores), 6, 6))
    for y in range(6):
        for x in range(6):
            t, within = (y // p) * side + x // p, (y % p) * p + x % p
            assert list(image[0, y, x]) == [1000 * t + 10 * within, 1000 * t + 10 * within + 1]
    with pytest.raises(ConfigError, match="do not tile"):
        assemble(jnp.asarray(scores), 6, 7)


def test_a_warm_start_keeps_the_classification_backbone_exactly() -> None:
    classifier = create_model("N/4", num_classes=10)
    images = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3), minval=-1, maxval=1)
    trained = classifier.init(jax.random.key(1), images)["params"]
    segmenter = Segmenter(create_model("N/4", num_classes=0), classes=3, block=4)
    params = segmenter.init(jax.random.key(2), images)["params"]
    params = {**params, "backbone": {k: v for k, v in trained.items() if k != "head"}}
    scores, out = segmenter.apply({"params": params}, images)
    assert scores.shape == (2, 16, 16, 3)
    assert not np.asarray(scores).any()  # a zero head: neutral scores at the start
    _, want = classifier.apply({"params": trained}, images)
    np.testing.assert_array_equal(np.asarray(out["tokens"]), np.asarray(want["tokens"]))
    np.testing.assert_allclose(out["tokens"].mean(axis=1), want["pre_logits"], atol=1e-6)


def test_iou_of_a_hand_counted_example() -> None:
    true = jnp.array([[0, 0, 1, 1], [2, 2, IGNORE, 1]])
    predicted = jnp.array([[0, 1, 1, 1], [2, 0, 2, 0]])
    matrix = confusion(predicted, true, classes=3)
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [1, 2, 0], [1, 0, 1]])
    got = summary(matrix)
    # IoU: 0 -> 1 / (2 + 3 - 1) = 1/4; 1 -> 2 / (3 + 3 - 2) = 1/2; 2 -> 1 / (2 + 1 - 1) = 1/2
    assert got["iou"] == pytest.approx([0.25, 0.5, 0.5])
    assert got["miou"] == pytest.approx(5 / 12) and got["pixel_accuracy"] == pytest.approx(4 / 7)
    assert got["pixels"] == 7  # the ignored pixel counts nowhere
    padded = confusion(predicted, true, 3, valid=jnp.array([[True] * 4, [False] * 4]))
    np.testing.assert_array_equal(padded, [[1, 1, 0], [0, 2, 0], [0, 0, 0]])
    assert summary(padded)["iou"][2] is None  # absent everywhere: not in the mean


def test_digit_scenes_label_exactly_the_pixels_their_digits_paint() -> None:
    from mixer_cli.data.digit_scenes import NUM_CLASSES, THRESHOLD, compose, scenes

    rng = np.random.default_rng(0)
    digits = rng.integers(0, 256, (5, 8, 8)).astype(np.uint8)
    digits[:, :2] = 0  # some background inside each digit's box
    labels = np.arange(5)
    images, masks = compose(digits, labels, count=20, canvas=24, seed=3)
    assert images.shape == (20, 24, 24, 3) and masks.shape == (20, 24, 24)
    gray = images[..., 0]
    assert (masks[gray == 0] == 0).all()  # background: black and labelled 0
    assert (gray[masks == 0] == 0).all()
    bright, faint = gray > THRESHOLD, (gray > 0) & (gray <= THRESHOLD)
    assert (masks[bright] >= 1).all() and (masks[bright] <= 5).all()
    assert (masks[faint] == IGNORE).all()
    again = compose(digits, labels, count=20, canvas=24, seed=3)
    np.testing.assert_array_equal(again[1], masks)  # fixed by its seed

    test_images, test_masks = scenes("test")
    assert test_images.shape == (500, 32, 32, 3)
    assert set(np.unique(test_masks)) <= set(range(NUM_CLASSES)) | {IGNORE}


def test_crop_flip_and_resize_keep_image_and_mask_aligned() -> None:
    import tensorflow as tf

    from mixer_cli.data.segment_transforms import resize_mask, train_pair

    # Each pixel says where it is: image channels (y, x) * 3, mask = a label per 4x4 cell.
    side = 64
    ys, xs = np.mgrid[0:side, 0:side]
    image = np.stack([ys * 3, xs * 3, np.zeros_like(ys)], axis=-1).astype(np.uint8)
    mask = ((ys // 4) * 16 + xs // 4).astype(np.int32)
    flipped_any = False
    for seed in range(6):
        key = tf.constant([seed, 7], tf.int64)
        got_image, got_mask = (t.numpy() for t in train_pair(image, mask, key, resolution=32))
        cell_y, cell_x = got_mask // 16, got_mask % 16
        # where the image says pixel (y, x) came from, the mask names that pixel's cell
        src_y, src_x = got_image[..., 0] / 3, got_image[..., 1] / 3
        assert np.abs(src_y / 4 - (cell_y + 0.5)).max() <= 1.0, seed
        assert np.abs(src_x / 4 - (cell_x + 0.5)).max() <= 1.0, seed
        flipped_any |= bool(got_image[0, 0, 1] > got_image[0, -1, 1])
    assert flipped_any  # some seed mirrored, and image and mask went together
    labels = resize_mask(tf.constant(mask), 128, 96).numpy()
    assert set(np.unique(labels)) <= set(np.unique(mask))  # nearest: no invented labels


def test_scene_batches_carry_each_images_own_mask_and_resume_alike() -> None:
    from itertools import islice

    from mixer_cli.core.distributed import make_mesh
    from mixer_cli.data.digit_scenes import NUM_CLASSES, DigitScenesSource
    from mixer_cli.data.pipeline import TrainBatches
    from mixer_cli.data.preprocess import Preprocessing

    source, mesh = DigitScenesSource(), make_mesh()
    plain = Preprocessing(resolution=32, crop="resize")  # the whole scene, as it is
    batches = TrainBatches(source, "train", plain, 16, 0, mesh)
    batch = next(batches.host_batches())
    assert batch["image"].shape == (16, 32, 32, 3)
    assert batch["label"].shape == (16, 32, 32, NUM_CLASSES)
    images, masks = source._raw, source._labels  # every scene, to find each batch row's own
    for image, label in zip(batch["image"], batch["label"], strict=True):
        pixels = np.round((image + 1) * 127.5).astype(np.uint8)
        (row,) = np.flatnonzero((images == pixels).all(axis=(1, 2, 3)))[:1]
        mask = masks[row]
        labelled = label.sum(-1) > 0
        np.testing.assert_array_equal(labelled, mask != IGNORE)  # ignored: all-zero rows
        np.testing.assert_array_equal(label.argmax(-1)[labelled], mask[labelled])
    later = TrainBatches(source, "train", plain, 16, 0, mesh, start_step=3)
    want = list(islice(batches.host_batches(), 4))[3]
    got = next(later.host_batches())
    np.testing.assert_array_equal(got["label"], want["label"])


def test_the_loss_of_per_pixel_labels_is_the_mean_over_labelled_pixels() -> None:
    from mixer_cli.evals.losses import per_example_loss

    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.standard_normal((2, 4, 4, 3)), jnp.float32)
    classes = rng.integers(0, 3, (2, 4, 4))
    labels = np.eye(3, dtype=np.float32)[classes]
    labels[0, 0, :2] = 0  # two ignored pixels of the first example
    got = per_example_loss(logits, jnp.asarray(labels), "softmax")
    log_p = np.asarray(jax.nn.log_softmax(logits))
    pixel = -(labels * log_p).sum(-1)
    np.testing.assert_allclose(got, [pixel[0].sum() / 14, pixel[1].sum() / 16], rtol=1e-5)
    flat = per_example_loss(logits[:, 1, 1], jnp.asarray(labels[:, 1, 1]), "softmax")
    np.testing.assert_allclose(flat, pixel[:, 1, 1], rtol=1e-5)  # classification: as before


def test_a_segmenter_builds_on_any_family_with_tokens_and_refuses_one_without() -> None:
    from mixer_cli.config import model_config
    from mixer_cli.models import registry

    def build_segmenter(m, classes):  # the registry builds the head a config names
        return registry.build(dataclasses.replace(m, head="segment"), classes)

    images = jnp.zeros((1, 16, 16, 3))
    for items in ([], ["model.stem=conv", "model.pattern=MAMA"]):
        segmenter = build_segmenter(model_config("N/4", 16, "float32", items), classes=5)
        scores, _ = jax.eval_shape(
            lambda x, s=segmenter: s.init_with_output(jax.random.key(0), x)[0], images
        )
        assert scores.shape == (1, 16, 16, 5) and segmenter.block == 4
    with pytest.raises(ConfigError, match="no token grid"):
        build_segmenter(model_config("ResNet14", 16, "float32", ["model.family=resnet"]), 5)
