"""Image folders laid out as ``ROOT/<split>/<class>/<image>`` (what TFDS's ImageFolder reads).

JPEG, PNG, GIF and BMP files, grayscale or colour, of any sizes. Classes are the
sorted union of class folder names over all splits, so a label means the same in
every split. Each split is listed in one fixed pseudo-random order (TFDS stores its
splits shuffled too), so a slice such as ``train[98%:]`` is a random subset with
every class in it, not the last class folder. Before a split is first used (its size, a
stream, its label counts: whatever reads it, training, evaluation or an export's
calibration), its files' sizes, headers and ends are checked once (`image_files.py`): a
damaged or non-image file stops the command before any step naming it (we fail rather
than skip, unless `skip_corrupt` says so: a silently smaller dataset hides mistakes). A
file broken only inside stops the read where it is met; the error then names it (every
file of the split decoded once, on that path only).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mixer_cli.core.errors import DataError, DatasetNotFound
from mixer_cli.core.tf_cpu import tf
from mixer_cli.data.image_files import find_damaged, listing, undecodable
from mixer_cli.data.sources import IndexedSource

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp"})
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"BM")


class FolderSource(IndexedSource):
    encoded = True
    layout = "ROOT/<split>/<class>/<image>"  # what the messages say a folder should hold

    def __init__(self, root: Path, skip_corrupt: bool = False) -> None:
        self.root, self.skip_corrupt = root, skip_corrupt
        self.name = f"folder:{root}"
        if not root.is_dir():
            raise DatasetNotFound(
                f"image folder {str(root)!r} does not exist; expected {self.layout}"
            )
        self.classes, raw, labels = self._listing()
        self.num_classes = len(self.classes)
        self.image_shape = (None, None, 3)
        self.train_split = "train" if "train" in raw else next(iter(raw))
        self.eval_split = next(
            (s for s in ("test", "validation", "val") if s in raw), self.train_split
        )
        super().__init__(raw, labels)
        self._checked: set[str] = set()  # splits whose files were checked
        self._left_out: dict[str, list[tuple[str, int]]] = {}  # (path, label) skipped, by split

    def _listing(self) -> tuple[list[str], dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The classes, and each split's files (paths) and labels, in the split's order."""
        root = self.root
        split_dirs = sorted(d for d in root.iterdir() if d.is_dir())
        if not split_dirs:
            raise DataError(
                f"{str(root)!r} has no split folders; expected ROOT/<split>/<class>/<image>, "
                "e.g. ROOT/train/cat/1.jpg"
            )
        classes = sorted({c.name for split in split_dirs for c in split.iterdir() if c.is_dir()})
        if len(classes) < 2:
            raise DataError(
                f"{str(root)!r} has {len(classes)} class folder(s) "
                f"({', '.join(classes) or 'none'}); classification needs at least 2"
            )
        index = {name: i for i, name in enumerate(classes)}
        raw, labels = {}, {}
        for split in split_dirs:
            files = sorted(
                (f, index[c.name])
                for c in split.iterdir()
                if c.is_dir()
                for f in c.iterdir()
                if f.suffix.lower() in IMAGE_SUFFIXES
            )
            if not files:
                raise DataError(
                    f"split folder {str(split)!r} has no images "
                    f"({', '.join(sorted(IMAGE_SUFFIXES))}) in class folders"
                )
            order = np.random.default_rng(0).permutation(len(files))
            raw[split.name] = np.array([str(f) for f, _ in files])[order]
            labels[split.name] = np.array([label for _, label in files], np.int64)[order]
        return classes, raw, labels

    def _indices(self, split: str) -> np.ndarray:
        """The rows `split` reads, its named splits' files checked first (once each)."""
        unchecked = sorted({p.splitname for p in self._parts(split)} - self._checked)
        if unchecked:
            self._check_files(unchecked)
        return super()._indices(split)

    def _check_files(self, splits: list[str]) -> None:
        """Refuse damaged files of `splits` naming the first, or with `skip_corrupt` leave
        them out with a warning."""
        rows = np.concatenate([self._rows(name) for name in splits])
        damaged = find_damaged([str(p) for p in self._raw[rows]])
        if damaged and not self.skip_corrupt:
            first, why = damaged[0]
            raise DataError(
                f"{len(damaged)} damaged image file(s) in {str(self.root)!r}, first {first!r}: "
                f"{why}; replace or remove them (training can leave them out: "
                "data.skip_corrupt=true)"
            )
        self._checked.update(splits)
        if not damaged:
            return
        bad = {path for path, _ in damaged}
        raw, labels = {}, {}
        for name in self._sizes:
            rows = self._rows(name)
            keep = np.array([str(p) not in bad for p in self._raw[rows]], bool)
            if not keep.all():
                self._left_out[name] = list(
                    zip(map(str, self._raw[rows[~keep]]), self._labels[rows[~keep]], strict=True)
                )
            raw[name], labels[name] = self._raw[rows[keep]], self._labels[rows[keep]]
        IndexedSource.__init__(self, raw, labels)
        import jax

        if jax.process_index() == 0:
            from mixer_cli.core import report

            report.stderr.print(
                f"[yellow]warning:[/] left out {len(damaged)} damaged image file(s) of "
                f"{self.name} {'+'.join(splits)} (data.skip_corrupt): {listing(damaged)}",
                soft_wrap=True,
            )

    def undecodable(self, split: str) -> str | None:
        """Damage the check before the run cannot see (header and end intact, broken
        inside): every file of the split decoded, as the pipeline does."""
        found = find_damaged([str(p) for p in self._raw[self._indices(split)]], undecodable)
        return f"{len(found)} file(s) cannot be decoded: {listing(found)}" if found else None

    def check_classes(self, train_split: str, eval_split: str) -> None:
        """Also refuse a class whose every training image was left out as damaged."""
        train = self.label_counts(train_split)  # the split's files are checked first
        for c in np.flatnonzero(train == 0) if train is not None else ():
            lost = [
                path
                for p in self._parts(train_split)
                for path, label in self._left_out.get(p.splitname, [])
                if label == c
            ]
            if lost:
                raise DataError(
                    f"{self.name}: class {self.classes[c]!r} has no readable training images "
                    f"in {train_split!r} (its {len(lost)} damaged file(s) were left out, first "
                    f"{lost[0]!r}); replace them, or remove the class folder"
                )
        super().check_classes(train_split, eval_split)

    def shorter_side(self) -> int | None:
        """The first training image's shorter side: folders rarely mix sizes much."""
        if not self._sizes.get(self.train_split):
            return None
        try:
            data = tf.io.read_file(self._raw[self._offsets[self.train_split]])
            shape = tf.io.decode_image(data, channels=3, expand_animations=False).shape
        except tf.errors.OpError:
            return None  # not an image: training will stop naming the file
        return int(min(shape[0], shape[1]))

    def read(self, raw: tf.Tensor) -> tf.Tensor:
        """Path -> encoded bytes; a file that is no image fails naming its path."""
        data = tf.io.read_file(raw)
        is_image = tf.reduce_any(
            [tf.strings.substr(data, 0, len(magic)) == magic for magic in _MAGIC]
        )
        check = tf.debugging.Assert(is_image, ["not a JPEG/PNG/GIF/BMP image:", raw])
        with tf.control_dependencies([check]):
            return tf.identity(data)
