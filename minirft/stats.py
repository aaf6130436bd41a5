"""Small, exact statistics for judge agreement: accuracy, Cohen's kappa, expected calibration error with
its reliability table, a percentile bootstrap, and Platt scaling. numpy only; every function is tested
against hand-computed values."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np


def mean_of(values: Sequence[float | None]) -> float | None:
    """The mean of the values that are neither None nor NaN (None when there are none)."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return sum(vals) / len(vals) if vals else None


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if len(t) == 0:
        return float("nan")
    return float((t == p).mean())


def cohen_kappa(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """κ = (p_o − p_e) / (1 − p_e): agreement beyond what the two raters' label frequencies give by chance."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if len(t) == 0:
        return float("nan")
    labels = np.union1d(t, p)
    p_o = float((t == p).mean())
    p_e = float(sum((t == k).mean() * (p == k).mean() for k in labels))
    if p_e == 1.0:  # both raters constant and equal: agreement is perfect but carries no information
        return 1.0 if p_o == 1.0 else 0.0
    return (p_o - p_e) / (1.0 - p_e)


def ranking_auc(probs: Sequence[float], labels: Sequence[int]) -> float:
    """P(a positive gets a higher score than a negative), ties count half; 0.5 = chance.

    What GRPO needs from a judge: rewards are only compared within a group, so a judge that says
    0.75 to everything but a little more to the good responses ranks well even though every one of
    its 0.5-threshold verdicts is "yes"."""
    p, y = np.asarray(probs, dtype=float), np.asarray(labels)
    pos, neg = p[y == 1], p[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def auc_interval(probs: Sequence[float], labels: Sequence[int], n_resamples: int = 1000,
                 confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`ranking_auc`, resampling (score, label) pairs together."""
    p, y = np.asarray(probs, dtype=float), np.asarray(labels)
    if len(p) == 0 or y.min() == y.max():
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_resamples):
        i = rng.integers(0, len(p), size=len(p))
        if y[i].min() != y[i].max():
            values.append(ranking_auc(p[i], y[i]))
    alpha = (1.0 - confidence) / 2.0
    return (float(np.quantile(values, alpha)), float(np.quantile(values, 1.0 - alpha)))


@dataclass(frozen=True)
class ReliabilityBin:
    lo: float
    hi: float
    count: int
    mean_confidence: float  # mean predicted P(positive) in the bin
    frequency: float  # observed share of positives in the bin


def reliability_table(probs: Sequence[float], labels: Sequence[int], n_bins: int = 10) -> list[ReliabilityBin]:
    """Equal-width bins over [0, 1] of P(positive); the last bin includes 1.0."""
    p, y = np.asarray(probs, dtype=float), np.asarray(labels, dtype=float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1], right=False), 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        sel = index == b
        n = int(sel.sum())
        bins.append(ReliabilityBin(float(edges[b]), float(edges[b + 1]), n,
                                   float(p[sel].mean()) if n else float("nan"),
                                   float(y[sel].mean()) if n else float("nan")))
    return bins


def expected_calibration_error(probs: Sequence[float], labels: Sequence[int], n_bins: int = 10) -> float:
    """ECE = Σ_b (n_b / N) · |mean P(positive) in b − observed frequency in b|."""
    table = reliability_table(probs, labels, n_bins)
    total = sum(b.count for b in table)
    if total == 0:
        return float("nan")
    return float(sum(b.count / total * abs(b.mean_confidence - b.frequency) for b in table if b.count))


def bootstrap_ci(values: Sequence[float], statistic: Callable[[np.ndarray], float] = np.mean,
                 n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``statistic`` over ``values`` (resampled with replacement)."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(v), size=(n_resamples, len(v)))
    stats = np.array([statistic(v[i]) for i in idx])
    alpha = (1.0 - confidence) / 2.0
    return (float(np.quantile(stats, alpha)), float(np.quantile(stats, 1.0 - alpha)))


def _logit(p: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    p = np.clip(p, eps, 1 - eps)
    return np.log(p / (1 - p))


@dataclass(frozen=True)
class Platt:
    """Calibrated P = sigmoid(a · logit(P_judge) + b); a = 1/temperature."""

    a: float = 1.0
    b: float = 0.0

    def __call__(self, p: float) -> float:
        z = self.a * float(_logit(np.asarray(p))) + self.b
        return 1.0 / (1.0 + math.exp(-z))


def fit_platt(probs: Sequence[float], labels: Sequence[int], l2: float = 1e-3, iters: int = 100) -> Platt:
    """Logistic regression of the labels on logit(P_judge), by Newton's method (2 parameters, convex)."""
    x = _logit(np.asarray(probs, dtype=float))
    y = np.asarray(labels, dtype=float)
    if len(x) == 0 or y.min() == y.max():
        return Platt()
    X = np.stack([x, np.ones_like(x)], axis=1)

    def loss(w: np.ndarray) -> float:  # mean negative log-likelihood + ridge
        z = X @ w
        return float(np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * w @ w)

    w = np.array([1.0, 0.0])
    for _ in range(iters):
        q = 1.0 / (1.0 + np.exp(-(X @ w)))
        grad = X.T @ (q - y) / len(y) + l2 * w
        hess = (X * (q * (1 - q))[:, None]).T @ X / len(y) + l2 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        t = 1.0  # damped Newton: halve the step until the loss does not increase
        while loss(w - t * step) > loss(w) and t > 1e-8:
            t /= 2
        w = w - t * step
        if np.abs(t * step).max() < 1e-10:
            break
    return Platt(float(w[0]), float(w[1]))
