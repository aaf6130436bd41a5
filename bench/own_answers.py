"""Labelled sets of the policy's OWN answers, labelled by rules: what a judge criterion must rank.

A judge sees only the policy's samples during training, so a criterion is measured on those, not on
hand-written clear cases. Two sets (SmolLM2-135M-Instruct, the recipes' policy, sampled at T=0.8):

- ``arithmetic``: one answer per prompt of recipes/data/arithmetic*.jsonl (201 prompts); label
  ``correct`` = the recipe's exact-match rule (the answer's number equals the reference).
- ``style``: two answers per prompt of recipes/data/everyday-questions*.jsonl and howto*.jsonl
  (108 prompts), three style labels by rule (STYLE_RULES): ``personal`` = the answer speaks to the
  user ("you", "your"); ``formal`` = it uses no contraction (it's, don't, you're, I'm ...: the
  register rule of style guides; possessives do not count); ``numbered`` = it contains a numbered
  list (the howto recipes' rule). (An exclamation mark, for enthusiasm, was in 10 of 216: too rare to
  measure or train.)

(Polite vs rude does not work as a set of the policy's own answers: asked by a system prompt to be rude,
SmolLM2-135M still answers politely, so the labels would say nothing. recipes/data/polite-labels.jsonl
holds hand-written polite and rude answers instead.)

python bench/own_answers.py [--sets arithmetic style] [--seed 0]   # writes bench/data/own-<set>.jsonl
python bench/own_answers.py --relabel    # recomputes the style labels of the answers already sampled
(both also write recipes/data/formal-labels.jsonl, the labelled set of recipes/formal.yaml)
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


PERSONAL = r"(?i)\b(you|your|yours|yourself)\b"
CONTRACTION = r"(?i)\b(?:it|that|there|here|what|where|who|he|she|let|i|you|we|they)['’](?:s|re|ll|ve|d|m)\b|\w+n['’]t\b"
NUMBERED = r"(^|\n)\s*1[.)]\s"  # recipes/howto.yaml's eval check

STYLE_RULES = {
    "personal": lambda text: re.search(PERSONAL, text) is not None,
    "formal": lambda text: re.search(CONTRACTION, text) is None,
    "numbered": lambda text: re.search(NUMBERED, text) is not None,
}


def style_labels(text: str) -> dict[str, bool]:
    return {name: rule(text) for name, rule in STYLE_RULES.items()}


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
    ap.add_argument("--relabel", action="store_true", help="recompute the style labels of own-style.jsonl; no sampling")
    args = ap.parse_args()
    if args.relabel:
        relabel(OUT / "own-style.jsonl")
        return
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
            fh.write(json.dumps({"prompt": rows[k // 2].prompt, "response": a, "labels": style_labels(a)}) + "\n")
    write_recipe_labels([{"prompt": rows[k // 2].prompt, "response": a} for k, a in enumerate(answers)])
    report_style(answers)


def relabel(path: Path) -> None:
    items = [json.loads(line) for line in path.open()]
    with path.open("w") as fh:
        for it in items:
            fh.write(json.dumps({**it, "labels": style_labels(it["response"])}) + "\n")
    write_recipe_labels(items)
    report_style([it["response"] for it in items])


def write_recipe_labels(items: list[dict]) -> None:
    """recipes/data/formal-labels.jsonl: the same answers labelled formal or not under the names of
    recipes/formal.yaml's two criteria (both measure the one label), the labelled set that ships with it
    (`minirft calibrate recipes/formal.yaml recipes/data/formal-labels.jsonl`)."""
    with (DATA / "formal-labels.jsonl").open("w") as fh:
        for it in items:
            formal = style_labels(it["response"])["formal"]
            fh.write(json.dumps({"prompt": it["prompt"], "response": it["response"],
                                 "labels": {"formal_register": formal, "no_contractions": formal}}) + "\n")


def report_style(answers: list[str]) -> None:
    counts = ", ".join(f"{sum(rule(a) for a in answers)} {name}" for name, rule in STYLE_RULES.items())
    print(f"style: {len(answers)} answers; {counts}", flush=True)


if __name__ == "__main__":
    main()
