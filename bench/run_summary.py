"""A run's metrics, first steps vs last steps: the "steps 1–5 → 16–20" rows docs/benchmarks.md quotes.

Reads a run dir's ``events.jsonl`` (or a ``*-steps.jsonl`` extract of it, as in
``bench/results/recipe_runs/``), takes the later record of a step logged twice (after a resume), and
prints, per metric, the mean over the first K and the last K steps and the range over all steps.

python bench/run_summary.py runs/arithmetic-20261123-061700 [--k 5]
python bench/run_summary.py bench/results/recipe_runs/arith-a-steps.jsonl
"""

from __future__ import annotations

import argparse
from pathlib import Path

from minirft.events import read_events

KEYS = ("reward", "kl", "completion_length", "generation_s", "judge_s", "update_s", "step_s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", type=Path, help="a run dir or an events/steps JSONL file")
    ap.add_argument("--k", type=int, default=5, help="steps averaged at each end")
    args = ap.parse_args()
    path = args.path / "events.jsonl" if args.path.is_dir() else args.path
    steps = {e["step"]: e["metrics"] for e in read_events(path) if e["type"] == "step"}
    if not steps:
        raise SystemExit(f"{path}: no step records")
    order = sorted(steps)
    first, last = order[:args.k], order[-args.k:]
    names = [k for k in steps[order[0]] if k in KEYS or k.startswith(("rewards/", "criteria/"))]
    print(f"{path}: {len(order)} steps; mean of steps {first[0]}-{first[-1]} -> {last[0]}-{last[-1]}")
    for name in names:
        def mean(idx):
            vals = [steps[i][name] for i in idx if steps[i].get(name) is not None]
            return sum(vals) / len(vals) if vals else None

        every = [steps[i][name] for i in order if steps[i].get(name) is not None]
        a, b = mean(first), mean(last)
        if a is None or b is None:
            continue
        print(f"  {name:<26} {a:9.3f} -> {b:9.3f}   all steps {min(every):.3f} .. {max(every):.3f}")


if __name__ == "__main__":
    main()
