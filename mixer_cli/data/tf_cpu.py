"""Import TensorFlow for tf.data only: hidden from the GPUs, quiet logs.

JAX owns the accelerators; a TensorFlow that grabbed GPU memory would starve it.
Every data module imports `tf` from here, never `tensorflow` directly.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

tf.config.set_visible_devices([], "GPU")

__all__ = ["tf"]
