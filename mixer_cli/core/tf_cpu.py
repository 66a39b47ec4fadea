"""Import TensorFlow for tf.data only: hidden from the GPUs, quiet logs, no Keras.

JAX owns the accelerators; a TensorFlow that grabbed GPU memory would starve it.
Every data module imports `tf` from here, never `tensorflow` directly.

`import tensorflow` also imports Keras eagerly, only to register Keras optimizers for
SavedModels, and skips that when Keras cannot be imported: hiding it for the duration
takes about 1.7 of 5.4 s off every `mixer` start-up on a 2-core CPU. Keras stays
importable afterwards (`tf.keras` loads it on first use).

TensorFlow's native libraries log a few lines while they load (absl's "All log messages
before absl::InitializeLog()...", oneDNN's notice), before any log level applies: the
native stderr is captured for the import and everything but those lines passed on, so a
user sees mixer's own output (MIXER_DEBUG=1 shows everything).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# What TensorFlow's native start-up writes to stderr and mixer drops (nothing else).
START_UP_NOISE = re.compile(
    r"absl::InitializeLog\(\)|oneDNN custom operations are on|cpu_feature_guard\.cc|"
    r"This TensorFlow binary is optimized|rebuild TensorFlow with the appropriate compiler"
)


@contextlib.contextmanager
def quiet_native_start_up() -> Iterator[None]:
    """Capture file descriptor 2 while native libraries load; pass on all but their
    start-up notices (a failure's own message still reaches the user)."""
    if os.environ.get("MIXER_DEBUG") == "1":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not START_UP_NOISE.search(line):
                    sys.stderr.write(line)


_hide_keras = "keras" not in sys.modules
if _hide_keras:
    sys.modules["keras"] = None  # type: ignore[assignment]  # "not importable"
try:
    with quiet_native_start_up():
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

# What TensorFlow wraps an op's error in: {{function_node ...}} before, [Op:Name] after.
_OP_INTERNALS = re.compile(r"\{\{[^}]*\}\}\s*|\s*\[Op:\w+\]")


def op_error_line(err: tf.errors.OpError) -> str:
    """The first line of a TensorFlow op's error, without TensorFlow's internals."""
    message = _OP_INTERNALS.sub("", err.message).strip()
    return message.splitlines()[0] if message else type(err).__name__


__all__ = ["no_autograph", "op_error_line", "tf"]
