"""Does the recipe's judge *rank* responses the way labels say? (what GRPO needs from a reward)

GRPO only uses differences of rewards within a group, so a judge whose P(yes) is 0.75 for every
response but a little higher for the good ones still helps, and one that is well calibrated at a 0.5
threshold but ranks at random does not. For each criterion this prints, on a labelled set
(``{prompt, response, labels: {criterion: true/false}}`` rows, as for ``minirft calibrate``):
mean P(yes) on true-labelled and false-labelled responses, the ranking accuracy (AUC: the share of
(true, false) pairs in which the true one gets the higher P(yes); 0.5 = chance) and the accuracy at
the best single threshold.

    python -m minirft.train.agreement recipes/polite.yaml recipes/data/polite-labels.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from minirft.data import iter_jsonl, parse_row
from minirft.errors import MinirftError
from minirft.recipe import load_recipe


def auc(pos: list[float], neg: list[float]) -> float | None:
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def best_threshold_accuracy(pos: list[float], neg: list[float]) -> float | None:
    if not pos or not neg:
        return None
    points = sorted(set(pos + neg))
    n = len(pos) + len(neg)
    return max((sum(p >= t for p in pos) + sum(x < t for x in neg)) / n for t in points + [1.1])


def agreement(recipe_path: str, labels_path: str, overrides: list[str]) -> dict:
    from minirft.judge import build_judge

    recipe = load_recipe(recipe_path, overrides)
    if recipe.judge is None or recipe.judge.mode != "rubric":
        raise MinirftError(f"{recipe_path}: needs a rubric judge")
    rows, responses, labels = [], [], []
    for lineno, obj in iter_jsonl(labels_path):
        rows.append(parse_row({"prompt": obj["prompt"]}, f"{labels_path}:{lineno}", lineno))
        responses.append([obj["response"]])
        labels.append(obj["labels"])
    judge = build_judge(recipe.judge)
    try:
        scores = judge.score_groups(rows, responses, False)
    finally:
        judge.close()
    out = {}
    for name in sorted({k for lab in labels for k in lab}):
        pos = [s[0].criteria[name] for s, lab in zip(scores, labels) if lab.get(name) is True]
        neg = [s[0].criteria[name] for s, lab in zip(scores, labels) if lab.get(name) is False]
        out[name] = {"n_true": len(pos), "n_false": len(neg),
                     "p_yes_true": sum(pos) / len(pos) if pos else None,
                     "p_yes_false": sum(neg) / len(neg) if neg else None,
                     "auc": auc(pos, neg), "best_threshold_accuracy": best_threshold_accuracy(pos, neg)}
    return {"recipe": recipe_path, "labels": labels_path, "judge": recipe.judge.model, "criteria": out}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2 or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    try:
        result = agreement(argv[0], argv[1], argv[2:])
    except MinirftError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    print(f"{'criterion':<12} {'n+':>3} {'n-':>3} {'P(yes)|+':>9} {'P(yes)|-':>9} {'AUC':>6} {'best acc':>9}")
    for name, m in result["criteria"].items():
        print(f"{name:<12} {m['n_true']:>3} {m['n_false']:>3} {m['p_yes_true']:>9.3f} {m['p_yes_false']:>9.3f} "
              f"{m['auc']:>6.3f} {m['best_threshold_accuracy']:>9.3f}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
