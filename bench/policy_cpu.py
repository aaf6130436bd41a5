"""The policy's three CPU choices that decide its step time and memory, each measured both ways.

On the recipe's policy (default: SmolLM2-135M-Instruct from its GGUF, LoRA r=16 on all linear layers):

* ``update``   — what one training step's update does: for 4 micro-batches of 4 sequences × 100 tokens,
                 a reference forward (adapter off, no grad) + a forward and backward with the adapter,
                 in fp32 and in bf16;
* ``generate`` — 16 completions of up to 48 sampled tokens (the same seed both ways) through
                 peft's unmerged LoRA layers vs with the adapter folded in (``Policy.folded``), bf16;
* ``head``     — the RSS growth of one prefill forward of 16 prompts that keeps only the last position's
                 logits (what ``generate`` does) with the output head's input strided (torch's default)
                 vs contiguous (the pre-hook minirft installs).

python bench/policy_cpu.py [--threads 2] [--repeats 3]
Prints a table and writes bench/results/policy_cpu.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import threading
import time
from pathlib import Path

import psutil
import torch

from minirft.recipe import PolicyConfig
from minirft.train.policy import Policy, generate, load_policy

RESULTS = Path(__file__).resolve().parent / "results"


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def update_seconds(dtype: str, repeats: int) -> list[float]:
    policy = load_policy(PolicyConfig(dtype=dtype), seed=0)
    model = policy.model
    model.train()
    decoder = model.get_base_model().model
    ids = torch.randint(0, model.config.vocab_size, (4, 100), generator=torch.Generator().manual_seed(0))

    def step():
        for _ in range(4):
            with torch.no_grad(), policy.reference():
                decoder(input_ids=ids)
            hidden = decoder(input_ids=ids).last_hidden_state
            hidden.float().pow(2).mean().backward()

    step()  # warm-up
    return timed(step, repeats)


def generate_seconds(policy: Policy, folded: bool, repeats: int) -> list[float]:
    prompts = [[1] + list(range(200, 240))] * 16
    original = Policy.folded
    try:
        if not folded:
            Policy.folded = lambda self: contextlib.nullcontext()  # type: ignore[method-assign]
        out = []
        for _ in range(repeats):
            torch.manual_seed(0)
            t = time.perf_counter()
            generate(policy, prompts, max_new_tokens=48, temperature=1.0, top_p=1.0, top_k=0)
            out.append(time.perf_counter() - t)
        return out
    finally:
        Policy.folded = original


def head_growth_mb(policy: Policy, contiguous: bool) -> float:
    """Peak RSS growth (MB) of a last-position-logits prefill of 16 × 41 tokens."""
    model = policy.model
    head = model.get_output_embeddings()
    saved = dict(head._forward_pre_hooks)
    if not contiguous:
        head._forward_pre_hooks.clear()  # drop minirft's contiguous-input hook for this measurement
    proc, peak, done = psutil.Process(), [0], threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.002)

    ids = torch.randint(0, model.config.vocab_size, (16, 41), generator=torch.Generator().manual_seed(0))
    base = proc.memory_info().rss
    thread = threading.Thread(target=watch)
    thread.start()
    try:
        with torch.no_grad():
            model(input_ids=ids, logits_to_keep=1)
    finally:
        done.set()
        thread.join()
        head._forward_pre_hooks.update(saved)
    return max(0, peak[0] - base) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    rows: dict[str, dict[str, list[float] | float]] = {}
    rows["update fp32"] = {"seconds": update_seconds("float32", args.repeats)}
    rows["update bf16"] = {"seconds": update_seconds("bfloat16", args.repeats)}
    policy = load_policy(PolicyConfig(dtype="bfloat16"), seed=0)
    with torch.no_grad():  # a non-zero adapter, so folding has something to fold
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    generate_seconds(policy, True, 1)  # warm-up
    rows["generate unfolded"] = {"seconds": generate_seconds(policy, False, args.repeats)}
    rows["generate folded"] = {"seconds": generate_seconds(policy, True, args.repeats)}
    head_growth_mb(policy, True)  # warm-up
    rows["head strided"] = {"rss_growth_mb": head_growth_mb(policy, False)}
    rows["head contiguous"] = {"rss_growth_mb": head_growth_mb(policy, True)}

    print(f"policy smollm2-135m-instruct, {args.threads} threads, median of {args.repeats}")
    print(f"{'measure':<20} {'median s':>9} {'all runs s':>24} {'RSS growth MB':>14}")
    for name, r in rows.items():
        secs = r.get("seconds")
        med = f"{statistics.median(secs):.2f}" if secs else ""
        every = " ".join(f"{s:.2f}" for s in secs) if secs else ""
        mb = f"{r['rss_growth_mb']:.0f}" if "rss_growth_mb" in r else ""
        print(f"{name:<20} {med:>9} {every:>24} {mb:>14}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "policy_cpu.json"
    out.write_text(json.dumps({"threads": args.threads, "repeats": args.repeats, "rows": rows}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
