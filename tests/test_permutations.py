"""The shuffle experiment's fixed permutations: bijections, invertible, patch structure."""

from __future__ import annotations

import numpy as np
import pytest

from mixer_cli.core.errors import ConfigError
from mixer_cli.core.tf_cpu import tf
from mixer_cli.data.permutations import make_permutation, permute_numpy
from mixer_cli.data.preprocess import to_model_input

IMAGE = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)


@pytest.mark.parametrize("mode", ["patch", "global"])
def test_permutation_is_a_seeded_bijection_and_its_inverse_restores(mode: str) -> None:
    idx = make_permutation(mode, 16, 4, seed=1)
    assert sorted(idx.tolist()) == list(range(256))
    assert np.array_equal(idx, make_permutation(mode, 16, 4, seed=1))
    assert not np.array_equal(idx, make_permutation(mode, 16, 4, seed=2))
    shuffled = permute_numpy(IMAGE, idx)
    assert not np.array_equal(shuffled, IMAGE)
    np.testing.assert_array_equal(permute_numpy(shuffled, np.argsort(idx)), IMAGE)


def test_patch_shuffle_moves_whole_patches_with_one_inner_permutation() -> None:
    p, grid = 4, 4
    idx = make_permutation("patch", 16, p, seed=3)
    source_rows, source_cols = np.divmod(idx.reshape(16, 16), 16)
    inner = None
    for qi in range(grid):
        for qj in range(grid):
            rows = source_rows[qi * p : (qi + 1) * p, qj * p : (qj + 1) * p]
            cols = source_cols[qi * p : (qi + 1) * p, qj * p : (qj + 1) * p]
            assert len(set((rows // p).ravel())) == 1 and len(set((cols // p).ravel())) == 1
            pattern = (rows % p) * p + cols % p  # where inside its patch each pixel came from
            inner = pattern if inner is None else inner
            np.testing.assert_array_equal(pattern, inner)


def test_channels_of_a_pixel_stay_together_and_tf_matches_numpy() -> None:
    idx = make_permutation("global", 16, 4, seed=0)
    ours = (to_model_input(tf.constant(IMAGE), idx).numpy() + 1.0) * 127.5
    np.testing.assert_allclose(ours, permute_numpy(IMAGE, idx), atol=1e-4)
    flat_in, flat_out = IMAGE.reshape(-1, 3), permute_numpy(IMAGE, idx).reshape(-1, 3)
    np.testing.assert_array_equal(flat_out, flat_in[idx])


def test_patch_that_does_not_divide_the_image_is_refused() -> None:
    with pytest.raises(ConfigError, match="5 does not divide 16"):
        make_permutation("patch", 16, 5, seed=0)
    with pytest.raises(ConfigError, match="unknown permutation"):
        make_permutation("rows", 16, 4, seed=0)
