"""`minirft calibrate`: the judge's agreement with people, measured on labelled rows (the click
command; reading labels, judging them and the statistics are :mod:`minirft.judge.calibration`'s and
:mod:`minirft.agreement`'s)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from minirft.commands import common
from minirft.errors import MinirftError
from minirft.recipe import find_recipe, load_recipe


@click.command("calibrate")
@click.argument("recipe", required=False)
@click.argument("labels", required=False, type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option("--from-run", "from_run", type=click.Path(file_okay=False, path_type=Path), metavar="RUN_DIR",
              help="Labels from RUN_DIR/labels.jsonl (the watch UI's), recipe from the run (unless RECIPE is "
                   "given); --fit then writes the Platt map file the running trainer follows.")
@click.option("--limit", type=click.IntRange(min=1), help="Use only the first N label rows.")
@click.option("--fit", "do_fit", is_flag=True,
              help="Fit Platt scaling (per criterion / for preference) and save it next to the recipe.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Write a reliability diagram (PNG).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--seed", default=0, show_default=True, help="Seed for which response is shown as A.")
def calibrate_command(recipe, labels, overrides, from_run, limit, do_fit, plot, as_json, seed) -> None:
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
      minirft calibrate --from-run runs/polite-20261123-101500 --fit   # labels from the watch UI; the
                                                                       # running trainer picks it up
      minirft calibrate recipes/polite.yaml scored.labels.jsonl        # from `minirft label scored.jsonl`

    With --fit the judge scores the labelled rows without its current Platt maps (the new maps
    replace them, they are not stacked on them).
    """
    from minirft.judge.calibration import (check_labels, fit_platt_maps, load_labels, measure_agreement, platt_path,
                                           plot_reliability, save_platt_maps)

    target = None
    if from_run is not None:
        from minirft.train.calibration_watch import RUN_CALIBRATION, watched_path

        args = [a for a in (recipe, labels) if a is not None] + list(overrides)
        if args and "=" not in args[0] and not args[0].endswith(".jsonl"):
            recipe, args = args[0], args[1:]
        else:
            recipe = None
        if any("=" not in a for a in args):
            raise click.UsageError("with --from-run give at most RECIPE, then key=value overrides "
                                   "(the labels are RUN_DIR/labels.jsonl)")
        overrides = args
        resolved = from_run / "recipe.resolved.yaml"
        if not resolved.is_file():
            raise MinirftError(f"{from_run}: not a run dir (no recipe.resolved.yaml)")
        labels = str(from_run / "labels.jsonl")
        if not Path(labels).is_file():
            raise MinirftError(f"{labels}: no labels yet (label samples in `minirft watch {from_run}`)")
        path = find_recipe(recipe) if recipe else resolved
        target = watched_path(load_recipe(resolved), from_run)
        if do_fit and target == from_run / RUN_CALIBRATION:  # the run dir's own file: never through a link
            from minirft.rundir import guard

            guard(from_run, target)
    elif recipe is None or labels is None:
        raise click.UsageError("give RECIPE and LABELS, or --from-run RUN_DIR")
    else:
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
    check_labels(labels, shape, items, r)
    # a refit starts from the judge's raw probabilities, not from ones its current Platt maps mapped
    judge = common.make_judge(r.judge.model_copy(update={"platt": None}) if do_fit else r.judge)
    try:
        report = measure_agreement(judge, shape, items, seed=seed, progress=common.progress("judging"))
    finally:
        judge.close()
    if do_fit:
        fitted = fit_platt_maps(report.points, report.criterion_points, report.shape)
        configured = r.judge.platt
        target = target or (Path(configured) if configured else platt_path(path))
        save_platt_maps(target, fitted, str(labels), report.n)
        report.fitted = {k: {"a": v.a, "b": v.b} for k, v in fitted.items()}
        if from_run is not None:
            click.echo(f"saved {target}: the run's trainer uses it from its next step", err=True)
        elif configured:
            click.echo(f"saved {target} (the recipe's judge.platt; runs of it pick it up between steps)", err=True)
        else:
            click.echo(f"saved {target} (add `platt: {target.name}` to the recipe's judge section to apply it)",
                       err=True)
    if plot:
        plot_reliability(report, plot, f"{r.judge.model} on {Path(labels).name} (n={report.n})")
        click.echo(f"wrote {plot}", err=True)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    o = report.overall
    lines = [f"judge {r.judge.model} ({r.judge.backend}, {r.judge.mode}) on {labels}: {report.n} rows",
             f"{'':<28}{'n':>5}{'accuracy':>10}{'kappa':>7}{'ECE':>7}{'AUC':>7}  {'AUC 95% CI':<14}"
             f"{'P|yes':>7}{'P|no':>7}"]
    for name, a in {"all": o, **report.criteria}.items():
        ci = f"[{a.auc_ci95[0]:.2f}, {a.auc_ci95[1]:.2f}]"
        lines.append(f"{name:<28}{a.n:>5}{a.accuracy:>10.3f}{a.kappa:>7.3f}{a.ece:>7.3f}{a.auc:>7.3f}  {ci:<14}"
                     f"{a.mean_p_positive:>7.3f}{a.mean_p_negative:>7.3f}")
    if shape == "pairwise":
        lines.append(f"swap consistency      {common.fmt(report.swap_consistency)}   "
                     f"accuracy from one order only {common.fmt(report.accuracy_first_position_only)} "
                     f"(swap-averaged {o.accuracy:.3f})")
    click.echo("\n".join(lines))
    sys.stdout.flush()
