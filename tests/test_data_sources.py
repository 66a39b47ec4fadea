"""Dataset resolution: digits, image folders, prepared and mocked TFDS, and their errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from damage import damage_inside
from datasets import mock_tfds, write_image_folder, write_prepared_tfds

from mixer_cli.core.errors import DataError, DatasetNotFound
from mixer_cli.data import open_dataset
from mixer_cli.data.digits import prepare


def collect(ds) -> tuple[list, np.ndarray]:
    items = list(ds.as_numpy_iterator())
    return [x[0] for x in items], np.array([x[1] for x in items])


def test_digits_is_a_fixed_stratified_split() -> None:
    src = open_dataset("digits")
    assert (src.num_classes, src.image_shape, src.flip) == (10, (8, 8, 3), False)
    assert (src.num_examples("train"), src.num_examples("test")) == (1437, 360)
    _, test_labels = collect(src.eval_stream("test", 0, 1))
    assert np.all(np.abs(np.bincount(test_labels) - 36) <= 1)  # 10% of each class
    again, _ = collect(open_dataset("digits").eval_stream("test", 0, 1))
    first, _ = collect(src.eval_stream("test", 0, 1))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert src.num_examples("train[:10%]+test") == 144 + 360


def test_placed_digits_are_each_digit_once_somewhere_on_a_black_canvas() -> None:
    from mixer_cli.data.digits import cached_arrays

    src, arrays = open_dataset("digits-placed"), cached_arrays()
    assert (src.num_classes, src.image_shape, src.flip) == (10, (16, 16, 3), False)
    for split in ("train", "test"):
        rows = src._indices(split)
        canvases, digits = src._raw[rows], arrays[f"images_{split}"]
        np.testing.assert_array_equal(src._labels[rows], arrays[f"labels_{split}"])
        assert np.array_equal(canvases, open_dataset("digits-placed")._raw[rows])  # fixed
        corners = set()
        for canvas, digit in zip(canvases, digits, strict=True):
            # The digit intact at one place, nothing else on the canvas.
            found = [
                (y, x)
                for y in range(16 - 8 + 1)
                for x in range(16 - 8 + 1)
                if np.array_equal(canvas[y : y + 8, x : x + 8], digit)
            ]
            assert found and canvas.astype(int).sum() == digit.astype(int).sum()
            corners.add(found[0])
        assert len(corners) > 40  # positions vary over the 9 x 9 possible


def test_digits_read_from_the_cache_equal_a_fresh_preparation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("MIXER_CACHE_DIR", str(tmp_path))
    fresh = prepare()
    first = open_dataset("digits")  # prepares and writes the cache
    (cached,) = tmp_path.glob("mixer/digits-*.npz")
    cached.write_bytes(cached.read_bytes()[:100])  # a damaged cache is prepared again
    second = open_dataset("digits")
    assert "unreadable digits cache" in capsys.readouterr().err
    third = open_dataset("digits")  # from the rewritten cache
    assert capsys.readouterr().err == ""
    for source in (first, second, third):
        for split in ("train", "test"):
            rows = source._indices(split)
            np.testing.assert_array_equal(source._raw[rows], fresh[f"images_{split}"])
            np.testing.assert_array_equal(source._labels[rows], fresh[f"labels_{split}"])


def test_image_folder_reads_splits_classes_and_formats(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "pets", {"train": 5, "test": 3})
    for spec in (f"folder:{root}", str(root)):
        src = open_dataset(spec)
        assert src.classes == ["cat", "dog", "owl"] and src.num_classes == 3
        assert (src.num_examples("train"), src.num_examples("test")) == (15, 9)
        assert (src.train_split, src.eval_split) == ("train", "test")
    _, labels = collect(src.eval_stream("test", 0, 1))
    assert sorted(np.bincount(labels)) == [3, 3, 3]


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({}, "does not exist"),
        ({"": None}, "no split folders"),
        ({"train/": None}, "0 class folder"),
        ({"train/cat/": None}, "1 class folder"),
        ({"train/cat/": None, "train/dog/": None}, "has no images"),
    ],
)
def test_bad_folders_are_refused(tmp_path: Path, layout: dict, message: str) -> None:
    root = tmp_path / "data"
    for rel in layout:
        (root / rel).mkdir(parents=True, exist_ok=True)
    with pytest.raises(DataError, match=message):
        open_dataset(f"folder:{root}")


def test_mocked_catalogue_dataset_takes_metadata_from_tfds(tmp_path: Path) -> None:
    with mock_tfds("cifar10", ("train", "test"), 10, tmp_path) as data_dir:
        src = open_dataset("cifar10", data_dir)
        assert (src.name, src.num_classes, src.image_shape) == ("cifar10", 10, (32, 32, 3))
        assert (src.num_examples("train"), src.num_examples("train[:50%]")) == (10, 5)
        assert src.eval_split == "test"
        raw, labels = collect(src.eval_stream("test", 0, 1))
        assert len(raw) == 10 and raw[0][:4] == b"\x89PNG" and labels.max() < 10


def test_prepared_dataset_without_builder_code_is_found_in_data_dir(tmp_path: Path) -> None:
    write_prepared_tfds(tmp_path, "imagenet21k", {"train": 30, "validation": 9})
    src = open_dataset("imagenet21k", tmp_path)
    assert (src.num_classes, src.eval_split) == (4, "validation")
    assert src.eval_sizes("validation", 2) == [5, 4]
    slices = [collect(src.eval_stream("validation", p, 2))[0] for p in range(2)]
    together, _ = collect(src.eval_stream("validation", 0, 1))
    assert [r for part in slices for r in part] == together  # disjoint, complete, in order


def test_unknown_dataset_suggests_close_names(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFound, match=r"did you mean cifar10") as err:
        open_dataset("cifar11", tmp_path)
    assert str(tmp_path / "cifar11") in str(err.value)


def test_unprepared_dataset_says_where_it_looked_and_how_to_provide_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFound, match=rf"not prepared in {tmp_path}/cifar10.*--data-dir"):
        open_dataset("cifar10", tmp_path, download=False)
    # A manual dataset fails at once, offline or not, naming the data dir.
    with pytest.raises(DatasetNotFound, match=rf"{tmp_path}/imagenet2012.*Manual directory"):
        open_dataset("imagenet2012", tmp_path)


def test_unknown_split_lists_the_valid_ones() -> None:
    with pytest.raises(DataError, match=r"no split 'val' .*train, test"):
        open_dataset("digits").num_examples("val")


def test_damaged_image_files_are_told_from_whole_ones(tmp_path: Path) -> None:
    from PIL import Image

    from mixer_cli.data.image_files import damage, find_damaged

    pixels = np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    whole = {}
    for suffix in ("jpg", "png", "gif", "bmp"):
        whole[suffix] = tmp_path / f"whole.{suffix}"
        Image.fromarray(pixels).save(whole[suffix])
        assert damage(str(whole[suffix])) is None, suffix
    cut = {}
    for suffix in ("jpg", "png", "gif", "bmp"):
        data = whole[suffix].read_bytes()
        cut[suffix] = tmp_path / f"cut.{suffix}"
        cut[suffix].write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.png").write_text("not an image")
    assert "truncated JPEG" in damage(str(cut["jpg"]))
    assert "truncated PNG" in damage(str(cut["png"]))
    assert "truncated GIF" in damage(str(cut["gif"]))
    assert "truncated BMP" in damage(str(cut["bmp"]))
    assert damage(str(tmp_path / "empty.jpg")) == "an empty file"
    assert damage(str(tmp_path / "notes.png")) == "not a JPEG, PNG, GIF or BMP image"
    paths = [str(p) for p in (whole["jpg"], cut["jpg"], whole["png"], tmp_path / "empty.jpg")]
    assert [p for p, _ in find_damaged(paths)] == [paths[1], paths[3]]


def test_a_folder_with_damaged_files_is_refused_or_trained_without_them(
    tmp_path: Path, capsys
) -> None:
    from mixer_cli.data.image_files import find_damaged

    root = write_image_folder(tmp_path / "imgs", {"train": 6, "test": 3})
    jpeg = root / "train" / "dog" / "0.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:100])  # a truncated JPEG
    (root / "test" / "cat" / "zero.png").write_bytes(b"")
    source = open_dataset(f"folder:{root}")
    with pytest.raises(DataError, match=r"1 damaged image file\(s\) in .*first .*0.jpg'"):
        source.num_examples("train")  # any use of a split checks its files first
    with pytest.raises(DataError, match=r"1 damaged image file\(s\) in .*first .*: an empty"):
        source.eval_stream("test", 0, 1)
    skipping = open_dataset(f"folder:{root}", skip_corrupt=True)
    assert skipping.num_examples("train") == 3 * 6 - 1
    assert skipping.num_examples("test[:100%]") == 3 * 3  # the test split is checked now
    assert "left out 1 damaged image file(s)" in capsys.readouterr().err
    assert str(jpeg) not in {str(p) for p in skipping._raw}
    assert not find_damaged([str(p) for p in skipping._raw])  # what is left is whole


def test_masks_that_tensorflow_reads_otherwise_and_undecodable_images_are_named(tmp_path):
    from PIL import Image

    from mixer_cli.core.tf_cpu import tf
    from mixer_cli.data.image_files import listing, mask_damage, undecodable

    values = np.array([[0, 1], [1, 0]], np.uint8)
    palette = Image.fromarray(values, mode="P")
    palette.putpalette([0, 0, 0, 128, 0, 0])  # Pascal VOC's first colours
    forms = {  # how Pillow saves it -> what mask_damage says
        "8-bit": (Image.fromarray(values), None),
        "1-bit": (
            Image.fromarray(values.astype(bool)),
            "a 1-bit PNG (TensorFlow reads its 1 as 255)",
        ),
        "16-bit": (
            Image.fromarray(values.astype(np.uint16)),
            "a 16-bit PNG (TensorFlow reads its 1 as 0)",
        ),
        "palette": (palette, "a palette PNG"),
        "rgb": (Image.fromarray(values * 9).convert("RGB"), "an RGB PNG (3 channels)"),
    }
    for form, (image, why) in forms.items():
        path = tmp_path / f"{form}.png"
        image.save(path)
        decoded = tf.io.decode_png(path.read_bytes(), channels=1).numpy()[..., 0]
        same = np.array_equal(np.array(Image.open(path)), decoded)
        got = mask_damage(str(path))
        assert (got is None) == same and (got or "").startswith(why or ""), (form, got)
    image = tmp_path / "inside.png"
    Image.fromarray(np.full((16, 16, 3), 7, np.uint8)).save(image)
    assert undecodable(str(image)) is None
    damage_inside(image)
    assert undecodable(str(image)).startswith("cannot be decoded (Invalid PNG data")
    pairs = [(f"{i}.png", "why") for i in range(5)]
    assert listing(pairs) == "'0.png' (why), '1.png' (why), '2.png' (why) and 2 more"
