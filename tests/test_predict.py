"""`mixer predict`: a checkpoint's top-K classes for image files, against its logits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from damage import damage_inside
from datasets import write_image
from numpy_mixer import numpy_mixer

from mixer_cli.cli import run
from mixer_cli.core.tf_cpu import tf


def test_predict_gives_the_models_top_classes_and_skips_a_damaged_file(
    capsys, tmp_path: Path, official_npz
) -> None:
    path, flat = official_npz  # 16 px, 10 classes
    rng = np.random.default_rng(5)
    for i in range(11):  # 11 images: the last batch of 8 is padded
        write_image(
            tmp_path / "in" / "sub" / f"{i:02d}.png", rng.integers(0, 256, (16, 16, 3), np.uint8)
        )
    (tmp_path / "in" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    inside = tmp_path / "in" / "inside.png"  # damaged inside, its header and end intact
    write_image(inside, rng.integers(0, 256, (16, 16, 3), np.uint8))
    damage_inside(inside)
    argv = ["predict", str(tmp_path / "in"), "--init", path, "--top", "3", "--batch-size", "8"]
    code = run([*argv, "--workdir", str(tmp_path / "run"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "skipped" in err and "broken.jpg" in err and "truncated JPEG" in err
    assert f"skipped {inside}: cannot be decoded (Invalid PNG data" in err
    records = [json.loads(line) for line in out.splitlines()]
    assert [Path(r["path"]).name for r in records] == [f"{i:02d}.png" for i in range(11)]
    images = np.stack(
        [tf.io.decode_png(Path(r["path"]).read_bytes()).numpy() / 127.5 - 1.0 for r in records]
    )
    logits, _ = numpy_mixer(flat, images)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    for record, want in zip(records, probs, strict=True):
        top = record["top"]
        assert [t["index"] for t in top] == list(np.argsort(-want)[:3])
        assert [t["label"] for t in top] == [str(t["index"]) for t in top]  # no names known
        assert [t["probability"] for t in top] == pytest.approx(np.sort(want)[::-1][:3], abs=1e-5)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["predictions"] == records
    assert [Path(s["path"]).name for s in saved["skipped"]] == ["broken.jpg", "inside.png"]


def test_predict_names_the_classes_of_the_run(capsys, tmp_path: Path, uninterrupted) -> None:
    image = tmp_path / "three.png"
    write_image(image, np.zeros((8, 8, 3), np.uint8))
    code = run(["predict", str(image), "--init", str(uninterrupted), "--workdir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    top = json.loads((tmp_path / "results.json").read_text())["predictions"][0]["top"]
    assert len(top) == 5 and {t["label"] for t in top} <= {str(d) for d in range(10)}
    assert "top 5 of 10 classes" in out and "%" in out


def test_image_files_are_padded_batches_with_their_real_rows_marked(tmp_path: Path) -> None:
    from mixer_cli.core.distributed import make_mesh
    from mixer_cli.tasks.predict import ImageFiles

    mesh = make_mesh()  # the tests' 8 CPU devices: a batch of 8
    paths = []
    for i in range(10):
        paths.append(tmp_path / f"{i}.png")
        write_image(paths[-1], np.full((8, 8, 3), 20 * i, np.uint8))
    files = ImageFiles(paths, 8, mesh.devices.size, mesh)
    batches = list(files)
    assert files.num_batches == len(batches) == 2
    masks = [np.asarray(b["mask"]).tolist() for b in batches]
    assert masks == [[True] * 8, [True] * 2 + [False] * 6]
    last = np.asarray(batches[1]["image"])
    assert last[1] == pytest.approx(9 * 20 / 127.5 - 1) and (last[2:] == 0).all()
