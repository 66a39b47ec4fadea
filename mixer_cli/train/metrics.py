"""Scalars of a run: one JSON line per record in metrics.jsonl, and TensorBoard events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tensorflow.core.framework import summary_pb2

from mixer_cli.data.tf_cpu import tf

_SCALAR = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
).SerializeToString()


def _step(line: str) -> float:
    """A record's step; a line torn by a crash mid-write counts as past every step."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return float("inf")


class MetricsWriter:
    """Appends records; on resume, first drops those past the step it resumes from."""

    def __init__(self, workdir: Path, resume_step: int, enabled: bool = True) -> None:
        self.enabled = enabled
        if not enabled:
            return
        self.path = workdir / "metrics.jsonl"
        if self.path.exists():  # lines written after the checkpoint we resume from are replayed
            kept = [
                line for line in self.path.read_text().splitlines() if _step(line) <= resume_step
            ]
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(f"{line}\n" for line in kept))
            tmp.replace(self.path)
        self.file = self.path.open("a")
        self.tensorboard = tf.summary.create_file_writer(str(workdir / "tensorboard"))

    def write(self, step: int, scalars: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": step, **{k: float(v) for k, v in scalars.items()}}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        with self.tensorboard.as_default(step=step):
            for key, value in scalars.items():
                # What tf.summary.scalar writes, without needing the tensorboard package.
                tf.summary.write(key, tf.constant(float(value), tf.float32), metadata=_SCALAR)

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            self.tensorboard.close()
