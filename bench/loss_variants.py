"""The loss-variant runs of recipes/arithmetic-judge.yaml side by side: one row per run, one JSON.

Each run is trained and evaluated with (one at a time, same seed; NAME = grpo, dapo, dr_grpo, dyn):

    OMP_NUM_THREADS=1 minirft train recipes/arithmetic-judge.yaml --run-dir runs/h26-NAME \
        data.path=data/arithmetic.jsonl training.loss=grpo training.steps=20 [overrides]
    minirft eval runs/h26-NAME --samples 4          (writes runs/h26-NAME/eval.json)

(the first three overrides give the recipe as these runs had it, before its broader training set);
overrides: dapo ``training.loss=dapo``, dr_grpo ``training.loss=dr_grpo``, dyn (grpo with dynamic
sampling) ``training.drop_zero_std_groups=true training.refill_rounds=2``. This script copies each
run's step records and eval report into ``bench/results/recipe_runs/`` (``loss-NAME-steps.jsonl``,
``loss-NAME-eval-sampled4.json``), prints the table and writes ``loss_variants.json`` there:
held-out exact match sampled x4 base -> tuned with the paired 95% interval, the reward's first-5 and
last-5 step means, the fraction of zero-variance groups per step (with dynamic sampling: over
every round of the step, and the groups dropped), and which other runs logged exactly the same
reward, loss and KL at every step (``same_steps_as``).

python bench/loss_variants.py runs/h26-grpo runs/h26-dr_grpo runs/h26-dyn [...]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from minirft.events import read_events

OUT = Path(__file__).parent / "results" / "recipe_runs"


def summarise(run: Path) -> dict:
    name = run.name.removeprefix("h26-")
    events = read_events(run / "events.jsonl")
    start = next(e for e in events if e["type"] == "run_start")
    steps = {e["step"]: e["metrics"] for e in events if e["type"] == "step"}
    order = sorted(steps)
    tr = start["recipe"]["training"]

    def mean(key, idx):
        vals = [steps[i][key] for i in idx if steps[i].get(key) is not None]
        return sum(vals) / len(vals) if vals else None

    eval_path = run / "eval.json"
    ev = json.loads(eval_path.read_text()) if eval_path.is_file() else None
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / f"loss-{name}-steps.jsonl", "w") as f:
        for e in events:
            if e["type"] == "step":
                f.write(json.dumps(e) + "\n")
    if ev is not None:
        shutil.copyfile(eval_path, OUT / f"loss-{name}-eval-sampled4.json")
    correct = ev["measures"]["correct"] if ev else None
    return {
        "run": name, "steps": len(order), "seed": tr["seed"],
        "training": {k: tr[k] for k in ("loss", "loss_norm", "scale_rewards", "clip_eps", "epsilon_high",
                                        "drop_zero_std_groups", "refill_rounds") if k in tr},
        "exact_match_sampled4": None if correct is None else {
            "base": correct["base"], "trained": correct["trained"], "delta": correct["delta"],
            "delta_ci95": correct["delta_ci95"], "n_prompts": ev["n"], "samples": ev["samples"]},
        "reward_first5": mean("reward", order[:5]), "reward_last5": mean("reward", order[-5:]),
        "kl_last5": mean("kl", order[-5:]), "length_last5": mean("completion_length", order[-5:]),
        "frac_reward_zero_std": [steps[i].get("frac_reward_zero_std") for i in order],
        "frac_reward_zero_std_mean": mean("frac_reward_zero_std", order),
        "groups_dropped": [steps[i].get("groups_dropped") for i in order],
        "refill_rounds": [steps[i].get("refill_rounds") for i in order],
        "step_s_mean": mean("step_s", order),
        "_trace": [(steps[i].get("reward"), steps[i].get("loss"), steps[i].get("kl")) for i in order],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    args = ap.parse_args()
    rows = [summarise(r) for r in args.runs]
    for r in rows:  # runs whose every step logged the same reward, loss and KL, to the last bit
        r["same_steps_as"] = [o["run"] for o in rows if o is not r and o["_trace"] == r["_trace"]]
    for r in rows:
        del r["_trace"]

    def f(v, spec=".3f"):
        return "—" if v is None else format(v, spec)

    print(f"{'run':10} {'exact match x4 base -> tuned, delta [95% CI]':48} {'reward 1-5 -> 16-20':20} "
          f"{'zero-std groups/step':21} {'dropped':8} same steps as")
    for r in rows:
        em = r["exact_match_sampled4"]
        em_s = "not evaluated" if em is None else (
            f"{em['base']:.3f} -> {em['trained']:.3f}, {em['delta']:+.3f} "
            f"[{em['delta_ci95'][0]:+.3f}, {em['delta_ci95'][1]:+.3f}]")
        dropped = [d for d in r["groups_dropped"] if d is not None]
        print(f"{r['run']:10} {em_s:48} {f(r['reward_first5'])} -> {f(r['reward_last5']):10} "
              f"{f(r['frac_reward_zero_std_mean']):21} {str(sum(dropped)) if dropped else '—':8} "
              f"{', '.join(r['same_steps_as']) or '—'}")
    out = OUT / "loss_variants.json"
    out.write_text(json.dumps({"recipe": "recipes/arithmetic-judge.yaml", "seeds": "one seed each (0)",
                               "runs": rows}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
