"""The Mixer arm of `mixer permute --mode patch` alone (original and patch-shuffled), for a
hybrid: the same Experiment, `permute.config_for` and engine the command uses, without its
ResNet arm. Used for benchmarks/RESULTS.md, "Follow-up architectures".

    python benchmarks/shuffle_arm.py /tmp/hybrids/permute-summed model.token_mixing=sum
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mixer_cli.tasks.permute import Experiment, config_for
from mixer_cli.train.engine import train_and_evaluate


def main() -> None:
    out, options = Path(sys.argv[1]), tuple(sys.argv[2:])
    experiment = Experiment(
        data="folder:/tmp/cifar", data_dir=None, variant="N/4", resolution=32,
        baseline="ResNet14", baseline_width=16, steps=200, batch_size=64, seed=0,
        model_options=options,
    )  # fmt: skip
    runs = {}
    for mode in ("original", "patch"):
        results = train_and_evaluate(config_for(experiment, "mixer", mode), out / f"mixer-{mode}")
        runs[mode] = {k: results[k] for k in ("variant", "test/top1", "fewshot/5shot")}
    print(json.dumps(runs))


if __name__ == "__main__":
    main()
