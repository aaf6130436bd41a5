"""Agreement between the judge and people, in one place: what ``minirft calibrate`` reports, what the
watch UI's agreement panel and ``minirft label`` show, and what the drift alarm watches.

- :func:`kappa_interval`: accuracy, Cohen's κ = (p_o − p_e) / (1 − p_e) and its 95% interval: the
  Wilson interval of the observed agreement p_o mapped through that formula with p_e held fixed.
  (Cohen's large-sample SE has the same form, SE(p_o) / (1 − p_e); Wilson instead of p_o ± 1.96·SE
  keeps the interval honest at the few labels a person gives and at p_o = 0 or 1, where the plain SE
  is 0.) It is the one κ interval minirft reports, in the CLI and in the UI alike.
- :func:`grouped_kappa`: that per criterion and pooled, over (what, human, judge) decisions.
- :func:`measure`: from the judge's probabilities and the labels, everything ``calibrate`` prints:
  accuracy at 0.5, κ with the interval above, ECE with its reliability table, ranking AUC with a
  percentile bootstrap interval, and the mean probability on positive and on negative items.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

from minirft.stats import accuracy, auc_interval, cohen_kappa, expected_calibration_error, ranking_auc, reliability_table

Z95 = 1.959964


@dataclass(frozen=True)
class KappaStats:
    n: int
    accuracy: float
    kappa: float
    lo: float | None  # 95% interval, None where it is undefined (n < 2, or chance agreement is 1)
    hi: float | None


def kappa_interval(human: Sequence[int], judge: Sequence[int], z: float = Z95) -> KappaStats:
    """Accuracy, Cohen's κ and its 95% interval (see the module docstring)."""
    n = len(human)
    if n == 0:
        return KappaStats(0, float("nan"), float("nan"), None, None)
    acc = accuracy(human, judge)
    k = cohen_kappa(human, judge)
    classes = set(human) | set(judge)
    p_e = sum((sum(h == c for h in human) / n) * (sum(j == c for j in judge) / n) for c in classes)
    if n < 2 or p_e >= 1.0:
        return KappaStats(n, acc, k, None, None)
    lo_p, hi_p = wilson(acc, n, z)
    to_kappa = lambda p: (p - p_e) / (1.0 - p_e)  # noqa: E731
    return KappaStats(n, acc, k, max(-1.0, to_kappa(lo_p)), min(1.0, to_kappa(hi_p)))


def wilson(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion p observed in n trials."""
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def grouped_kappa(decisions: Sequence[tuple[str, int, int]]) -> dict[str, KappaStats]:
    """:func:`kappa_interval` per ``what`` of (what, human 0/1, judge 0/1) decisions (first-seen order),
    then ``all`` pooled."""
    by: dict[str, tuple[list[int], list[int]]] = {}
    for what, h, j in decisions:
        hs, js = by.setdefault(what, ([], []))
        hs.append(h)
        js.append(j)
    out = {name: kappa_interval(hs, js) for name, (hs, js) in by.items()}
    if by:
        out["all"] = kappa_interval([h for hs, _ in by.values() for h in hs], [j for _, js in by.values() for j in js])
    return out


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
    kappa_ci95: tuple[float, float] = (float("nan"), float("nan"))  # kappa_interval's (NaN where undefined)


def measure(points: Sequence[tuple[float, int]]) -> Agreement:
    """Agreement of judge probabilities with 0/1 labels, from (P, label) pairs."""
    probs = [p for p, _ in points]
    labels = [y for _, y in points]
    preds = [int(p > 0.5) for p in probs]
    table = [asdict(b) for b in reliability_table(probs, labels)]
    pos = [p for p, y in points if y == 1]
    neg = [p for p, y in points if y == 0]
    k = kappa_interval(labels, preds)
    nan = float("nan")
    return Agreement(len(points), accuracy(labels, preds), cohen_kappa(labels, preds),
                     expected_calibration_error(probs, labels), ranking_auc(probs, labels),
                     sum(pos) / len(pos) if pos else nan, sum(neg) / len(neg) if neg else nan,
                     table, auc_interval(probs, labels),
                     (nan if k.lo is None else k.lo, nan if k.hi is None else k.hi))
