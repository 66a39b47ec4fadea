"""The input side: datasets (TFDS, image folders, digits), preprocessing, sharded batches,
and the augmentation's device half (device_augment, run inside the train step).

TensorFlow is used for tf.data only, on the CPU; it never takes an accelerator.
"""

from mixer_cli.data.catalog import open_dataset
from mixer_cli.data.permutations import PERMUTATION_MODES, make_permutation
from mixer_cli.data.pipeline import EvalBatches, TrainBatches
from mixer_cli.data.preprocess import Preprocessing
from mixer_cli.data.sources import DataSource

__all__ = [
    "PERMUTATION_MODES",
    "DataSource",
    "EvalBatches",
    "Preprocessing",
    "TrainBatches",
    "make_permutation",
    "open_dataset",
]
