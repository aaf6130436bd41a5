"""Platt maps the judge applies: P_calibrated = sigmoid(a · logit(P_judge) + b), one per criterion
(rubric) or one for preference, fitted on human labels by ``minirft calibrate --fit`` and named in
the recipe as ``judge.platt``."""

from __future__ import annotations

import json
from pathlib import Path

from minirft.errors import MinirftError
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
