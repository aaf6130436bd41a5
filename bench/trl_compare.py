"""Step time of minirft's GRPO loop vs TRL's GRPOTrainer on the same model, data, reward and settings.

Both run LoRA (same r/alpha, all linear layers), P prompts × G generations, the same max new tokens,
β, learning rate and a plain reward callable (share of lowercase letters; no judge, so the
comparison is the trainer's own overhead: generation + log-probs + update). The first step of each
is a warm-up and left out of the median.

TRL is installed only in the bench environment, never as a minirft dependency:

    python -m venv /tmp/trl-venv
    echo "$PWD/.venv/lib/python3.11/site-packages" > /tmp/trl-venv/lib/python3.11/site-packages/main-venv.pth
    /tmp/trl-venv/bin/pip install --no-deps trl && /tmp/trl-venv/bin/pip install pandas datasets
    PYTHONPATH=$PWD:$PWD/kernels /tmp/trl-venv/bin/python bench/trl_compare.py --model tiny --steps 6
    PYTHONPATH=$PWD:$PWD/kernels /tmp/trl-venv/bin/python bench/trl_compare.py \
        --model smollm2-135m-instruct --steps 5 --micro 1

Prints a table and writes bench/results/trl_compare[_<model>].json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tiny model builder and the toy reward live with the tests

PROMPTS = ["cats", "rain", "tea", "maps", "snow", "bread", "owls", "jazz"]


def toy_reward(prompts, completions, **_):
    """Share of lowercase ASCII letters (same callable for both trainers)."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]  # TRL conversational → messages
    return [sum("a" <= ch <= "z" for ch in t) / max(1, len(t)) for t in texts]


def model_path(name: str, work: Path) -> str:
    if name != "tiny":
        return name
    from train_fixtures import make_tiny_model

    return str(make_tiny_model(work / "tiny-model"))


def run_minirft(args, model: str, work: Path) -> list[float]:
    from minirft.recipe import validate_recipe
    from minirft.train.loop import train
    from minirft.events import read_events

    data = work / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Say something about {w}."}) + "\n" for w in PROMPTS))
    recipe = validate_recipe({
        "name": "bench",
        "policy": {"model": model, "backend": "hf", "dtype": args.minirft_dtype,
                   "lora": {"r": args.r, "alpha": 2 * args.r}},
        "rewards": [{"type": "python", "name": "letters", "function": "trl_compare:toy_reward"}],
        "data": {"path": str(data), "shuffle": False},
        "generation": {"group_size": args.group, "max_new_tokens": args.new_tokens},
        "training": {"steps": args.steps, "prompts_per_step": args.prompts, "micro_batch_prompts": args.micro,
                     "lr": 1e-4, "beta": args.beta, "optimizer": "adamw"},
        "checkpoint": {"every": 10_000},
        "logging": {"samples_per_step": 0},
    })
    run = train(recipe, work / "minirft-run", quiet=True, argv=["bench"])
    return [e["metrics"]["step_s"] for e in read_events(run / "events.jsonl") if e["type"] == "step"]


def run_trl(args, model: str, work: Path) -> list[float]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    kwargs = {}
    if model.endswith(".gguf") or model == "smollm2-135m-instruct":
        from minirft.models import resolve_model

        resolved = resolve_model(model)
        model, kwargs = str(resolved.path.parent), {"gguf_file": resolved.path.name}
    tok = AutoTokenizer.from_pretrained(model, **kwargs)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    policy = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32, **kwargs)
    if kwargs:  # a GGUF is dequantised on load, but transformers still marks it quantized and the
        # Trainer refuses to train it; the weights are plain fp32 tensors, so drop the mark.
        policy.hf_quantizer = None
        policy.is_quantized = False
    rows = [{"prompt": [{"role": "user", "content": f"Say something about {w}."}]} for w in PROMPTS]
    dataset = Dataset.from_list(rows * 50)
    cfg = GRPOConfig(
        output_dir=str(work / "trl-out"), use_cpu=True, per_device_train_batch_size=args.prompts * args.group,
        num_generations=args.group, max_completion_length=args.new_tokens, max_steps=args.steps,
        learning_rate=1e-4, beta=args.beta, logging_steps=1, report_to=[], save_strategy="no",
        gradient_accumulation_steps=1, temperature=1.0, bf16=False, seed=0,
    )
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t)

    trainer = GRPOTrainer(model=policy, reward_funcs=[toy_reward], args=cfg, train_dataset=dataset,
                          processing_class=tok, peft_config=LoraConfig(r=args.r, lora_alpha=2 * args.r,
                                                                      target_modules="all-linear",
                                                                      task_type="CAUSAL_LM"),
                          callbacks=[Timer()])
    trainer.train()
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny", help="'tiny' (random 2-layer Llama) or smollm2-135m-instruct")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--beta", type=float, default=0.04)
    ap.add_argument("--micro", type=int, default=4, help="minirft micro_batch_prompts")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--minirft-dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                    help="minirft's policy.dtype (auto: bf16 on a CPU with native bf16); TRL runs fp32")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = model_path(args.model, work)
        results["minirft"] = run_minirft(args, model, work)
        try:
            results["trl"] = run_trl(args, model, work)
        except ImportError as exc:
            print(f"TRL not importable here ({exc}); see this script's docstring", file=sys.stderr)
    med = {k: statistics.median(v[1:] or v) for k, v in results.items()}
    print(f"\nGRPO step time, model={args.model}, {args.prompts} prompts x {args.group} generations, "
          f"{args.new_tokens} new tokens, LoRA r={args.r}, {args.threads} threads (median, first step excluded)")
    print(f"{'trainer':<10} {'median s/step':>14} {'steps':>6}")
    for k, v in results.items():
        print(f"{k:<10} {med[k]:>14.3f} {len(v):>6}")
    ratio = med["trl"] / med["minirft"] if "trl" in med else None
    if ratio is not None:
        print(f"TRL / minirft step-time ratio: {ratio:.2f}x")
    name = "trl_compare" + (f"_{args.model}" if args.model != "tiny" else "") + (
        f"_{args.minirft_dtype}" if args.minirft_dtype != "auto" else "")
    out = ROOT / "bench" / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"settings": vars(args), "step_s": results, "median_step_s": med,
                               "trl_over_minirft": ratio}, indent=1)
                   + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
