"""Few-shot linear evaluation: the ridge solver, shot sampling, frozen features, the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from numpy_mixer import official_layout_params
from sklearn.linear_model import Ridge as SklearnRidge

from mixer_cli.cli import run
from mixer_cli.data import Preprocessing, open_dataset
from mixer_cli.evals import ridge
from mixer_cli.evals.base import FEATURES, SUMS, Split, eval_preprocessing
from mixer_cli.evals.forward import FeatureCache, run_pass
from mixer_cli.evals.ridge import BIAS, Ridge, choose_l2, design_matrix, sample_shots
from mixer_cli.models import create_model
from mixer_cli.models.mixer_checkpoint import adapt_resolution
from mixer_cli.weights.arrays import write_npz


@pytest.mark.parametrize(("examples", "dim"), [(200, 16), (30, 64)])  # X^T X and X X^T
def test_ridge_agrees_with_scikit_learn(examples: int, dim: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((examples, dim)) * 3 + 1
    labels = rng.integers(0, 5, examples)
    ours = Ridge.fit(x, labels, 5)
    design = design_matrix(x, x.mean(0), x.std(0) + 1e-5)
    assert np.all(design[:, -1] == BIAS)
    targets = 2 * np.eye(5)[labels] - 1
    for l2 in (1.0, 1024.0):
        theirs = SklearnRidge(alpha=l2, fit_intercept=False, solver="cholesky")
        theirs.fit(design, targets)
        np.testing.assert_allclose(ours.weights(l2), theirs.coef_.T, rtol=1e-4, atol=1e-6)
        test = rng.standard_normal((50, dim)) * 3 + 1
        want = np.argmax(theirs.predict(design_matrix(test, ours.mean, ours.std)), axis=1)
        np.testing.assert_array_equal(ours.predict(test, l2), want)


def test_shots_are_class_balanced_nested_and_seeded() -> None:
    labels = np.random.default_rng(1).integers(0, 4, 400)
    previous = np.array([], np.int64)
    for k in (1, 5, 10, 25):
        picked = sample_shots(labels, k, seed=3, num_classes=4)
        assert np.bincount(labels[picked], minlength=4).tolist() == [k] * 4
        assert len(set(picked.tolist())) == 4 * k
        per_class = [picked[labels[picked] == c] for c in range(4)]
        before = [previous[labels[previous] == c] for c in range(4)]
        for now, then in zip(per_class, before, strict=True):
            np.testing.assert_array_equal(now[: len(then)], then)  # the smaller set comes first
        previous = picked
    again = sample_shots(labels, 25, seed=3, num_classes=4)
    np.testing.assert_array_equal(again, previous)
    assert not np.array_equal(sample_shots(labels, 25, seed=4, num_classes=4), previous)


def test_l2_is_chosen_inside_the_few_shot_set_only() -> None:
    rng = np.random.default_rng(2)
    centres = rng.standard_normal((3, 8)) * 2
    labels = np.repeat(np.arange(3), 100)
    x = centres[labels] + rng.standard_normal((300, 8)) * 3
    l2s = (1e-3, 1.0, 1024.0, 1e7)
    records = [
        ridge.evaluate(x, labels, test, test_labels, 3, [5], [0, 1], l2s)
        for test, test_labels in ((x[:50], labels[:50]), (x[::-1], labels[::-1]))
    ]
    # The choice may not depend on the test split: two different ones, the same l2s.
    assert [r["l2"] for r in records[0]] == [r["l2"] for r in records[1]]
    assert all(r["l2"] in l2s for r in records[0])
    chosen = choose_l2(x[:15], labels[:15], 5, l2s, 3)
    assert chosen == choose_l2(x[:15], labels[:15], 5, l2s, 3) and chosen in l2s
    assert choose_l2(x[:3], labels[:3], 1, l2s, 3) == l2s[0]  # one shot: nothing to hold out


def tiny_model(grid_factor: int = 1):
    model = create_model("N/2", num_classes=10, grid_factor=grid_factor)
    r = 8 * grid_factor
    return model, model.init(jax.random.key(0), np.zeros((1, r, r, 3)))["params"]


def digits_test_split() -> Split:
    source = open_dataset("digits")
    return Split(source, "test", Preprocessing(resolution=8))


def test_features_cover_the_split_in_order_whatever_the_batch() -> None:
    model, params = tiny_model()
    split = digits_test_split()
    both = frozenset({FEATURES, SUMS})
    one_batch = run_pass(model, params, split, frozenset({FEATURES}), batch_size=360)
    padded = run_pass(model, params, split, both, batch_size=64)  # 6 batches, 24 padding
    assert one_batch.features.shape == (360, 128) and one_batch.sums is None
    np.testing.assert_allclose(padded.features, one_batch.features, rtol=1e-5, atol=1e-5)
    source = split.source
    np.testing.assert_array_equal(padded.labels, source._labels[source._indices("test")])
    assert padded.sums["count"] == 360  # the padding is masked out of the sums too


def test_features_are_cached_by_content(tmp_path: Path, monkeypatch) -> None:
    model, params = tiny_model()
    split, features = digits_test_split(), frozenset({FEATURES})
    cache = FeatureCache(tmp_path, params)
    first = run_pass(model, params, split, features, 120)
    cache.put(split, first)
    assert len(list((tmp_path / "features").glob("*.npz"))) == 1
    np.testing.assert_array_equal(cache.get(split).features, first.features)
    # The same inputs with other training augmentation: the same evaluation inputs, one key.
    augmented = Split(split.source, "test", eval_preprocessing(Preprocessing(8, mixup=0.2)))
    assert cache.get(augmented) is not None
    other = FeatureCache(tmp_path, jax.tree.map(lambda p: p + 1, params))
    assert other.get(split) is None  # other weights: another key


def fewshot_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = run(["fewshot", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_pretrain_then_fewshot(capsys, tmp_path, monkeypatch, uninterrupted: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MIXER_CACHE_DIR", str(tmp_path / "cache"))
    shutil.copytree(uninterrupted, tmp_path / "runs" / "pre")  # the shared tiny pretrain run
    code, out, err = fewshot_cli(capsys, "--shots", "5", "--seeds", "2", "--workdir", "fs")
    assert code == 0, err
    assert "runs/pre" in err and "5-shot" in out
    results = json.loads((tmp_path / "fs" / "results.json").read_text())
    digits = results["datasets"]["digits"]
    assert (digits["train_examples"], digits["test_examples"]) == (1437, 360)
    five = digits["shots"]["5"]
    assert sorted(five["per_seed"]) == ["0", "1"] and five["l2"] == {"0": 1024.0, "1": 1024.0}
    assert five["mean"] == pytest.approx(np.mean(list(five["per_seed"].values())))
    assert results["average"]["5"] == five["mean"] and results["init"] == "runs/pre"
    assert five["mean"] > 0.5  # 20 small steps of pre-training already separate digits this well
    code, out, err = fewshot_cli(capsys, "--shots", "5", "--seeds", "2", "--workdir", "fs2")
    again = json.loads((tmp_path / "fs2" / "results.json").read_text())
    assert again["datasets"]["digits"]["shots"]["5"]["per_seed"] == five["per_seed"]
    # A pool of 20 per class: shots from the split's first 200 (stored shuffled) examples only.
    code, out, err = fewshot_cli(
        capsys, "--shots", "5", "--seeds", "2", "--pool-per-class", "20", "--workdir", "fs3"
    )
    assert code == 0, err
    pooled = json.loads((tmp_path / "fs3" / "results.json").read_text())
    digits = pooled["datasets"]["digits"]
    assert (digits["train_split"], digits["train_examples"]) == ("train[:200]", 200)
    assert pooled["pool_per_class"] == 20 and digits["shots"]["5"]["mean"] > 0.5


def test_a_high_resolution_checkpoint(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MIXER_CACHE_DIR", str(tmp_path / "cache"))
    flat = official_layout_params(2, 4, 128, 16, 64, 512, 10, seed=4)
    path = write_npz(adapt_resolution(flat, side=4, factor=2), tmp_path / "x2.npz")
    code, out, err = fewshot_cli(
        capsys, "--init", str(path), "--shots", "1,2", "--seeds", "1", "--workdir", str(tmp_path)
    )
    assert code == 0, err
    results = json.loads((tmp_path / "results.json").read_text())
    assert (results["resolution"], results["grid_factor"]) == (16, 2)
    assert "1-shot" in out and "2-shot" in out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--shots", "1000"], "1000 shots need that many training examples per class"),
        (["--shots", "0"], "--shots needs distinct positive numbers"),
        (["--seeds", "0"], "--seeds must be a positive number"),
        (["--pool-per-class", "1", "--shots", "2"], "2 shots need a pool of at least"),
        (["--l2-reg", "x"], "--l2-reg expects comma-separated numbers"),
        (["--init", "missing.npz"], "'missing.npz' does not exist"),
        (["--data", "folder:ONECLASS"], "classification needs at least 2"),
        (["--data", "nosuchset"], "nosuchset"),
        ([], "no --init given and no finished run under 'runs'"),
    ],
)
def test_bad_fewshot_input(capsys, tmp_path, monkeypatch, official_npz, argv, needle) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "one" / "train" / "cat").mkdir(parents=True)
    argv = [a.replace("ONECLASS", str(tmp_path / "one")) for a in argv]
    if argv and "--init" not in argv:
        argv = ["--init", official_npz[0], *argv]
    code, _, err = fewshot_cli(capsys, *argv, "--workdir", str(tmp_path / "fs"))
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ") and needle in err, err
    assert not (tmp_path / "fs").exists()


def test_the_fewshot_task_returns_its_results_and_writes_nothing(tmp_path, official_npz) -> None:
    from mixer_cli.tasks.fewshot import FewshotRequest, run_fewshot

    request = FewshotRequest(
        Path(official_npz[0]), ("digits",), shots=(1, 2), seeds=2, use_cache=False,
        workdir=tmp_path / "run", resolution=16,
    )  # fmt: skip
    result = run_fewshot(request)
    assert not (tmp_path / "run").exists() and result.workdir == tmp_path / "run"
    results = result.results
    assert (results["shots"], results["seeds"], results["l2_regs"]) == ([1, 2], [0, 1], [1024.0])
    assert set(results["datasets"]["digits"]["shots"]) == {"1", "2"}
