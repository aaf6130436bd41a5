"""The runs tried for recipes/arithmetic-judge.yaml side by side: one row per run and held-out set, one JSON.

Each run is trained, one at a time, with its overrides and evaluated sampled x4:

    OMP_NUM_THREADS=1 minirft train recipes/arithmetic-judge.yaml judge.n_threads=1 --run-dir runs/NAME [overrides]
    minirft eval runs/NAME --samples 4       (every set; or --prompts recipes/data/arithmetic-shifted.jsonl)

This script reads each run's ``events.jsonl``, ``command.txt`` and ``eval.json``, prints the table (exact
match base -> tuned with the paired 95% interval and the answers' length, per set; the reward's first-5
and last-5 step means, and in the JSON the KL's and completion length's; the training wall time from the
first to the last event) and writes
``bench/results/recipe_runs/arith_judge_runs.json``. With ``--ship NAME`` it also copies that run's step
records and eval report to ``arith-judge-steps.jsonl`` and ``arith-judge-eval-sampled4.json`` there, and
with ``--greedy DIR`` the ``eval.json`` of a greedy ``minirft eval`` (run in a copy of the shipped run's
dir, so that the sampled report stays) to ``arith-judge-eval-greedy.json``.

python bench/arith_judge_runs.py runs/old runs/broad60 --ship broad60 --greedy runs/broad60-greedy
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from minirft.events import read_events

OUT = Path(__file__).parent / "results" / "recipe_runs"


def summarise(run: Path) -> dict:
    events = read_events(run / "events.jsonl")
    steps = {e["step"]: e["metrics"] for e in events if e["type"] == "step"}
    order = sorted(steps)

    def mean(idx, key="reward"):
        return sum(steps[i][key] for i in idx) / len(idx)

    command = (run / "command.txt").read_text().strip() if (run / "command.txt").is_file() else ""
    overrides = [a for a in command.split() if "=" in a and not a.startswith("judge.n_threads")]
    ev = json.loads((run / "eval.json").read_text())
    sets = {}
    for name, rep in (ev.get("sets") or {"heldout": ev}).items():
        name = "shifted" if "shifted" in name else name
        c, n = rep["measures"]["correct"], rep["measures"]["length_chars"]
        sets[name] = {"n_prompts": rep["n"], "samples": rep["samples"],
                      "exact_match": {k: c[k] for k in ("base", "trained", "delta", "delta_ci95")},
                      "length_chars": {k: n[k] for k in ("base", "trained", "delta")}}
    return {"run": run.name, "overrides": overrides, "steps": len(order),
            "train_wall_s": round(events[-1]["time"] - events[0]["time"], 1),
            "reward_first5": mean(order[:5]), "reward_last5": mean(order[-5:]),
            "kl_first5": mean(order[:5], "kl"), "kl_last5": mean(order[-5:], "kl"),
            "completion_tokens_first5": mean(order[:5], "completion_length"),
            "completion_tokens_last5": mean(order[-5:], "completion_length"), "sets": sets}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--ship", help="the run whose steps and eval become arith-judge-*")
    ap.add_argument("--greedy", type=Path, help="a run dir whose eval.json is the shipped run's greedy eval")
    args = ap.parse_args()
    rows = [summarise(r) for r in args.runs]
    print(f"{'run':8} {'steps':>5} {'wall':>6} {'reward':>13} {'set':8} {'exact match base -> tuned, Δ [95% CI]':42} length")
    for r in rows:
        for name, s in r["sets"].items():
            e, n = s["exact_match"], s["length_chars"]
            lo, hi = e["delta_ci95"]
            print(f"{r['run']:8} {r['steps']:5d} {r['train_wall_s']:5.0f}s {r['reward_first5']:.3f}->{r['reward_last5']:.3f} "
                  f"{name:8} {e['base']:.3f} -> {e['trained']:.3f}, {e['delta']:+.3f} [{lo:+.3f}, {hi:+.3f}]      "
                  f"{n['base']:.1f} -> {n['trained']:.1f}")
        print(f"{'':8} {' '.join(r['overrides']) or '(the recipe as it was)'}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "arith_judge_runs.json").write_text(json.dumps({
        "recipe": "recipes/arithmetic-judge.yaml", "seeds": "one seed each (0)",
        "threads": "OMP_NUM_THREADS=1, judge.n_threads=1, on a 2-core machine shared with other jobs",
        "runs": rows}, indent=1) + "\n")
    if args.ship:
        run = next(r for r in args.runs if r.name == args.ship)
        with open(OUT / "arith-judge-steps.jsonl", "w") as f:
            for e in read_events(run / "events.jsonl"):
                if e["type"] == "step":
                    f.write(json.dumps(e) + "\n")
        shutil.copyfile(run / "eval.json", OUT / "arith-judge-eval-sampled4.json")
    if args.greedy:
        shutil.copyfile(args.greedy / "eval.json", OUT / "arith-judge-eval-greedy.json")
    print(f"wrote {OUT / 'arith_judge_runs.json'}")


if __name__ == "__main__":
    main()
