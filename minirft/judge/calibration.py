"""The judge against human labels: reading label files, judging the labelled rows and measuring the
agreement (:func:`measure_agreement`, statistics from :mod:`minirft.agreement`), and the Platt maps the
judge applies: P_calibrated = sigmoid(a · logit(P_judge) + b), one per criterion (rubric) or one for
preference, fitted by ``minirft calibrate --fit`` and named in the recipe as ``judge.platt``.

Label files are JSONL, one of two shapes (the shape is detected per file):

- pairwise: ``{"prompt" | "messages", "chosen", "rejected"}`` — a person preferred ``chosen``.
- rubric: ``{"prompt" | "messages", "response", "labels": {criterion: true/false}}``.

Pairwise rows are judged in both orders (the judge's ``compare_many``). Which response counts as "A"
for κ and calibration is drawn per row with a fixed seed, so the label is not constant.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal

from minirft.agreement import Agreement, measure
from minirft.data import PromptRow, iter_jsonl, parse_row
from minirft.errors import MinirftError
from minirft.judge.base import Judge
from minirft.stats import Platt, fit_platt


def fit_platt_maps(points: list[tuple[float, int]], criterion_points: dict[str, list[tuple[float, int]]],
                   shape: str) -> dict[str, Platt]:
    """One (a, b) for preference (``shape == "pairwise"``), one per criterion for rubric."""
    if shape == "pairwise":
        return {"preference": fit_platt([p for p, _ in points], [y for _, y in points])}
    return {name: fit_platt([p for p, _ in pts], [y for _, y in pts]) for name, pts in criterion_points.items()
            if "@" not in name}  # a jury member's own column (criterion@member) is reported, not applied


def platt_path(recipe_source: Path) -> Path:
    """Where `--fit` saves its maps: next to the recipe, `<recipe>.calibration.json`."""
    return recipe_source.with_name(recipe_source.stem + ".calibration.json")


def save_platt_maps(path: Path, fitted: dict[str, Platt], labels_file: str, n: int) -> None:
    from minirft.atomic import write_text

    write_text(path, json.dumps({"fitted_on": labels_file, "n": n,
                                 "platt": {k: {"a": v.a, "b": v.b} for k, v in fitted.items()}}, indent=2) + "\n")


def load_platt_maps(path: Path) -> dict[str, Platt]:
    try:
        data = json.loads(Path(path).read_text())
        return {k: Platt(float(v["a"]), float(v["b"])) for k, v in data["platt"].items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MinirftError(f"{path}: not a Platt map file written by `minirft calibrate --fit` ({exc})") from None


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


CHUNK = 16  # items per judge call: a full batch, and a lively progress line


def measure_agreement(judge: Judge, shape: str, items: list, seed: int = 0,
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
        report = CalibrationReport(shape, len(items), measure(points),
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
    report = CalibrationReport(shape, len(items), measure(everything),
                               criteria={k: measure(v) for k, v in per.items()})
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
