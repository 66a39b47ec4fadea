"""Import TensorFlow for tf.data only: hidden from the GPUs, quiet logs, no Keras.

JAX owns the accelerators; a TensorFlow that grabbed GPU memory would starve it.
Every data module imports `tf` from here, never `tensorflow` directly.

`import tensorflow` also imports Keras eagerly, only to register Keras optimizers for
SavedModels, and skips that when Keras cannot be imported: hiding it for the duration
takes about 1.7 of 5.4 s off every `mixer` start-up on a 2-core CPU. Keras stays
importable afterwards (`tf.keras` loads it on first use).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_hide_keras = "keras" not in sys.modules
if _hide_keras:
    sys.modules["keras"] = None  # type: ignore[assignment]  # "not importable"
try:
    import tensorflow as tf
finally:
    if _hide_keras and sys.modules.get("keras", 0) is None:
        del sys.modules["keras"]

tf.config.set_visible_devices([], "GPU")

# Our tf.data functions are written as graphs already (static Python branches only,
# tf.cond and tf.switch_case for the rest), so `tf.data` need not rewrite their source
# with AutoGraph first: that cost 0.3-1.4 s per pipeline built (an evaluation builds one
# each time) and left generated files in /tmp whenever a run was killed.
no_autograph = tf.autograph.experimental.do_not_convert

__all__ = ["no_autograph", "tf"]
