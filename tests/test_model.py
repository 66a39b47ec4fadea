"""The Flax core against an independent NumPy statement of the math, and its options."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from numpy_mixer import numpy_mixer

from mixer_cli.core.errors import ConfigError
from mixer_cli.models import create_model, parse_variant, spec_from_dims

# One tiny architecture for every test here, so each shape compiles once.
SPEC = spec_from_dims(
    patch_size=4, num_blocks=3, hidden_dim=16, tokens_mlp_dim=8, channels_mlp_dim=32
)
RES = 16


def images(batch: int = 4, seed: int = 0) -> jax.Array:
    return jax.random.uniform(jax.random.key(seed), (batch, RES, RES, 3), minval=-1, maxval=1)


def randomized(params: dict, seed: int = 1, scale: float = 0.3) -> dict:
    """Random values everywhere (the zero head would hide most of the math)."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    new = [
        scale * jax.random.normal(k, x.shape) + (x if x.ndim == 1 else 0)
        for k, x in zip(keys, leaves, strict=True)
    ]
    return jax.tree_util.tree_unflatten(tree, new)


def flat_numpy(params: dict) -> dict[str, np.ndarray]:
    return {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(params).items()}


def test_parameter_tree_has_the_official_names() -> None:
    model = create_model(SPEC, num_classes=5)
    params = model.init(jax.random.key(0), images())["params"]
    expected = {
        "stem/kernel",
        "stem/bias",
        "pre_head_layer_norm/scale",
        "pre_head_layer_norm/bias",
        "head/kernel",
        "head/bias",
    }
    for i in range(3):
        for ln in ("LayerNorm_0", "LayerNorm_1"):
            expected |= {f"MixerBlock_{i}/{ln}/scale", f"MixerBlock_{i}/{ln}/bias"}
        for mix in ("token_mixing", "channel_mixing"):
            for dense in ("Dense_0", "Dense_1"):
                expected |= {
                    f"MixerBlock_{i}/{mix}/{dense}/kernel",
                    f"MixerBlock_{i}/{mix}/{dense}/bias",
                }
    assert set(flat_numpy(params)) == expected
    assert params["stem"]["kernel"].shape == (4, 4, 3, 16)
    assert params["MixerBlock_0"]["token_mixing"]["Dense_0"]["kernel"].shape == (16, 8)
    assert params["MixerBlock_0"]["channel_mixing"]["Dense_1"]["kernel"].shape == (32, 16)


# Small inputs make the token variance tiny, where LayerNorm's epsilon (1e-6) matters.
@pytest.mark.parametrize("input_scale", [1.0, 1e-3])
def test_forward_equals_numpy_reference(input_scale: float) -> None:
    model = create_model(SPEC, num_classes=5)
    x = images() * input_scale
    params = randomized(model.init(jax.random.key(0), x)["params"])
    logits, out = jax.jit(lambda p, x: model.apply({"params": p}, x))(params, x)
    ref_logits, ref_pre = numpy_mixer(flat_numpy(params), np.asarray(x))
    np.testing.assert_allclose(np.asarray(out["pre_logits"]), ref_pre, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(logits), ref_logits, atol=1e-5, rtol=1e-5)


def test_head_is_zero_initialised_with_the_given_bias() -> None:
    model = create_model(SPEC, num_classes=5, head_bias_init=-6.9)
    params = model.init(jax.random.key(0), images())["params"]
    assert not np.any(np.asarray(params["head"]["kernel"]))
    logits, _ = model.apply({"params": params}, images())
    np.testing.assert_allclose(np.asarray(logits), -6.9, rtol=1e-6)


def test_no_head_returns_pre_logits() -> None:
    model = create_model(SPEC, num_classes=0)
    params = model.init(jax.random.key(0), images())["params"]
    assert "head" not in params
    logits, out = model.apply({"params": params}, images())
    assert logits.shape == (4, 16)
    np.testing.assert_array_equal(np.asarray(logits), np.asarray(out["pre_logits"]))


def test_stochastic_depth_grows_from_zero_at_the_first_block() -> None:
    model = create_model(SPEC, num_classes=5, stoch_depth=0.9)
    x = images(batch=64)
    params = randomized(model.init(jax.random.key(0), x)["params"])
    _, evaluated = model.apply({"params": params}, x)
    _, trained = model.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(3)})
    # Block 0 has rate 0: identical to evaluation.
    np.testing.assert_array_equal(np.asarray(trained["block_0"]), np.asarray(evaluated["block_0"]))
    # The last block has rate 0.9 on each branch: most examples pass it unchanged.
    unchanged = np.all(
        np.asarray(trained["block_2"]) == np.asarray(trained["block_1"]), axis=(1, 2)
    )
    assert 0.6 < unchanged.mean() < 1.0


def test_dropout_acts_in_training_only() -> None:
    model = create_model(SPEC, num_classes=5, dropout=0.5)
    x = images()
    params = randomized(model.init(jax.random.key(0), x)["params"])
    eval_a, _ = model.apply({"params": params}, x)
    eval_b, _ = model.apply({"params": params}, x)
    train, _ = model.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(1)})
    np.testing.assert_array_equal(np.asarray(eval_a), np.asarray(eval_b))
    assert not np.allclose(np.asarray(train), np.asarray(eval_a), atol=1e-3)


def test_bfloat16_computes_in_bf16_with_float32_params() -> None:
    x = images()
    f32 = create_model(SPEC, num_classes=5)
    bf16 = create_model(SPEC, num_classes=5, dtype="bfloat16")
    params = randomized(f32.init(jax.random.key(0), x)["params"])
    assert all(
        p.dtype == jnp.float32
        for p in jax.tree_util.tree_leaves(bf16.init(jax.random.key(0), x)["params"])
    )
    want, _ = f32.apply({"params": params}, x)
    got, out = bf16.apply({"params": params}, x)
    assert got.dtype == jnp.float32 and out["block_0"].dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=0.1, rtol=0.05)
    assert not np.array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": -1}, "classes"),
        ({"dropout": 1.0}, "dropout"),
        ({"stoch_depth": -0.1}, "stochastic depth"),
        ({"dtype": "float16"}, "dtype"),
    ],
)
def test_bad_model_options_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_model("N/4", **kwargs)


def test_images_that_do_not_tile_are_refused() -> None:
    model = create_model(parse_variant("N/4"))
    with pytest.raises(ConfigError, match="do not tile"):
        model.init(jax.random.key(0), jnp.zeros((1, 18, 18, 3)))
