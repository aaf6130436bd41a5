"""Held-out check of a trained adapter against its base, on measures the judge does not produce.

:func:`evaluate` (used by ``minirft eval RUN_DIR``) generates one completion per held-out prompt
(``data.eval_path`` of the run's recipe) with the adapter off (the base) and on (the trained policy),
greedy by default so the comparison is not sampling noise, and scores both with the recipe's rule
rewards plus any ``--check`` rule given to ``minirft eval`` (e.g. a length or regex rule the run did
not train on).

Why not the judge: a tiny judge rewards what it rewards; showing that *its* reward rose proves little.
A rule check on prompts the run never saw is an independent measure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from minirft.data import load_prompts
from minirft.errors import MinirftError
from minirft.recipe import Recipe
from minirft.rewards import build_rewards, call_reward
from minirft.train.policy import Policy, encode_prompts, load_policy


@torch.no_grad()
def complete(policy: Policy, conversations: list, *, max_new_tokens: int, max_prompt_tokens: int,
             batch: int = 16, temperature: float | None = None, seed: int = 0) -> list[str]:
    """Completions with the adapter state as currently set: greedy, or sampled at ``temperature``
    from a generator reseeded with ``seed`` (the same seed for base and tuned: common random numbers,
    so their difference is less noisy)."""
    from minirft.train.policy import _left_pad

    out: list[str] = []
    policy.model.eval()
    if temperature is not None:
        torch.manual_seed(seed)
    sampling = {"do_sample": True, "temperature": temperature, "top_k": None} if temperature else {"do_sample": False}
    for lo in range(0, len(conversations), batch):
        ids = encode_prompts(policy, conversations[lo:lo + batch], max_prompt_tokens)
        x, mask = _left_pad(ids, policy.pad_id, policy.device)
        with policy.folded():
            gen = policy.model.generate(input_ids=x, attention_mask=mask, **sampling,
                                        max_new_tokens=max_new_tokens, pad_token_id=policy.pad_id,
                                        eos_token_id=policy.eos_ids)
        for row in gen[:, x.shape[1]:].tolist():
            kept = []
            for t in row:
                if t in policy.eos_ids:
                    break
                kept.append(t)
            out.append(policy.tokenizer.decode(kept, skip_special_tokens=True))
    return out


def evaluate(recipe: Recipe, adapter: Path, *, data: Path | None = None, checks: list[dict] | None = None,
             limit: int | None = None, samples: int = 1, temperature: float | None = None) -> dict[str, Any]:
    """Base vs tuned on held-out prompts. ``samples`` > 1 samples that many completions per prompt at
    ``temperature`` (default: the recipe's) and averages each measure per prompt before pairing; the
    first sample of each prompt is the one shown and judged."""
    from safetensors.torch import load_file

    if samples > 1 and temperature is None:
        temperature = recipe.generation.temperature

    path = data or (recipe.resolve_path(recipe.data.eval_path) if recipe.data.eval_path else None)
    if path is None:
        raise MinirftError("evaluate: the recipe has no data.eval_path; pass --data PATH")
    rows = load_prompts(path, recipe.data.columns)[:limit]
    rule_cfgs = list(recipe.rewards) + list(recipe.data.eval_checks)
    if checks:
        from pydantic import TypeAdapter

        from minirft.recipe import RewardConfig

        rule_cfgs += [TypeAdapter(RewardConfig).validate_python(c) for c in checks]
    rules = build_rewards(rule_cfgs)
    policy = load_policy(recipe.policy, seed=recipe.training.seed)
    policy.load_adapter_state(load_file(str(adapter / "adapter_model.safetensors")))
    convs = [r.messages for r in rows for _ in range(samples)]  # prompt-major: samples of a prompt adjacent
    kw = {"max_new_tokens": recipe.generation.max_new_tokens, "max_prompt_tokens": recipe.policy.max_prompt_tokens,
          "temperature": temperature, "seed": recipe.training.seed}
    with policy.reference():
        base_all = complete(policy, convs, **kw)
    trained_all = complete(policy, convs, **kw)
    columns = {"reference": [r.reference for r in rows for _ in range(samples)]}
    for k in {k for r in rows for k in r.columns}:
        columns[k] = [r.columns.get(k) for r in rows for _ in range(samples)]
    prompts = [r.prompt for r in rows for _ in range(samples)]
    result: dict[str, Any] = {"data": str(path), "n": len(rows), "adapter": str(adapter),
                              "greedy": temperature is None, "samples": samples, "temperature": temperature,
                              "measures": {}, "examples": []}

    def per_prompt(values: list) -> list:  # mean over a prompt's samples (None when none scored)
        return [_mean(values[i * samples:(i + 1) * samples]) for i in range(len(rows))]

    for rule in rules:
        b = call_reward(rule, prompts, base_all, columns)
        t = call_reward(rule, prompts, trained_all, columns)
        result["measures"][rule.name] = _paired(per_prompt(b), per_prompt(t))
    result["measures"]["length_chars"] = _paired(per_prompt([len(c) for c in base_all]),
                                                 per_prompt([len(c) for c in trained_all]))
    base, trained = base_all[::samples], trained_all[::samples]
    for p, b, t in list(zip([r.prompt for r in rows], base, trained))[:5]:
        result["examples"].append({"prompt": p, "base": b, "trained": t})
    result["rows"], result["base"], result["trained"] = rows, base, trained  # for judging (not JSON)
    return result


def _paired(base: list, trained: list) -> dict[str, Any]:
    """Base and tuned means of a per-prompt measure, and the mean of the per-prompt differences with a
    95% bootstrap interval (the same prompts on both sides, so the pairing removes prompt difficulty)."""
    from minirft.trust.stats import bootstrap_ci

    diffs = [t - b for b, t in zip(base, trained) if b is not None and t is not None]
    lo, hi = bootstrap_ci(diffs) if diffs else (None, None)
    return {"base": _mean(base), "trained": _mean(trained), "delta": _mean(diffs), "delta_ci95": [lo, hi]}


def _mean(values: list) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None
