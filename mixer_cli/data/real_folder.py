"""ImageNet ReaL from files: the ILSVRC2012 validation images in a folder + `real.json`.

Many hold ImageNet's validation set as its files, ``ILSVRC2012_val_00000001.JPEG`` ...
``ILSVRC2012_val_00050000.JPEG``, flat or sorted into one folder per class, and fetch the
reassessed labels from google-research/reassessed-imagenet: ``real.json``, a JSON list of
50,000 lists of class indices, item i for the image numbered i + 1 (the file names sorted),
an empty list where the raters kept no label. This source matches each image to its list
by the number in its file name (so neither the files' order nor their folders matter) and
hands the lists on as the label set ``real_label``, the feature name of TFDS's
``imagenet2012_real``: the `real` evaluator scores both forms by one rule, on the devices.

An image's original label is its class folder's index, the folders sorted (ImageNet's
synset order, as an image folder's classes are); a flat folder has none (1,000 classes,
ReaL's score only). One split, ``validation``, in file-number order. The files are checked
as an image folder's are (`folder.py`) before they are first read.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from mixer_cli.core import files
from mixer_cli.core.errors import DataError
from mixer_cli.core.tf_cpu import tf
from mixer_cli.data.folder import IMAGE_SUFFIXES, FolderSource

LABEL_SET = "real_label"  # what the label sets are called (TFDS imagenet2012_real's feature)
IMAGENET_CLASSES = 1000  # a flat folder's: real.json indexes ImageNet's classes
FILE_NAME = re.compile(r"ILSVRC2012_val_(\d+)")  # a validation image's name, without suffix
SOURCE = "https://github.com/google-research/reassessed-imagenet"


class RealFolderSource(FolderSource):
    """The validation images in `root` (flat or in class folders) with `real_json`'s label
    sets; `original_labels` says whether class folders give each image its ImageNet label."""

    layout = "ILSVRC2012_val_NNNNNNNN.JPEG files, flat or in class folders"

    def __init__(self, root: Path, real_json: Path, skip_corrupt: bool = False) -> None:
        self.real_json = real_json
        super().__init__(root, skip_corrupt)
        self.name = f"folder:{root} with {real_json}"  # a pass is shared only with both

    def _listing(self) -> tuple[list[str], dict[str, np.ndarray], dict[str, np.ndarray]]:
        root, where = self.root, str(self.root)
        sets = self._read_sets()
        class_dirs = sorted(d for d in root.iterdir() if d.is_dir())
        labelled = [
            (f, label)
            for label, d in enumerate(class_dirs)
            for f in d.iterdir()
            if f.suffix.lower() in IMAGE_SUFFIXES
        ]
        loose = [(f, -1) for f in root.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES]
        if labelled and loose:
            raise DataError(
                f"{where!r} has images both in class folders and beside them, e.g. "
                f"{str(loose[0][0])!r}; keep them all in class folders or all flat"
            )
        images = labelled or loose
        numbered: dict[int, tuple[Path, int]] = {}
        for path, label in images:
            match = FILE_NAME.fullmatch(path.stem)
            if match is None:
                raise DataError(
                    f"{str(path)!r} has no validation index in its name; ReaL matches images "
                    "to real.json by ImageNet's file names, ILSVRC2012_val_00000001.JPEG ..."
                )
            number = int(match[1])
            if number in numbered:
                raise DataError(
                    f"{str(numbered[number][0])!r} and {str(path)!r} are both validation "
                    f"image {number}; keep one"
                )
            numbered[number] = (path, label)
        if len(numbered) != len(sets):
            raise DataError(
                f"{where!r} has {len(numbered)} validation images and {self.real_json} lists "
                f"{len(sets)}; ReaL needs the images real.json lists, all of them "
                "(ImageNet's 50,000)"
            )
        outside = next((n for n in sorted(numbered) if not 1 <= n <= len(sets)), None)
        if outside is not None:
            raise DataError(
                f"{str(numbered[outside][0])!r} is validation image {outside}, beyond the "
                f"{len(sets)} that {self.real_json} lists; use the real.json of these images"
            )
        classes = [d.name for d in class_dirs] or [str(c) for c in range(IMAGENET_CLASSES)]
        for i, classes_of in enumerate(sets):
            bad = next((c for c in classes_of if not 0 <= c < len(classes)), None)
            if bad is not None:
                held = f"{len(classes)} class folders" if class_dirs else "ImageNet's classes"
                raise DataError(
                    f"{self.real_json} gives image {i + 1} (ILSVRC2012_val_{i + 1:08d}) class "
                    f"{bad}, outside 0..{len(classes) - 1} ({where!r} holds {held})"
                )
        self.original_labels = bool(class_dirs)
        paths = np.array([str(numbered[n][0]) for n in range(1, len(sets) + 1)])
        self._sets = {str(path): sets[i] for i, path in enumerate(paths)}  # by path: a
        # damaged file left out (skip_corrupt) takes its set with it
        labels = np.array([numbered[n][1] for n in range(1, len(sets) + 1)], np.int64)
        return classes, {"validation": paths}, {"validation": labels}

    def _read_sets(self) -> list[list[int]]:
        """real.json: a list of lists of class indices, checked."""
        path = self.real_json
        if not path.is_file():
            raise DataError(f"real.json {str(path)!r} does not exist; download it from {SOURCE}")
        sets = files.read_json_value(path, DataError)
        what = f"{path} is not ReaL's real.json (a list of lists of class indices, one per image)"
        if not isinstance(sets, list) or not sets:
            raise DataError(f"{what}: it holds {_kind(sets)}")
        for i, item in enumerate(sets):
            if not isinstance(item, list) or not all(_is_index(c) for c in item):
                raise DataError(f"{what}: item {i} is {_kind(item)}")
        return sets

    def check_label_set(self, feature: str) -> None:
        if feature != LABEL_SET:
            raise DataError(
                f"{self.name} has one label set, {LABEL_SET!r} (real.json's), not {feature!r}"
            )

    def eval_stream(
        self, split: str, process: int, processes: int, label_set: str | None = None
    ) -> tf.data.Dataset:
        """(path, original label or -1, the image's classes)."""
        if label_set is None:
            return super().eval_stream(split, process, processes)
        self.check_label_set(label_set)
        mine = np.array_split(self._indices(split), processes)[process]
        sets = [self._sets[str(path)] for path in self._raw[mine]]
        classes = tf.RaggedTensor.from_row_lengths(
            np.array([c for s in sets for c in s], np.int64),
            np.array([len(s) for s in sets], np.int64),
        )
        return tf.data.Dataset.from_tensor_slices((self._raw[mine], self._labels[mine], classes))


def _is_index(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "an empty list" if not value else "a list of other things than class indices"
    return f"a {type(value).__name__} {str(value)[:40]!r}"
