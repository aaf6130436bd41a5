"""`minirft eval RUN_DIR`: a trained adapter against its base on held-out prompts.

:func:`evaluate` generates one completion per held-out prompt
(``data.eval_path`` of the run's recipe) with the adapter off (the base) and on (the trained policy),
greedy by default so the comparison is not sampling noise, and scores both with the recipe's rule
rewards plus any ``--check`` rule given to ``minirft eval`` (e.g. a length or regex rule the run did
not train on).

Why not the judge: a tiny judge rewards what it rewards; showing that *its* reward rose proves little.
A rule check on prompts the run never saw is an independent measure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import yaml
from pydantic import ValidationError

from minirft.commands import common
from minirft.data import PromptRow, load_prompts
from minirft.errors import MinirftError
from minirft.recipe import Recipe, load_recipe
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


def evaluate(recipe: Recipe, adapter: Path, *, data: Path | None = None, checks: list[dict] | None = None,
             limit: int | None = None, samples: int = 1, temperature: float | None = None,
             examples: int = 3) -> dict[str, Any]:
    """The eval report (what eval.json holds): base vs tuned on held-out prompts, the rule measures with
    paired intervals, and the judge's win rate. ``samples`` > 1 samples that many completions per prompt
    at ``temperature`` (default: the recipe's) and averages each measure per prompt before pairing; the
    first sample of each prompt is the one shown and judged."""
    from safetensors.torch import load_file

    from minirft.train.policy import load_policy

    if samples > 1 and temperature is None:
        temperature = recipe.generation.temperature

    path = data or (recipe.resolve_path(recipe.data.eval_path) if recipe.data.eval_path else None)
    if path is None:
        raise MinirftError("eval: the recipe has no data.eval_path; pass --prompts PATH")
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
    columns = reward_columns(rows, samples)
    prompts = [r.prompt for r in rows for _ in range(samples)]
    result: dict[str, Any] = {"data": str(path), "n": len(rows), "adapter": str(adapter),
                              "greedy": temperature is None, "samples": samples, "temperature": temperature,
                              "measures": {}, "examples": []}

    def per_prompt(values: list) -> list:  # mean over a prompt's samples (None when none scored)
        return [mean_of(values[i * samples:(i + 1) * samples]) for i in range(len(rows))]

    for rule in rules:
        b = call_reward(rule, prompts, base_all, columns)
        t = call_reward(rule, prompts, trained_all, columns)
        result["measures"][rule.name] = _paired(per_prompt(b), per_prompt(t))
    result["measures"]["length_chars"] = _paired(per_prompt([len(c) for c in base_all]),
                                                 per_prompt([len(c) for c in trained_all]))
    base, trained = base_all[::samples], trained_all[::samples]
    for p, b, t in list(zip([r.prompt for r in rows], base, trained))[:5]:
        result["examples"].append({"prompt": p, "base": b, "trained": t})
    del policy  # free the policy before the judge loads
    result.update(judge_pairs(recipe, rows, trained, base, examples))
    return result


def judge_pairs(recipe: Recipe, rows: list[PromptRow], tuned: list[str], base: list[str], examples: int) -> dict:
    """Tuned (A) against base (B) per prompt, in both orders, by the run's judge model in preference mode;
    the first ``examples`` pairs get a rationale."""
    judge_cfg = recipe.judge.model_copy(update={"mode": "preference"})
    judge = common.make_judge(judge_cfg)
    verdicts = []
    try:
        update = common.progress("judging")
        shown = min(examples, len(rows))
        if shown:
            verdicts += judge.compare_many(rows[:shown], list(zip(tuned, base))[:shown], True)
        for lo in range(shown, len(rows), CHUNK):
            hi = min(lo + CHUNK, len(rows))
            verdicts += judge.compare_many(rows[lo:hi], list(zip(tuned[lo:hi], base[lo:hi])))
            update(hi, len(rows))
    finally:
        judge.close()
    p = [v.p_a for v in verdicts]
    return {"judge": {"model": judge_cfg.model, "backend": judge_cfg.backend,
                      "question": judge_cfg.preference_question},
            "win_rate": sum(p) / len(p), "win_rate_ci95": list(bootstrap_ci(p)),
            "wins": sum(x > 0.5 for x in p), "losses": sum(x < 0.5 for x in p),
            "pairs": [{"prompt": row.prompt, "tuned": t, "base": b, "p_tuned": v.p_a,
                       "p_tuned_first": v.p_a_first, "p_tuned_second": v.p_a_second, "rationale": v.rationale}
                      for row, b, t, v in zip(rows, base, tuned, verdicts)]}


def _paired(base: list, trained: list) -> dict[str, Any]:
    """Base and tuned means of a per-prompt measure, and the mean of the per-prompt differences with a
    95% bootstrap interval (the same prompts on both sides, so the pairing removes prompt difficulty)."""
    diffs = [t - b for b, t in zip(base, trained) if b is not None and t is not None]
    lo, hi = bootstrap_ci(diffs) if diffs else (None, None)
    return {"base": mean_of(base), "trained": mean_of(trained), "delta": mean_of(diffs), "delta_ci95": [lo, hi]}


def _parse_check(text: str) -> dict:
    """One --check option: a reward config as YAML, validated against the recipe schema."""
    from pydantic import TypeAdapter

    from minirft.recipe import RewardConfig

    try:
        data = yaml.safe_load(text)
        TypeAdapter(RewardConfig).validate_python(data)
    except yaml.YAMLError:
        raise MinirftError(f"--check: not YAML: {text}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(map(str, err["loc"])) or "(top level)"
        raise MinirftError(f"--check {text}: {where}: {err['msg']}") from None
    return data


@click.command("eval")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("overrides", nargs=-1)
@click.option("--prompts", "prompts", type=click.Path(dir_okay=False, path_type=Path),
              help="Held-out prompts (JSONL). Default: the recipe's data.eval_path.")
@click.option("--adapter", type=click.Path(file_okay=False, path_type=Path),
              help="Adapter folder. Default: RUN_DIR/adapter.")
@click.option("--limit", type=click.IntRange(min=1), help="Use only the first N prompts.")
@click.option("--examples", default=3, show_default=True, help="Example pairs (with rationales) to show.")
@click.option("--check", "checks", multiple=True, metavar="YAML",
              help="An extra rule check as a YAML reward, e.g. '{type: regex, name: digits, pattern: \\d}'.")
@click.option("--samples", default=1, show_default=True, type=click.IntRange(min=1),
              help="Completions per prompt; above 1 they are sampled and each rule check is averaged per prompt.")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True),
              help="Sample at this temperature (default: greedy, or the recipe's with --samples above 1).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def eval_command(run_dir, overrides, prompts, adapter, limit, examples, checks, samples, temperature,
                 as_json) -> None:
    """Tuned adapter vs its base on held-out prompts: judged win rate with a 95% bootstrap interval.

    Both generate greedily (adapter on / adapter off, one model in memory), or with --samples N
    sample N completions per prompt at the recipe's temperature (the same seed for both). Every pair is judged
    in both orders by the run's judge model in preference mode; the win rate is the mean
    probability that the tuned answer is the better one (0.5 = no difference). Rule checks of the
    recipe are reported for both. KEY=VALUE overrides apply to the run's resolved recipe
    (e.g. judge.model=... to judge with another model). Writes RUN_DIR/eval.json.

    \b
    Examples:
      minirft eval runs/polite-20261123-101500
      minirft eval runs/polite-20261123-101500 --prompts heldout.jsonl --limit 32
      minirft eval runs/arithmetic-20261123-090000 judge.model=smollm2-135m-instruct --json
      minirft eval runs/arithmetic-20261123-090000 --samples 4           # sampled, as in training
      minirft eval runs/arithmetic-20261123-090000 --check '{type: length, name: short, max_chars: 40}'
    """
    from minirft.atomic import write_text

    resolved = run_dir / "recipe.resolved.yaml"
    if not resolved.is_file():
        raise MinirftError(f"{run_dir}: not a run dir (no recipe.resolved.yaml)")
    adapter = adapter or run_dir / "adapter"
    if not (adapter / "adapter_model.safetensors").is_file():
        raise MinirftError(f"{adapter}: no trained adapter (adapter_model.safetensors); has the run finished?")
    from minirft.rundir import guard

    guard(run_dir, run_dir / "eval.json")  # refused before any model loads: never written through a link
    r = load_recipe(resolved, overrides)
    if r.judge is None:
        raise MinirftError(f"{resolved}: the run has no judge; add judge.model=NAME to judge the pairs")
    extra = [_parse_check(text) for text in checks]  # validated before any model loads
    from minirft.preflight import check_model, needs_judge_model

    check_model(r, "policy")  # both models resolve and are readable before either loads
    if needs_judge_model(r):
        r.judge.model = check_model(r, "judge").name
    click.echo("generating base and tuned completions for held-out prompts…", err=True)
    result = evaluate(r, adapter, data=prompts, limit=limit, checks=extra, samples=samples, temperature=temperature,
                      examples=examples)
    write_text(guard(run_dir, run_dir / "eval.json"), json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    if as_json:
        click.echo(json.dumps(result, indent=1, ensure_ascii=False))
        return
    how = "greedy" if result["greedy"] else f"{samples} sampled at T={result['temperature']:g} per prompt"
    lines = [f"{run_dir}: tuned vs base on {result['n']} held-out prompts ({result['data']}), {how}, "
             f"judge {result['judge']['model']}",
             f"win rate (P tuned better, both orders) {result['win_rate']:.3f}  "
             f"95% CI [{result['win_rate_ci95'][0]:.3f}, {result['win_rate_ci95'][1]:.3f}]  "
             f"wins {result['wins']} / losses {result['losses']}",
             f"{'rule check':<20}{'base':>8}{'tuned':>8}{'change':>9}  95% CI (paired)"]
    for name, m in result["measures"].items():
        lo_d, hi_d = m["delta_ci95"]
        ci = f"[{common.fmt(lo_d)}, {common.fmt(hi_d)}]" if lo_d is not None else ""
        change = "" if m["delta"] is None else f"{m['delta']:+.3f}"
        lines.append(f"{name:<20}{common.fmt(m['base']):>8}{common.fmt(m['trained']):>8}{change:>9}  {ci}")
    for pair in result["pairs"][:examples]:
        lines += ["", f"prompt:   {pair['prompt'][:200]}", f"tuned:    {pair['tuned'][:200]}",
                  f"base:     {pair['base'][:200]}", f"P(tuned better) {pair['p_tuned']:.3f}"
                  + (f" — {pair['rationale']}" if pair["rationale"] else "")]
    click.echo("\n".join(lines))
