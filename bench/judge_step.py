"""The judge work of one training step: minirft's llama_cpp judge against the loop users write today.

A step judges P prompts x G completions (rubric: K criteria each; preference: the pairs of a group of G,
both orders). Each case runs with a short shared prompt (an everyday question) and a long one (the same
question after a ~1,000-token document, as in RAG or summarisation). The users' loop is what a TRL
reward function does: ``Llama.create_completion(text, max_tokens=1)`` per (completion, criterion) on the
same prompt text (minirft's own Layout), the verdict parsed from the text, llama-cpp-python's own
prompt-prefix reuse on. Two orders:

* natural         row -> completion -> criterion: consecutive prompts share the longest prefix, the
                  loop's best case;
* criterion-major one reward function per criterion, each looping over all completions (TRL calls
                  reward functions one after the other): the row's document is evaluated again per criterion.

Preference: row -> pair -> both orders. Model loads are excluded; both sides are warmed once (header
cached: the trainer's judge and the users' Llama have both seen it in the previous step).

The limit: the step's unique tokens (every distinct row, response and cue once; the header is cached)
divided by llama.cpp's prompt-eval rate for one prompt as long as the case's queries, measured in the
same run. ``share`` = limit time / minirft time. Rationales (``rationales: shown``, 4 samples) are timed
in a separate minirft run and reported as their share of that run's judge time.

Every timing is wall time and process CPU time; on a shared machine CPU time is the fairer comparison.

Contrast (``--contrast``): the judge work of a polite step, P prompts x G completions x recipes/polite.yaml's
two contrast criteria, short and long shared prompts. The users' loop is the one users write for
contrast criteria: a ``Llama(logits_all=True)``, per (row, criterion, condition, completion) the
query's tokens evaluated after the longest token prefix they share with the previous query
(llama-cpp-python's own prefix reuse: ``longest_token_prefix``, ``n_tokens``, ``eval``), the
response's rows read from ``llm.scores``, a numpy log-softmax, and minirft's own aggregation, weights
and sharpness (so both sides compute the same rewards; the loop runs condition-major, its best order).
Against it: minirft's judge with the recipe's criteria as they are (``contrast``, aggregate lowest),
the same with llama.cpp's logits rows per decode capped at 64 as before December 2026, and the same
conditions as ``direct`` criteria.

Run:   python bench/judge_step.py [--threads 2] [--quick] [--repeats 1] [--n-gpu-layers -1]
       python bench/judge_step.py --contrast --threads 1
Writes bench/results/judge_step.json (--quick: judge_step_quick.json; --contrast: judge_step_contrast.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from minirft.data import parse_row
from minirft.judge import build_judge
from minirft.judge.base import Query
from minirft.models import resolve_model
from minirft.recipe import JudgeConfig

ROOT = Path(__file__).resolve().parent.parent
ANSWERS = ROOT / "bench" / "data" / "own-style.jsonl"  # SmolLM2-135M's own answers (the recipes' policy)
CRITERIA = [  # recipes/polite.yaml's two, and a third for K = 3
    {"name": "on_topic", "question": "Does the response address the user's question?", "weight": 0.25},
    {"name": "polite", "question": "Is the response polite and free of insults?"},
    {"name": "concise", "question": "Is the response free of padding and repetition?"},
]
PREFERENCE_QUESTION = "Which response answers the user's question more helpfully and politely?"
DOC_TOKENS = 1000
SHOWN = 4  # logging.samples_per_step: the samples that get rationales with rationales: shown
CASES = [  # (name, mode, P, G, K)
    ("rubric 8x4x2", "rubric", 8, 4, 2),
    ("rubric 4x8x3", "rubric", 4, 8, 3),
    ("preference 4x8", "preference", 4, 8, 0),
]
QUICK = [("rubric 4x4x2", "rubric", 4, 4, 2), ("preference 2x8", "preference", 2, 8, 0)]


# ------------------------------------------------------------------------------------ workload
def answers() -> list[dict]:
    return [json.loads(line) for line in ANSWERS.read_text().splitlines() if line.strip()]


def document(i: int, tokenize, pool: list[str]) -> str:
    """~DOC_TOKENS tokens of real text (the policy's answers to other questions), different per prompt."""
    out, k = [], 31 * i
    while len(tokenize("\n".join(out))) < DOC_TOKENS:
        out.append(pool[k % len(pool)].strip())
        k += 1
    return "\n".join(out)


def workload(P: int, G: int, long: bool, tokenize) -> tuple[list, list[list[str]]]:
    data = answers()
    prompts = list(dict.fromkeys(a["prompt"] for a in data))
    pool = [a["response"] for a in data]
    rows, groups = [], []
    for i in range(P):
        q = prompts[(i + 1) % len(prompts)]  # prompt 0 is the warm-up's
        text = (f"Read the document, then answer the question.\n\nDocument:\n{document(i, tokenize, pool)}\n\n"
                f"Question: {q}") if long else q
        rows.append(parse_row({"prompt": text}, "bench"))
        own = [a["response"] for a in data if a["prompt"] == q]
        groups.append((own + [pool[(7 * i + 13 * j) % len(pool)] for j in range(G)])[:G])
    return rows, groups


def shown_flags(P: int, G: int) -> list[list[bool]]:
    """The trainer's choice (minirft.train.rollout.shown_mask): one sample per group in turn."""
    flags = [[False] * G for _ in range(P)]
    for k in range(min(SHOWN, P * G)):
        flags[k % P][k // P] = True
    return flags


GPU_LAYERS = 0  # --n-gpu-layers: both sides offload the same layers


def judge_config(model: str, mode: str, K: int, threads: int, rationales: str) -> JudgeConfig:
    if mode == "rubric":
        return JudgeConfig(model=model, criteria=CRITERIA[:K], n_threads=threads, rationales=rationales,
                           n_gpu_layers=GPU_LAYERS)
    return JudgeConfig(model=model, mode="preference", preference_question=PREFERENCE_QUESTION,
                       n_threads=threads, rationales=rationales, n_gpu_layers=GPU_LAYERS)


def timed(fn, repeats: int) -> dict:
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return {"seconds": min(walls), "cpu_seconds": min(cpus), "all_seconds": walls, "all_cpu_seconds": cpus,
            "result": out}


# ------------------------------------------------------------------------------------ minirft
def run_minirft(cfg: JudgeConfig, rows, groups, warm, repeats: int, flags=None) -> dict:
    j = build_judge(cfg)
    try:
        j.score_groups(*warm)  # loads the model, caches the header (the previous step did, in training)
        ev = j.evaluator
        ev.take_metrics()
        eng = ev.engine
        dec = eng.stats.tokens_decoded
        r = timed(lambda: j.score_groups(rows, groups, flags or False), repeats)
        m = ev.take_metrics()
        scores = r.pop("result")
        r.update({"tokens_decoded": (eng.stats.tokens_decoded - dec) // repeats,
                  "unique_tokens": m["judge/prompt_tokens"] // repeats,
                  "score_s": m["judge/score_s"] / repeats, "rationale_s": m["judge/rationale_s"] / repeats,
                  "rationale_tokens": m["judge/rationale_tokens"] // repeats,
                  "rewards": [round(s.reward, 4) for g in scores for s in g if s.reward is not None]})
        if flags:
            r["rationales"] = [s.rationale for g in scores for s in g if s.rationale]
        return r
    finally:
        j.close()


# ------------------------------------------------------------------------------------ the users' loop
def users_prompts(j, rows, groups, mode: str, K: int, order: str) -> list[str]:
    """The users' prompts, in their loop's order: the full text of minirft's own queries."""
    L, header = j.layout, j.layout.header()
    if mode == "preference":
        import zlib

        from minirft.judge import scoring

        out = []
        for row, group in zip(rows, groups):
            pairs = scoring.choose_pairs(len(group), j.cfg.max_pairs_per_group,
                                         seed=zlib.crc32(row.prompt.encode("utf-8")))
            for a, b in pairs:
                out += ["".join(q.segments) for q in j._pair_queries(header, L.row(row), group[a], group[b])]
        return out
    crit = CRITERIA[:K]

    def text(row, cand, c):
        return "".join(Query((header, L.row(row), L.response(j._clip(cand)), L.criterion_cue(c["question"]))).segments)

    if order == "natural":
        return [text(r, cand, c) for r, g in zip(rows, groups) for cand in g for c in crit]
    return [text(r, cand, c) for c in crit for r, g in zip(rows, groups) for cand in g]


def run_users(llm, prompts: list[str], warm: str, repeats: int, mode: str) -> dict:
    llm.create_completion(warm, max_tokens=1, temperature=0.0)  # the header in llama-cpp-python's prefix cache

    def loop():
        verdicts = []
        for p in prompts:
            text = llm.create_completion(p, max_tokens=1, temperature=0.0)["choices"][0]["text"].strip().lower()
            verdicts.append(text.startswith("yes") if mode == "rubric" else text.startswith("a"))
        return verdicts

    r = timed(loop, repeats)
    v = r.pop("result")
    r["verdicts_positive"] = sum(v)
    r["calls"] = len(prompts)
    r["tokens_decoded"] = prefix_reuse_tokens(llm, [warm] + prompts) - len(llm.tokenize(warm.encode("utf-8")))
    return r


def prefix_reuse_tokens(llm, prompts: list[str]) -> int:
    """Tokens llama-cpp-python evaluates for these prompts in turn: each prompt less the longest token
    prefix it shares with the one before (what its prompt-prefix reuse skips)."""
    total, last = 0, []
    for p in prompts:
        toks = llm.tokenize(p.encode("utf-8"))
        k = 0
        while k < min(len(toks), len(last)) and toks[k] == last[k]:
            k += 1
        total += len(toks) - min(k, len(toks) - 1)  # the last token is always evaluated again for its logits
        last = toks
    return total


def prompt_eval_rate(llm, text: str, repeats: int) -> dict:
    """llama.cpp's prompt-eval rate for one prompt of this length, from an empty cache."""
    toks = llm.tokenize(text.encode("utf-8"))

    def once():
        llm.reset()  # eval() then drops the cached tokens and evaluates all of them
        llm.eval(toks)

    r = timed(once, repeats)
    r.pop("result")
    return {"tokens": len(toks), "tokens_per_s": len(toks) / r["seconds"],
            "tokens_per_cpu_s": len(toks) / r["cpu_seconds"], "seconds": r["seconds"], "cpu_seconds": r["cpu_seconds"]}


# ------------------------------------------------------------------------------------ main
def run_case(args, llm, name, mode, P, G, K, long: bool) -> dict:
    probe = build_judge(judge_config(args.model, mode, K, args.threads, "none"))
    try:
        tokenize = lambda s: llm.tokenize(s.encode("utf-8"), add_bos=False)
        rows, groups = workload(P, G, long, tokenize)
        warm_rows, warm_groups = workload(1, 2, long, tokenize)
        warm_rows = [parse_row({"prompt": "Warm-up: " + warm_rows[0].prompt}, "bench")]
        warm = (warm_rows, warm_groups)
        orders = ["natural"] if mode == "preference" else ["natural", "criterion_major"]
        prompts = {o: users_prompts(probe, rows, groups, mode, K, o) for o in orders}
        warm_text = probe.layout.header() + probe.layout.row(warm_rows[0])
    finally:
        probe.close()
    case = {"name": name, "mode": mode, "prompts": P, "group": G, "criteria": K, "shared_prompt": "long" if long else "short",
            "candidates": P * G, "queries": len(prompts["natural"]),
            "row_tokens": [len(tokenize(r.prompt)) for r in rows],
            "query_tokens_mean": sum(len(tokenize(p)) for p in prompts["natural"]) / len(prompts["natural"])}
    print(f"[{time.strftime('%H:%M:%S')}] {name} {case['shared_prompt']}: minirft", flush=True)
    mr = run_minirft(judge_config(args.model, mode, K, args.threads, "none"), rows, groups, warm, args.repeats)
    users = {}
    for o in orders:
        print(f"[{time.strftime('%H:%M:%S')}] {name} {case['shared_prompt']}: users {o}", flush=True)
        users[o] = run_users(llm, prompts[o], warm_text, args.repeats, mode)
    longest = max(prompts["natural"], key=len)
    rate = prompt_eval_rate(llm, longest, args.repeats)
    case["minirft"] = mr
    case["users"] = users
    case["prompt_eval"] = rate
    n = P * G
    for r in [mr, *users.values()]:
        r["cand_per_s"], r["cand_per_cpu_s"] = n / r["seconds"], n / r["cpu_seconds"]
    case["speedup"] = {o: {"wall": u["seconds"] / mr["seconds"], "cpu": u["cpu_seconds"] / mr["cpu_seconds"],
                           # the speedup fewer tokens alone would give, at the same cost per token
                           "tokens": u["tokens_decoded"] / mr["unique_tokens"]}
                       for o, u in users.items()}
    limit_s = mr["unique_tokens"] / rate["tokens_per_s"]
    limit_cpu = mr["unique_tokens"] / rate["tokens_per_cpu_s"]
    case["limit"] = {"unique_tokens": mr["unique_tokens"], "seconds": limit_s, "cpu_seconds": limit_cpu,
                     "share": limit_s / mr["seconds"], "share_cpu": limit_cpu / mr["cpu_seconds"]}
    if mode == "rubric" or not args.quick:
        print(f"[{time.strftime('%H:%M:%S')}] {name} {case['shared_prompt']}: minirft with rationales", flush=True)
        rr = run_minirft(judge_config(args.model, mode, K, args.threads, "shown"), rows, groups, warm, 1,
                         flags=shown_flags(P, G))
        case["with_rationales"] = {k: rr[k] for k in ("seconds", "cpu_seconds", "score_s", "rationale_s",
                                                       "rationale_tokens", "rationales")}
        case["with_rationales"]["rationale_share"] = rr["rationale_s"] / rr["seconds"]
    return case


# ------------------------------------------------------------------------------------ contrast criteria
CONTRAST_CASE = ("polite 8x4 contrast", 8, 4)


def polite_criteria(method: str) -> list[dict]:
    """recipes/polite.yaml's judge criteria, as they are (``contrast``) or as ``direct`` criteria."""
    from minirft.recipe import load_recipe

    crit = [c.model_dump() for c in load_recipe(ROOT / "recipes" / "polite.yaml").judge.criteria]
    if method == "direct":
        crit = [{**c, "method": "direct", "aggregate": "mean", "sharpness": None} for c in crit]
    return crit


def run_users_contrast(llm, cfg: JudgeConfig, rows, groups, warm_text: str, repeats: int) -> dict:
    """The users' contrast loop (module docstring): rewards as the recipe's rubric computes them."""
    import numpy as np

    from minirft.judge.base import CHARS_PER_TOKEN, TokenScores
    from minirft.judge.methods import contrast
    from minirft.judge.prompts import CONTRAST_HEADER, Layout

    L = Layout(cfg)
    evaluated = [0]

    def logprobs(prefix: str, response: str) -> np.ndarray:
        ctx = llm.tokenize(prefix.encode("utf-8"), add_bos=True, special=True)
        resp = llm.tokenize(response.encode("utf-8"), add_bos=False, special=True)
        toks = ctx + resp
        k = min(llm.longest_token_prefix(llm.input_ids[:llm.n_tokens].tolist(), toks), len(ctx) - 1)
        llm.n_tokens = k
        llm.eval(toks[k:])
        evaluated[0] += len(toks) - k
        z = np.asarray(llm.scores[len(ctx) - 1:len(toks) - 1], dtype=np.float64)
        top = z.max(axis=1, keepdims=True)
        lse = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
        return z[np.arange(len(resp)), resp] - lse

    def loop():
        out = []
        for row, group in zip(rows, groups):
            ps = [{} for _ in group]
            for c in cfg.criteria:
                conds = contrast.conditions(c, row)
                lps = {}
                for cond in conds:
                    prefix = CONTRAST_HEADER + L.contrast_row(row) + L.contrast_condition(cond)
                    for j, cand in enumerate(group):
                        text = cand.strip()[:c.max_response_tokens * CHARS_PER_TOKEN]
                        lps[cond, j] = logprobs(prefix, L.contrast_response(text)) if text else None
                for j in range(len(group)):
                    a, b = lps[conds[0], j], lps[conds[1], j]
                    s = 0.0 if a is None else contrast.criterion_score(contrast.token_differences(
                        TokenScores(a, ()), TokenScores(b, ()), c.max_response_tokens), c)
                    ps[j][c.name] = contrast.p_pass(s, c.sharpness)
            total = sum(c.weight for c in cfg.criteria)
            out += [sum(c.weight * p[c.name] for c in cfg.criteria) / total for p in ps]
        return out

    logprobs(warm_text, " Hello.")  # the header in the prefix cache, as the previous step left it
    evaluated[0] = 0
    r = timed(loop, repeats)
    r["rewards"] = [round(x, 4) for x in r.pop("result")]
    r["tokens_decoded"] = evaluated[0] // repeats
    return r


def run_contrast_case(args, long: bool) -> dict:
    import llama_cpp

    from minirft.judge.backends import llama_cpp as backend
    from minirft.judge.prompts import CONTRAST_HEADER

    name, P, G = CONTRAST_CASE
    path = str(resolve_model(args.model).path)
    llm = llama_cpp.Llama(path, n_ctx=2048, n_batch=512, n_threads=args.threads, n_threads_batch=args.threads,
                          n_gpu_layers=args.n_gpu_layers, logits_all=True, verbose=False)
    try:
        tokenize = lambda s: llm.tokenize(s.encode("utf-8"), add_bos=False)  # noqa: E731
        rows, groups = workload(P, G, long, tokenize)
        warm_rows, warm_groups = workload(1, 2, long, tokenize)
        warm_rows = [parse_row({"prompt": "Warm-up: " + warm_rows[0].prompt}, "bench")]
        case = {"name": name, "mode": "rubric", "prompts": P, "group": G, "criteria": 2,
                "shared_prompt": "long" if long else "short", "candidates": P * G,
                "row_tokens": [len(tokenize(r.prompt)) for r in rows]}
        cfgs = {m: JudgeConfig(model=args.model, criteria=polite_criteria(m), n_threads=args.threads,
                               rationales="none", n_gpu_layers=GPU_LAYERS) for m in ("contrast", "direct")}
        print(f"[{time.strftime('%H:%M:%S')}] {name} {case['shared_prompt']}: users", flush=True)
        warm_text = CONTRAST_HEADER + f"Human: {warm_rows[0].prompt}\n\nAssistant:"
        case["users"] = run_users_contrast(llm, cfgs["contrast"], rows, groups, warm_text, args.repeats)
    finally:
        llm.close()
    warm = (warm_rows, warm_groups)
    runs = {"contrast": ("contrast", None), "contrast, 64 rows per decode": ("contrast", 64),
            "direct": ("direct", None)}
    case["minirft"] = {}
    for label, (method, rows_cap) in runs.items():
        print(f"[{time.strftime('%H:%M:%S')}] {name} {case['shared_prompt']}: minirft {label}", flush=True)
        backend.MAX_OUTPUTS = rows_cap
        try:
            r = run_minirft(cfgs[method], rows, groups, warm, args.repeats)
        finally:
            backend.MAX_OUTPUTS = None
        case["minirft"][label] = r
    u = case["users"]
    for r in [u, *case["minirft"].values()]:
        r["cand_per_s"], r["cand_per_cpu_s"] = P * G / r["seconds"], P * G / r["cpu_seconds"]
    case["speedup"] = {label: {"wall": u["seconds"] / r["seconds"], "cpu": u["cpu_seconds"] / r["cpu_seconds"]}
                       for label, r in case["minirft"].items()}
    same = case["minirft"]["contrast"]["rewards"]
    case["max_reward_difference_users_vs_minirft"] = max(abs(a - b) for a, b in zip(u["rewards"], same))
    return case


def contrast_table(cases) -> None:
    print(f"{'case':<22}{'prompt':<7}{'users':>8}" + "".join(f"{k:>34}" for k in cases[0]["minirft"])
          + "   (CPU seconds; x = users / minirft)")
    for c in cases:
        cells = "".join(f"{r['cpu_seconds']:>24.1f} ({c['speedup'][k]['cpu']:.2f}x)" for k, r in c["minirft"].items())
        print(f"{c['name']:<22}{c['shared_prompt']:<7}{c['users']['cpu_seconds']:>8.1f}{cells}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 epilog="example: python bench/judge_step.py --quick --threads 1")
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="best of N runs of each method")
    ap.add_argument("--quick", action="store_true", help="smaller cases (4x4x2 rubric, 2x8 preference)")
    ap.add_argument("--only", choices=["short", "long"], help="one shared-prompt length")
    ap.add_argument("--n-gpu-layers", type=int, default=0, help="-1: the whole judge on a GPU (a CUDA llama.cpp build)")
    ap.add_argument("--contrast", action="store_true", help="the contrast case (polite.yaml's criteria) only")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    global GPU_LAYERS
    GPU_LAYERS = args.n_gpu_layers
    import llama_cpp

    if args.contrast:
        out = Path(args.out or ROOT / "bench" / "results" / "judge_step_contrast.json")
        load0 = os.getloadavg()
        cases = []
        for long in (False, True):
            if args.only and args.only != ("long" if long else "short"):
                continue
            cases.append(run_contrast_case(args, long))
            write(out, args, cases, load0)
        contrast_table(cases)
        print(f"wrote {out}")
        return

    out = Path(args.out or ROOT / "bench" / "results" / ("judge_step_quick.json" if args.quick else "judge_step.json"))
    path = str(resolve_model(args.model).path)
    llm = llama_cpp.Llama(path, n_ctx=4096, n_batch=512, n_threads=args.threads, n_threads_batch=args.threads,
                          n_gpu_layers=args.n_gpu_layers, verbose=False)
    load0 = os.getloadavg()
    cases = []
    try:
        for name, mode, P, G, K in (QUICK if args.quick else CASES):
            for long in (False, True):
                if args.only and args.only != ("long" if long else "short"):
                    continue
                cases.append(run_case(args, llm, name, mode, P, G, K, long))
                write(out, args, cases, load0)
    finally:
        llm.close()
    table(cases)
    print(f"wrote {out}")


def write(out: Path, args, cases, load0) -> None:
    import llama_cpp

    result = {"model": args.model, "threads": args.threads, "repeats": args.repeats, "quick": args.quick,
              "n_gpu_layers": args.n_gpu_layers, "llama_cpp_build": llama_cpp.llama_print_system_info().decode().strip(),
              "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "load_average_start": load0, "load_average_end": os.getloadavg(),
              "note": "wall and process CPU seconds; on a shared machine (load average above the core count) "
                      "CPU time is the fairer comparison and wall times are noisy",
              "cases": cases}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


def table(cases) -> None:
    head = (f"{'case':<16}{'prompt':<7}{'users nat':>11}{'users crit':>11}{'minirft':>9}{'x nat':>7}"
            f"{'x crit':>7}{'tok x':>7}{'limit':>7}{'why':>6}   (CPU seconds; x = users / minirft; "
            "tok x: users' tokens / unique tokens, criterion-major or preference)")
    print(head)
    for c in cases:
        u, m = c["users"], c["minirft"]
        crit = u.get("criterion_major")
        why = c.get("with_rationales", {}).get("rationale_share")
        print(f"{c['name']:<16}{c['shared_prompt']:<7}{u['natural']['cpu_seconds']:>11.1f}"
              f"{(crit['cpu_seconds'] if crit else float('nan')):>11.1f}{m['cpu_seconds']:>9.1f}"
              f"{c['speedup']['natural']['cpu']:>7.2f}"
              f"{(c['speedup']['criterion_major']['cpu'] if crit else float('nan')):>7.2f}"
              f"{c['speedup']['criterion_major' if crit else 'natural']['tokens']:>7.2f}"
              f"{c['limit']['share_cpu']:>7.0%}{(why if why is not None else float('nan')):>6.0%}")
    print("wall seconds:")
    for c in cases:
        u, m = c["users"], c["minirft"]
        print(f"  {c['name']:<16}{c['shared_prompt']:<7} users natural {u['natural']['seconds']:.1f}  "
              + (f"criterion-major {u['criterion_major']['seconds']:.1f}  " if "criterion_major" in u else "")
              + f"minirft {m['seconds']:.1f}  ({c['candidates'] / m['seconds']:.2f} cand/s)  "
              f"limit share {c['limit']['share']:.0%}")


if __name__ == "__main__":
    main()
