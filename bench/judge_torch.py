"""Torch judge backend vs the llama_cpp backend on CPU: 16 candidates sharing a ~500-token rubric.

Same judge, same GGUF weights, same prompts (the rubric and candidates of bench/judge_throughput.py,
one criterion asked per candidate, all eight listed in the shared header):

* ``torch_batched``   — judge.backend: torch, max_seqs 16: the header's KV cached once, the
                        candidates' suffixes run as one right-padded batch on top of it, the
                        verdict read through the label-head kernel (torch reference on CPU);
* ``torch_per_cand``  — the same with max_seqs 1: each candidate alone on the cached header;
* ``llama_cpp``       — the default backend (llama.cpp, quantized weights, batched, shared prefix).

Timings are steady-state calls (the header already cached, as every training step after the first),
plus the cold first call (model already loaded, header not cached). The torch backend runs the
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


def run(model: str, threads: int, backend: str, max_seqs: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    cfg = judge_config(model, threads, False).model_copy(update={"backend": backend, "max_seqs": max_seqs})
    cfg_one = cfg.model_copy(update={"criteria": cfg.criteria[:1]})
    j = build_judge(cfg_one)
    j.layout.cfg = cfg  # the header lists all eight criteria (long rubric), the queries ask the first
    row = parse_row({"prompt": PROMPT}, "bench")
    try:
        t = time.perf_counter()
        j.score_groups([row], [CANDIDATES[:1]])  # loads the model (and caches the header)
        load = time.perf_counter() - t
        if backend == "torch":
            j.evaluator.reset()  # cold call below: header not cached
        t = time.perf_counter()
        j.score_groups([row], [CANDIDATES])
        cold = time.perf_counter() - t
        t = time.perf_counter()
        scores = j.score_groups([row], [CANDIDATES])[0]
        dt = time.perf_counter() - t
        ev = j.evaluator
        header = len(ev.tokenize(j.layout.header(), bos=True)) if backend == "torch" else \
            len(ev.engine.tokenize(j.layout.header(), bos=ev.engine.add_bos))
        return {"seconds": dt, "cand_per_s": len(CANDIDATES) / dt, "cold_seconds": cold,
                "cold_cand_per_s": len(CANDIDATES) / cold, "first_call_with_load_seconds": load,
                "header_tokens": header, "p_yes": [round(s.criteria["answers"], 5) for s in scores]}
    finally:
        j.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "judge_torch.json"))
    args = ap.parse_args()

    res = {"torch_batched": run(args.model, args.threads, "torch", 16),
           "torch_per_cand": run(args.model, args.threads, "torch", 1),
           "llama_cpp": run(args.model, args.threads, "llama_cpp", 16)}
    p = {k: np.array(v["p_yes"]) for k, v in res.items()}
    import torch
    import transformers

    result = {
        "model": args.model, "threads": args.threads, "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "candidates": len(CANDIDATES), "rubric_tokens": res["torch_batched"]["header_tokens"], **res,
        "max_abs_dp_torch_batched_vs_per_cand": float(np.abs(p["torch_batched"] - p["torch_per_cand"]).max()),
        "max_abs_dp_torch_vs_llama_cpp": float(np.abs(p["torch_batched"] - p["llama_cpp"]).max()),
        "speedup_torch_batched_vs_per_cand": res["torch_batched"]["cand_per_s"] / res["torch_per_cand"]["cand_per_s"],
        "speedup_llama_cpp_vs_torch_batched": res["llama_cpp"]["cand_per_s"] / res["torch_batched"]["cand_per_s"],
        "note": "taken on a shared 2-core machine with other jobs running; ratios are more reliable than absolutes",
    }
    print(f"{'method':<16}{'steady s':>10}{'cand/s':>9}{'cold s':>9}{'cand/s':>9}")
    for name, r in res.items():
        print(f"{name:<16}{r['seconds']:>10.2f}{r['cand_per_s']:>9.2f}{r['cold_seconds']:>9.2f}"
              f"{r['cold_cand_per_s']:>9.2f}")
    print(f"rubric tokens {result['rubric_tokens']}; max |dP(yes)| torch batched vs per-candidate "
          f"{result['max_abs_dp_torch_batched_vs_per_cand']:.1e}, torch vs llama_cpp "
          f"{result['max_abs_dp_torch_vs_llama_cpp']:.3f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    from minirft.atomic import write_text

    write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
