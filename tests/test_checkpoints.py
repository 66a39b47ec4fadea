"""Official-layout npz checkpoints: inference, strict checks, round trips, broken files."""

from __future__ import annotations

import zipfile
from pathlib import Path

import jax
import numpy as np
import pytest
from damage import flip_npz_array_bit, truncate
from numpy_mixer import numpy_mixer, official_layout_params

import mixer_cli
from mixer_cli.core.errors import CheckpointError, CheckpointMismatch, CheckpointNotFound
from mixer_cli.models import create_model
from mixer_cli.models.mixer_checkpoint import infer_architecture
from mixer_cli.weights.arrays import read_npz, write_npz


def batch(resolution: int = 16, n: int = 3) -> np.ndarray:
    return (
        np.random.default_rng(5).uniform(-1, 1, (n, resolution, resolution, 3)).astype(np.float32)
    )


def test_official_npz_loads_without_variant_and_matches_reference(official_npz) -> None:
    path, flat = official_npz
    loaded = mixer_cli.load_pretrained(path)
    arch = loaded.architecture
    assert (arch.spec.patch_size, arch.spec.num_blocks, arch.spec.hidden_dim) == (4, 2, 16)
    assert (arch.spec.tokens_mlp_dim, arch.spec.channels_mlp_dim) == (8, 32)
    assert (arch.num_classes, loaded.resolution) == (10, 16)
    x = batch()
    ref_logits, _ = numpy_mixer(flat, x)
    np.testing.assert_allclose(np.asarray(loaded(x)), ref_logits, atol=1e-5, rtol=1e-5)


def test_known_sizes_are_named(tmp_path: Path) -> None:
    flat = official_layout_params(
        patch=8,
        num_blocks=4,
        hidden=128,
        seq_len=9,
        tokens_mlp=64,
        channels_mlp=512,
        num_classes=0,
        seed=1,
    )
    arch = infer_architecture(flat)
    assert (arch.spec.name, arch.resolution, arch.num_classes) == ("N/8", 24, 0)


def test_round_trip_gives_identical_logits(tmp_path: Path) -> None:
    model = create_model("N/4", num_classes=3)
    x = batch()
    params = model.init(jax.random.key(0), x)["params"]
    params = jax.tree_util.tree_map(
        lambda p: p + 0.01 * np.arange(p.size).reshape(p.shape) % 1, params
    )
    path = write_npz(params, tmp_path / "ours.npz")
    loaded = mixer_cli.load_pretrained(path)
    assert loaded.architecture.spec.name == "N/4" and loaded.resolution == 16
    want, _ = model.apply({"params": params}, x)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(want))
    with np.load(path, allow_pickle=False) as archive:  # the official key layout on disk
        assert "MixerBlock_3/token_mixing/Dense_1/kernel" in archive.files


def test_requested_variant_must_match(official_npz) -> None:
    path, _ = official_npz
    with pytest.raises(
        CheckpointMismatch,
        match=r"'stem/kernel' has shape \(4, 4, 3, 16\) "
        r"but N/4 expects \(4, 4, 3, 128\)",
    ):
        mixer_cli.load_pretrained(path, variant="N/4")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda f: f.pop("MixerBlock_1/LayerNorm_1/bias"),
            "lacks 1 .*MixerBlock_1/LayerNorm_1/bias",
        ),
        (lambda f: f.update({"extra/kernel": np.zeros(3)}), "does not, first 'extra/kernel'"),
        (
            lambda f: f.update({"MixerBlock_1/channel_mixing/Dense_0/bias": np.zeros(31)}),
            r"Dense_0/bias' has shape \(31,\) but .* expects \(32,\)",
        ),
        (lambda f: f.pop("stem/kernel"), "no 'stem/kernel'"),
        (lambda f: f.update({"stem/kernel": np.zeros((4, 4, 1, 16))}), "expected \\(P, P, 3, C\\)"),
    ],
)
def test_malformed_trees_are_refused_naming_the_key(official_npz, tmp_path, edit, message) -> None:
    _, flat = official_npz
    flat = dict(flat)
    edit(flat)
    path = tmp_path / "edited.npz"
    np.savez(path, **flat)
    with pytest.raises(CheckpointMismatch, match=message):
        mixer_cli.load_pretrained(path)


def test_truncated_file_is_refused_naming_it(official_npz, tmp_path: Path) -> None:
    broken = truncate(official_npz[0], tmp_path / "truncated.npz")
    with pytest.raises(CheckpointError, match=r"truncated\.npz"):
        read_npz(broken)


def test_a_flipped_bit_is_refused_naming_the_file(official_npz, tmp_path: Path) -> None:
    broken = flip_npz_array_bit(official_npz[0], tmp_path / "flipped.npz")
    with pytest.raises(CheckpointError, match=r"flipped\.npz.*CRC"):  # the zip member's CRC-32
        read_npz(broken)


def test_pickled_arrays_are_never_loaded(tmp_path: Path) -> None:
    path = tmp_path / "pickled.npz"
    np.savez(path, **{"stem/kernel": np.array([{"evil": 1}], dtype=object)})
    with pytest.raises(CheckpointError, match=r"pickled\.npz"):
        read_npz(path)


def test_missing_path_and_directory_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFound, match=r"nope\.npz"):
        read_npz(tmp_path / "nope.npz")
    with pytest.raises(CheckpointError, match="directory"):
        read_npz(tmp_path)


def test_failed_write_keeps_the_previous_file(official_npz, tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "keep.npz"
    good = {"stem": {"kernel": np.ones((2, 2, 3, 4), np.float32)}}
    write_npz(good, path)
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", fail)
    with pytest.raises(OSError, match="disk full"):
        write_npz({"stem": {"kernel": np.zeros((2, 2, 3, 4), np.float32)}}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.npz"]
    assert zipfile.is_zipfile(path)
