"""`minirft calibrate` and `minirft eval`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

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
    """Measure the recipe's judge against human labels: accuracy, Cohen's kappa, calibration (ECE).

    LABELS is JSONL: pairwise rows {prompt, chosen, rejected} (needs judge.mode=preference) or rubric
    rows {prompt, response, labels: {criterion: true/false}}. Pairwise rows are judged in both orders;
    swap consistency is how often the verdict survives swapping them.

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
        click.echo(f"saved {target} (set judge.calibration: {target.name} in the recipe to apply it)", err=True)
    if plot:
        plot_reliability(report, plot, f"{r.judge.model} on {Path(labels).name} (n={report.n})")
        click.echo(f"wrote {plot}", err=True)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    o = report.overall
    lines = [f"judge {r.judge.model} ({r.judge.backend}, {r.judge.mode}) on {labels}: {report.n} rows",
             f"{'':<22}{'n':>6}{'accuracy':>10}{'kappa':>8}{'ECE':>8}",
             f"{'all':<22}{o.n:>6}{o.accuracy:>10.3f}{o.kappa:>8.3f}{o.ece:>8.3f}"]
    for name, a in report.criteria.items():
        lines.append(f"{name:<22}{a.n:>6}{a.accuracy:>10.3f}{a.kappa:>8.3f}{a.ece:>8.3f}")
    if shape == "pairwise":
        lines.append(f"swap consistency      {_fmt(report.swap_consistency)}   "
                     f"accuracy from one order only {_fmt(report.accuracy_first_position_only)} "
                     f"(swap-averaged {o.accuracy:.3f})")
    click.echo("\n".join(lines))
    sys.stdout.flush()
