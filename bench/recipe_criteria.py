"""Does the recipe's judge see what its criteria ask, on the policy's OWN answers?

A labelled set written by hand (``minirft calibrate``) says whether a judge separates clear cases; a
training run only ever shows the judge the policy's samples. This script samples the recipe's
policy on the recipe's prompts, marks each answer with a rule (a regex standing for the criterion:
"contains a numbered list", "thanks the user", …), scores every answer with every criterion of the
recipe's judge, and reports per (criterion, rule) the rule's base rate and the judge's ranking AUC
(P(pass) of answers the rule marks vs the rest; 0.5 = chance), and the same for the combined reward. A criterion is worth training on
when the rule's base rate is well inside (0, 1) — groups then disagree — and its AUC is above 0.5.

python bench/recipe_criteria.py recipes/howto.yaml --rule numbered='(^|\\n)\\s*1[.)]\\s' [--samples 3]
A rule may name the row's reference: --rule uses='\\b{reference}\\b' (the reference, regex-escaped).
Writes bench/results/recipe_criteria-<recipe>[-<tag>].json.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch

from minirft.data import load_prompts
from minirft.judge import build_judge
from minirft.recipe import load_recipe
from minirft.train.policy import decode, encode_prompts, generate, load_policy
from minirft.stats import ranking_auc

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe")
    ap.add_argument("overrides", nargs="*", help="KEY=VALUE recipe overrides")
    ap.add_argument("--rule", action="append", default=[], metavar="NAME=REGEX",
                    help="a rule that marks answers (case-insensitive regex); repeatable")
    ap.add_argument("--samples", type=int, default=3, help="answers per prompt")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default="", help="suffix of the output file (to keep runs with overrides apart)")
    args = ap.parse_args()
    recipe = load_recipe(args.recipe, args.overrides)
    rules = dict(r.split("=", 1) for r in args.rule)
    rows = load_prompts(recipe.resolve_path(recipe.data.path))
    gen = recipe.generation

    t0 = time.perf_counter()
    policy = load_policy(recipe.policy, seed=args.seed, base_dir=recipe.source.parent)
    torch.manual_seed(args.seed)
    answers: list[str] = []
    for lo in range(0, len(rows), 4):
        chunk = rows[lo:lo + 4]
        ids = encode_prompts(policy, [r.messages for r in chunk for _ in range(args.samples)],
                             recipe.policy.max_prompt_tokens)
        answers += decode(policy, generate(policy, ids, max_new_tokens=gen.max_new_tokens,
                                           temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k))
    del policy
    t1 = time.perf_counter()

    judge = build_judge(recipe.judge.model_copy(update={"rationales": "none"}))
    try:
        groups = [answers[i * args.samples:(i + 1) * args.samples] for i in range(len(rows))]
        scores = [s for g in judge.score_groups(rows, groups) for s in g]
    finally:
        judge.close()
    t2 = time.perf_counter()

    def mark(rx: str, answer: str, row) -> int:
        if "{reference}" in rx:
            rx = rx.replace("{reference}", re.escape(row.reference or ""))
        return int(bool(re.search(rx, answer, re.I)))

    marks = {name: [mark(rx, a, rows[i // args.samples]) for i, a in enumerate(answers)]
             for name, rx in rules.items()}
    table = []
    series = {c.name: [s.criteria[c.name] for s in scores] for c in recipe.judge.criteria}
    if len(series) > 1:
        series["(reward)"] = [s.reward for s in scores]  # the criteria combined, as training sees them
    for name_c, p in series.items():
        for name, m in marks.items():
            auc = ranking_auc(p, m) if 0 < sum(m) < len(m) else None
            table.append({"criterion": name_c, "rule": name, "rule_rate": sum(m) / len(m), "auc": auc,
                          "mean_p_pass": sum(p) / len(p)})
    print(f"{recipe.name}: {len(answers)} answers ({len(rows)} prompts x {args.samples}), "
          f"generation {t1 - t0:.0f} s, judge {t2 - t1:.0f} s")
    print(f"{'criterion':<14} {'rule':<16} {'rule rate':>9} {'AUC':>6} {'mean P(pass)':>12}")
    for r in table:
        auc = "—" if r["auc"] is None else f"{r['auc']:.3f}"
        print(f"{r['criterion']:<14} {r['rule']:<16} {r['rule_rate']:>9.3f} {auc:>6} {r['mean_p_pass']:>12.3f}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"recipe_criteria-{recipe.name}{'-' + args.tag if args.tag else ''}.json"
    out.write_text(json.dumps({"recipe": args.recipe, "overrides": args.overrides, "samples": args.samples,
                               "rules": rules, "table": table,
                               "answers": [{"prompt": rows[i // args.samples].prompt, "answer": a,
                                            "criteria": scores[i].criteria,
                                            **{n: marks[n][i] for n in marks}}
                                           for i, a in enumerate(answers)]}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
