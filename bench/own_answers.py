"""Labelled sets of the policy's OWN answers, labelled by rules: what a judge criterion must rank.

A judge sees only the policy's samples during training, so a criterion is measured on those, not on
hand-written clear cases. Two sets (SmolLM2-135M-Instruct, the recipes' policy, sampled at T=0.8):

- ``arithmetic``: one answer per prompt of recipes/data/arithmetic*.jsonl (201 prompts); label
  ``correct`` = the recipe's exact-match rule (the answer's number equals the reference).
- ``style``: two answers per prompt of recipes/data/everyday-questions*.jsonl and howto*.jsonl
  (108 prompts); label ``personal`` = the answer speaks to the user ("you", "your": the rule
  PERSONAL), a style SmolLM2 takes in about half of its answers and not in the others. (An
  exclamation mark, for enthusiasm, was in 10 of 216: too rare to measure or train.)

(Polite vs rude does not work as a set of the policy's own answers: asked by a system prompt to be rude,
SmolLM2-135M still answers politely, so the labels would say nothing. recipes/data/polite-labels.jsonl
holds hand-written polite and rude answers instead.)

python bench/own_answers.py [--sets arithmetic style] [--seed 0]   # writes bench/data/own-<set>.jsonl
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch

from minirft.data import load_prompts
from minirft.recipe import ExactMatchReward, PolicyConfig
from minirft.rewards import build_rewards, call_reward
from minirft.train.policy import decode, encode_prompts, generate, load_policy

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "recipes" / "data"
OUT = Path(__file__).resolve().parent / "data"


PERSONAL = r"\b(you|your|yours|yourself)\b"


def personal(text: str) -> bool:
    return re.search(PERSONAL, text, re.I) is not None


def sample(policy, conversations, temperature: float, max_new_tokens: int = 48, batch: int = 16) -> list[str]:
    out: list[str] = []
    for lo in range(0, len(conversations), batch):
        ids = encode_prompts(policy, conversations[lo:lo + batch], 256)
        out += decode(policy, generate(policy, ids, max_new_tokens=max_new_tokens, temperature=temperature))
        print(f"  {len(out)}/{len(conversations)}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--sets", nargs="+", default=["arithmetic", "style"])
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    policy = load_policy(PolicyConfig(model="smollm2-135m-instruct"), seed=args.seed)

    if "arithmetic" in args.sets:
        arithmetic(policy, args.temperature)
    if "style" in args.sets:
        style(policy, args.temperature)
    print(f"done in {time.perf_counter() - t0:.0f} s", flush=True)


def arithmetic(policy, temperature: float) -> None:
    rows = load_prompts(DATA / "arithmetic.jsonl") + load_prompts(DATA / "arithmetic-heldout.jsonl")
    answers = sample(policy, [r.messages for r in rows], temperature)
    (rule,) = build_rewards([ExactMatchReward(type="exact_match", name="correct")])
    marks = call_reward(rule, [r.prompt for r in rows], answers, {"reference": [r.reference for r in rows]})
    with (OUT / "own-arithmetic.jsonl").open("w") as fh:
        for r, a, m in zip(rows, answers, marks):
            fh.write(json.dumps({"prompt": r.prompt, "reference": r.reference, "response": a,
                                 "labels": {"correct": bool(m)}}) + "\n")
    print(f"arithmetic: {len(rows)} answers, {sum(map(bool, marks))} correct", flush=True)



def style(policy, temperature: float) -> None:
    rows = [r for name in ("everyday-questions", "everyday-questions-heldout", "howto", "howto-heldout")
            for r in load_prompts(DATA / f"{name}.jsonl")]
    answers = sample(policy, [r.messages for r in rows for _ in range(2)], temperature)
    with (OUT / "own-style.jsonl").open("w") as fh:
        for k, a in enumerate(answers):
            fh.write(json.dumps({"prompt": rows[k // 2].prompt, "response": a,
                                 "labels": {"personal": personal(a)}}) + "\n")
    print(f"style: {len(answers)} answers, {sum(personal(a) for a in answers)} personal", flush=True)


if __name__ == "__main__":
    main()
