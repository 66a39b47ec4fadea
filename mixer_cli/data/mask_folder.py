"""Segmentation folders: ``ROOT/<split>/images/<name>.<ext>``, ``ROOT/<split>/masks/<name>.png``.

A mask is an 8-bit single-channel (grayscale) PNG of the image's size whose values are
class indices, 255 for pixels that count nowhere (a border, an unlabelled region). Class
names come from ``ROOT/classes.txt`` (one per line, line i names value i) when it is
there; otherwise the classes are 0..the largest value found. Every mask (and every
image's header) is read once when the folder is opened: a damaged image or mask, an image
without its mask, a mask of another size than its image, a mask TensorFlow would read
other values from than those stored (a palette, colour, or 1-, 2-, 4- or 16-bit PNG) or a
mask value outside the classes stops the run before anything is written, naming the file
(damaged files are never left out: a mask's image cannot be dropped quietly).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mixer_cli.core.errors import DataError, DatasetNotFound
from mixer_cli.core.tf_cpu import op_error_line, tf
from mixer_cli.data.folder import IMAGE_SUFFIXES, FolderSource
from mixer_cli.data.image_files import damage, find_damaged, mask_damage
from mixer_cli.data.sources import IGNORE, IndexedSource

LAYOUT = "ROOT/<split>/images/<name>.<ext> and ROOT/<split>/masks/<name>.png"


def _image_size(path: tf.Tensor) -> tf.Tensor:
    """[height, width] of an image file: from a JPEG's header, else by decoding it."""
    data = tf.io.read_file(path)
    return tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.image.extract_jpeg_shape(data)[:2],
        lambda: tf.shape(tf.io.decode_image(data, channels=3, expand_animations=False))[:2],
    )


def scan(images: np.ndarray, masks: np.ndarray) -> dict[str, np.ndarray]:
    """Each pair's image size, mask size, mask channels and largest label below IGNORE
    (-1 if none), read in parallel."""

    def read(image: tf.Tensor, path: tf.Tensor) -> dict[str, tf.Tensor]:
        mask = tf.io.decode_png(tf.io.read_file(path), channels=0)
        labels = tf.boolean_mask(mask, mask != IGNORE)
        return {
            "image": _image_size(image),
            "mask": tf.shape(mask)[:2],
            "channels": tf.shape(mask)[-1],
            "largest": tf.reduce_max(tf.concat([tf.cast(labels, tf.int32), [-1]], 0)),
        }

    ds = tf.data.Dataset.from_tensor_slices((images, masks))
    ds = ds.map(read, num_parallel_calls=tf.data.AUTOTUNE).batch(256)
    try:
        parts = list(ds.as_numpy_iterator())
    except tf.errors.OpError as err:
        raise DataError(f"an image or mask cannot be read: {op_error_line(err)}") from None
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


class MaskFolderSource(FolderSource):
    """Images with their label masks, in IndexedSource's exact-resume order."""

    task = "segment"

    def __init__(self, root: Path) -> None:
        self.root, self.name = root, f"folder:{root}"
        if not root.is_dir():
            raise DatasetNotFound(
                f"segmentation folder {str(root)!r} does not exist; expected {LAYOUT}"
            )
        split_dirs = sorted(d for d in root.iterdir() if (d / "images").is_dir())
        if not split_dirs:
            raise DataError(f"{str(root)!r} has no <split>/images folders; expected {LAYOUT}")
        raw, labels = {}, {}
        for split in split_dirs:
            images = sorted(
                f for f in (split / "images").iterdir() if f.suffix.lower() in IMAGE_SUFFIXES
            )
            if not images:
                raise DataError(f"{str(split / 'images')!r} has no images")
            masks = [split / "masks" / f"{f.stem}.png" for f in images]
            missing = [str(f) for f, m in zip(images, masks, strict=True) if not m.is_file()]
            if missing:
                raise DataError(
                    f"{len(missing)} image(s) of {str(split)!r} have no mask, first "
                    f"{missing[0]!r} (expected {split / 'masks' / Path(missing[0]).stem!s}.png)"
                )
            order = np.random.default_rng(0).permutation(len(images))
            raw[split.name] = np.array([str(f) for f in images])[order]
            labels[split.name] = np.array([str(m) for m in masks])[order]
        IndexedSource.__init__(self, raw, labels)
        self.skip_corrupt, self._left_out = False, {}
        self._checked = set(raw)  # every file is checked now, by `_classes`
        self.classes = self._classes()
        self.num_classes = len(self.classes)
        self.image_shape = (None, None, 3)
        self.train_split = "train" if "train" in raw else next(iter(raw))
        self.eval_split = next(
            (s for s in ("test", "validation", "val") if s in raw), self.train_split
        )

    def _classes(self) -> tuple[str, ...]:
        damaged = find_damaged([str(p) for p in self._raw], damage)
        damaged += find_damaged([str(p) for p in self._labels], mask_damage)
        if damaged:
            first, why = damaged[0]
            raise DataError(
                f"{len(damaged)} damaged or unusable file(s) in {str(self.root)!r}, first "
                f"{first!r}: {why}"
            )
        found = scan(self._raw, self._labels)
        channels, largest = found["channels"], found["largest"]
        colour = np.flatnonzero(channels != 1)
        if len(colour):
            raise DataError(
                f"mask {self._labels[colour[0]]!r} has {channels[colour[0]]} channels; masks "
                "are 8-bit grayscale PNGs of class indices (255: ignore)"
            )
        sized = np.flatnonzero((found["image"] != found["mask"]).any(axis=1))
        if len(sized):
            i = sized[0]
            raise DataError(
                f"mask {self._labels[i]!r} is {'x'.join(map(str, found['mask'][i]))} but its "
                f"image is {'x'.join(map(str, found['image'][i]))} (height x width)"
            )
        listed = self.root / "classes.txt"
        if listed.is_file():
            names = tuple(line.strip() for line in listed.read_text().splitlines() if line.strip())
        else:
            names = tuple(str(i) for i in range(max(int(largest.max()) + 1, 2)))
        outside = np.flatnonzero(largest >= len(names))
        if len(outside):
            raise DataError(
                f"mask {self._labels[outside[0]]!r} has label {largest[outside[0]]}, outside "
                f"the {len(names)} classes of {listed} (values 0..{len(names) - 1}, "
                f"{IGNORE}: ignore)"
            )
        if len(names) < 2:
            raise DataError(f"{listed} names {len(names)} class(es); segmentation needs at least 2")
        return names

    def read_mask(self, label: tf.Tensor) -> tf.Tensor:
        """Mask path -> its [H, W] label map."""
        return tf.io.decode_png(tf.io.read_file(label), channels=1)[..., 0]

    def shorter_side(self) -> int | None:
        return FolderSource.shorter_side(self)
