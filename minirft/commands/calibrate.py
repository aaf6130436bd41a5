"""`minirft calibrate`: the judge's agreement with people, measured on labelled rows.

Label files are JSONL, one of two shapes (the shape is detected per file):

- pairwise: ``{"prompt" | "messages", "chosen", "rejected"}`` — a person preferred ``chosen``.
- rubric: ``{"prompt" | "messages", "response", "labels": {criterion: true/false}}``.

Pairwise rows are judged in both orders (the judge's ``compare``). Which response counts as "A" for
κ and calibration is drawn per row with a fixed seed, so the label is not constant.
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal

import click

from minirft.data import PromptRow, iter_jsonl, parse_row
from minirft.commands import common
from minirft.errors import MinirftError
from minirft.recipe import find_recipe, load_recipe
from minirft.stats import accuracy, auc_interval, cohen_kappa, expected_calibration_error, ranking_auc, reliability_table


@dataclass
class LabelledPair:
    row: PromptRow
    chosen: str
    rejected: str


@dataclass
class LabelledResponse:
    row: PromptRow
    response: str
    labels: dict[str, bool]


def load_labels(path: str | Path) -> tuple[Literal["pairwise", "rubric"], list]:
    """Label rows of one shape. Files written by the labelling UI (minirft.labels) are read as they
    stand: undone and replaced verdicts are skipped, and so are rows with only an overall verdict."""
    from minirft.labels import standing_rows

    items: list = []
    shape = None
    for lineno, obj in standing_rows(list(iter_jsonl(path))):
        where = f"{path}:{lineno}"
        if obj.get("kind") == "rubric" and not obj.get("labels"):
            continue  # an overall good/bad only: no criterion to calibrate
        this = "pairwise" if "chosen" in obj else "rubric" if "labels" in obj else None
        if this is None:
            raise MinirftError(f"{where}: a label row needs `chosen` and `rejected` (pairwise) "
                               "or `response` and `labels` (rubric)")
        if shape and this != shape:
            raise MinirftError(f"{where}: {this} row in a {shape} label file (one shape per file)")
        shape = this
        base = {k: v for k, v in obj.items() if k in ("prompt", "messages", "reference")}
        row = parse_row(base, where, lineno)
        if this == "pairwise":
            if not isinstance(obj.get("chosen"), str) or not isinstance(obj.get("rejected"), str):
                raise MinirftError(f"{where}: `chosen` and `rejected` must be strings")
            items.append(LabelledPair(row, obj["chosen"], obj["rejected"]))
        else:
            labels = obj.get("labels")
            if not isinstance(obj.get("response"), str):
                raise MinirftError(f"{where}: `response` must be a string")
            if not isinstance(labels, dict) or not labels or not all(isinstance(v, bool) for v in labels.values()):
                raise MinirftError(f"{where}: `labels` must map criterion names to true/false")
            items.append(LabelledResponse(row, obj["response"], labels))
    if not items:
        raise MinirftError(f"{path}: no label rows")
    return shape, items


@dataclass
class Agreement:
    n: int
    accuracy: float  # at the 0.5 threshold
    kappa: float
    ece: float
    auc: float  # ranking: P(a positive scores above a negative)
    mean_p_positive: float  # mean judge probability on positively / negatively labelled items
    mean_p_negative: float
    reliability: list[dict] = field(default_factory=list)
    auc_ci95: tuple[float, float] = (float("nan"), float("nan"))  # percentile bootstrap
    kappa_ci95: tuple[float, float] = (float("nan"), float("nan"))


@dataclass
class CalibrationReport:
    shape: str
    n: int
    overall: Agreement
    # pairwise only
    swap_consistency: float | None = None
    accuracy_first_position_only: float | None = None
    # rubric only: per criterion
    criteria: dict[str, Agreement] = field(default_factory=dict)
    fitted: dict[str, dict] = field(default_factory=dict)
    # (P, label) pairs behind `overall`, for plots and fits
    points: list[tuple[float, int]] = field(default_factory=list, repr=False)
    criterion_points: dict[str, list[tuple[float, int]]] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("points")
        d.pop("criterion_points")
        return d


def _agreement(points: list[tuple[float, int]]) -> Agreement:
    probs = [p for p, _ in points]
    labels = [y for _, y in points]
    preds = [int(p > 0.5) for p in probs]
    table = [asdict(b) for b in reliability_table(probs, labels)]
    pos = [p for p, y in points if y == 1]
    neg = [p for p, y in points if y == 0]
    return Agreement(len(points), accuracy(labels, preds), cohen_kappa(labels, preds),
                     expected_calibration_error(probs, labels), ranking_auc(probs, labels),
                     sum(pos) / len(pos) if pos else float("nan"), sum(neg) / len(neg) if neg else float("nan"),
                     table, auc_interval(probs, labels), _kappa_interval(labels, preds))


def _kappa_interval(labels: list[int], preds: list[int], n_resamples: int = 1000) -> tuple[float, float]:
    """Percentile bootstrap interval of Cohen's kappa over (label, verdict) pairs."""
    import numpy as np

    if len(labels) < 2:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(0)
    y, p = np.asarray(labels), np.asarray(preds)
    values = [cohen_kappa(y[i], p[i]) for i in (rng.integers(0, len(y), len(y)) for _ in range(n_resamples))]
    return (float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975)))


CHUNK = 16  # items per judge call: a full batch, and a lively progress line


def measure_agreement(judge, shape: str, items: list, seed: int = 0,
                      progress: Callable[[int, int], None] | None = None) -> CalibrationReport:
    """Score every labelled item with ``judge`` (batched, CHUNK items a call) and measure agreement."""
    rng = random.Random(seed)
    if shape == "pairwise":
        points, consistent, first_only = [], [], []
        for lo in range(0, len(items), CHUNK):
            chunk = items[lo:lo + CHUNK]
            verdicts = judge.compare_many([it.row for it in chunk], [(it.chosen, it.rejected) for it in chunk])
            for v in verdicts:
                # v.p_a = swap-averaged P(chosen better); the two single-order verdicts on their own:
                consistent.append((v.p_a_first > 0.5) == (v.p_a_second > 0.5))
                first_only.append(float(v.p_a_first > 0.5))  # chosen shown first
                first_only.append(float(v.p_a_second > 0.5))  # chosen shown second
                chosen_is_a = rng.random() < 0.5
                points.append((v.p_a if chosen_is_a else 1.0 - v.p_a, int(chosen_is_a)))
            if progress:
                progress(lo + len(chunk), len(items))
        report = CalibrationReport(shape, len(items), _agreement(points),
                                   swap_consistency=sum(consistent) / len(consistent),
                                   accuracy_first_position_only=sum(first_only) / len(first_only))
        report.points = points
        return report

    per: dict[str, list[tuple[float, int]]] = {}
    for lo in range(0, len(items), CHUNK):
        chunk = items[lo:lo + CHUNK]
        scores = judge.score_groups([it.row for it in chunk], [[it.response] for it in chunk])
        for item, (score,) in zip(chunk, scores):
            if score.reward is None:
                raise MinirftError(f"line {item.row.line}: the judge failed: {score.error}")
            for name, label in item.labels.items():
                per.setdefault(name, []).append((score.criteria[name], int(label)))
                for member, verdict in score.panel.items():  # a jury: every judge side by side
                    if name in verdict["criteria"]:
                        per.setdefault(f"{name}@{member}", []).append((verdict["criteria"][name], int(label)))
        if progress:
            progress(lo + len(chunk), len(items))
    everything = [pt for name, pts in per.items() if "@" not in name for pt in pts]
    report = CalibrationReport(shape, len(items), _agreement(everything),
                               criteria={k: _agreement(v) for k, v in per.items()})
    report.points = everything
    report.criterion_points = per
    return report


def check_labels(labels, shape: str, items: list, recipe) -> None:
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


def plot_reliability(report: CalibrationReport, path: Path, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MinirftError("--plot needs matplotlib: pip install matplotlib") from None
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfect calibration")
    series = {"all": report.overall} if report.shape == "pairwise" else {"all": report.overall, **report.criteria}
    for name, agreement in series.items():
        pts = [(b["mean_confidence"], b["frequency"]) for b in agreement.reliability if b["count"]]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=f"{name} (ECE {agreement.ece:.3f})")
    ax.set_xlabel("judge probability")
    ax.set_ylabel("observed frequency")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


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
    from minirft.judge.calibration import fit_platt_maps, platt_path, save_platt_maps

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
