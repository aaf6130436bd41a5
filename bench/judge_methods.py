"""Which judging method carries signal on the policy's own answers? yes/no question vs contrastive
likelihood (two-sided, one-sided), per embedded judge, pooled across both, against answer length.

Labelled sets: bench/data/own-*.jsonl (bench/own_answers.py: SmolLM2-135M's own sampled answers,
labelled by rules) and recipes/data/polite-labels.jsonl (hand-written: the policy writes no rude
answers). Prompts alternate between two halves (all answers to one prompt in one half): the first
chooses the method, the second reports it (a number on a split not used to choose). AUCs carry 95%
bootstrap intervals. The contrast variants `contrast`, `_lowest` and `_prefix_min` are the same queries
aggregated three ways (judge.criteria `aggregate`).

python bench/judge_methods.py [--sets arithmetic formal polite ...] [--models gemma3-270m smollm2-135m-instruct]
Writes bench/results/judge_methods.json (the sets run replace their own entries) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from minirft.data import parse_row
from minirft.judge import build_judge
from minirft.recipe import JudgeConfig
from minirft.stats import auc_interval, bootstrap_ci, ranking_auc

HERE = Path(__file__).resolve().parent

# The contrast conditions of each set, as in the recipes that use them
POLITE_C = {"positive": "The assistant replies politely and respectfully.",
            "negative": "The assistant replies rudely and insults the user."}
ON_TOPIC_C = {"positive": "The assistant answers the user's question.",
              "negative": "The assistant talks about something unrelated to the question."}
FORMAL_C = {"positive": "The assistant writes in a formal, academic register and never uses contractions.",
            "negative": "The assistant writes casually, like a friend, using contractions such as it's, you're and don't."}
CONTRACTIONS_C = {"positive": "The assistant never uses contractions.",
                  "negative": "The assistant uses contractions like it's, don't and you're."}
NUMBERED_C = {"positive": "The assistant answers with a numbered list of steps: 1., 2., 3.",
              "negative": "The assistant answers in one paragraph of prose, without a list."}


def contrasts(conds: dict, one_sided: bool = True) -> dict[str, dict]:
    """The contrast variants of one condition pair: mean, lowest-3 and prefix_min aggregation (the same
    queries, so the variants cost nothing extra), one-sided (vs no condition line) where asked, and
    ``direct`` (the conditions after the response, their tokens scored: other queries)."""
    out = {"direct": {"method": "direct", **conds},
           "contrast": {"method": "contrast", **conds},
           "contrast_lowest": {"method": "contrast", **conds, "aggregate": "lowest", "sharpness": 3},
           "contrast_prefix_min": {"method": "contrast", **conds, "aggregate": "prefix_min", "sharpness": 3}}
    if one_sided:
        out["contrast_one_sided"] = {"method": "contrast", "positive": conds["positive"], "negative": ""}
    return out


# Rows that are the mean P(pass) of several methods of a set, as a rubric with those criteria (weight 1
# each) rewards: recipes/formal.yaml's two criteria.
COMBOS = {"formal": {"recipes/formal.yaml: register + contractions, lowest": ["contrast_lowest", "contractions_contrast_lowest"],
                     "register + contractions, direct": ["direct", "contractions_direct"]}}

# set -> (labelled file, label, criteria by method). own-*.jsonl: the policy's own answers, labelled by rules
# (bench/own_answers.py); polite-labels.jsonl: hand-written answers (the policy does not write rude ones).
METHODS = {
    "arithmetic": ("own-arithmetic", "correct", {
        "question": {"question": "Is the response's final number equal to the reference answer?"},
        **contrasts({"positive": "The correct answer is {reference}.",
                     "negative": "The correct answer is {wrong_reference}."}),
    }),
    "style": ("own-style", "personal", {
        "question": {"question": "Does the response speak directly to the user, addressing them as you?"},
        **contrasts({"positive": "The assistant speaks directly to the user, addressing them as you.",
                     "negative": "The assistant writes impersonally and never addresses the user."}),
    }),
    "formal": ("own-style", "formal", {
        "question": {"question": "Is the response written formally, without contractions such as it's or you're?"},
        **contrasts(FORMAL_C),
        **{f"contractions_{k}": c for k, c in contrasts(CONTRACTIONS_C, one_sided=False).items()},
    }),
    "numbered": ("own-style", "numbered", {
        "question": {"question": "Does the response contain a numbered list (1., 2., 3.)?"},
        **contrasts(NUMBERED_C),
    }),
    "polite": ("polite-labels", "polite", {
        "question": {"question": "Is the response polite and free of insults?"},
        **contrasts(POLITE_C),
    }),
    "on_topic": ("polite-labels", "on_topic", {
        "question": {"question": "Does the response address the user's question?"},
        **contrasts(ON_TOPIC_C),
    }),
}


# Preference: pairs of answers to one prompt where one passes and the other does not. The A/B question
# (both orders, as recipes/howto-pairs.yaml and preference.yaml ask it) against contrast preference,
# P(A>B) = sigmoid(score_A - score_B) with score = the sum of the listed (set, method) logits.
PAIRS = {
    "numbered_pairs": ("own-style", ("numbered",), "Which response gives its answer as a numbered list of steps (1., 2., 3.)?",
                       {"contrast": [("numbered", "contrast")], "contrast_lowest": [("numbered", "contrast_lowest")],
                        "direct": [("numbered", "direct")]}),
    "helpful_polite_pairs": ("polite-labels", ("polite", "on_topic"),
                             "Which response answers the user's question more helpfully and politely?",
                             {"contrast": [("polite", "contrast"), ("on_topic", "contrast")],
                              "contrast_lowest": [("polite", "contrast_lowest"), ("on_topic", "contrast_lowest")],
                              "direct": [("polite", "direct"), ("on_topic", "direct")]}),
}


def load(name: str) -> list[dict]:
    path = HERE / "data" / f"{name}.jsonl"
    if not path.is_file():
        path = HERE.parent / "recipes" / "data" / f"{name}.jsonl"
    return [json.loads(line) for line in path.open()]


def score(model: str, items: list[dict], criteria: dict[str, dict], threads: int, judge=None) -> dict[str, list[float]]:
    """P(pass) per method name for every item, one judge with all methods as criteria (``judge``: that
    judge, already built; it is left open)."""
    own = judge is None
    if own:
        judge = build_judge(JudgeConfig(model=model, n_threads=threads, rationales="none",
                                        criteria=[{"name": name, **c} for name, c in criteria.items()]))
    out: dict[str, list[float]] = {name: [] for name in criteria}
    try:
        k = 0
        while k < len(items):  # consecutive answers to one prompt form a group (their prompt is shared)
            rows, groups = [], []
            while k < len(items) and len(rows) < 8:
                it = items[k]
                row = parse_row({"prompt": it["prompt"], "reference": it.get("reference")}, "own", k + 1)
                if rows and rows[-1].prompt == row.prompt:
                    groups[-1].append(it["response"])
                else:
                    rows.append(row)
                    groups.append([it["response"]])
                k += 1
            for group in judge.score_groups(rows, groups):
                for s in group:
                    for name in criteria:
                        out[name].append(s.criteria[name])
            print(f"    {model}: {k}/{len(items)}", flush=True)
    finally:
        if own:
            judge.close()
    return out


def halves(items: list[dict]) -> list[int]:
    """0 (dev: chooses the method) or 1 (test: reports it) per item; the answers to one prompt stay in one
    half, and the prompts alternate in order of first appearance."""
    order: dict[str, int] = {}
    return [order.setdefault(it["prompt"], len(order)) % 2 for it in items]


def summarise(p: list[float], y: list[int], half: list[int]) -> dict:
    lo, hi = auc_interval(p, y)
    dev = [i for i in range(len(y)) if half[i] == 0]
    test = [i for i in range(len(y)) if half[i] == 1]
    return {"auc": ranking_auc(p, y), "ci95": [lo, hi],
            "auc_dev": ranking_auc([p[i] for i in dev], [y[i] for i in dev]),
            "auc_test": ranking_auc([p[i] for i in test], [y[i] for i in test])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", default=list(METHODS))
    ap.add_argument("--models", nargs="+", default=["gemma3-270m", "smollm2-135m-instruct"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--methods", nargs="+", help="score only these methods (e.g. direct contractions_direct); "
                    "the JSON keeps the set's other rows from the last full run")
    ap.add_argument("--cost", type=int, default=0, metavar="N",
                    help="also time each method family alone (question, contrast, direct) on a set's first N "
                         "answers: CPU seconds, tokens decoded and logits rows per candidate")
    ap.add_argument("--out", default=str(HERE / "results" / "judge_methods.json"))
    args = ap.parse_args()
    out = Path(args.out)
    result: dict = json.loads(out.read_text()) if out.is_file() else {"sets": {}}  # other sets' rows are kept
    by_source: dict[str, list[str]] = {}
    for name in args.sets:  # the sets of one labelled file are scored in one pass, all their criteria at once
        by_source.setdefault(METHODS[name][0], []).append(name)
    for source, names in by_source.items():
        items = load(source)
        joint = {f"{name}__{method}": c for name in names for method, c in METHODS[name][2].items()
                 if not args.methods or method in args.methods}
        probs: dict[str, dict[str, list[float]]] = {}
        seconds = {}
        for model in args.models:
            t0 = time.perf_counter()
            probs[model] = score(model, items, joint, args.threads)
            seconds[model] = time.perf_counter() - t0
        for name in names:
            report(result, name, items, probs, seconds, args.models, keep=bool(args.methods))
            if args.cost:
                result.setdefault("cost", {})[name] = cost(name, items[:args.cost], args.models, args.threads)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=1) + "\n")
        for name, (pair_source, labels, question, contrast_scores) in PAIRS.items():
            if pair_source == source and all(s in names for s, _ in sum(contrast_scores.values(), [])):
                old = result.get("pairs", {}).get(name) if args.methods else None
                result.setdefault("pairs", {})[name] = pairs_report(name, items, probs, args.models, args.threads, old)
                out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


def pairs_report(name: str, items: list[dict], probs: dict, models: list[str], threads: int, old: dict | None = None) -> dict:
    """Accuracy on mixed pairs (one passing answer, one failing) of the A/B question and of contrast
    preference, with 95% bootstrap intervals; the passing answer is A in every other pair. ``old``: the
    rows of the last full run, kept (only the methods scored now are recomputed, the A/B question is not)."""
    _, labels, question, contrast_scores = PAIRS[name]
    good = [all(it["labels"][k] for k in labels) for it in items]
    by_prompt: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by_prompt.setdefault(it["prompt"], []).append(i)
    pairs = [(g, b) for idx in by_prompt.values() for g in idx if good[g] for b in idx if not good[b]]
    ordered = [(g, b) if k % 2 == 0 else (b, g) for k, (g, b) in enumerate(pairs)]
    rows: dict[str, dict] = dict(old["methods"]) if old else {}

    def add(key: str, p_a: list[float]) -> None:
        correct = [1.0 if (p > 0.5) == good[a] else 0.5 if p == 0.5 else 0.0 for p, (a, _) in zip(p_a, ordered)]
        lo, hi = bootstrap_ci(correct)
        rows[key] = {"accuracy": sum(correct) / len(correct), "ci95": [lo, hi]}

    for model in models:
        if old is None:
            judge = build_judge(JudgeConfig(model=model, mode="preference", preference_question=question,
                                            n_threads=threads, rationales="none"))
            try:
                rows_ = [parse_row({"prompt": items[a]["prompt"]}, "own", a + 1) for a, _ in ordered]
                verdicts = judge.compare_many(rows_, [(items[a]["response"], items[b]["response"]) for a, b in ordered])
            finally:
                judge.close()
            add(f"A/B question, both orders / {model}", [v.p_a for v in verdicts])
        for method, parts in contrast_scores.items():
            if any(f"{s}__{m}" not in probs[model] for s, m in parts):
                continue
            score = [sum(_logit(probs[model][f"{s}__{m}"][i]) for s, m in parts) for i in range(len(items))]
            add(f"{method} preference / {model}", [1 / (1 + math.exp(score[b] - score[a])) for a, b in ordered])
    print(f"\n{name}: {len(ordered)} mixed pairs")
    for k, r in rows.items():
        print(f"{k:<60}{r['accuracy']:>7.3f}  [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]")
    return {"pairs": len(ordered), "question": question, "methods": rows}


def _logit(p: float, eps: float = 1e-12) -> float:
    p = min(max(p, eps), 1 - eps)
    return math.log(p / (1 - p))


FAMILIES = ("question", "contrast", "direct")  # methods with their own queries (the aggregations share contrast's)


def cost(name: str, items: list[dict], models: list[str], threads: int) -> dict:
    """Per model and method family: the set's first criterion of that method scored alone on ``items``,
    timed (process CPU seconds; the model loaded and the header cached beforehand), per candidate."""
    out: dict[str, dict] = {}
    for model in models:
        for family in FAMILIES:
            if family not in METHODS[name][2]:
                continue
            crit = {"name": family, **METHODS[name][2][family]}
            cfg = JudgeConfig(model=model, n_threads=threads, rationales="none", criteria=[crit])
            judge = build_judge(cfg)
            try:
                row0 = parse_row({"prompt": items[0]["prompt"], "reference": items[0].get("reference")}, "own", 1)
                judge.score_groups([row0], [[items[0]["response"]]])  # load, cache the header
                before = dict(vars(judge.evaluator.engine.stats))
                t0 = time.process_time()
                score(model, items, {family: METHODS[name][2][family]}, threads, judge=judge)
                cpu = time.process_time() - t0
                st = vars(judge.evaluator.engine.stats)
                out.setdefault(model, {})[family] = {
                    "candidates": len(items), "cpu_s_per_candidate": cpu / len(items),
                    "tokens_per_candidate": (st["tokens_decoded"] - before["tokens_decoded"]) / len(items),
                    "logit_rows_per_candidate": (st["logit_rows"] - before["logit_rows"]) / len(items)}
            finally:
                judge.close()
    return out


def report(result: dict, name: str, items: list[dict], probs: dict, seconds: dict, models: list[str],
           keep: bool = False) -> None:
    """The set's rows (AUC, interval, dev and test halves); ``keep``: only some methods were scored, the
    other rows come from the JSON as it was."""
    source, label, criteria = METHODS[name]
    y = [int(it["labels"][label]) for it in items]
    half = halves(items)
    old = result["sets"].get(name, {}).get("methods", {}) if keep else {}
    rows: dict[str, dict] = {"length (longer = pass)": summarise([len(it["response"]) for it in items], y, half)}
    rows.update({k: v for k, v in old.items() if k not in rows})
    for model in models:
        for method in criteria:
            if f"{name}__{method}" in probs[model]:
                rows[f"{method} / {model}"] = summarise(probs[model][f"{name}__{method}"], y, half)
    for combo, methods in COMBOS.get(name, {}).items():
        if any(f"{name}__{m}" not in probs[models[0]] for m in methods):
            continue
        for model in models:
            p = [sum(probs[model][f"{name}__{m}"][i] for m in methods) / len(methods) for i in range(len(y))]
            rows[f"{combo} / {model}"] = summarise(p, y, half)
    if len(models) > 1:
        for method in (m for m in criteria if f"{name}__{m}" in probs[models[0]]):
            pooled = [sum(probs[m][f"{name}__{method}"][i] for m in models) / len(models) for i in range(len(y))]
            rows[f"{method} / pooled"] = summarise(pooled, y, half)
    best = max((k for k in rows if not k.startswith("length")), key=lambda k: rows[k]["auc_dev"])
    result["sets"][name] = {"source": source, "n": len(y), "positives": sum(y), "label": label, "criteria": criteria,
                            "methods": rows, "chosen_on_dev": best, "its_test_auc": rows[best]["auc_test"],
                            "judge_seconds": {**result["sets"].get(name, {}).get("judge_seconds", {}), **seconds}
                            if keep else seconds}
    print(f"\n{name}: {len(y)} answers, {sum(y)} labelled {label}")
    print(f"{'method / judge':<44}{'AUC':>7}  {'95% CI':<16}{'dev':>7}{'test':>7}")
    for k, r in rows.items():
        print(f"{k:<44}{r['auc']:>7.3f}  [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]  {r['auc_dev']:>7.3f}{r['auc_test']:>7.3f}")
    print(f"chosen on the dev half: {best}; its AUC on the test half {rows[best]['auc_test']:.3f}")


if __name__ == "__main__":
    main()
