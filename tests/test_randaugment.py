"""RandAugment: shapes, stateless determinism (eager == tf.data), exact per-op properties; the
device version's ops against these, its draws' distribution."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixer_cli.core.tf_cpu import tf
from mixer_cli.data.device_randaugment import DEVICE_OPS, apply, cutout_at, draws
from mixer_cli.data.device_randaugment import randaugment as device_randaugment
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
    assert list(DEVICE_OPS) == list(OPS)  # the same ops in the same order: index = op


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


# The device ops (device_augment.py) against these, on the same image and argument.
GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")
AT_INTEGER_PIXELS = {  # every sample lands on a pixel (or, shear 0.5, exactly between two)
    "Rotate": [90.0, -90.0, 180.0],
    "ShearX": [0.5, -1.0],
    "ShearY": [0.5, -1.0],
    "TranslateX": [5.0, -3.0, 150.0],
    "TranslateY": [5.0, -3.0, 150.0],
}


@pytest.mark.parametrize("name", [name for name in OPS if name != "Cutout"])
def test_device_op_gives_the_host_ops_pixels(name: str) -> None:
    """The same integer and fixed-point maths: the same pixels. Geometric ops are exact at
    integer pixels; elsewhere a sample that falls exactly between two pixels may round the
    other way under another float evaluation order (none do on this CPU). The op as a
    layer applies it: the shared resampling, then the op's branch."""
    device_op, index = jax.jit(apply), list(DEVICE_OPS).index(name)
    image = _image(24, 40, 5)
    args = [level_to_arg(m)[name] for m in (15, 7, 2.5)]
    args += [-a for a in args] if name in SIGNED_OPS else []
    for arg in args + AT_INTEGER_PIXELS.get(name, []):
        host = _op(name, image, arg)
        device = device_op(jnp.asarray(image), index, jnp.float32(arg), jax.random.key(0))
        device = np.asarray(device)
        assert device.dtype == np.uint8 and device.shape == image.shape
        if name in GEOMETRIC and arg not in AT_INTEGER_PIXELS[name]:
            assert (device != host).any(axis=-1).mean() < 0.005, (name, arg)
        else:
            np.testing.assert_array_equal(device, host, err_msg=f"{name} {arg}")


def test_device_cutout_fills_the_host_ops_square() -> None:
    """Cutout's centre is a draw (each side its own): at the host's centre, the same square."""
    image = _image(24, 40, 6, 0, 100)  # no 128 in the image: the square is where 128 is
    for i in range(4):
        host = OPS["Cutout"](tf.constant(image), 4.0, tf.constant([i, 1], tf.int64)).numpy()
        rows, cols = np.nonzero((host == 128).all(axis=-1))
        cy = rows.min() + 4 if rows.min() > 0 else rows.max() + 1 - 4
        cx = cols.min() + 4 if cols.min() > 0 else cols.max() + 1 - 4
        np.testing.assert_array_equal(np.asarray(cutout_at(jnp.asarray(image), 4, cy, cx)), host)


def test_device_draws_are_uniform_over_the_ops_and_signs() -> None:
    """4096 layers' draws: each op 1/16 (chi-square, 15 degrees of freedom, under 37.7: p <
    0.001 for a uniform draw), a signed op's argument negated half the time, independently."""
    index, negate, _ = jax.jit(jax.vmap(draws))(jax.random.split(jax.random.key(3), 4096))
    index, negate = np.asarray(index), np.asarray(negate)
    counts = np.bincount(index, minlength=16)
    assert counts.shape == (16,) and ((counts - 256.0) ** 2 / 256.0).sum() < 37.7
    assert abs(negate.sum() - 2048) < 4 * 32  # 4 standard deviations
    for op in range(16):  # the sign does not depend on the op
        assert abs(negate[index == op].mean() - 0.5) < 4 * 0.5 / np.sqrt(counts[op])


def test_device_randaugment_draws_per_example_from_its_key() -> None:
    """vmapped over a batch: each example its own ops; the same key, the same pixels."""
    images = jnp.asarray(np.stack([_image(32, 32, 8, 40, 200)] * 16))
    augment = jax.jit(jax.vmap(lambda image, key: device_randaugment(image, 1, 1, key)))
    keys = jax.random.split(jax.random.key(0), 16)
    first, again = np.asarray(augment(images, keys)), np.asarray(augment(images, keys))
    np.testing.assert_array_equal(first, again)
    assert len({x.tobytes() for x in first}) >= 8  # 16 draws of 16 ops
    other = np.asarray(augment(images, jax.random.split(jax.random.key(1), 16)))
    assert not np.array_equal(first, other)
