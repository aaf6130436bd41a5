"""Base vs tuned on held-out prompts (what ``minirft eval`` runs and writes as eval.json).

:func:`evaluate` generates one completion per held-out prompt (``data.eval_path`` of the run's recipe,
and each of its ``data.eval_sets``) with the adapter off (the base) and on (the trained policy),
greedy by default so the comparison is not sampling noise, and scores both with the recipe's rule
rewards plus any extra rule checks (e.g. a length or regex rule the run did not train on), then has the
run's judge model compare each tuned answer with the base one in preference mode (:func:`judge_pairs`).

Why rule checks beside the judge: a tiny judge rewards what it rewards; showing that *its* reward rose
proves little. A rule check on prompts the run never saw is an independent measure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from minirft.data import PromptRow, load_prompts
from minirft.errors import MinirftError
from minirft.judge.base import Judge
from minirft.recipe import JudgeConfig, Recipe
from minirft.rewards import build_rewards, call_reward, reward_columns
from minirft.stats import bootstrap_ci, mean_of

CHUNK = 16  # pairs per judge call


def complete(policy, conversations: list, *, max_new_tokens: int, max_prompt_tokens: int,
             batch: int = 16, temperature: float | None = None, seed: int = 0) -> list[str]:
    """Completions with the adapter state as currently set: greedy, or sampled at ``temperature``
    from a generator reseeded with ``seed`` (the same seed for base and tuned: common random numbers,
    so their difference is less noisy)."""
    import torch

    from minirft.train.policy import decode, encode_prompts, generate

    if temperature is not None:
        torch.manual_seed(seed)
    out: list[str] = []
    with torch.no_grad():
        for lo in range(0, len(conversations), batch):
            ids = encode_prompts(policy, conversations[lo:lo + batch], max_prompt_tokens)
            out += decode(policy, generate(policy, ids, max_new_tokens=max_new_tokens, temperature=temperature))
    return out


def held_out_sets(recipe: Recipe, data: Path | None = None) -> dict[str, Path]:
    """The held-out sets to measure, name -> file: ``data`` alone (named by its stem) when given, else the
    recipe's ``data.eval_path`` (``heldout``) and ``data.eval_sets``."""
    if data is not None:
        return {Path(data).stem or "prompts": Path(data)}
    sets = {name: recipe.resolve_path(p) for name, p in recipe.data.held_out().items()}
    if not sets:
        raise MinirftError("eval: the recipe has no data.eval_path or data.eval_sets; pass --prompts PATH")
    return sets


def rule_checks(recipe: Recipe, checks: list[dict] | None = None) -> list:
    """The rule measures of a held-out check: the recipe's rule rewards, its data.eval_checks and any extra
    ``checks`` (reward configs as dicts), built."""
    rule_cfgs = list(recipe.rewards) + list(recipe.data.eval_checks)
    if checks:
        from pydantic import TypeAdapter

        from minirft.recipe import RewardConfig

        rule_cfgs += [TypeAdapter(RewardConfig).validate_python(c) for c in checks]
    return build_rewards(rule_cfgs)


def evaluate(recipe: Recipe, adapter: Path, make_judge: Callable[[JudgeConfig], Judge], *, data: Path | None = None,
             checks: list[dict] | None = None, limit: int | None = None, samples: int = 1,
             temperature: float | None = None, examples: int = 3,
             progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """The eval report (what eval.json holds): base vs tuned on every held-out set (:func:`held_out_sets`),
    the rule measures with paired intervals, and the judge's win rate, per set under ``sets`` (name ->
    report); the top level repeats the first set's report (``data.eval_path`` when the recipe has one).
    ``samples`` > 1 samples that many completions per prompt at ``temperature`` (default: the recipe's) and
    averages each measure per prompt before pairing; the first sample of each prompt is the one shown and
    judged. ``make_judge`` builds the judge from the recipe's judge section (set to preference mode) once
    the policy is freed; one judge judges every set."""
    from safetensors.torch import load_file

    from minirft.train.policy import load_policy

    if samples > 1 and temperature is None:
        temperature = recipe.generation.temperature
    paths = held_out_sets(recipe, data)
    sets = {name: load_prompts(path, recipe.data.columns)[:limit] for name, path in paths.items()}
    rules = rule_checks(recipe, checks)
    policy = load_policy(recipe.policy, seed=recipe.training.seed)
    policy.load_adapter_state(load_file(str(adapter / "adapter_model.safetensors")))
    kw = {"max_new_tokens": recipe.generation.max_new_tokens, "max_prompt_tokens": recipe.policy.max_prompt_tokens,
          "temperature": temperature, "seed": recipe.training.seed}
    reports: dict[str, dict[str, Any]] = {}
    shown: dict[str, tuple[list[str], list[str]]] = {}
    for name, rows in sets.items():
        convs = [r.messages for r in rows for _ in range(samples)]  # prompt-major: samples of a prompt adjacent
        with policy.reference():
            base_all = complete(policy, convs, **kw)
        trained_all = complete(policy, convs, **kw)
        reports[name] = {"data": str(paths[name]), "n": len(rows), "adapter": str(adapter),
                         "greedy": temperature is None, "samples": samples, "temperature": temperature,
                         "measures": measure(rules, rows, samples, base_all, trained_all), "examples": []}
        base, trained = base_all[::samples], trained_all[::samples]
        for p, b, t in list(zip([r.prompt for r in rows], base, trained))[:5]:
            reports[name]["examples"].append({"prompt": p, "base": b, "trained": t})
        shown[name] = (trained, base)
    del policy  # free the policy before the judge loads
    judge_cfg = recipe.judge.model_copy(update={"mode": "preference"})
    judge = make_judge(judge_cfg)
    try:
        for name, rows in sets.items():
            tuned, base = shown[name]
            reports[name].update(judge_pairs(judge_cfg, judge, rows, tuned, base, examples, progress))
    finally:
        judge.close()
    first = next(iter(reports))
    return {**reports[first], "set": first, "sets": reports}


def measure(rules: list, rows: list[PromptRow], samples: int, base_all: list[str], trained_all: list[str]) -> dict:
    """Each rule's and the length's base and tuned means with the paired change (per prompt: the mean over
    its ``samples`` completions, which lie adjacent)."""
    columns = reward_columns(rows, samples)
    prompts = [r.prompt for r in rows for _ in range(samples)]

    def per_prompt(values: list) -> list:  # mean over a prompt's samples (None when none scored)
        return [mean_of(values[i * samples:(i + 1) * samples]) for i in range(len(rows))]

    out = {}
    for rule in rules:
        b = call_reward(rule, prompts, base_all, columns)
        t = call_reward(rule, prompts, trained_all, columns)
        out[rule.name] = paired(per_prompt(b), per_prompt(t))
    out["length_chars"] = paired(per_prompt([len(c) for c in base_all]), per_prompt([len(c) for c in trained_all]))
    return out


def judge_pairs(judge_cfg: JudgeConfig, judge: Judge, rows: list[PromptRow], tuned: list[str], base: list[str],
                examples: int, progress: Callable[[int, int], None] | None = None) -> dict:
    """Tuned (A) against base (B) per prompt, in both orders, by ``judge`` (the run's judge model in
    preference mode, configured by ``judge_cfg``); the first ``examples`` pairs get a rationale."""
    verdicts = []
    update = progress or (lambda done, total: None)
    shown = min(examples, len(rows))
    if shown:
        verdicts += judge.compare_many(rows[:shown], list(zip(tuned, base))[:shown], True)
    for lo in range(shown, len(rows), CHUNK):
        hi = min(lo + CHUNK, len(rows))
        verdicts += judge.compare_many(rows[lo:hi], list(zip(tuned[lo:hi], base[lo:hi])))
        update(hi, len(rows))
    p = [v.p_a for v in verdicts]
    return {"judge": {"model": judge_cfg.model, "backend": judge_cfg.backend,
                      "question": judge_cfg.preference_question},
            "win_rate": sum(p) / len(p) if p else None, "win_rate_ci95": list(bootstrap_ci(p)) if p else [None, None],
            "wins": sum(x > 0.5 for x in p), "losses": sum(x < 0.5 for x in p),
            "pairs": [{"prompt": row.prompt, "tuned": t, "base": b, "p_tuned": v.p_a,
                       "p_tuned_first": v.p_a_first, "p_tuned_second": v.p_a_second, "rationale": v.rationale}
                      for row, b, t, v in zip(rows, base, tuned, verdicts)]}


def paired(base: list, trained: list) -> dict[str, Any]:
    """Base and tuned means of a per-prompt measure, and the mean of the per-prompt differences with a
    95% bootstrap interval (the same prompts on both sides, so the pairing removes prompt difficulty)."""
    diffs = [t - b for b, t in zip(base, trained) if b is not None and t is not None]
    lo, hi = bootstrap_ci(diffs) if diffs else (None, None)
    return {"base": mean_of(base), "trained": mean_of(trained), "delta": mean_of(diffs), "delta_ci95": [lo, hi]}


def heldout_slices(recipe: Recipe) -> dict[str, list[PromptRow]]:
    """The in-run held-out check's prompts: the first ``training.eval_prompts`` rows of each held-out set."""
    return {name: load_prompts(recipe.resolve_path(p), recipe.data.columns)[:recipe.training.eval_prompts]
            for name, p in recipe.data.held_out().items()}


def heldout_check(recipe: Recipe, policy, slices: dict[str, list[PromptRow]], rules: list) -> dict[str, dict]:
    """The policy as it is now (adapter on) answers each slice greedily (no random numbers drawn, so the
    run's sampling is unchanged); per set, each rule's mean score and the mean answer length in characters."""
    out: dict[str, dict] = {}
    for name, rows in slices.items():
        answers = complete(policy, [r.messages for r in rows], max_new_tokens=recipe.generation.max_new_tokens,
                           max_prompt_tokens=recipe.policy.max_prompt_tokens)
        columns, prompts = reward_columns(rows, 1), [r.prompt for r in rows]
        out[name] = {rule.name: mean_of(call_reward(rule, prompts, answers, columns)) for rule in rules}
        out[name]["length_chars"] = mean_of([len(a) for a in answers])
    return out


def log_heldout_check(recipe: Recipe, policy, slices: dict[str, list[PromptRow]], rules: list, log, monitor,
                      step: int) -> list[str]:
    """One in-run held-out check (``training.eval_every``): :func:`heldout_check`, logged as an ``event``
    of kind ``eval`` (``sets`` {set: {check: mean, length_chars: mean}}, ``prompts`` per set, ``greedy``),
    then fed to the monitor's ``heldout_vs_reward`` detector (whose alerts are logged as warnings).
    Returns the lines to print."""
    sets = heldout_check(recipe, policy, slices, rules)
    parts = [f"{name} " + ", ".join(f"{k} {v:.3g}" for k, v in m.items() if v is not None) for name, m in sets.items()]
    message = "held-out check (greedy): " + "; ".join(parts)
    log.event(step, "eval", message, sets=sets, prompts={name: len(rows) for name, rows in slices.items()},
              greedy=True)
    lines = [f"step {step}/{recipe.training.steps}  {message}"]
    measures = {f"{name}/{k}": v for name, m in sets.items() for k, v in m.items() if k != "length_chars"}
    for alert in monitor.update_heldout(step, measures):
        log.event(step, "warning", alert.message, detector=alert.detector, value=alert.value)
        lines.append(f"step {step}/{recipe.training.steps}  warning [{alert.detector}] {alert.message}")
    return lines
