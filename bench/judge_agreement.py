"""Judge agreement with real human preferences (Anthropic hh-rlhf harmless-base test pairs).

Each pair (prompt, chosen, rejected) is judged in preference mode in both orders. Reported per
default judge:

* ``accuracy``            — share of pairs where the swap-averaged P(chosen better) > 0.5 (ties: ½),
* ``accuracy_one_order``  — the same from a single order, averaged over both orders (what a judge
                            asked once, in a random order, would score),
* ``chosen_first`` / ``chosen_second`` — single-order accuracy with the chosen response shown first /
                            second (their gap is the judge's position bias),
* ``swap_consistency``    — share of pairs whose verdict survives swapping the order,
* ``stderr``              — binomial standard error of ``accuracy``.

The tiny default judges are expected near chance (0.5). Run:
python bench/judge_agreement.py [--n 100] [--model gemma3-270m]
Writes bench/results/judge_agreement.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from minirft.data import parse_row
from minirft.judge import build_judge
from minirft.recipe import JudgeConfig

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "hh-harmless-pairs-500.jsonl"
CHUNK = 4


def hit(p: float) -> float:
    return 1.0 if p > 0.5 else 0.5 if p == 0.5 else 0.0


def evaluate(model: str, pairs: list[dict], threads: int, on_chunk=None) -> dict:
    cfg = JudgeConfig(model=model, mode="preference", n_threads=threads, rationales="none",
                      max_candidate_tokens=256, n_ctx=4096, max_seqs=16)
    j = build_judge(cfg)
    verdicts = []
    t = time.perf_counter()
    try:
        for start in range(0, len(pairs), CHUNK):
            chunk = pairs[start:start + CHUNK]
            rows = [parse_row({"prompt": p["prompt"]}, "hh") for p in chunk]
            verdicts += j.compare_many(rows, [(p["chosen"], p["rejected"]) for p in chunk])
            print(f"  {model}: {len(verdicts)}/{len(pairs)} pairs", file=sys.stderr, flush=True)
            if on_chunk:
                on_chunk(summarise(verdicts, time.perf_counter() - t))
    finally:
        j.close()
    return summarise(verdicts, time.perf_counter() - t)


def summarise(verdicts, seconds: float) -> dict:
    n = len(verdicts)
    acc = sum(hit(v.p_a) for v in verdicts) / n
    first = sum(hit(v.p_a_first) for v in verdicts) / n
    second = sum(hit(v.p_a_second) for v in verdicts) / n
    return {
        "pairs": n, "seconds": seconds,
        "accuracy": acc, "stderr": math.sqrt(acc * (1 - acc) / n),
        "accuracy_one_order": (first + second) / 2, "chosen_first": first, "chosen_second": second,
        "swap_consistency": sum((v.p_a_first > 0.5) == (v.p_a_second > 0.5) for v in verdicts) / n,
        "mean_p_chosen": sum(v.p_a for v in verdicts) / n,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="pairs to judge (the first N of the 500)")
    ap.add_argument("--model", action="append", help="judge model(s); default gemma3-270m and smollm2-135m-instruct")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "judge_agreement.json"))
    args = ap.parse_args()
    pairs = [json.loads(line) for line in open(args.data, encoding="utf-8") if line.strip()][: args.n]
    models = args.model or ["gemma3-270m", "smollm2-135m-instruct"]
    result = {"data": Path(args.data).name, "pairs_requested": len(pairs), "judges": {}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save(model):
        def on_chunk(summary):  # partial results survive an interrupted run (the judges are slow on CPU)
            result["judges"][model] = summary
            out.write_text(json.dumps(result, indent=2) + "\n")
        return on_chunk

    for model in models:
        result["judges"][model] = evaluate(model, pairs, args.threads, save(model))
    print(f"{'judge':<24}{'acc(swap)':>10}{'±':>6}{'acc(1 order)':>13}{'chosen 1st':>11}{'chosen 2nd':>11}"
          f"{'swap cons.':>11}{'s':>7}")
    for model, r in result["judges"].items():
        print(f"{model:<24}{r['accuracy']:>10.3f}{r['stderr']:>6.3f}{r['accuracy_one_order']:>13.3f}"
              f"{r['chosen_first']:>11.3f}{r['chosen_second']:>11.3f}{r['swap_consistency']:>11.3f}{r['seconds']:>7.0f}")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
