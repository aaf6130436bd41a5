"""Which judging method carries signal on the policy's own answers? yes/no question vs contrastive
likelihood (two-sided, one-sided), per embedded judge, pooled across both, against answer length.

Labelled sets: bench/data/own-*.jsonl (bench/own_answers.py: SmolLM2-135M's own sampled answers,
labelled by rules). Rows are split by position: even rows choose the method, odd rows report it (a
number on a split not used to choose). AUCs carry 95% bootstrap intervals.

python bench/judge_methods.py [--sets arithmetic tone] [--models gemma3-270m smollm2-135m-instruct]
Writes bench/results/judge_methods.json (the sets run replace their own entries) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from minirft.data import parse_row
from minirft.judge import build_judge
from minirft.recipe import JudgeConfig
from minirft.stats import auc_interval, ranking_auc

HERE = Path(__file__).resolve().parent

# set -> (label, criteria by method); conditions as in the recipes that use them
METHODS = {
    "arithmetic": ("correct", {
        "question": {"question": "Is the response's final number equal to the reference answer?"},
        "contrast": {"method": "contrast", "positive": "The correct answer is {reference}.",
                     "negative": "The correct answer is {wrong_reference}."},
        "contrast_one_sided": {"method": "contrast", "positive": "The correct answer is {reference}.", "negative": ""},
    }),
    "style": ("personal", {
        "question": {"question": "Does the response speak directly to the user, addressing them as you?"},
        "contrast": {"method": "contrast", "positive": "The assistant speaks directly to the user, addressing them as you.",
                     "negative": "The assistant writes impersonally and never addresses the user."},
        "contrast_one_sided": {"method": "contrast",
                               "positive": "The assistant speaks directly to the user, addressing them as you.",
                               "negative": ""},
    }),
}


def load(name: str) -> list[dict]:
    return [json.loads(line) for line in (HERE / "data" / f"own-{name}.jsonl").open()]


def score(model: str, items: list[dict], criteria: dict[str, dict], threads: int) -> dict[str, list[float]]:
    """P(pass) per method name for every item, one judge with all methods as criteria."""
    cfg = JudgeConfig(model=model, n_threads=threads, rationales="none",
                      criteria=[{"name": name, **c} for name, c in criteria.items()])
    judge = build_judge(cfg)
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
        judge.close()
    return out


def summarise(p: list[float], y: list[int]) -> dict:
    lo, hi = auc_interval(p, y)
    dev = [i for i in range(len(y)) if i % 2 == 0]
    test = [i for i in range(len(y)) if i % 2 == 1]
    return {"auc": ranking_auc(p, y), "ci95": [lo, hi],
            "auc_dev": ranking_auc([p[i] for i in dev], [y[i] for i in dev]),
            "auc_test": ranking_auc([p[i] for i in test], [y[i] for i in test])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", default=list(METHODS))
    ap.add_argument("--models", nargs="+", default=["gemma3-270m", "smollm2-135m-instruct"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(HERE / "results" / "judge_methods.json"))
    args = ap.parse_args()
    out = Path(args.out)
    result: dict = json.loads(out.read_text()) if out.is_file() else {"sets": {}}  # other sets' rows are kept
    for name in args.sets:
        label, criteria = METHODS[name]
        items = load(name)
        y = [int(it["labels"][label]) for it in items]
        rows: dict[str, dict] = {"length (longer = pass)": summarise([len(it["response"]) for it in items], y)}
        probs: dict[str, dict[str, list[float]]] = {}
        seconds = {}
        for model in args.models:
            t0 = time.perf_counter()
            probs[model] = score(model, items, criteria, args.threads)
            seconds[model] = time.perf_counter() - t0
            for method, p in probs[model].items():
                rows[f"{method} / {model}"] = summarise(p, y)
        if len(args.models) > 1:
            for method in criteria:
                pooled = [sum(probs[m][method][i] for m in args.models) / len(args.models) for i in range(len(y))]
                rows[f"{method} / pooled"] = summarise(pooled, y)
        best = max((k for k in rows if not k.startswith("length")), key=lambda k: rows[k]["auc_dev"])
        result["sets"][name] = {"n": len(y), "positives": sum(y), "label": label, "criteria": criteria,
                                "methods": rows, "chosen_on_dev": best, "its_test_auc": rows[best]["auc_test"],
                                "judge_seconds": seconds}
        print(f"\n{name}: {len(y)} answers, {sum(y)} labelled {label}")
        print(f"{'method / judge':<44}{'AUC':>7}  {'95% CI':<16}{'dev':>7}{'test':>7}")
        for k, r in rows.items():
            print(f"{k:<44}{r['auc']:>7.3f}  [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]  {r['auc_dev']:>7.3f}{r['auc_test']:>7.3f}")
        print(f"chosen on the dev half: {best}; its AUC on the test half {rows[best]['auc_test']:.3f}")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
