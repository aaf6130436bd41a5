"""`minirft eval RUN_DIR`: a trained adapter against its base on held-out prompts (the click command;
the measuring is :mod:`minirft.train.evaluate`'s)."""

from __future__ import annotations

import json
from pathlib import Path

import click
import yaml
from pydantic import ValidationError

from minirft.commands import common
from minirft.errors import MinirftError
from minirft.recipe import load_recipe


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
              help="Held-out prompts (JSONL), measured alone. Default: every held-out set of the recipe "
                   "(data.eval_path as 'heldout', then data.eval_sets).")
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
    recipe are reported for both. Every held-out set of the recipe is measured (data.eval_path, named
    'heldout', and each of data.eval_sets, e.g. a shifted set), one table each. KEY=VALUE overrides
    apply to the run's resolved recipe
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
    from minirft.train.evaluate import evaluate

    result = evaluate(r, adapter, common.make_judge, data=prompts, limit=limit, checks=extra, samples=samples,
                      temperature=temperature, examples=examples, progress=common.progress("judging"))
    write_text(guard(run_dir, run_dir / "eval.json"), json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    if as_json:
        click.echo(json.dumps(result, indent=1, ensure_ascii=False))
        return
    how = "greedy" if result["greedy"] else f"{samples} sampled at T={result['temperature']:g} per prompt"
    lines: list[str] = []
    for name, rep in result["sets"].items():
        if lines:
            lines.append("")
        lines += [f"{run_dir}: tuned vs base on {rep['n']} prompts of set '{name}' ({rep['data']}), {how}, "
                  f"judge {rep['judge']['model']}",
                  f"win rate (P tuned better, both orders) {common.fmt(rep['win_rate'])}  "
                  f"95% CI [{common.fmt(rep['win_rate_ci95'][0])}, {common.fmt(rep['win_rate_ci95'][1])}]  "
                  f"wins {rep['wins']} / losses {rep['losses']}",
                  f"{'rule check':<20}{'base':>8}{'tuned':>8}{'change':>9}  95% CI (paired)"]
        for check, m in rep["measures"].items():
            lo_d, hi_d = m["delta_ci95"]
            ci = f"[{common.fmt(lo_d)}, {common.fmt(hi_d)}]" if lo_d is not None else ""
            change = "" if m["delta"] is None else f"{m['delta']:+.3f}"
            lines.append(f"{check:<20}{common.fmt(m['base']):>8}{common.fmt(m['trained']):>8}{change:>9}  {ci}")
    for pair in result["pairs"][:examples]:
        lines += ["", f"prompt:   {pair['prompt'][:200]}", f"tuned:    {pair['tuned'][:200]}",
                  f"base:     {pair['base'][:200]}", f"P(tuned better) {pair['p_tuned']:.3f}"
                  + (f" — {pair['rationale']}" if pair["rationale"] else "")]
    click.echo("\n".join(lines))
