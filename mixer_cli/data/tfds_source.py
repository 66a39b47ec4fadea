"""TFDS datasets by name: prepared data in a data directory, downloaded when possible.

Resolution order for ``NAME[:VERSION]``: a registered TFDS builder (downloading and
preparing it if needed and the network allows), else a prepared copy found under
the data directory (``DATA_DIR/NAME/VERSION/dataset_info.json``, how ImageNet-21k
and other manual datasets arrive), else an error with close names. Processes read
disjoint slices (`tfds.split_for_jax_process`); files and examples are shuffled
with per-epoch seeds before decoding.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mixer_cli.core.errors import DataError, DatasetNotFound
from mixer_cli.core.tf_cpu import no_autograph, tf
from mixer_cli.data.sources import IGNORE, DataSource, TrainStream, epoch_seed

SHUFFLE_BUFFER = 10_000
_DOWNLOAD_HOST = "storage.googleapis.com"  # where TFDS fetches most datasets from


def default_data_dir() -> str:
    return os.environ.get("TFDS_DATA_DIR", str(Path("~/tensorflow_datasets").expanduser()))


def _network_available() -> bool:
    """A fast check, so that an offline machine fails at once instead of retrying for minutes."""
    try:
        socket.getaddrinfo(_DOWNLOAD_HOST, 443)
    except OSError:
        return False
    return True


def _prepared_copy(name: str, version: str, data_dir: str):  # -> DatasetBuilder | None
    import tensorflow_datasets as tfds

    base = Path(data_dir) / name
    versions = [base / version] if version else sorted(base.glob("*"), reverse=True)
    for path in versions:
        if (path / "dataset_info.json").exists():
            return tfds.builder_from_directory(str(path))
    return None


def _unknown(spec: str, err: Exception, data_dir: str, how_to: str) -> DatasetNotFound:
    """TFDS's refusal of `spec` (a parse error, an unknown name, config or version) as one
    line: why, and the close names (builders or configs)."""
    import tensorflow_datasets as tfds

    name, _, version = spec.partition(":")
    name, _, config = name.partition("/")
    known = tfds.list_builders(with_community_datasets=False)  # offline: no GCS lookups
    if name not in known:
        close = difflib.get_close_matches(name.lower(), known, n=3, cutoff=0.7)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        path = " (nor an image folder of that path: folder:PATH)" if "/" in spec else ""
        if not re.fullmatch(r"\w+", name):
            return DatasetNotFound(
                f"unknown dataset {spec!r}: not a TFDS name (NAME[/CONFIG][:VERSION]){path}{hint}"
            )
        return DatasetNotFound(
            f"unknown dataset {spec!r}: no TFDS builder of that name and no prepared copy in "
            f"{Path(data_dir) / name}{path}{hint or ';'} for a manual dataset, {how_to}"
        )
    builder = tfds.builder_cls(name)
    configs = [c.name for c in builder.BUILDER_CONFIGS or ()]
    if config and config not in configs:
        close = difflib.get_close_matches(config, configs, n=3, cutoff=0.5) or configs[:5]
        more = ", ..." if len(configs) > len(close) else ""
        listed = f"configs: {', '.join(close)}{more}" if configs else "it has none"
        return DatasetNotFound(f"cannot load {spec!r}: {name} has no config {config!r} ({listed})")
    if not re.fullmatch(r"(\d+\.\d+\.\d+)?", version) or (":" in spec and not version):
        return DatasetNotFound(
            f"cannot load {spec!r}: {version!r} is not a version (MAJOR.MINOR.PATCH, e.g. "
            f"{name}:{builder.VERSION})"
        )
    # TFDS wraps a builder's own refusal: 'Failed to construct dataset "x", builder_kwargs
    # "{...}": WHY' (such as a version it does not have).
    why = re.sub(r'^Failed to construct dataset "[^"]*", builder_kwargs "[^"]*": ', "", str(err))
    why = next((line for line in why.splitlines() if line.strip()), type(err).__name__)
    if why.startswith("Parsing builder name string"):
        why = f"not a TFDS name (NAME[/CONFIG][:VERSION], e.g. {name}:{builder.VERSION})"
    return DatasetNotFound(f"cannot load {spec!r}: {why.strip().rstrip(':')}")


@dataclass(frozen=True)
class Masks:
    """How a TFDS dataset stores segmentation masks: its feature, and what each stored
    value means (a class index, or IGNORE)."""

    feature: str
    values: dict[int, int]
    classes: tuple[str, ...]


# Datasets whose masks mixer reads (mixer segment --data NAME).
MASKS: dict[str, Masks] = {
    # Trimaps: 1 pet, 2 background, 3 the border between them (left out of training and
    # scoring, as in the dataset's paper).
    "oxford_iiit_pet": Masks("segmentation_mask", {1: 1, 2: 0, 3: IGNORE}, ("background", "pet")),
}
UNKNOWN_VALUE = 254  # a stored value the table lacks: refused by the mask check

# Datasets whose class label is stored under another feature than 'label' (ImageNet ReaL:
# the original ImageNet label; its reassessed label sets are `real_label`, read on request).
LABEL_FEATURES: dict[str, str] = {"imagenet2012_real": "original_label"}


def open_tfds(
    spec: str, data_dir: str | os.PathLike | None, *, download: bool, task: str = "classify"
) -> TfdsSource:
    name = spec.partition(":")[0]
    if task == "segment" and name not in MASKS:
        raise DataError(
            f"mixer does not know where {name!r} keeps segmentation masks (TFDS sets with "
            f"masks: {', '.join(MASKS)}); or use a folder of images/ and masks/"
        )
    builder = prepared_builder(spec, data_dir, download=download)
    return TfdsSource(builder, MASKS[name] if task == "segment" else None)


def prepared_builder(spec: str, data_dir: str | os.PathLike | None, *, download: bool):
    """The TFDS builder of `spec`, prepared (downloaded and prepared here if it must and
    can be), else a DatasetNotFound saying how to prepare it."""
    import tensorflow_datasets as tfds

    data_dir = str(data_dir) if data_dir else default_data_dir()
    name, _, version = spec.partition(":")
    how_to = (
        f"prepare it where TFDS can reach the network (`tfds build {name} --data_dir DIR`) "
        "and pass --data-dir DIR, or use an image folder (folder:PATH)"
    )
    try:
        builder = tfds.builder(spec, data_dir=data_dir)
    except Exception as err:  # TFDS refuses a name in many ways: parse, name, config, version
        builder = _prepared_copy(name, version, data_dir)
        if builder is None:
            raise _unknown(spec, err, data_dir, how_to) from None
    if not builder.is_prepared():
        if not download:
            raise DatasetNotFound(f"{spec!r} is not prepared in {builder.data_dir}; {how_to}")
        manual = builder.MANUAL_DOWNLOAD_INSTRUCTIONS is not None
        if not manual and not _network_available():
            raise DatasetNotFound(
                f"{spec!r} is not prepared in {builder.data_dir} and cannot be downloaded "
                f"(no network); {how_to}"
            )
        try:
            builder.download_and_prepare()
        except Exception as err:  # TFDS raises many kinds; all mean "not available here"
            raise DatasetNotFound(
                f"{spec!r} is not prepared in {builder.data_dir} and could not be prepared "
                f"({str(err).splitlines()[0]}); {how_to}"
            ) from err
    return builder


class TfdsSource(DataSource):
    encoded = True

    def __init__(self, builder, masks: Masks | None = None) -> None:
        self.builder, self.masks = builder, masks
        info = builder.info
        self.name = info.name
        self.label_key = LABEL_FEATURES.get(self.name, "label") if masks is None else masks.feature
        missing = {"image", self.label_key} - set(info.features.keys())
        if missing:
            what = "classification" if masks is None else "segmentation"
            raise DataError(
                f"{self.name} has no {' or '.join(sorted(missing))} feature: an image "
                f"{what} dataset needs 'image' and {self.label_key!r}"
            )
        if masks is None:
            self.num_classes = info.features[self.label_key].num_classes
        else:
            self.task, self.classes, self.num_classes = "segment", masks.classes, len(masks.classes)
            table = np.full(256, UNKNOWN_VALUE, np.uint8)
            for stored, meaning in masks.values.items():
                table[stored] = meaning
            self._mask_table = table
        height, width = info.features["image"].shape[:2]
        self.image_shape = (height, width, 3)
        splits = list(info.splits.keys())
        self.eval_split = next((s for s in ("test", "validation") if s in splits), "test")

    @property
    def splits(self) -> dict[str, int]:
        return {name: info.num_examples for name, info in self.builder.info.splits.items()}

    def tfds_split(self, split: str) -> str:
        """A split as this source names it -> the TFDS split string it reads (the same
        here; a transfer task maps its own names)."""
        return split

    def label(self, example: dict) -> tf.Tensor:
        """A TFDS example's label (a transfer task derives it from other features)."""
        return example[self.label_key]

    def num_examples(self, split: str) -> int:
        return self._count(self.tfds_split(split))

    def _count(self, split) -> int:  # a TFDS split (string or per-process instruction)
        try:
            return self.builder.info.splits[split].num_examples
        except (KeyError, ValueError, AssertionError) as err:
            splits = ", ".join(self.builder.info.splits.keys())
            raise DataError(f"{self.name} has no split {split!r} (splits: {splits})") from err

    def _read(self, split: str, shuffle_seed: int | None) -> tf.data.Dataset:
        import tensorflow_datasets as tfds

        options = tf.data.Options()
        options.deterministic = True
        return self.builder.as_dataset(
            split=split,
            shuffle_files=shuffle_seed is not None,
            read_config=tfds.ReadConfig(shuffle_seed=shuffle_seed, options=options),
            decoders={"image": tfds.decode.SkipDecoding()},
        )

    def _process_split(self, split: str, process: int, processes: int) -> str:
        import tensorflow_datasets as tfds

        split = self.tfds_split(split)
        self._count(split)  # refuse unknown splits with the list of valid ones
        return tfds.split_for_jax_process(split, process_index=process, process_count=processes)

    def steps_per_epoch(self, split: str, global_batch: int, processes: int) -> int:
        sizes = self.eval_sizes(split, processes)  # each process's slice
        steps = min(sizes) // (global_batch // processes)
        if steps == 0:
            raise self._too_small(split, sum(sizes), global_batch)
        return steps

    def train_stream(
        self, split: str, epoch: int, seed: int, global_batch: int, process: int, processes: int
    ) -> TrainStream:
        local = global_batch // processes
        steps = self.steps_per_epoch(split, global_batch, processes)
        shuffle_seed = epoch_seed(seed, epoch)
        ds = self._read(self._process_split(split, process, processes), shuffle_seed)
        ds = ds.shuffle(SHUFFLE_BUFFER, seed=shuffle_seed).take(steps * local).enumerate()

        @no_autograph
        def keep(i, ex):  # global position: row `process` of each global batch
            position = i // local * global_batch + process * local + i % local
            return ex["image"], self.label(ex), position, tf.constant(epoch, tf.int64)

        return TrainStream(ds.map(keep), num_epochs=1)

    def eval_sizes(self, split: str, processes: int) -> list[int]:
        return [self._count(self._process_split(split, p, processes)) for p in range(processes)]

    def eval_stream(
        self, split: str, process: int, processes: int, label_set: str | None = None
    ) -> tf.data.Dataset:
        if label_set is not None:
            self.check_label_set(label_set)
        ds = self._read(self._process_split(split, process, processes), shuffle_seed=None)
        if label_set is None:
            return ds.map(no_autograph(lambda ex: (ex["image"], self.label(ex))))
        return ds.map(no_autograph(lambda ex: (ex["image"], self.label(ex), ex[label_set])))

    def check_label_set(self, feature: str) -> None:
        import tensorflow_datasets as tfds

        def lists_classes(f: object) -> bool:  # Sequence(ClassLabel) of this dataset's classes
            inner = getattr(f, "feature", None)
            return (
                isinstance(f, tfds.features.Sequence)
                and isinstance(inner, tfds.features.ClassLabel)
                and inner.num_classes == self.num_classes
            )

        found = [k for k, f in self.builder.info.features.items() if lists_classes(f)]
        if feature not in found:
            raise DataError(
                f"{self.name} has no feature {feature!r} holding a list of its "
                f"{self.num_classes} classes per image (such features: "
                f"{', '.join(found) or 'none'})"
            )

    def read_mask(self, label: tf.Tensor) -> tf.Tensor:
        """A stored mask [H, W, 1] -> class indices [H, W] by the dataset's value table."""
        if self.masks is None:
            return super().read_mask(label)
        return tf.gather(tf.constant(self._mask_table), tf.cast(label[..., 0], tf.int32))
