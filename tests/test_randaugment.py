"""RandAugment: shapes, stateless determinism (eager == tf.data), and exact per-op properties."""

from __future__ import annotations

import numpy as np
import pytest

from mixer_cli.core.tf_cpu import tf
from mixer_cli.data.randaugment import OPS, SIGNED_OPS, level_to_arg, randaugment

SEED = tf.constant([7, 11], tf.int64)


def _image(h: int, w: int, seed: int = 0, lo: int = 0, hi: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).integers(lo, hi, (h, w, 3), dtype=np.uint8)


def _run(image: np.ndarray, seed: tf.Tensor, num_layers: int = 2, magnitude: float = 15):
    return randaugment(tf.constant(image), num_layers, magnitude, seed).numpy()


@pytest.mark.parametrize("shape", [(32, 32), (24, 40), (41, 17)])
def test_dtype_and_shape_preserved(shape: tuple[int, int]) -> None:
    image = _image(*shape)
    for i in range(6):
        out = randaugment(tf.constant(image), 2, 15, tf.constant([i, 3]))
        assert out.dtype == tf.uint8
        assert tuple(out.shape) == (*shape, 3)


def test_same_seed_same_output_and_seeds_matter() -> None:
    # Magnitude 5: at 15 a translation is 150 px, which would blank images this small. A narrow
    # value range, so that AutoContrast and Equalize are not no-ops.
    shapes = [(64, 64), (56, 80), (80, 56)]
    for k, (h, w) in enumerate(shapes):
        image = _image(h, w, k, 40, 200)
        outs = [_run(image, tf.constant([k, i]), magnitude=5) for i in range(8)]
        for i in range(8):
            np.testing.assert_array_equal(outs[i], _run(image, tf.constant([k, i]), magnitude=5))
        assert len({o.tobytes() for o in outs}) >= 7  # different seeds, different results


def test_int32_and_int64_seeds() -> None:
    # Both are accepted; note that they give different (each deterministic) streams.
    image = _image(16, 16)
    a = _run(image, tf.constant([5, 6], tf.int32))
    b = _run(image, tf.constant([5, 6], tf.int64))
    assert a.dtype == b.dtype == np.uint8 and a.shape == b.shape


def test_eager_equals_tf_data_parallel_map() -> None:
    n = 40  # 80 op draws: every op is picked at least once with these seeds
    images = np.stack([_image(24, 40, i) for i in range(n)])
    seeds = np.stack([np.arange(n), np.arange(n) * 3 + 1], axis=1).astype(np.int64)

    def augment(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        return randaugment(image, 2, 15, seed)

    ds = tf.data.Dataset.from_tensor_slices((images, seeds))
    ds = ds.map(augment, num_parallel_calls=4, deterministic=True)
    mapped = [x.numpy() for x in ds]
    for image, seed, got in zip(images, seeds, mapped, strict=True):
        np.testing.assert_array_equal(got, _run(image, tf.constant(seed)))


def test_graph_with_dynamic_shape_equals_eager() -> None:
    spec = [tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([2], tf.int64)]
    graph = tf.function(
        lambda im, s: randaugment(im, 2, 20, s), input_signature=spec, autograph=False
    )
    for i, shape in enumerate([(24, 40), (33, 19)]):
        image = _image(*shape, i)
        seed = tf.constant([i, 42], tf.int64)
        np.testing.assert_array_equal(graph(image, seed).numpy(), _run(image, seed, 2, 20))


def test_zero_layers_is_identity_and_zero_magnitude_runs() -> None:
    image = _image(24, 40)
    np.testing.assert_array_equal(_run(image, SEED, num_layers=0), image)
    out = _run(image, SEED, magnitude=0)
    assert out.dtype == np.uint8 and out.shape == image.shape
    with pytest.raises(ValueError):
        randaugment(tf.constant(image), -1, 15, SEED)


def test_level_to_arg_matches_reference() -> None:
    args = level_to_arg(15)
    assert args["Rotate"] == pytest.approx(45.0)
    assert args["ShearX"] == args["ShearY"] == pytest.approx(0.45)
    assert args["TranslateX"] == args["TranslateY"] == pytest.approx(150.0)
    assert args["Color"] == args["Contrast"] == args["Brightness"] == pytest.approx(2.8)
    assert args["Sharpness"] == pytest.approx(2.8)
    assert (args["Posterize"], args["Solarize"], args["SolarizeAdd"]) == (6, 384, 165)
    assert args["Cutout"] == 60
    assert level_to_arg(10)["Rotate"] == pytest.approx(30.0)
    assert level_to_arg(0)["Color"] == pytest.approx(0.1)
    assert len(OPS) == 16 and set(OPS) >= SIGNED_OPS


@pytest.mark.parametrize("name", list(OPS))
def test_each_op_shape_dtype_and_graph_equals_eager(name: str) -> None:
    image = tf.constant(_image(24, 40, 5))
    op = OPS[name]
    graph = tf.function(op, autograph=False)
    for magnitude in [15, 7]:
        arg = level_to_arg(magnitude)[name]
        for signed in [arg, -arg] if name in SIGNED_OPS else [arg]:
            out = op(image, signed, SEED)
            assert out.dtype == tf.uint8 and tuple(out.shape) == (24, 40, 3)
            fed = graph(image, tf.constant(signed), SEED)  # argument as a graph input
            baked = tf.function(lambda im, a=signed: op(im, a, SEED), autograph=False)(image)
            np.testing.assert_array_equal(out.numpy(), fed.numpy())
            np.testing.assert_array_equal(out.numpy(), baked.numpy())  # constant-folded


def _op(name: str, image: np.ndarray, arg: float) -> np.ndarray:
    return OPS[name](tf.constant(image), arg, SEED).numpy()


def test_exact_op_properties() -> None:
    image = _image(24, 40, 9)
    np.testing.assert_array_equal(_op("Invert", _op("Invert", image, 0), 0), image)
    np.testing.assert_array_equal(_op("Solarize", image, 256), image)
    np.testing.assert_array_equal(_op("Solarize", image, 0), 255 - image)
    np.testing.assert_array_equal(_op("SolarizeAdd", image, 0), image)
    np.testing.assert_array_equal(_op("Posterize", image, 8), image)
    assert not np.any(_op("Posterize", image, 4) % 16)
    for name in ["Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout"]:
        np.testing.assert_array_equal(_op(name, image, 0.0), image, err_msg=name)
    for name in ["Color", "Contrast", "Brightness", "Sharpness"]:
        np.testing.assert_array_equal(_op(name, image, 1.0), image, err_msg=name)
    np.testing.assert_array_equal(_op("Brightness", image, 0.0), np.zeros_like(image))
    gray = np.repeat(image[..., :1], 3, axis=-1)
    np.testing.assert_array_equal(_op("Color", gray, 2.8), gray)  # luma of (v, v, v) is v
    flat = np.full((9, 7, 3), 91, np.uint8)
    for name in ["Contrast", "Sharpness"]:
        np.testing.assert_array_equal(_op(name, flat, 2.8), flat, err_msg=name)
    np.testing.assert_array_equal(_op("Contrast", image, 0.0).std(axis=(0, 1)), np.zeros(3))


def test_geometry_conventions_and_fill() -> None:
    image = _image(24, 40, 4)
    np.testing.assert_array_equal(_op("Rotate", image, 180.0), image[::-1, ::-1])
    square = _image(17, 17, 4)
    np.testing.assert_array_equal(_op("Rotate", square, 90.0), np.rot90(square, k=1))
    shifted = _op("TranslateX", image, 5.0)
    np.testing.assert_array_equal(shifted[:, :-5], image[:, 5:])
    assert np.all(shifted[:, -5:] == 128)
    shifted = _op("TranslateY", image, -3.0)
    np.testing.assert_array_equal(shifted[3:], image[:-3])
    assert np.all(shifted[:3] == 128)
    sheared = _op("ShearX", image, 0.5)
    np.testing.assert_array_equal(sheared[0], image[0])
    assert np.all(sheared[-1, -10:] == 128)
    assert np.all(_op("Cutout", image, 40) == 128)


def test_equalize_autocontrast_and_cutout() -> None:
    rng = np.random.default_rng(3)
    uniform = np.stack([rng.permutation(256).reshape(16, 16) for _ in range(3)], -1)
    uniform = uniform.astype(np.uint8)
    np.testing.assert_array_equal(_op("Equalize", uniform, 0), uniform)
    low = (np.arange(64 * 64 * 3).reshape(64, 64, 3) % 64 + 50).astype(np.uint8)
    eq = _op("Equalize", low, 0)
    assert eq.min() < 10 and eq.max() > 240  # a narrow histogram gets spread out
    stretched = _op("AutoContrast", low, 0)
    assert np.all(stretched.min(axis=(0, 1)) == 0) and np.all(stretched.max(axis=(0, 1)) >= 254)
    flat = np.full((8, 8, 3), 77, np.uint8)
    for name in ["AutoContrast", "Equalize"]:
        np.testing.assert_array_equal(_op(name, flat, 0), flat, err_msg=name)
    cut = _op("Cutout", _image(24, 40), 4)
    filled = np.all(cut == 128, axis=-1)
    assert 0 < filled.sum() <= 64
    rows, cols = np.nonzero(filled)
    assert rows.max() - rows.min() < 8 and cols.max() - cols.min() < 8
