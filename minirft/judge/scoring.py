"""The judge's arithmetic, apart from any model: label probabilities, rubric rewards, swaps, pairs.

Everything here is exact and deterministic so it can be tested on hand-made numbers.
"""

from __future__ import annotations

import math
import random
from typing import Sequence

import numpy as np

# The surface forms a tokenizer may use for a label; only those that are one token are read.
YES_VARIANTS = ("Yes", " Yes", "yes", " yes", "YES", " YES")
NO_VARIANTS = ("No", " No", "no", " no", "NO", " NO")


def variants(label: str) -> tuple[str, ...]:
    """Surface forms of a label word: as written, with a leading space, lower and upper case."""
    if label == "Yes":
        return YES_VARIANTS
    if label == "No":
        return NO_VARIANTS
    forms = [label, " " + label, label.lower(), " " + label.lower(), label.upper(), " " + label.upper()]
    return tuple(dict.fromkeys(forms))


def class_probs(class_logprobs: Sequence[Sequence[float]]) -> np.ndarray:
    """Probability of each class, renormalised over the classes.

    ``class_logprobs[c]`` holds the logits (or log-probabilities) of every token variant of class c
    (e.g. "Yes", " Yes", "yes"); a class's mass is the sum over its variants (log-sum-exp), and the
    result is the softmax over classes: P(yes) = Σ p(yes variants) / Σ p(all label variants).
    A class with no variant present gets probability 0.
    """
    lse = np.array([_logsumexp(v) for v in class_logprobs], dtype=np.float64)
    if not np.isfinite(lse).any():
        raise ValueError("none of the label tokens is present")
    m = np.max(lse[np.isfinite(lse)])
    e = np.where(np.isfinite(lse), np.exp(lse - m), 0.0)
    return e / e.sum()


def _logsumexp(values: Sequence[float]) -> float:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return -math.inf
    m = max(vals)
    return m + math.log(sum(math.exp(v - m) for v in vals))


def expected_scale(probs: np.ndarray, lo: int, hi: int) -> float:
    """Expectation of a point score lo..hi under ``probs`` (one per point), mapped to [0, 1]."""
    points = np.arange(lo, hi + 1, dtype=np.float64)
    return float((probs @ points - lo) / (hi - lo))


def content_free(p: float, p_empty: float, eps: float = 1e-6) -> float:
    """Content-free calibration of a yes/no probability (Zhao et al. 2021).

    Divide each class probability by the judge's probability of that class for an *empty*
    response, then renormalise: a judge that says "yes" to everything is pulled back to 0.5 on
    the responses it cannot tell apart from nothing.
    """
    p0 = min(max(p_empty, eps), 1 - eps)
    y, n = p / p0, (1 - p) / (1 - p0)
    return float(y / (y + n)) if y + n > 0 else 0.5


def rubric_reward(criteria: dict[str, float], weights: dict[str, float], gates: set[str]) -> float:
    """Weighted mean of the non-gate criteria, multiplied by every gate's probability.

    With only gates, the reward is their product. Weights of 0 everywhere give the plain mean.
    """
    plain = [(criteria[n], weights[n]) for n in criteria if n not in gates]
    if plain:
        total = sum(w for _, w in plain)
        base = sum(p * w for p, w in plain) / total if total > 0 else sum(p for p, _ in plain) / len(plain)
    else:
        base = 1.0
    for n in gates:
        base *= criteria[n]
    return float(base)


def swap_average(p_a_first: float, p_b_first: float) -> float:
    """P(A better) from the two orders: mean of P(A | A shown first) and 1 − P(B | B shown first)."""
    return 0.5 * (p_a_first + (1.0 - p_b_first))


def choose_pairs(n: int, max_pairs: int, seed: int = 0) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, to compare within a group of n.

    All n(n-1)/2 pairs when that is at most ``max_pairs``; otherwise a random ring (so every member
    is compared at least twice, or once when max_pairs < n) topped up with random pairs.
    """
    all_pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    if len(all_pairs) <= max_pairs:
        return all_pairs
    rng = random.Random(seed)
    order = list(range(n))
    rng.shuffle(order)
    chosen: list[tuple[int, int]] = []
    for k in range(n):
        a, b = order[k], order[(k + 1) % n]
        pair = (min(a, b), max(a, b))
        if pair not in chosen:
            chosen.append(pair)
    if len(chosen) > max_pairs:
        # Fewer pairs than members: a path through the permutation still touches most members.
        chosen = chosen[:max_pairs]
    rest = [p for p in all_pairs if p not in chosen]
    rng.shuffle(rest)
    chosen += rest[: max(0, max_pairs - len(chosen))]
    return sorted(chosen)


def win_rates(n: int, pairs: Sequence[tuple[int, int]], p_first_wins: Sequence[float]) -> list[float | None]:
    """Mean win probability of each member over the pairs it is in (None when in no pair)."""
    sums = [0.0] * n
    counts = [0] * n
    for (i, j), p in zip(pairs, p_first_wins):
        sums[i] += p
        sums[j] += 1.0 - p
        counts[i] += 1
        counts[j] += 1
    return [s / c if c else None for s, c in zip(sums, counts)]
