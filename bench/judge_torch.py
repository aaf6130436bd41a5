"""Torch judge backend vs the llama_cpp backend on CPU: 16 candidates sharing a ~500-token rubric.

Same judge, same GGUF weights, same prompts (the rubric and candidates of bench/judge_throughput.py,
one criterion asked per candidate, all eight listed in the shared header):

* ``torch_batched``   — judge.backend: torch, max_seqs 16: the header's KV cached once, the
                        candidates' suffixes run as one right-padded batch on top of it, the
                        verdict read through the label-head kernel (torch reference on CPU);
* ``torch_per_cand``  — the same with max_seqs 1: each candidate alone on the cached header;
* ``llama_cpp``       — the default backend (llama.cpp, quantized weights, batched, shared prefix).

Timings are steady-state calls (the header already cached, as every training step after the first),
plus the cold first call of each backend (model loaded, header not yet computed). The torch backend runs the
GGUF dequantised to fp32 (transformers' ``gguf_file=``), so it does ~4x the memory traffic of
llama.cpp's Q4 kernels; its scores differ from llama.cpp's by the quantized-matmul rounding only.

Run: python bench/judge_torch.py [--model smollm2-135m-instruct] [--threads 2]
Writes bench/results/judge_torch.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from judge_throughput import CANDIDATES, PROMPT, judge_config
from minirft.data import parse_row
from minirft.judge import build_judge


def _judge(model: str, threads: int, backend: str):
    cfg = judge_config(model, threads, False).model_copy(update={"backend": backend, "max_seqs": 16})
    j = build_judge(cfg.model_copy(update={"criteria": cfg.criteria[:1]}))
    j.layout.cfg = cfg  # the header lists all eight criteria (long rubric), the queries ask the first
    return j


def _timed(j, label: str) -> dict:
    row = parse_row({"prompt": PROMPT}, "bench")
    t = time.perf_counter()
    scores = j.score_groups([row], [CANDIDATES])[0]
    dt = time.perf_counter() - t
    print(f"  {label}: {dt:.1f} s", flush=True)
    return {"seconds": dt, "cand_per_s": len(CANDIDATES) / dt, "p_yes": [round(s.criteria["answers"], 5) for s in scores]}


def run_torch(model: str, threads: int) -> dict:
    """One load; cold (header not cached) and steady calls, batched (max_seqs 16) then per candidate."""
    import torch

    torch.set_num_threads(threads)
    j = _judge(model, threads, "torch")
    ev = j.evaluator
    try:
        t = time.perf_counter()
        ev.model  # noqa: B018 - loads
        load = time.perf_counter() - t
        print(f"  torch load {load:.1f} s (0 when build_judge already loaded it for the chat template)", flush=True)
        cold = _timed(j, "torch cold (header computed)")
        batched = _timed(j, "torch batched steady")
        ev.max_batch = 1
        per_cand = _timed(j, "torch per-candidate steady")
        header = len(ev.tokenize(j.layout.header(), bos=True))
        return {"load_seconds": load, "header_tokens": header, "cold_batched": cold,
                "torch_batched": batched, "torch_per_cand": per_cand}
    finally:
        j.close()


def run_llama(model: str, threads: int) -> dict:
    j = _judge(model, threads, "llama_cpp")
    try:
        j.evaluator.engine  # noqa: B018 - loads
        return {"cold": _timed(j, "llama_cpp cold"), "llama_cpp": _timed(j, "llama_cpp steady")}
    finally:
        j.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "judge_torch.json"))
    args = ap.parse_args()

    tr = run_torch(args.model, args.threads)
    lr = run_llama(args.model, args.threads)
    res = {"torch_batched": tr["torch_batched"], "torch_per_cand": tr["torch_per_cand"], "llama_cpp": lr["llama_cpp"]}
    p = {k: np.array(v["p_yes"]) for k, v in res.items()}
    import torch
    import transformers

    result = {
        "model": args.model, "threads": args.threads, "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "candidates": len(CANDIDATES), "rubric_tokens": tr["header_tokens"], **res,
        "torch_cold_batched": tr["cold_batched"], "llama_cpp_cold": lr["cold"], "torch_load_seconds": tr["load_seconds"],
        "max_abs_dp_torch_batched_vs_per_cand": float(np.abs(p["torch_batched"] - p["torch_per_cand"]).max()),
        "max_abs_dp_torch_vs_llama_cpp": float(np.abs(p["torch_batched"] - p["llama_cpp"]).max()),
        "speedup_torch_batched_vs_per_cand": res["torch_batched"]["cand_per_s"] / res["torch_per_cand"]["cand_per_s"],
        "speedup_llama_cpp_vs_torch_batched": res["llama_cpp"]["cand_per_s"] / res["torch_batched"]["cand_per_s"],
        "note": "taken on a shared 2-core machine with other jobs running; ratios are more reliable than absolutes",
    }
    print(f"{'method':<22}{'seconds':>9}{'cand/s':>9}")
    rows = dict(res, torch_batched_cold=tr["cold_batched"], llama_cpp_cold=lr["cold"])
    for name, r in rows.items():
        print(f"{name:<22}{r['seconds']:>9.2f}{r['cand_per_s']:>9.2f}")
    print(f"rubric tokens {result['rubric_tokens']}; max |dP(yes)| torch batched vs per-candidate "
          f"{result['max_abs_dp_torch_batched_vs_per_cand']:.1e}, torch vs llama_cpp "
          f"{result['max_abs_dp_torch_vs_llama_cpp']:.3f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    from minirft.atomic import write_text

    write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
