"""Contrastive likelihood scoring (cf. Min et al. 2022, "Noisy Channel Language Model Prompting").

A contrast criterion scores a response by how much more likely the judge finds it under a positive
condition than under a negative one::

    s = mean over the response's tokens t of [log P(t | ..., positive, t_<) - log P(t | ..., negative, t_<)]
    P(pass) = sigmoid(sharpness * s)

Nothing is generated and no question is asked, so there is no verdict token for a position bias or a
"yes"-habit to act on; the per-token differences also say *which words* earned the score
(:func:`attribution`). Conditions may name ``{reference}``, ``{wrong_reference}`` and data columns.
"""

from __future__ import annotations

import math
import string
import zlib

import numpy as np

from minirft.data import PromptRow
from minirft.errors import MinirftError
from minirft.judge.base import TokenScores
from minirft.recipe import Criterion

WRONG_OFFSETS = (1, -1, 2, -2, 3, -3)  # how far {wrong_reference} lies from a numeric reference


def wrong_reference(row: PromptRow) -> str:
    """The row's ``wrong_reference`` column, else a number near its numeric reference (chosen by a hash of
    the prompt, so the same row always gets the same wrong answer)."""
    given = row.columns.get("wrong_reference")
    if given is not None:
        return str(given)
    ref = (row.reference or "").strip()
    try:
        value = float(ref)
    except ValueError:
        raise MinirftError(f"line {row.line}: {{wrong_reference}} needs a numeric `reference` or a "
                           f"`wrong_reference` column (reference is {ref!r})") from None
    offset = WRONG_OFFSETS[zlib.crc32(row.prompt.encode("utf-8")) % len(WRONG_OFFSETS)]
    wrong = value + offset
    return str(int(wrong)) if value.is_integer() else f"{wrong:g}"


def conditions(c: Criterion, row: PromptRow) -> tuple[str, str]:
    """(positive, negative) with ``{reference}``, ``{wrong_reference}`` and data columns filled in."""
    return _fill(c.positive or "", c, row), _fill(c.negative or "", c, row)


def _fill(text: str, c: Criterion, row: PromptRow) -> str:
    names = {name for _, name, _, _ in string.Formatter().parse(text) if name}
    values = {}
    for name in names:
        if name == "reference":
            if row.reference is None:
                raise MinirftError(f"line {row.line}: judge.criteria {c.name}: {{reference}} but the row has no `reference`")
            values[name] = row.reference.strip()
        elif name == "wrong_reference":
            values[name] = wrong_reference(row)
        elif name in row.columns:
            values[name] = str(row.columns[name])
        else:
            raise MinirftError(f"line {row.line}: judge.criteria {c.name}: the condition names {{{name}}}, "
                               "which is not a column of the row")
    return text.format_map(values)


def token_differences(pos: TokenScores, neg: TokenScores, max_tokens: int) -> np.ndarray:
    """Per-token log P(t | positive) - log P(t | negative) over the first ``max_tokens`` tokens."""
    n = min(len(pos.logprobs), len(neg.logprobs), max_tokens)
    return np.asarray(pos.logprobs[:n], dtype=np.float64) - np.asarray(neg.logprobs[:n], dtype=np.float64)


def aggregate(diffs: np.ndarray, how: str = "mean", tokens: int = 3) -> float:
    """s from the per-token differences: their ``mean``; the mean of the ``tokens`` ``lowest``; or
    (``prefix_min``) the lowest running mean over the prefixes of at least ``tokens`` tokens (the whole
    response when it is shorter). Appending tokens leaves the earlier differences as they were (causal
    judge) and only adds candidates for the lowest ones, so appended text can lower a lowest or
    prefix_min score but never raise it, once the response has at least ``tokens`` tokens."""
    if not len(diffs):
        return 0.0
    if how == "mean":
        return float(diffs.mean())
    if how == "lowest":
        return float(np.sort(diffs)[:tokens].mean())
    running = np.cumsum(diffs) / np.arange(1, len(diffs) + 1)
    return float(running[min(tokens, len(diffs)) - 1:].min())


def criterion_score(diffs: np.ndarray, c: Criterion) -> float:
    """A contrast criterion's s (before sharpness) under its own aggregation."""
    return aggregate(diffs, c.aggregate, c.tokens)


def p_pass(s: float, sharpness: float) -> float:
    return 1.0 / (1.0 + math.exp(-sharpness * s))


def attribution(pieces: tuple[str, ...], diffs: np.ndarray, k: int = 3) -> dict[str, list]:
    """The ``k`` tokens that pushed the score up most and down most: {"up": [[text, diff], …], "down": …}."""
    order = np.argsort(diffs)
    up = [[pieces[i], round(float(diffs[i]), 3)] for i in order[::-1][:k] if diffs[i] > 0]
    down = [[pieces[i], round(float(diffs[i]), 3)] for i in order[:k] if diffs[i] < 0]
    return {"up": up, "down": down}


def describe(attr: dict[str, list]) -> str:
    """A one-line rationale from an attribution: which words raised and lowered the score."""
    def words(items):
        return ", ".join(repr(t.strip() or t) for t, _ in items) or "nothing"
    return f"raised by {words(attr['up'])}; lowered by {words(attr['down'])}"
