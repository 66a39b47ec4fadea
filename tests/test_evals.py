"""Evaluators and model families as plug-ins: config, shared passes, metric keys, `mixer eval`."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml
from datasets import write_image, write_validation_images
from numpy_mixer import numpy_mixer, official_layout_params
from training import tiny

from mixer_cli.cli import run
from mixer_cli.config import dump_yaml, resolve
from mixer_cli.core.errors import ConfigError
from mixer_cli.evals.forward import forward_function
from mixer_cli.models import registry
from mixer_cli.train import metrics
from mixer_cli.train.engine import build
from mixer_cli.train.steps import initial_state
from mixer_cli.weights.arrays import write_npz


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"evals.x.type": "nonsense"}, "unknown evaluator type 'nonsense'; types: classification"),
        ({"evals.test.shots": "5"}, "valid keys of a classification evaluator: type, every"),
        ({"evals.probe.shots": "5"}, "evaluator 'probe' .* has no type: set evals.probe.type"),
        ({"evals.test.every": "-1"}, "evals.test.every must be >= 0"),
        ({"evals.a/b.type": "fewshot"}, "NAME without '/'"),
        (
            {"model.family": "vgg"},
            "model.family must be one of mixer, hybrid, resnet, vit, resmlp, gmlp, got",
        ),
    ],
)
def test_unknown_evaluators_families_and_keys_are_refused(overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve("demo", None, overrides)
    with pytest.raises(
        ConfigError, match="unknown model family 'vgg'; families: mixer, hybrid, resnet, vit"
    ):
        registry.get("vgg")


def test_evals_round_trip_through_yaml_and_set(tmp_path: Path) -> None:
    config = resolve(
        "demo",
        None,
        {
            "evals.probe.type": "fewshot",
            "evals.probe.shots": "1,5",
            "evals.probe.every": "100",
            "evals.probe.datasets": "digits",
            "evals.fewshot": "none",  # removes the recipe's probe
        },
    )
    assert list(config.evals) == ["test", "probe"]
    assert config.evals["probe"].shots == (1, 5) and config.evals["probe"].datasets == ("digits",)
    path = tmp_path / "config.yaml"
    path.write_text(dump_yaml(config))
    again = resolve(None, path, {})
    assert again == config and again.to_dict() == yaml.safe_load(path.read_text())


def test_evaluators_reading_one_split_share_one_forward_pass() -> None:
    config = tiny(**{"evals.again.type": "classification", "evals.again.at_start": "true"})
    built = build(config)  # test, again: classification; fewshot: 5-shot on digits
    state = initial_state(built.model, built.optimizer, 8, jax.random.key(1))
    got = built.evals.run(built.model, state.params)
    # Three evaluators, two splits (the test split shared by all three, the training split):
    assert built.evals.passes == 2
    assert got["test/top1"] == got["again/top1"] and got["test/examples"] == 360
    # top-1 and top-5 recomputed here from the logits of every test image.
    images, labels = eval_inputs(built.source, "test", 8)
    logits = np.asarray(jax.jit(built.model.apply)({"params": state.params}, images)[0])
    top5 = np.argsort(-logits, axis=1)[:, :5]
    assert got["test/top1"] == pytest.approx(np.mean(logits.argmax(1) == labels), abs=1e-6)
    assert got["test/top5"] == pytest.approx(np.mean((top5 == labels[:, None]).any(1)), abs=1e-6)
    assert built.evals.due(0, 20) == ["again"]
    assert set(built.evals.due(20, 20)) == {"test", "fewshot", "again"}


def eval_inputs(source, split: str, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """A split's images as the evaluation transform gives them, and their labels."""
    from mixer_cli.data import Preprocessing
    from mixer_cli.data.preprocess import Transforms

    transforms = Transforms(source, Preprocessing(resolution=resolution), seed=0)
    examples = [transforms.eval_example(*ex) for ex in source.eval_stream(split, 0, 1)]
    images = np.stack([np.asarray(e["image"]) for e in examples])
    return images, np.array([int(np.argmax(e["label"])) for e in examples])


def test_metric_keys_in_metrics_tensorboard_and_results(uninterrupted: Path) -> None:
    results = json.loads((uninterrupted / "results.json").read_text())
    keys = {k for k in results if "/" in k}
    assert keys == {"test/top1", "test/top5", "test/loss", "test/examples", "fewshot/5shot"}
    from mixer_cli.core.tf_cpu import tf

    tags = set()
    for events in (uninterrupted / "tensorboard").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            tags.update(value.tag for value in event.summary.value)
    assert keys <= tags and "loss" in tags


def test_old_run_directories_are_read_in_todays_keys(tmp_path: Path) -> None:
    old = {"command": "permute", "test_top1": 0.9, "test_top1_at_step0": 0.1, "fewshot_5shot": 0.8}
    (tmp_path / "results.json").write_text(json.dumps(old))
    lines = [{"step": 0, "test_top1": 0.1, "fewshot_5shot": 0.2}, {"step": 5, "loss": 1.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert metrics.read_results(tmp_path) == {
        "command": "permute",
        "test/top1": 0.9,
        "fewshot/5shot": 0.8,
        "at_step0": {"test/top1": 0.1},
    }
    from mixer_cli.tasks.permute import curve

    assert curve(tmp_path) == [{"step": 0, "test/top1": 0.1, "fewshot/5shot": 0.2}]


def test_a_resume_may_change_how_often_evaluators_run(uninterrupted: Path, tmp_path) -> None:
    from mixer_cli.train.engine import train_and_evaluate

    train_and_evaluate(tiny(**{"evals.fewshot.every": "5"}), tmp_path, stop_after=7)
    results = train_and_evaluate(tiny(**{"evals.fewshot.every": "10"}), tmp_path)
    want = json.loads((uninterrupted / "results.json").read_text())
    assert {k: results[k] for k in want if "/" in k} == {k: want[k] for k in want if "/" in k}
    probes = [r["step"] for r in metrics.read_metrics(tmp_path) if "fewshot/5shot" in r]
    assert probes == [5, 10, 20]  # every 5 before the stop, every 10 after, and the end
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["evals"]["fewshot"]["every"] == 10  # config.yaml: how the run runs now
    with pytest.raises(ConfigError, match=r"evals.fewshot.shots: \[5\] before, \[1\] now"):
        train_and_evaluate(tiny(**{"evals.fewshot.shots": "1"}), tmp_path)


def folder_for_official_npz(root: Path) -> Path:
    """16 px RGB PNGs (already at the model's resolution, so untouched), 10 classes."""
    rng = np.random.default_rng(3)
    for c in range(10):
        for i in range(3):
            image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            write_image(root / "test" / f"c{c}" / f"{i}.png", image)
            write_image(root / "train" / f"c{c}" / f"{i}.png", image[::-1])
    return root


def test_eval_of_an_official_npz_matches_its_logits(capsys, tmp_path, official_npz) -> None:
    path, flat = official_npz
    root = folder_for_official_npz(tmp_path / "images")
    code = run(["eval", "--init", path, "--data", f"folder:{root}", "--workdir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    results = json.loads((tmp_path / "results.json").read_text())
    images, labels = [], []
    for c in range(10):
        for i in range(3):
            png = (root / "test" / f"c{c}" / f"{i}.png").read_bytes()
            from mixer_cli.core.tf_cpu import tf

            images.append(tf.io.decode_png(png).numpy() / 127.5 - 1.0)
            labels.append(c)
    logits, _ = numpy_mixer(flat, np.stack(images))
    labels = np.array(labels)
    top5 = np.argsort(-logits, axis=1)[:, :5]
    assert results["test/examples"] == 30
    assert results["test/top1"] == pytest.approx(np.mean(logits.argmax(1) == labels))
    assert results["test/top5"] == pytest.approx(np.mean((top5 == labels[:, None]).any(1)))
    assert results["variant"] == "2x16-8-32/4" and results["resolution"] == 16
    assert "test/top1" in out and "fewshot" not in results


def eval_cli(capsys, workdir: Path, *argv: str) -> tuple[int, dict, str]:
    code = run(["eval", *argv, "--workdir", str(workdir)])
    err = capsys.readouterr().err
    path = workdir / "results.json"
    return code, json.loads(path.read_text()) if path.exists() else {}, err


def test_eval_of_a_run_at_twice_its_resolution(capsys, tmp_path, uninterrupted) -> None:
    root = folder_for_official_npz(tmp_path / "images")  # 10 classes of 16 px, as digits
    code, results, err = eval_cli(
        capsys, tmp_path / "a", "--init", str(uninterrupted), "--data", f"folder:{root}",
        "--resolution", "16", "--fewshot", "--shots", "1,3",
    )  # fmt: skip
    assert code == 0, err
    assert (results["resolution"], results["grid_factor"]) == (16, 2)
    assert results["test/examples"] == 30 and {"fewshot/1shot", "fewshot/3shot"} <= set(results)


def test_eval_with_another_head_runs_the_representation_evaluators(
    capsys, tmp_path, uninterrupted
) -> None:
    small = tmp_path / "three"  # 3 classes; the demo model's head has 10
    for c in range(3):
        for split in ("train", "test"):
            for i in range(3):
                image = np.full((8, 8, 3), 80 * c + 10 * i, np.uint8)
                write_image(small / split / f"k{c}" / f"{i}.png", image)
    code, results, err = eval_cli(
        capsys, tmp_path / "b", "--init", str(uninterrupted), "--data", f"folder:{small}",
        "--shots", "1,3",
    )  # fmt: skip
    assert code == 0, err
    assert "10-class head" in err and "representation evaluators" in err
    assert "test/top1" not in results and {"fewshot/1shot", "fewshot/3shot"} <= set(results)
    assert results["fewshot"][f"folder:{small}"]["test_examples"] == 9


def test_every_family_loads_what_it_builds(tmp_path: Path) -> None:
    from mixer_cli.config import ModelConfig, model_config

    for family_name, variant in (("mixer", "N/4"), ("resnet", "ResNet14")):
        family = registry.get(family_name)
        m = ModelConfig(family=family_name, variant=variant, resolution=16, width=8)
        model = family.build(m, 3, 0.0)
        images = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
        params = jax.jit(model.init)(jax.random.key(0), images)["params"]
        params = jax.tree.map(lambda p: p + 0.01, params)  # a non-zero head too
        path = write_npz(jax.device_get(params), tmp_path / f"{family_name}.npz")
        with np.load(path) as archive:
            flat = dict(archive)
        assert registry.family_of(flat, str(path)).name == family_name
        loaded = registry.load_checkpoint(path, resolution=16)
        assert (loaded.family, loaded.num_classes, loaded.resolution) == (family_name, 3, 16)
        assert loaded.model == model  # the same architecture, read off the arrays
        items = [f"model.{k}={v}" for k, v in loaded.config.items() if k != "variant"]
        rebuilt = model_config(loaded.config["variant"], 16, "float32", items)
        assert family.build(rebuilt, 3, 0.0) == model  # its config rebuilds it (mixer info)
        forward = jax.jit(lambda p, x, model=model: model.apply({"params": p}, x)[0])
        np.testing.assert_array_equal(forward(loaded.params, images), forward(params, images))
        counts = family.count(m, 3)
        assert counts["params"] == sum(x.size for x in jax.tree.leaves(params))
        assert counts["gflops"] > 0
    with pytest.raises(ConfigError, match="does not record its input size"):
        registry.load_checkpoint(tmp_path / "resnet.npz")


def test_one_forward_loop_feeds_every_collector_from_one_pass() -> None:
    """Sums, feature rows and per-example top-K from the same batches, in the split's
    order, each batch handed to every collector once (fetched behind, none left over)."""
    from mixer_cli.core.distributed import make_mesh
    from mixer_cli.data import EvalBatches, Preprocessing, open_dataset
    from mixer_cli.evals.base import FEATURES, SUMS, PassOutput
    from mixer_cli.evals.forward import (
        PROBABILITIES,
        Collector,
        Features,
        Sums,
        TopK,
        forward_function,
        forward_loop,
    )
    from mixer_cli.models import create_model

    class Count(Collector):
        def __init__(self) -> None:
            self.sizes: list[int] = []

        def add(self, outputs, batch, fetch) -> None:
            self.sizes.append(int(fetch.mine(batch["mask"]).sum()))

    model = create_model("N/2", num_classes=10)
    params = model.init(jax.random.key(0), np.zeros((1, 8, 8, 3)))["params"]
    source, mesh = open_dataset("digits"), make_mesh()
    batches = EvalBatches(source, "test", Preprocessing(resolution=8), 64, mesh)  # 6, padded
    needs = frozenset({SUMS, FEATURES, PROBABILITIES})
    collectors = [Sums(), Features(), TopK(3), Count()]
    forward = forward_function(model, mesh, needs, "softmax")
    forward_loop(batches, forward, params, collectors, mesh=mesh, local_batch=64)
    output = PassOutput(num_examples=360)
    for collector in collectors:
        collector.finish(output)
    assert collectors[3].sizes == [64] * 5 + [40]
    images, labels = eval_inputs(source, "test", 8)
    logits, out = model.apply({"params": params}, images)
    np.testing.assert_allclose(output.features, out["pre_logits"], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(output.labels, labels)
    assert output.sums["count"] == 360
    assert output.sums["correct_top1"] == np.sum(np.argmax(logits, 1) == labels)
    order, probabilities = collectors[2].columns()
    want = np.asarray(jax.nn.softmax(logits))
    np.testing.assert_array_equal(order, np.argsort(-want, axis=1, kind="stable")[:, :3])
    np.testing.assert_allclose(probabilities, np.sort(want, 1)[:, ::-1][:, :3], atol=1e-6)


def test_masks_keep_the_first_real_images_across_batches() -> None:
    from mixer_cli.evals.forward import Fetch, Masks

    rng = np.random.default_rng(0)
    masks, fetch, given = Masks(3), Fetch(local_batch=2), []
    for real in (2, 2, 1):  # the first `count` real rows, then nothing more
        scores = rng.normal(size=(2, 4, 4, 5)).astype(np.float32)
        sizes = np.array([[4, 3]] * real + [[0, 0]] * (2 - real))
        truth = rng.integers(0, 5, (2, 4, 4))
        batch = {"image": np.zeros((2, 4, 4, 3)), "size": sizes, "truth": truth}
        masks.add({"scores": scores}, batch, fetch)
        given.append(truth)
    assert len(masks.shown) == 3
    image, truth, predicted = masks.shown[2]  # the first image of the second batch
    assert image.shape == (4, 4, 3) and (image == 0.5).all()  # [-1, 1] -> [0, 1]
    np.testing.assert_array_equal(truth, given[1][0, :4, :3])  # at the image's own size
    assert predicted.shape == (4, 3)


def test_the_eval_task_returns_its_results_and_writes_nothing(
    capsys, tmp_path, official_npz
) -> None:
    from mixer_cli.core.report import save_results
    from mixer_cli.tasks.evaluate import EvalRequest, evaluate, print_eval

    root = folder_for_official_npz(tmp_path / "images")
    request = EvalRequest(Path(official_npz[0]), f"folder:{root}", workdir=tmp_path / "run")
    result = evaluate(request)
    assert not (tmp_path / "run").exists() and result.workdir == tmp_path / "run"
    assert result.results["test/examples"] == 30 and result.fewshot is None
    assert result.title == f"2x16-8-32/4 at 16 px on folder:{root} test"
    print_eval(result)
    save_results(result.workdir, result.results)
    out, err = capsys.readouterr()
    assert "test/top1" in out and "results in" in err
    assert json.loads((tmp_path / "run" / "results.json").read_text()) == result.results


def test_label_sets_and_class_subsets_are_scored_by_hand() -> None:
    """ReaL's rule (top-1 in the image's label set; an empty set leaves the image out) and
    top-1 among a class subset (a class outside it never wins), summed on the devices."""
    import flax.linen as nn

    from mixer_cli.core.distributed import make_mesh
    from mixer_cli.evals.base import SUMS, Among

    class Given(nn.Module):  # logits chosen by hand: the "image" is the logits
        @nn.compact
        def __call__(self, x):
            return x, {}

    among = Among((1, 3, 4))
    rows = [  # logits over 6 classes, label, label set, real example?
        ([0, 0, 9, 0, 1, 0], 2, {2, 5}, True),  # top 2: right, in set; among: 4, wrong
        ([9, 2, 0, 0, 0, 1], 0, {1}, True),  # top 0: right, not in set; among: 1, wrong
        ([0, 0, 0, 9, 0, 0], 3, set(), True),  # right; no set: left out; among: 3, right
        ([0, 0, 0, 0, 5, 9], 4, {4}, True),  # top 5 (outside the subset): wrong, not in
        # set; among: 4, right
        ([0, 7, 0, 3, 0, 0], 3, {1, 3}, True),  # top 1: wrong, in set; among: 1, wrong
        ([0, 0, 9, 0, 0, 0], 2, {2}, False),  # padding: counts nowhere
        ([0] * 6, 0, set(), False),
        ([0] * 6, 0, set(), False),
    ]
    batch = {
        "image": np.array([r[0] for r in rows], np.float32),
        "label": np.eye(6, dtype=np.float32)[[r[1] for r in rows]],
        "label_set": np.array([[c in r[2] for c in range(6)] for r in rows], np.float32),
        "mask": np.array([r[3] for r in rows]),
    }
    forward = forward_function(Given(), make_mesh(), frozenset({SUMS, among}), "softmax")
    sums = jax.device_get(forward({}, batch)["sums"])
    assert sums["count"] == 5 and sums["correct_top1"] == 3
    assert sums["with_set"] == 4 and sums["correct_set_top1"] == 2  # ReaL top-1: 2 / 4
    assert sums[among.key] == 2


def test_mixer_eval_scores_real_and_the_robustness_sets(capsys, tmp_path) -> None:
    """`mixer eval --evals real,imagenet_r` on mocked TFDS sets: a 1000-class
    model whose every prediction is its head's bias (class 7 first, outside ImageNet-R's
    200; then 6, inside)."""
    from datasets import mock_datasets

    from mixer_cli.core.tf_cpu import tf

    flat = official_layout_params(4, 1, 8, 16, 4, 8, num_classes=1000, seed=0)  # 16 px
    flat = {key: np.zeros_like(value) for key, value in flat.items()}
    flat["head/bias"][[7, 6]] = (2.0, 1.0)
    np.savez(tmp_path / "bias.npz", **flat)
    jpeg = tf.io.encode_jpeg(np.full((20, 18, 3), 90, np.uint8)).numpy()
    image, label = tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int64)
    sets = [[7], [7, 3], [], [2], [6, 7], []]  # 4 labelled, 3 with 7: ReaL 75%
    original = [7, 3, 7, 2, 6, 1]  # 2 of 6 are 7
    real = [
        {"image": jpeg, "original_label": o, "real_label": s}
        for o, s in zip(original, sets, strict=True)
    ]
    spec = {"image": image, "original_label": label, "real_label": tf.TensorSpec([None], tf.int64)}
    labelled = {"image": image, "label": label}
    rows = {
        "imagenet2012_real": {"validation": real},
        "imagenet_r": {"test": [{"image": jpeg, "label": c} for c in (6, 6, 1)]},
    }
    datasets = {
        name: ({s: len(r) for s, r in split.items()}, lambda s, i, split=split: split[s][i])
        for name, split in rows.items()
    }
    signatures = {"imagenet2012_real": spec, "imagenet_r": labelled}
    with mock_datasets(tmp_path / "tfds", datasets, signatures) as data_dir:
        code = run(
            ["eval", "--init", str(tmp_path / "bias.npz"), "--evals", "real,imagenet_r",
             "--data-dir", str(data_dir), "--batch-size", "8", "--workdir", str(tmp_path / "run")]
        )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["real/top1"] == 0.75 and results["real/top1_original"] == pytest.approx(2 / 6)
    assert (results["real/examples"], results["real/excluded"]) == (4, 2)
    assert results["imagenet_r/top1"] == pytest.approx(2 / 3)  # 6 among the 200, not 7
    assert results["dataset"] is None and results["evals"] == ["real", "imagenet_r"]
    assert "real/top1" in out and "75.00%" in out


def colour_classifier(path: Path, num_classes: int) -> Path:
    """An official-layout Mixer (16 px, patch 4) whose top-1 is a one-colour image's
    strongest colour: the stem copies red, green and blue to channels 0-2, the block adds
    nothing, the head reads channel j as class j (0 red, 1 green, 2 blue; others 0)."""
    flat = official_layout_params(4, 1, 8, 16, 4, 8, num_classes=num_classes, seed=0)
    flat = {key: np.zeros_like(value) for key, value in flat.items()}
    flat["stem/kernel"][:, :, [0, 1, 2], [0, 1, 2]] = 1.0
    flat["pre_head_layer_norm/scale"][:] = 1.0
    flat["head/kernel"][[0, 1, 2], [0, 1, 2]] = 1.0
    np.savez(path, **flat)
    return path


@pytest.mark.parametrize("layout", ["class folders", "flat"])
def test_mixer_eval_scores_real_from_validation_files_and_real_json(capsys, tmp_path, layout):
    """`--evals real` with `real_json`: ILSVRC2012_val_K.JPEG files (in class folders, or
    flat: 1000 classes, no original labels) matched to real.json's sets by K, not by where
    they are listed (matched in the folders' order, ReaL would read 4/5), scored by a model
    whose top-1 is each image's colour."""
    red, green, blue = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    colours = [red, green, blue, red, green, blue]  # top-1: 0 1 2 0 1 2
    folders = ["a", "a", "c", "b", "b", "c"]  # original labels 0 0 2 1 1 2: 1, 3, 5, 6 right
    sets = [[0], [0, 1], [], [1, 2], [0], [2]]  # in, in (of two), left out, not in (of two),
    # not in, in: ReaL 3/5
    flat = layout == "flat"
    root = write_validation_images(tmp_path / "val", colours, None if flat else folders)
    (tmp_path / "real.json").write_text(json.dumps(sets))
    model = colour_classifier(tmp_path / "colour.npz", 1000 if flat else 3)
    code = run(
        ["eval", "--init", str(model), "--evals", "real", "--set", f"evals.real.data={root}",
         "--set", f"evals.real.real_json={tmp_path / 'real.json'}", "--batch-size", "8",
         "--workdir", str(tmp_path / "run")]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["real/top1"] == pytest.approx(3 / 5)
    assert (results["real/examples"], results["real/excluded"]) == (5, 1)
    if flat:
        assert "real/top1_original" not in results
    else:
        assert results["real/top1_original"] == pytest.approx(4 / 6)
    assert "60.00%" in out
