"""Where the engine's train step spends its time on a CPU, op by op.

    python benchmarks/profile_step.py --variant B/16 --batch-size 8

Traces a few steps with `jax.profiler`, sums the time of every XLA fusion (thunk) and
names it by the model operation its first dot, or its most common op, comes from (the
`op_name` metadata of the optimized HLO): e.g. `transpose(jvp(...))/channel_mixing/
Dense_1` is that layer's backward matmuls, summed over blocks. Prints the groups that
take the most time per step, then matmuls against everything else.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import tempfile
from pathlib import Path

import jax

from mixer_cli.train.throughput import BenchSettings, Workload


def op_names(hlo: str) -> dict[str, tuple[str, bool]]:
    """Instruction name -> (the model op it computes, whether it is a matmul)."""
    bodies: dict[str, list[str]] = {}
    current = None
    for line in hlo.splitlines():
        header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if header:
            current = bodies.setdefault(header.group(1), [])
        elif current is not None:
            current.append(line)
    names = {}
    for lines in bodies.values():
        for line in lines:
            inst = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = \S+ [\w-]+\(", line)
            if not inst:
                continue
            calls = re.search(r"calls=%?([\w.\-]+)", line)
            body = bodies.get(calls.group(1), []) if calls else [line]
            dots = [b for b in body if " dot(" in b]
            ops = [re.search(r'op_name="([^"]*)"', b) for b in (dots or body)]
            labels = collections.Counter(
                re.sub(r"MixerBlock_\d+", "MixerBlock_*", o.group(1).split(")/", 1)[-1])
                for o in ops
                if o
            )
            label = labels.most_common(1)[0][0] if labels else "?"
            if not dots:  # the layer, not the last elementwise op of it
                label = re.sub(r"/[^/]*$", "", label)
            names[inst.group(1)] = (label, bool(dots))
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="S/32")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()

    settings = BenchSettings(
        variant=args.variant, batch_size=args.batch_size, steps_per_execution=1
    )
    work = Workload(settings)  # one step per execution: the profile is per step
    timed = work.train()
    for _ in range(2):
        jax.block_until_ready(timed.step())
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            for _ in range(args.steps):
                jax.block_until_ready(timed.step())
        trace = next(Path(trace_dir).rglob("*.trace.json.gz"))
        events = json.loads(gzip.decompress(trace.read_bytes()))["traceEvents"]
    names = op_names(timed.compiled.as_text())
    per_op: collections.Counter[str] = collections.Counter()
    kinds: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("ph") == "X" and event.get("name") in names:
            label, is_dot = names[event["name"]]
            ms = event["dur"] / 1e3 / args.steps
            per_op[("matmul  " if is_dot else "other   ") + label] += ms
            kinds["matmuls" if is_dot else "everything else"] += ms
    print(f"{args.variant}, batch {args.batch_size}: ms per train step")
    for label, ms in per_op.most_common(args.top):
        print(f"  {ms:8.1f}  {label}")
    for kind, ms in kinds.items():
        print(f"  {ms:8.1f}  all {kind}")


if __name__ == "__main__":
    main()
