"""Scalars of a run: one JSON line per record in metrics.jsonl, and TensorBoard events.

Evaluation metrics are keyed `NAME/METRIC` (an evaluator's name, its metric: `test/top1`,
`fewshot/5shot`). Runs written before evaluators existed used flat keys (`test_top1`,
`fewshot_5shot`, `test_top1_at_step0`); `read_metrics` and `read_results` give them
in today's form, so every reader handles one schema. Each record carries `time` (Unix
seconds when it was written), so curves can be drawn against wall time.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tensorflow.core.framework import summary_pb2

from mixer_cli.core import files
from mixer_cli.core.atomic import atomic_write
from mixer_cli.core.tf_cpu import tf

_SCALAR = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
).SerializeToString()


LEGACY_KEYS = {
    "test_top1": "test/top1",
    "test_examples": "test/examples",
    "fewshot_5shot": "fewshot/5shot",
}
LEGACY_STEP0 = "_at_step0"
# What readers use of a metrics line and of results.json (the rest they only show).
RECORD = {"step": files.NUMBER, "*": (*files.NUMBER, type(None))}
RESULTS = {"command?": str, "train_examples?": files.NUMBER, "batch_size?": files.NUMBER}


def upgrade(record: dict[str, Any]) -> dict[str, Any]:
    """A metrics record or results of an older run with today's keys."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key.endswith(LEGACY_STEP0) and key.removesuffix(LEGACY_STEP0) in LEGACY_KEYS:
            new = LEGACY_KEYS[key.removesuffix(LEGACY_STEP0)]
            out.setdefault("at_step0", {})[new] = value
        else:
            out[LEGACY_KEYS.get(key, key)] = value
    return out


def read_metrics(workdir: Path) -> list[dict[str, Any]]:
    """Every record of a run's metrics.jsonl in today's keys (a torn last line skipped)."""
    records, path = [], workdir / "metrics.jsonl"
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        records.append(upgrade(files.check(record, RECORD, f"{path} line {number}",
                                           "a metrics record")))  # fmt: skip
    return records


def read_results(workdir: Path) -> dict[str, Any]:
    """A run's results.json in today's keys."""
    return upgrade(files.read_json(workdir / "results.json", "a mixer run's results", RESULTS))


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
            with atomic_write(self.path) as f:
                f.write("".join(f"{line}\n" for line in kept))
        self.file = self.path.open("a")
        self.tensorboard = tf.summary.create_file_writer(str(workdir / "tensorboard"))

    def write(self, step: int, scalars: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": step, "time": round(time.time(), 3)}
        record.update({k: float(v) for k, v in scalars.items()})
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
