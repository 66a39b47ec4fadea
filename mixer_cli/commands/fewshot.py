"""`mixer fewshot`: linear few-shot accuracy of frozen features (closed-form ridge)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mixer_cli.commands import options

FewshotInit = Annotated[
    Optional[Path],
    typer.Option(
        "--init",
        help="The model: Google's official .npz or its released name, timm's .safetensors or "
        "hf-hub:timm/NAME, ours, or a run "
        "directory (fine-tuned "
        "high-resolution ones included). [default: the newest finished run under ./runs]",
        show_default=False,
    ),
]
Datasets = Annotated[
    str,
    typer.Option(
        "--data",
        help="Comma-separated datasets (digits, folder:PATH, TFDS names); each is scored "
        "on its test split with shots drawn from its training split.",
    ),
]
Shots = Annotated[
    str, typer.Option("--shots", help="Comma-separated examples per class, e.g. 1,5,10,25.")
]
Seeds = Annotated[
    int, typer.Option("--seeds", help="Repetitions with seeds 0..N-1 (mean and std reported).")
]
L2Reg = Annotated[
    str,
    typer.Option(
        "--l2-reg",
        help="Ridge strength; several comma-separated values are chosen among by "
        "cross-validation inside each few-shot training set (never on test).",
    ),
]
NoCache = Annotated[
    bool,
    typer.Option(
        "--no-cache",
        help="Recompute features instead of reading them from the cache "
        "($MIXER_CACHE_DIR or ~/.cache/mixer).",
    ),
]
PoolPerClass = Annotated[
    int,
    typer.Option(
        "--pool-per-class",
        help="Draw the shots from the first N x classes training examples (splits are "
        "stored shuffled) instead of the whole training split: a probe of a large set "
        "without a feature pass over all of it. [default: 0, the whole split, as the paper]",
        min=0,
        show_default=False,
    ),
]
EvalBatch = Annotated[
    int,
    typer.Option("--batch-size", help="Images per feature-extraction batch (global).", min=1),
]


def fewshot(
    init: FewshotInit = None,
    data: Datasets = "digits",
    data_dir: options.DataDir = None,
    shots: Shots = "1,5,10,25",
    seeds: Seeds = 3,
    l2_reg: L2Reg = "1024",
    pool_per_class: PoolPerClass = 0,
    resolution: options.AdaptedResolution = None,
    batch_size: EvalBatch = 256,
    no_cache: NoCache = False,
    workdir: options.Workdir = None,
    json_: options.Json = False,
) -> None:
    """Linear few-shot evaluation as in the paper: pre_logits of the frozen model, ridge
    regression in closed form (standardised features, bias column 100, targets +-1, l2 2^10).

    Right after `mixer pretrain`, `mixer fewshot --shots 5` scores the new model on digits.
    Results (every seed) go to results.json in the run directory; features are cached.
    """
    from mixer_cli.config import parse_number_list
    from mixer_cli.core import report
    from mixer_cli.core.errors import ConfigError
    from mixer_cli.core.report import save_results
    from mixer_cli.evals.ridge import print_fewshot_table
    from mixer_cli.tasks.fewshot import FewshotRequest, run_fewshot

    if seeds <= 0:
        raise ConfigError(f"--seeds must be a positive number of repetitions, got {seeds}")
    shot_list = tuple(sorted(parse_number_list(shots, int, "--shots")))
    l2s = tuple(parse_number_list(l2_reg, float, "--l2-reg"))
    datasets = tuple(name.strip() for name in data.split(",") if name.strip())
    if not datasets:
        raise ConfigError("--data needs at least one dataset")
    request = FewshotRequest(
        init,
        datasets,
        data_dir=None if data_dir is None else str(data_dir),
        shots=shot_list,
        seeds=seeds,
        l2s=l2s,
        pool_per_class=pool_per_class,
        resolution=resolution,
        batch_size=batch_size,
        use_cache=not no_cache,
        workdir=workdir,
    )
    result = run_fewshot(request)
    if not json_:
        print_fewshot_table(result.results)
    save_results(result.workdir, result.results)
    if json_:
        report.print_json(result.results)
