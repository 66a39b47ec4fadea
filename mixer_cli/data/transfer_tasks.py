"""The paper's transfer tasks as data: Avg 5 (five fine-tuning sets) and VTAB-1k (19 tasks).

One `TransferTask` per task: which TFDS dataset it reads, its named splits as TFDS split
strings, how an example's label is made, its classes, the resolution and augmentations the
protocol allows, its group and its fine-tuning budget. `--data vtab:NAME` or `avg5:NAME`
opens one (data/transfer_source.py); a later `mixer transfer` runs suites of them.

Sources, per task in its `source` field:
- VTAB-1k: google-research/task_adaptation `task_adaptation/data/*.py` (split definitions
  and label functions; `scripts/run_all_tasks.sh` lists the 19 tasks and their arguments).
  `train800` / `val200` / `train800val200` / `test` are that code's split strings, computed
  from the dataset's own split sizes as it computes them. 2,500 steps, batch 512, lr grid
  {0.003, 0.01, 0.03} (ViT paper App. B.1.1 after BiT's VTAB protocol; Mixer paper App. C).
  Resolution by the BiT-HyperRule as the Mixer paper applies it: 224 for images of area
  below 96x96, else 448; no flip and no random crop where they change the label (BiT
  App. F; /work/shared/DESIGN.md "The paper's tables").
- Avg 5: google-research/big_vision `big_vision/configs/transfer.py` (`_set_dataset`: the
  dev split held out of train, steps, warmup, test split) and vision_transformer
  `vit_jax/configs/common.py` (`DATASET_PRESETS`, the same splits and steps); lr grid
  {0.003, 0.01, 0.03, 0.06} (Mixer paper App. C). Resolution is the suite's (224 or 448),
  not the task's.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Protocol

from mixer_cli.core.errors import DataError

VTAB_SPLITS = ("train800", "val200", "train800val200", "test")
AVG5_SPLITS = ("dev", "train_minus_dev", "train", "test")
VTAB_GROUPS = ("natural", "specialized", "structured")
SMALL_AREA = 96 * 96  # images of smaller area train at 224, the others at 448
TA = "google-research/task_adaptation task_adaptation/data/"  # VTAB-1k's reference code
BV = "google-research/big_vision big_vision/configs/transfer.py"  # Avg 5's reference config


# Labels: callables from a TFDS example (a dict of tensors) to an int64 class index.
class Label(Protocol):
    def __call__(self, example: dict[str, Any]) -> Any: ...


@dataclass(frozen=True)
class Stored:
    """The dataset's own class label, as stored."""

    key: str = "label"

    def __call__(self, example: dict[str, Any]) -> Any:
        from mixer_cli.core.tf_cpu import tf

        return tf.cast(example[self.key], tf.int64)


@dataclass(frozen=True)
class Binned:
    """A stored class of `stored` values grouped into `classes` neighbouring bins:
    floor(value / (stored / classes)) (task_adaptation dsprites.py, `class_division_factor`)."""

    key: str
    stored: int
    classes: int

    def __call__(self, example: dict[str, Any]) -> Any:
        from mixer_cli.core.tf_cpu import tf

        value = tf.cast(example[self.key], tf.float32)
        return tf.cast(tf.math.floordiv(value, self.stored / self.classes), tf.int64)


@dataclass(frozen=True)
class ObjectCount:
    """The number of objects minus `offset` (CLEVR scenes hold 3 to 10: classes 0-7;
    task_adaptation clevr.py `_count_preprocess_fn`)."""

    offset: int = 3

    def __call__(self, example: dict[str, Any]) -> Any:
        from mixer_cli.core.tf_cpu import tf

        count = tf.size(example["objects"]["size"], out_type=tf.int64)
        return count - self.offset


@dataclass(frozen=True)
class ClosestDepth:
    """The bin of the smallest depth among the objects (of types below `max_type` if set;
    none such: depth `absent`): the largest i with thresholds[i] < depth (task_adaptation
    clevr.py `_closest_object_preprocess_fn`, kitti.py `_closest_vehicle_distance_pp`)."""

    coords: str  # the objects' feature whose last coordinate is the depth
    thresholds: tuple[float, ...]
    max_type: int | None = None  # KITTI: types 0-2 are Car, Van, Truck
    absent: float = 1000.0

    def __call__(self, example: dict[str, Any]) -> Any:
        from mixer_cli.core.tf_cpu import tf

        objects = example["objects"]
        depth = tf.cast(objects[self.coords][:, 2], tf.float32)
        if self.max_type is not None:
            depth = tf.concat([depth[objects["type"] < self.max_type], [self.absent]], axis=0)
        above = tf.constant(self.thresholds, tf.float32) < tf.reduce_min(depth)
        return tf.reduce_max(tf.where(above)[:, 0])


@dataclass(frozen=True)
class TransferTask:
    """One task of a suite. `splits(sizes)` gives its named splits as TFDS split strings of
    `tfds` from that dataset's split sizes (as the reference code computes them)."""

    name: str
    suite: str  # vtab1k or avg5
    tfds: str  # TFDS name[/config]
    num_classes: int
    label: Label
    group: str  # VTAB's natural / specialized / structured; avg5 for Avg 5
    image_size: tuple[int, int]  # (height, width) of the images, typical where they vary
    steps: int
    lrs: tuple[float, ...]
    source: str  # the reference code this entry follows
    batch_size: int = 512
    warmup_steps: int | None = None  # None: the reference does not fix it
    flip: bool = True  # a horizontal flip keeps the label
    random_crop: bool = True  # a random crop keeps the label
    pixel_scale: int = 1  # stored pixel values times this are 0-255 (dSprites stores 0/1)
    manual: str | None = None  # how to get a dataset TFDS cannot download
    # How the splits are cut (task_adaptation's patterns): val200 is the first 200 of
    # `val_from` from (val_percent * its size) // 100; test is `test`, or what follows
    # train's first sum(test_after) percent (each percentage floored separately).
    val_from: str = "validation"
    val_percent: int = 0
    test: str = "test"
    test_after: tuple[int, ...] = ()
    dev_percent: int = 0  # Avg 5: the last dev_percent % of train is the dev split
    # evaluator type -> its dataset, also scored by the final run (ImageNet: ReaL, v2)
    final_evals: tuple[tuple[str, str], ...] = ()

    @property
    def spec(self) -> str:
        """What --data takes: vtab:NAME or avg5:NAME."""
        return f"{'vtab' if self.suite == 'vtab1k' else 'avg5'}:{self.name}"

    @property
    def resolution(self) -> int | None:
        """VTAB: 224 below 96x96 pixels, else 448; Avg 5: None (the suite's)."""
        if self.suite != "vtab1k":
            return None
        height, width = self.image_size
        return 224 if height * width < SMALL_AREA else 448

    def splits(self, sizes: dict[str, int]) -> dict[str, str]:
        """Split name -> TFDS split string, from the TFDS dataset's split sizes."""
        if self.suite == "avg5":
            keep = 100 - self.dev_percent
            return {
                "dev": f"train[{keep}%:]",
                "train_minus_dev": f"train[:{keep}%]",
                "train": "train",
                "test": self.test,
            }
        start = self.val_percent * sizes[self.val_from] // 100
        val = f"{self.val_from}[{start or ''}:{start + 200}]"
        test = self.test
        if self.test_after:
            test = f"train[{sum(p * sizes['train'] // 100 for p in self.test_after)}:]"
        return {
            "train800": "train[:800]",
            "val200": val,
            "train800val200": f"train[:800]+{val}",
            "test": test,
        }


VTAB_LRS = (0.003, 0.01, 0.03)
AVG5_LRS = (0.003, 0.01, 0.03, 0.06)


def _vtab(
    name: str,
    tfds: str,
    classes: int,
    group: str,
    size: int | tuple[int, int],
    source: str,
    **kw: Any,
) -> TransferTask:
    return TransferTask(
        name,
        "vtab1k",
        tfds,
        classes,
        kw.pop("label", Stored()),
        group,
        (size, size) if isinstance(size, int) else size,
        2_500,
        VTAB_LRS,
        TA + source,
        **kw,
    )


def _avg5(name: str, classes: int, steps: int, warmup: int, dev: int, **kw: Any) -> TransferTask:
    return TransferTask(
        name,
        "avg5",
        name,
        classes,
        Stored(),
        "avg5",
        (224, 224),
        steps,
        AVG5_LRS,
        f"{BV} _set_dataset",
        warmup_steps=warmup,
        dev_percent=dev,
        **kw,
    )


RESISC45_MANUAL = (
    "download NWPU-RESISC45.rar (https://1drv.ms/u/s!AmgKYzARBl5ca3HNaHIlzp_IXjs, the link in "
    "TFDS's resisc45 page) and extract it into DATA_DIR/downloads/manual/"
)
IMAGENET_MANUAL = (
    "put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (https://image-net.org/download-"
    "images, after registering) in DATA_DIR/downloads/manual/"
)
# Table 2's ReaL column and the ImageNet-v2 score big_vision reports beside ImageNet's,
# each from one pass over its set at the final run's end (evals/real.py, imagenet_v2.py)
IMAGENET_EVALS = (("real", "imagenet2012_real"), ("imagenet_v2", "imagenet_v2/matched-frequency"))
RETINOPATHY_MANUAL = (
    "download the Kaggle competition's data (https://www.kaggle.com/c/diabetic-retinopathy-"
    "detection/data; an account and the competition's rules accepted) into "
    "DATA_DIR/downloads/manual/: train/ and test/ unpacked from train.zip and test.zip, "
    "sample/ from sample.zip, and trainLabels.csv, sampleSubmission.csv"
)

# The 19 VTAB-1k tasks (task_adaptation scripts/run_all_tasks.sh), grouped as the VTAB paper
# groups them; each row cites its task_adaptation file. Image sizes: TFDS's fixed shapes, else
# a typical size (they vary; all far above 96x96).
TRAIN_90 = {"val_from": "train", "val_percent": 90}  # val200 from train's last 10%
# fmt: off
VTAB: tuple[TransferTask, ...] = (
    _vtab("caltech101", "caltech101", 102, "natural", (300, 200), "caltech.py", **TRAIN_90),
    _vtab("cifar100", "cifar100", 100, "natural", 32, "cifar.py", **TRAIN_90),
    _vtab("dtd", "dtd", 47, "natural", (480, 640), "dtd.py"),
    _vtab("oxford_flowers102", "oxford_flowers102", 102, "natural", (500, 667),
          "oxford_flowers102.py"),
    _vtab("oxford_iiit_pet", "oxford_iiit_pet", 37, "natural", (400, 500), "oxford_iiit_pet.py",
          val_from="train", val_percent=80),
    _vtab("sun397", "sun397/tfds", 397, "natural", (400, 500), "sun397.py"),
    _vtab("svhn", "svhn_cropped", 10, "natural", 32, "svhn.py", **TRAIN_90),

    _vtab("patch_camelyon", "patch_camelyon", 2, "specialized", 96, "patch_camelyon.py"),
    _vtab("eurosat", "eurosat/rgb", 10, "specialized", 64, "eurosat.py",
          val_from="train", val_percent=60, test_after=(60, 20)),
    _vtab("resisc45", "resisc45", 45, "specialized", 256, "resisc45.py",
          val_from="train", val_percent=60, test_after=(60, 20), manual=RESISC45_MANUAL),
    _vtab("diabetic_retinopathy", "diabetic_retinopathy_detection/btgraham-300", 5,
          "specialized", 300, "diabetic_retinopathy.py", manual=RETINOPATHY_MANUAL),

    _vtab("dmlab", "dmlab", 6, "structured", (360, 480), "dmlab.py", random_crop=False),
    _vtab("kitti_distance", "kitti", 4, "structured", (375, 1242), "kitti.py",
          label=ClosestDepth("location", (-100.0, 8.0, 20.0, 999.0), max_type=3),
          random_crop=False),
    _vtab("smallnorb_azimuth", "smallnorb", 18, "structured", 96, "smallnorb.py",
          label=Stored("label_azimuth"), val_from="test", test="test[50%:]", flip=False),
    _vtab("smallnorb_elevation", "smallnorb", 9, "structured", 96, "smallnorb.py",
          label=Stored("label_elevation"), val_from="test", test="test[50%:]"),
    _vtab("dsprites_location", "dsprites", 16, "structured", 64, "dsprites.py",
          label=Binned("label_x_position", 32, 16), val_from="train", val_percent=80,
          test_after=(80, 10), pixel_scale=255, flip=False, random_crop=False),
    _vtab("dsprites_orientation", "dsprites", 16, "structured", 64, "dsprites.py",
          label=Binned("label_orientation", 40, 16), val_from="train", val_percent=80,
          test_after=(80, 10), pixel_scale=255, flip=False),
    _vtab("clevr_distance", "clevr", 6, "structured", (320, 480), "clevr.py",
          label=ClosestDepth("pixel_coords", (0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0)),
          test="validation", random_crop=False, **TRAIN_90),
    _vtab("clevr_count", "clevr", 8, "structured", (320, 480), "clevr.py",
          label=ObjectCount(3), test="validation", random_crop=False, **TRAIN_90),
)

# Avg 5: steps 20k / 10k / 10k / 500 / 500, warmup and the dev split as big_vision's.
AVG5: tuple[TransferTask, ...] = (
    _avg5("imagenet2012", 1000, 20_000, 500, 1, test="validation", manual=IMAGENET_MANUAL,
          final_evals=IMAGENET_EVALS),
    _avg5("cifar10", 10, 10_000, 500, 2),
    _avg5("cifar100", 100, 10_000, 500, 2),
    _avg5("oxford_iiit_pet", 37, 500, 100, 10),
    _avg5("oxford_flowers102", 102, 500, 100, 10),
)
# fmt: on

SUITES: dict[str, tuple[TransferTask, ...]] = {"vtab1k": VTAB, "avg5": AVG5}
PREFIXES = {"vtab": VTAB, "avg5": AVG5}  # --data PREFIX:NAME


def find_task(spec: str) -> TransferTask:
    """``vtab:NAME`` or ``avg5:NAME`` -> its task; an unknown one is refused with the names."""
    prefix, _, name = spec.partition(":")
    tasks = PREFIXES.get(prefix)
    if tasks is None:
        raise DataError(
            f"unknown task suite {prefix!r} in {spec!r}: expected vtab:NAME or avg5:NAME"
        )
    names = [t.name for t in tasks]
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"did you mean {prefix}:{close[0]}? " if close else ""
        raise DataError(f"unknown {prefix} task {name!r}: {hint}tasks: {', '.join(names)}")
    return tasks[names.index(name)]
