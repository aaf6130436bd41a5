"""`minirft calibrate` and `minirft eval`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import yaml
from pydantic import ValidationError

from minirft.errors import MinirftError
from minirft.recipe import find_recipe, load_recipe


def make_judge(cfg):
    """The recipe's judge (a seam for tests, which pass a scripted judge)."""
    from minirft.judge import build_judge

    return build_judge(cfg)


def _progress(label: str):
    """A progress line on stderr (data goes to stdout)."""
    def update(done: int, total: int) -> None:
        if done == total or done % max(1, total // 50) == 0:
            click.echo(f"\r{label} {done}/{total}", err=True, nl=done == total)
    return update


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


@click.command("calibrate")
@click.argument("recipe")
@click.argument("labels", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option("--limit", type=click.IntRange(min=1), help="Use only the first N label rows.")
@click.option("--fit", "do_fit", is_flag=True,
              help="Fit Platt scaling (per criterion / for preference) and save it next to the recipe.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Write a reliability diagram (PNG).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--seed", default=0, show_default=True, help="Seed for which response is shown as A.")
def calibrate_command(recipe, labels, overrides, limit, do_fit, plot, as_json, seed) -> None:
    """Measure the recipe's judge against human labels: accuracy, kappa, calibration (ECE), ranking (AUC).

    LABELS is JSONL: pairwise rows {prompt, chosen, rejected} (needs judge.mode=preference) or rubric
    rows {prompt, response, labels: {criterion: true/false}}. Pairwise rows are judged in both orders;
    swap consistency is how often the verdict survives swapping them. AUC is what GRPO needs: rewards
    are compared within a group, so a judge that ranks well helps even when every 0.5-threshold
    verdict is "yes". P|yes and P|no are the mean judge probabilities on items labelled yes / no.

    \b
    Examples:
      minirft calibrate recipes/preference.yaml ../shared/data/hh-harmless-pairs-500.jsonl --limit 100
      minirft calibrate recipes/preference.yaml pairs.jsonl judge.model=smollm2-135m-instruct --plot rel.png
      minirft calibrate recipes/polite.yaml recipes/data/polite-labels.jsonl --fit
    """
    from minirft.trust.calibrate import (calibrate, calibration_path, fit, load_labels, plot_reliability,
                                         save_calibration)

    path = find_recipe(recipe)
    r = load_recipe(path, overrides)
    if r.judge is None:
        raise MinirftError(f"{path}: the recipe has no `judge` section to calibrate")
    shape, items = load_labels(labels)
    if shape == "pairwise" and r.judge.mode != "preference":
        raise MinirftError(f"{labels}: pairwise labels need a preference judge (add the override judge.mode=preference)")
    if shape == "rubric" and r.judge.mode != "rubric":
        raise MinirftError(f"{labels}: rubric labels need a rubric judge (judge.mode=rubric)")
    items = items[:limit] if limit else items
    _check_label_criteria(labels, shape, items, r)
    judge = make_judge(r.judge)
    try:
        report = calibrate(judge, shape, items, seed=seed, progress=_progress("judging"))
    finally:
        judge.close()
    if do_fit:
        fitted = fit(report)
        target = calibration_path(path)
        save_calibration(target, fitted, str(labels), report.n)
        report.fitted = {k: {"a": v.a, "b": v.b} for k, v in fitted.items()}
        click.echo(f"saved {target} (add `calibration: {target.name}` to the recipe's judge section to apply it)", err=True)
    if plot:
        plot_reliability(report, plot, f"{r.judge.model} on {Path(labels).name} (n={report.n})")
        click.echo(f"wrote {plot}", err=True)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    o = report.overall
    lines = [f"judge {r.judge.model} ({r.judge.backend}, {r.judge.mode}) on {labels}: {report.n} rows",
             f"{'':<16}{'n':>5}{'accuracy':>10}{'kappa':>7}{'ECE':>7}{'AUC':>7}{'P|yes':>7}{'P|no':>7}"]
    for name, a in {"all": o, **report.criteria}.items():
        lines.append(f"{name:<16}{a.n:>5}{a.accuracy:>10.3f}{a.kappa:>7.3f}{a.ece:>7.3f}{a.auc:>7.3f}"
                     f"{a.mean_p_positive:>7.3f}{a.mean_p_negative:>7.3f}")
    if shape == "pairwise":
        lines.append(f"swap consistency      {_fmt(report.swap_consistency)}   "
                     f"accuracy from one order only {_fmt(report.accuracy_first_position_only)} "
                     f"(swap-averaged {o.accuracy:.3f})")
    click.echo("\n".join(lines))
    sys.stdout.flush()


def _check_label_criteria(labels, shape: str, items: list, recipe) -> None:
    """Before any judging: every rubric label names one of the recipe's criteria; the judge model resolves."""
    from minirft.preflight import check_model, needs_judge_model

    if shape == "rubric":
        known = [c.name for c in recipe.judge.criteria]
        for item in items:
            for name in item.labels:
                if name not in known:
                    raise MinirftError(f"{labels}:{item.row.line}: labels.{name}: unknown criterion "
                                       f"(the recipe's criteria: {', '.join(known)})")
    if needs_judge_model(recipe):
        recipe.judge.model = check_model(recipe, "judge").name  # a relative path is relative to the recipe


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
    from minirft.train.evaluate import evaluate
    from minirft.trust.stats import bootstrap_ci

    resolved = run_dir / "recipe.resolved.yaml"
    if not resolved.is_file():
        raise MinirftError(f"{run_dir}: not a run dir (no recipe.resolved.yaml)")
    adapter = adapter or run_dir / "adapter"
    if not (adapter / "adapter_model.safetensors").is_file():
        raise MinirftError(f"{adapter}: no trained adapter (adapter_model.safetensors); has the run finished?")
    r = load_recipe(resolved, overrides)
    if r.judge is None:
        raise MinirftError(f"{resolved}: the run has no judge; add judge.model=NAME to judge the pairs")
    extra = [_parse_check(text) for text in checks]  # validated before any model loads
    from minirft.preflight import check_model, needs_judge_model

    check_model(r, "policy")  # both models resolve and are readable before either loads
    if needs_judge_model(r):
        r.judge.model = check_model(r, "judge").name
    click.echo("generating base and tuned completions for held-out prompts…", err=True)
    result = evaluate(r, adapter, data=prompts, limit=limit, checks=extra, samples=samples, temperature=temperature)
    rows, base, tuned = result.pop("rows"), result.pop("base"), result.pop("trained")

    judge_cfg = r.judge.model_copy(update={"mode": "preference"})
    judge = make_judge(judge_cfg)
    verdicts = []
    try:
        update = _progress("judging")
        for i, (row, b, t) in enumerate(zip(rows, base, tuned)):
            verdicts.append(judge.compare(row, t, b, rationale=i < examples))  # A = tuned, B = base
            update(i + 1, len(rows))
    finally:
        judge.close()
    p = [v.p_a for v in verdicts]
    lo, hi = bootstrap_ci(p)
    result["judge"] = {"model": judge_cfg.model, "backend": judge_cfg.backend,
                       "question": judge_cfg.preference_question}
    result["win_rate"] = sum(p) / len(p)
    result["win_rate_ci95"] = [lo, hi]
    result["wins"] = sum(x > 0.5 for x in p)
    result["losses"] = sum(x < 0.5 for x in p)
    result["pairs"] = [{"prompt": row.prompt, "tuned": t, "base": b, "p_tuned": v.p_a,
                        "p_tuned_first": v.p_a_first, "p_tuned_second": v.p_a_second, "rationale": v.rationale}
                       for row, b, t, v in zip(rows, base, tuned, verdicts)]
    write_text(run_dir / "eval.json", json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    if as_json:
        click.echo(json.dumps(result, indent=1, ensure_ascii=False))
        return
    how = "greedy" if result["greedy"] else f"{samples} sampled at T={result['temperature']:g} per prompt"
    lines = [f"{run_dir}: tuned vs base on {result['n']} held-out prompts ({result['data']}), {how}, "
             f"judge {judge_cfg.model}",
             f"win rate (P tuned better, both orders) {result['win_rate']:.3f}  95% CI [{lo:.3f}, {hi:.3f}]  "
             f"wins {result['wins']} / losses {result['losses']}",
             f"{'rule check':<20}{'base':>8}{'tuned':>8}{'change':>9}  95% CI (paired)"]
    for name, m in result["measures"].items():
        lo_d, hi_d = m["delta_ci95"]
        ci = f"[{_fmt(lo_d)}, {_fmt(hi_d)}]" if lo_d is not None else ""
        change = "" if m["delta"] is None else f"{m['delta']:+.3f}"
        lines.append(f"{name:<20}{_fmt(m['base']):>8}{_fmt(m['trained']):>8}{change:>9}  {ci}")
    for pair in result["pairs"][:examples]:
        lines += ["", f"prompt:   {pair['prompt'][:200]}", f"tuned:    {pair['tuned'][:200]}",
                  f"base:     {pair['base'][:200]}", f"P(tuned better) {pair['p_tuned']:.3f}"
                  + (f" — {pair['rationale']}" if pair["rationale"] else "")]
    click.echo("\n".join(lines))
