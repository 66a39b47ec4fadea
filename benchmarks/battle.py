"""Is an all-MLP model competitive? Six models on real CIFAR-10 at equal budget (issue 40).

Every family's CPU recipe (`*cifar10_cpu`: the same data, augmentation, optimizer, schedule
shape, label smoothing, weight average and batch; only the model, its learning rate and its
steps differ), in phases:

  speed   each recipe's train img/s (`mixer pretrain`, the median of its logged windows
          after the first 100 steps; run it on a quiet machine: it sets the budgets), kept
          per kind of CPU (with or without AVX-512: this project's machines are of both,
          and the families' speed ratios differ between them)
  tune    the same effort per family: two runs, lr 1e-3 and 3e-3, TUNE steps on train[:90%]
          scored on train[90%:] (never on the test split); the better lr is the family's
  size    the tuned recipe on 10%, 30% and 100% of train at TUNE steps (the paper's 3.3 at
          small scale): test top-1 and linear 5-shot
  final   the tuned recipe for the steps 30 minutes buy on this CPU: cifar10_cpu's 5,600
          steps (29.4 minutes to results.json at 455 img/s, RESULTS.md) times the model's
          speed here over those 455 img/s, so a final lasts about 30 minutes on either kind
          of CPU (the Mixer's 240 img/s on an AVX2-only one would need ~55 for 5,600);
          test top-1, 5-shot and the curve against wall time (metrics.jsonl's `time` from
          the run's launch; run it on a quiet machine too); kept per kind of CPU, a set of
          six whose wall times compare (a set is finished on the kind it was begun on; the
          other kind begins its own, a second answer to the same question)
  seeds   seeds 1 and 2 wherever a model is within 2 points of a Mixer (both stems) in test
          top-1 or in 5-shot: this kind's finals, and each data size
  report  the tables (printed, and OUT/battle.md), battle_budget.png and battle_size.png
          beside --state

Two levels of resumption, so the work can be done across machines that do not keep --out:
each finished run's summary (its numbers, 5-shot, curve, wall time) goes into --state at
once, a file meant to be committed, and a run found there is never run again; a run
directory under --out that has not finished resumes from its checkpoint. `touch OUT/stop`
ends the script after the run in progress (a session's end without a resumed final, whose
wall time would carry a second start-up); Ctrl-C stops at once, from the last checkpoint.

    tar xzf ../shared/data/cifar10-jpeg.tar.gz -C /work/data/cifar
    python benchmarks/battle.py --data folder:/work/data/cifar --out /work/bench-runs/battle
    python benchmarks/battle.py ... --phase tune --only vit,resnet
Not a test: hours of CPU (a final is 30 minutes, each tuning or size run 7-20).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runner import has_avx512, machine, mixer  # benchmarks/runner.py

from mixer_cli.core.report import write_json

MODELS: dict[str, tuple[str, list[str]]] = {  # slug: (label, mixer pretrain options)
    "mixer": ("Mixer (conv stem)", ["--recipe=cifar10_cpu"]),
    "mixer-linear": ("Mixer (linear stem)", ["--recipe=cifar10_cpu", "--set=model.stem=linear"]),
    "vit": ("ViT", ["--recipe=vit_cifar10_cpu"]),
    "resnet": ("ResNet (BiT v2)", ["--recipe=resnet_cifar10_cpu"]),
    "gmlp": ("gMLP", ["--recipe=gmlp_cifar10_cpu"]),
    "resmlp": ("ResMLP", ["--recipe=resmlp_cifar10_cpu"]),
}
MIXERS = ("mixer", "mixer-linear")
LRS = (1e-3, 3e-3)
FRACTIONS = (10, 30, 100)  # percent of CIFAR-10's 50,000 training images
PHASES = ("speed", "tune", "size", "final", "seeds", "report")
SEEDS = (0, 1, 2)
POOL = 50  # 5-shot sets drawn from train's first 50 x 10 images (inside train[:10%])
REFERENCE_STEPS, REFERENCE_IMG_S, REFERENCE_MIN = 5600, 455.0, 29.4  # cifar10_cpu (RESULTS.md)


def cpu_kind() -> str:
    """The kind of CPU a speed holds on: a final's budget is a ratio measured on its kind."""
    return "avx512" if has_avx512() else "avx2"


def read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


class Battle:
    """The runs, each summarised into the state once it has finished."""

    def __init__(self, args: argparse.Namespace, state: dict[str, Any], save: Callable) -> None:
        self.args, self.out, self.state, self.save = args, args.out, state, save
        self.out.mkdir(parents=True, exist_ok=True)
        self.segments_file = self.out / "segments.json"  # run -> [[start, end], ...]

    def run(self, run: str, slug: str, *options: str, probe: bool = True) -> dict[str, Any]:
        """One `mixer pretrain` (or its resumption) and its 5-shot probe, summarised."""
        if run in self.state["runs"]:
            return self.state["runs"][run]
        if (self.out / "stop").exists():
            (self.out / "stop").unlink()
            raise SystemExit(f"battle: stopped before {run} ({self.out / 'stop'} was there)")
        workdir = self.out / run
        if not read(workdir / "results.json").get("finished"):
            segments = read(self.segments_file)
            segments.setdefault(run, []).append([time.time(), None])  # its end if killed
            write_json(self.segments_file, segments)  # atomic: a kill leaves the old
            try:  # an interrupted invocation's time counts too: the run resumes from it
                mixer("pretrain", *MODELS[slug][1], "--data", self.args.data, "--workdir",
                      str(workdir), f"--batch-size={self.args.batch_size}", *options)  # fmt: skip
            finally:
                segments[run][-1][1] = time.time()
                write_json(self.segments_file, segments)
        results, segments = read(workdir / "results.json"), self.segments(run)
        self.state["runs"][run] = {
            "top1": results["test/top1"], "ema_top1": results["ema/test/top1"],
            "steps": results["step"], "train_examples": results["train_examples"],
            "img_per_sec": statistics.median(self.windows(run)),
            "fewshot5": self.five_shot(run) if probe else None,
            "wall_s": sum(end - start for start, end in segments),
            "invocations": len(segments), "curve": self.curve(run, segments),
            "cpu": f"{machine()} ({cpu_kind()})",
        }  # fmt: skip
        self.save()
        return self.state["runs"][run]

    def five_shot(self, run: str) -> float:
        """Linear 5-shot on CIFAR-10's frozen features (3 seeds of shots), `mixer fewshot`.

        The shots come from train's first 500 images (POOL per class, in the stored shuffled
        order), which every run trained on, 10% ones included: drawn from all of train, a
        10% run's shots would be 90% images it never saw and a 100% run's none, a second
        difference beside the data size (+4.6 points for the 10% Mixer from its seen pool).
        """
        where = self.out / run / "fewshot"
        if not (where / "results.json").exists():
            mixer("fewshot", "--init", str(self.out / run), "--data", self.args.data,
                  "--shots", "5", "--seeds", "3", f"--pool-per-class={POOL}",
                  "--workdir", str(where), "--json", capture=True)  # fmt: skip
        return read(where / "results.json")["average"]["5"]

    def segments(self, run: str) -> list[list[float]]:
        """[start, end] of each invocation; one killed with this script (a session's end)
        never wrote its end: it is taken as the run's last log record before the next
        invocation (the steps after it were lost and run again)."""
        segments, logged = read(self.segments_file)[run], [r["time"] for r in self.records(run)]
        starts = [start for start, _ in segments[1:]] + [float("inf")]
        for segment, next_start in zip(segments, starts, strict=True):
            if segment[1] is None:
                times = [t for t in logged if segment[0] <= t < next_start]
                segment[1] = max(times, default=segment[0])
        return segments

    def records(self, run: str) -> list[dict[str, Any]]:
        lines = (self.out / run / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def windows(self, run: str) -> list[float]:
        """The logged img/s after the first 100 steps (compilation and warm-up left out)."""
        logged = [r for r in self.records(run) if "img_per_sec" in r]
        return [r["img_per_sec"] for r in logged if r["step"] > 100 or logged[-1]["step"] <= 100]

    def curve(self, run: str, segments: list[list[float]]) -> list[list[float]]:
        """[minutes from the launch, test top-1] at each evaluation; the time between the
        invocations of a resumed run is left out."""
        points = []
        for r in (r for r in self.records(run) if "test/top1" in r):
            before = [s for s in segments if s[0] <= r["time"]]
            gaps = sum(b[0] - a[1] for a, b in itertools.pairwise(before))
            points.append([(r["time"] - segments[0][0] - gaps) / 60, r["test/top1"]])
        return points

    def speed(self, slug: str) -> dict[str, Any]:
        run, steps = f"speed/{cpu_kind()}/{slug}", self.args.speed_steps
        summary = self.run(run, slug, f"--steps={steps}", f"--set=train.eval_every={steps}",
                           f"--set=train.checkpoint_every={steps}",
                           "--set=data.eval_split=test[:10%]", probe=False)  # fmt: skip
        if "params" not in summary:
            info = json.loads(mixer("info", "--checkpoint", str(self.out / run), "--json",
                                    capture=True))[0]  # fmt: skip
            summary |= {k: info[k] for k in ("params", "gflops", "model")}
            self.save()
        return summary

    def tune(self, slug: str) -> dict[str, Any]:
        steps, scores = self.args.tune_steps, {}
        for lr in LRS:
            scores[f"{lr:g}"] = self.run(
                f"tune/{slug}-lr{lr:g}", slug, f"--steps={steps}", f"--lr={lr}",
                f"--set=train.eval_every={steps}", f"--set=train.checkpoint_every={steps // 2}",
                "--set=data.train_split=train[:90%]", "--set=data.eval_split=train[90%:]",
                probe=False,
            )["top1"]  # fmt: skip
        best = max(LRS, key=lambda lr: (scores[f"{lr:g}"], -lr))  # a tie: the smaller lr
        return {"lr": best, "validation_top1": scores}

    def size(self, slug: str, percent: int, seed: int) -> dict[str, Any]:
        steps, lr = self.args.tune_steps, self.state["tune"][slug]["lr"]
        split = "train" if percent == 100 else f"train[:{percent}%]"
        return self.run(
            f"size/{slug}-{percent}-s{seed}", slug, f"--steps={steps}", f"--lr={lr}",
            f"--seed={seed}", f"--set=data.train_split={split}",
            f"--set=train.eval_every={steps}", f"--set=train.checkpoint_every={steps // 2}",
        )  # fmt: skip

    def final(self, slug: str, seed: int) -> dict[str, Any]:
        kind, speeds = cpu_kind(), self.state["speed"]
        if slug not in speeds.get(kind, {}):
            raise SystemExit(f"battle: no speed of {slug} on this kind of CPU ({kind}): run "
                             "--phase speed first")  # fmt: skip
        steps = budget_steps(speeds[kind][slug]["img_per_sec"], self.args.budget_minutes)
        quarter, lr = steps // 4, self.state["tune"][slug]["lr"]
        return self.run(
            f"final/{kind}/{slug}-s{seed}", slug, f"--steps={steps}", f"--lr={lr}",
            f"--seed={seed}", f"--set=train.eval_every={quarter}",
            f"--set=train.checkpoint_every={quarter}",
        )  # fmt: skip


def budget_steps(img_per_sec: float, minutes: float) -> int:
    """The steps `minutes` from launch to results.json buy a model at `img_per_sec`, by the
    reference: cifar10_cpu's 5,600 steps took 29.4 minutes at 455 img/s, evaluations and
    start-up included (a multiple of 4, so that the four evaluations fall on steps)."""
    return 4 * round(REFERENCE_STEPS * img_per_sec / REFERENCE_IMG_S * minutes / REFERENCE_MIN / 4)


def close_to_a_mixer(runs: dict[str, dict[str, Any]], within: float = 0.02) -> list[str]:
    """The models whose seed-0 test top-1 or 5-shot is within `within` of a Mixer's, with
    that Mixer: the differences the paper's question turns on, measured over three seeds."""
    close = set()
    for m, slug, key in itertools.product(MIXERS, runs, ("top1", "fewshot5")):
        if m in runs and slug != m and abs(runs[slug][key] - runs[m][key]) < within:
            close |= {m, slug}
    return sorted(close, key=list(MODELS).index)


def seed_zero(run: dict[str, Any], runs: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Seed 0's run first, the seeds phase's after it kept: a phase run again (`all` after
    `seeds`) finds its runs done and must not drop the seeds' from the tables."""
    return [run, *(runs or [])[1:]]


def run_phase(battle: Battle, phase: str, slugs: list[str]) -> None:
    """One phase for the models asked, each finished run saved into the state at once."""
    state, kind = battle.state, cpu_kind()
    for slug in slugs if phase != "seeds" else []:
        if phase == "speed":
            state["speed"].setdefault(kind, {})[slug] = battle.speed(slug)
        elif phase == "tune":
            state["tune"][slug] = battle.tune(slug)
        elif phase == "size":
            rows = state["size"].setdefault(slug, {})
            for percent in FRACTIONS:
                p = str(percent)
                rows[p] = seed_zero(battle.size(slug, percent, 0), rows.get(p))
        else:
            finals = state["final"].setdefault(kind, {})
            finals[slug] = seed_zero(battle.final(slug, 0), finals.get(slug))
        battle.save()
    if phase != "seeds":
        return
    finals = state["final"].get(kind, {})
    close = close_to_a_mixer({s: runs[0] for s, runs in finals.items()})
    for slug in (s for s in close if s in slugs):
        finals[slug] = [battle.final(slug, seed) for seed in SEEDS]
        battle.save()
    for percent in FRACTIONS:
        p = str(percent)
        scores = {s: rows[p][0] for s, rows in state["size"].items() if p in rows}
        for slug in (s for s in close_to_a_mixer(scores) if s in slugs):
            state["size"][slug][p] = [battle.size(slug, percent, s) for s in SEEDS]
            battle.save()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="CIFAR-10, e.g. folder:/work/data/cifar")
    parser.add_argument("--out", type=Path, required=True, help="where the runs are kept")
    parser.add_argument("--state", type=Path, default=Path(__file__).with_name("battle.json"),
                        help="the finished runs' summaries (commit it)")  # fmt: skip
    parser.add_argument("--phase", default="all", help=f"one of {', '.join(PHASES)}, or all")
    parser.add_argument("--only", default="", help="comma-separated model slugs")
    parser.add_argument("--speed-steps", type=int, default=300)
    parser.add_argument("--tune-steps", type=int, default=1400, help="tuning and size runs")
    parser.add_argument("--budget-minutes", type=float, default=REFERENCE_MIN, help="each final's")
    parser.add_argument("--batch-size", type=int, default=128, help="(smaller for a smoke run)")
    args = parser.parse_args()
    state = read(args.state) or {"runs": {}, "speed": {}, "tune": {}, "size": {}, "final": {}}

    def save() -> None:
        write_json(args.state, state)  # atomic: a kill at a session's end leaves the old

    battle = Battle(args, state, save)
    slugs = [s for s in MODELS if not args.only or s in args.only.split(",")]
    for phase in PHASES if args.phase == "all" else (args.phase,):
        if phase == "report":
            from battle_report import write_report  # benchmarks/battle_report.py

            write_report(state, args.state.parent, args.out, {s: MODELS[s][0] for s in MODELS})
        else:
            run_phase(battle, phase, slugs)


if __name__ == "__main__":
    main()
