"""Rollouts through llama.cpp against HF ``generate`` on the polite configuration (docs/benchmarks.md quotes this).

``recipes/polite.yaml``: SmolLM2-135M-Instruct policy (its Q4_1 GGUF, bf16 or fp32 in torch), LoRA r=16
on all linear layers, 4 prompts × 4 completions, up to 48 new tokens, temperature 1.

1. generation — one step's sampling, the same policy with a random LoRA (B ~ N(0, 0.03): peft starts
   B at zero), each engine warmed up once and then timed ``--repeats`` times (median):
   ``torch`` (HF ``generate``, adapter folded in) and ``llama_cpp`` with each ``generation.engine_weights``
   (auto = torch's own dtype, f16 / q8_0 written from torch's weights, and the policy's own
   Q4_1 file), on the llama.cpp build installed (its CPU features are recorded). For llama.cpp the time
   includes writing and loading the step's LoRA GGUF (shown on its own too). The engine/torch log-prob
   gap of the sampled tokens (mean |Δ|, mean Δ) and the truncated IS weights (cap 2) come with it.
2. training — real ``minirft train`` runs of polite.yaml (Gemma-270M judge), one per engine, same seed:
   mean step / generation / judge / update seconds over steps 2.. (step 1 warms up), and the reward
   curve of each (20 steps; ``--quick``: 3 steps, timings only).

python bench/rollout_engine.py [--quick] [--threads 2] [--repeats 3]
Prints a table and writes bench/results/rollout_engine.json (``--quick``: rollout_engine_quick.json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
POLITE = ROOT / "recipes" / "polite.yaml"
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _prompts(recipe, n: int) -> list:
    from minirft.data import load_prompts

    return load_prompts(recipe.resolve_path(recipe.data.path))[:n]


def generation_rows(threads: int, repeats: int) -> list[dict]:
    import torch

    from minirft.recipe import load_recipe
    from minirft.train.importance import truncated_is_weights
    from minirft.train.llama_rollout import LlamaGenerator
    from minirft.train.policy import encode_prompts, generate, load_policy, token_logprobs

    recipe = load_recipe(POLITE)
    g = recipe.generation
    policy = load_policy(recipe.policy, seed=0)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.03)
    rows = _prompts(recipe, recipe.training.prompts_per_step)
    prompt_ids = encode_prompts(policy, [r.messages for r in rows], recipe.policy.max_prompt_tokens)
    G = g.group_size
    out = []

    def gap(gen) -> dict:
        with torch.no_grad():
            logp, _ = token_logprobs(policy.model, gen.input_ids, gen.attention_mask,
                                     gen.completion_mask.shape[1], g.temperature)
        w, s = truncated_is_weights(logp, gen.sampling_logp, gen.completion_mask, g.importance_sampling_cap)
        n = s["is_tokens"]
        return {"logprob_gap_mean_abs": s["is_abs_gap_sum"] / n, "logprob_gap_mean": s["is_gap_sum"] / n,
                "is_weight_mean": s["is_weight_sum"] / n, "is_weight_min": s["is_weight_min"],
                "is_truncated_frac": s["is_truncated"] / n}

    def run(label: str, fn, extra=None) -> None:
        fn()  # warm-up
        times, tokens, syncs = [], [], []
        gen = None
        for i in range(repeats):
            torch.manual_seed(100 + i)
            t = time.perf_counter()
            gen = fn()
            times.append(time.perf_counter() - t)
            tokens.append(int(gen.completion_mask.sum()))
            if extra is not None:
                syncs.append(extra())
        row = {"engine": label, "seconds": statistics.median(times), "all_seconds": times,
               "tokens": statistics.median(tokens)}
        row["tokens_per_s"] = row["tokens"] / row["seconds"]
        if syncs:
            row["lora_sync_s"] = statistics.median(syncs)
        if gen is not None and gen.sampling_logp is not None:
            row.update(gap(gen))
        out.append(row)
        print(f"  {label}: {row['seconds']:.2f} s", flush=True)

    repeated = [ids for ids in prompt_ids for _ in range(G)]
    run("torch (HF generate)", lambda: generate(policy, repeated, max_new_tokens=g.max_new_tokens,
                                                temperature=g.temperature, top_p=g.top_p, top_k=g.top_k))
    for weights in ("auto", "f16", "q8_0", "policy_gguf"):
        r = recipe.model_copy(deep=True)
        r.generation.engine, r.generation.engine_weights = "llama_cpp", weights
        os.environ["OMP_NUM_THREADS"] = str(threads)
        engine = LlamaGenerator(r, policy)
        try:
            label = {"policy_gguf": "Q4_1 file", "auto": f"{engine.model_path.suffixes[-2][1:]}, auto"}.get(weights, weights)
            run(f"llama_cpp ({label})",
                lambda: engine.generate(policy, prompt_ids, G), lambda: engine.engine.timings["lora_sync_s"])
        finally:
            engine.close()
    base = out[0]["seconds"]
    for row in out:
        row["speedup_vs_torch"] = base / row["seconds"]
    return out


def training_runs(threads: int, steps: int, work: Path) -> list[dict]:
    from minirft.events import read_events
    from minirft.recipe import load_recipe
    from minirft.train.loop import train

    out = []
    for engine in ("torch", "llama_cpp"):
        recipe = load_recipe(POLITE, [f"training.steps={steps}", f"generation.engine={engine}",
                                      f"judge.n_threads={threads}", "checkpoint.every=1000"])
        t0 = time.perf_counter()
        run = train(recipe, work / engine, quiet=True, argv=["bench/rollout_engine.py"])
        wall = time.perf_counter() - t0
        m = {e["step"]: e["metrics"] for e in read_events(run / "events.jsonl") if e["type"] == "step"}
        later = [m[s] for s in sorted(m) if s >= 2] or [m[1]]

        def mean(key):
            vals = [x[key] for x in later if x.get(key) is not None]
            return statistics.mean(vals) if vals else None

        rewards = [m[s]["reward"] for s in sorted(m)]
        row = {"engine": engine, "steps": steps, "wall_s": wall,
               **{k: mean(k) for k in ("step_s", "generation_s", "judge_s", "update_s")},
               "reward_curve": rewards}
        if engine == "llama_cpp":
            row.update({k.replace("/", "_"): mean(k) for k in ("logprob_gap/mean_abs", "logprob_gap/mean",
                                                             "is_weight/mean", "is_weight/min",
                                                             "generation/lora_sync_s")})
        if len(rewards) >= 10:
            row["reward_first5"] = statistics.mean(rewards[:5])
            row["reward_last5"] = statistics.mean(rewards[-5:])
            row["reward_step_std"] = statistics.pstdev(rewards)
        out.append(row)
        print(f"  {engine}: {steps} steps, {row['step_s']:.1f} s/step", flush=True)
    return out


def llama_build() -> str:
    """The CPU features llama.cpp was compiled for (the portable build: AVX2; scripts/setup.sh's: native)."""
    import llama_cpp

    return llama_cpp.llama_print_system_info().decode().strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 training steps per engine (no reward curve)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=None, help="training steps per engine (default 20; --quick 3)")
    ap.add_argument("--only", choices=["generation", "training"], help="one part (default: both)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    steps = args.steps or (3 if args.quick else 20)
    out = args.out or RESULTS / ("rollout_engine_quick.json" if args.quick else
                                 f"rollout_engine_{args.only}.json" if args.only else "rollout_engine.json")
    t0 = time.time()
    load0 = os.getloadavg()[0]
    print(f"llama.cpp build: {llama_build()}")
    gen, runs = [], []
    if args.only != "training":
        print("generation (polite: 4 prompts x 4, 48 new tokens)", flush=True)
        gen = generation_rows(args.threads, args.repeats)
    if args.only != "generation":
        print(f"training ({steps} steps per engine, judge included)", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            runs = training_runs(args.threads, steps, Path(tmp))

    print(f"\n{'engine':<24}{'gen s':>8}{'tok/s':>8}{'speedup':>9}{'lora s':>8}{'|Δlogp|':>9}{'Δlogp':>9}"
          f"{'IS mean':>9}{'IS min':>8}")
    for r in gen:
        def f(key, spec):
            width = int(spec.split(".")[0].lstrip("+"))
            return format(r[key], spec) if r.get(key) is not None else "—".rjust(width)

        print(f"{r['engine']:<24}{f('seconds', '8.2f')}{f('tokens_per_s', '8.0f')}{f('speedup_vs_torch', '8.2f')}x"
              f"{f('lora_sync_s', '8.2f')}{f('logprob_gap_mean_abs', '9.3f')}{f('logprob_gap_mean', '+9.3f')}"
              f"{f('is_weight_mean', '9.3f')}{f('is_weight_min', '8.3f')}")
    ratio = None
    if runs:
        print(f"\n{'training run':<14}{'step s':>8}{'gen s':>8}{'judge s':>9}{'update s':>9}{'reward first5':>15}"
              f"{'last5':>8}")
        for r in runs:
            first, last = r.get("reward_first5"), r.get("reward_last5")
            print(f"{r['engine']:<14}{r['step_s']:8.2f}{r['generation_s']:8.2f}{r['judge_s']:9.2f}{r['update_s']:9.2f}"
                  f"{(f'{first:.3f}' if first is not None else '—'):>15}{(f'{last:.3f}' if last is not None else '—'):>8}")
        torch_run, llama_run = runs
        ratio = llama_run["step_s"] / torch_run["step_s"]
        print(f"step time llama_cpp / torch: {ratio:.2f}")
        if not args.quick:
            print("reward per step (torch):    " + " ".join(f"{x:.2f}" for x in torch_run["reward_curve"]))
            print("reward per step (llama_cpp):" + " ".join(f"{x:.2f}" for x in llama_run["reward_curve"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "when": time.strftime("%Y-%m-%d %H:%M"), "seconds": round(time.time() - t0, 1), "threads": args.threads,
        "cpu_count": os.cpu_count(), "load_avg_1m_start": load0, "load_avg_1m_end": os.getloadavg()[0],
        "note": "timings on a machine shared with other jobs are noisy: compare rows of one file only",
        "llama_cpp_build": llama_build(),
        "generation": gen, "training": runs, "step_ratio_llama_cpp_vs_torch": ratio,
    }, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
