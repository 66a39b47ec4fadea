"""Image folders laid out as ``ROOT/<split>/<class>/<image>`` (what TFDS's ImageFolder reads).

JPEG, PNG, GIF and BMP files, grayscale or colour, of any sizes. Classes are the
sorted union of class folder names over all splits, so a label means the same in
every split. Each split is listed in one fixed pseudo-random order (TFDS stores its
splits shuffled too), so a slice such as ``train[98%:]`` is a random subset with
every class in it, not the last class folder. Before training, every file's size, header
and end are checked (`image_files.py`): a damaged or non-image file stops the run before
the first step naming it (we fail rather than skip, unless `data.skip_corrupt` says so:
a silently smaller dataset hides mistakes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mixer_cli.core.errors import DataError, DatasetNotFound
from mixer_cli.core.tf_cpu import tf
from mixer_cli.data.image_files import find_damaged
from mixer_cli.data.sources import IndexedSource

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp"})
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"BM")


class FolderSource(IndexedSource):
    encoded = True

    def __init__(self, root: Path) -> None:
        self.root = root
        self.name = f"folder:{root}"
        if not root.is_dir():
            raise DatasetNotFound(
                f"image folder {str(root)!r} does not exist; expected ROOT/<split>/<class>/<image>"
            )
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
        self.classes = classes
        self.num_classes = len(classes)
        self.image_shape = (None, None, 3)
        self.train_split = "train" if "train" in raw else next(iter(raw))
        self.eval_split = next(
            (s for s in ("test", "validation", "val") if s in raw), self.train_split
        )
        super().__init__(raw, labels)

    def check_images(self, skip: bool) -> None:
        damaged = find_damaged([str(p) for p in self._raw])
        if not damaged:
            return
        first, why = damaged[0]
        if not skip:
            raise DataError(
                f"{len(damaged)} damaged image file(s) in {str(self.root)!r}, first {first!r}: "
                f"{why}; replace or remove them, or set data.skip_corrupt=true to train "
                "without them"
            )
        bad = {path for path, _ in damaged}
        raw, labels = {}, {}
        for split, offset in self._offsets.items():
            rows = np.arange(offset, offset + self._sizes[split])
            rows = rows[[str(p) not in bad for p in self._raw[rows]]]
            raw[split], labels[split] = self._raw[rows], self._labels[rows]
        IndexedSource.__init__(self, raw, labels)
        import jax

        if jax.process_index() == 0:
            from mixer_cli.core import report

            names = ", ".join(repr(path) for path, _ in damaged[:3])
            report.stderr.print(
                f"[yellow]warning:[/] left out {len(damaged)} damaged image file(s) of "
                f"{self.name} (data.skip_corrupt): {names}{', ...' if len(damaged) > 3 else ''}"
            )

    def shorter_side(self) -> int | None:
        """The first training image's shorter side: folders rarely mix sizes much."""
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
