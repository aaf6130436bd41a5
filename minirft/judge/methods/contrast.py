"""The ``contrast`` criterion method: contrastive likelihood (cf. Min et al. 2022, "Noisy Channel
Language Model Prompting").

A contrast criterion scores a response by how much more likely the judge finds it under a positive
condition than under a negative one::

    d_t = log P(t | ..., positive, t_<) - log P(t | ..., negative, t_<)   per response token t
    s = aggregate(d)   (``mean``, ``lowest`` or ``prefix_min``: :func:`aggregate`)
    P(pass) = sigmoid(sharpness * s)

From (rows, candidates) to P(pass): :func:`queries` lays out two ``score_last`` queries per candidate
and criterion (the response after each condition, :class:`~minirft.judge.prompts.Layout`'s contrast
segments), the backend's ``score_tokens`` returns each response token's log-probability, and
:func:`differences` and :func:`p_pass_all` turn them into per-token differences, P(pass) and an
attribution. In preference mode :func:`minirft.judge.modes.logit` weighs a candidate's criteria into
one score and :func:`preference` compares two scores.

Nothing is generated and no question is asked, so there is no verdict token for a position bias or a
"yes"-habit to act on; the per-token differences also say *which words* earned the score
(:func:`attribution`). Conditions may name ``{reference}``, ``{wrong_reference}`` and data columns.
"""

from __future__ import annotations

import math
import string
import zlib
from typing import Sequence

import numpy as np

from minirft.data import PromptRow
from minirft.errors import MinirftError
from minirft.judge.base import CHARS_PER_TOKEN, Evaluator, Query, TokenScores
from minirft.judge.methods import passes
from minirft.judge.prompts import CONTRAST_HEADER, Layout
from minirft.recipe import Criterion, JudgeConfig

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
    """sigmoid(sharpness · s)."""
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


# ------------------------------------------------------------------------------ queries and results
def criteria(cfg: JudgeConfig) -> list[Criterion]:
    return [c for c in cfg.criteria if c.method == "contrast"]


def differences(cfg: JudgeConfig, layout: Layout, evaluator: Evaluator, rows: Sequence[PromptRow],
                groups: Sequence[Sequence[str]]) -> tuple[list[list[dict]], list[list[dict]]]:
    """Per candidate and contrast criterion: the per-token log-prob differences (empty for an empty
    candidate, whose s is 0) and their attribution; one ``score_tokens`` call for all of them."""
    diffs: list[list[dict]] = [[{} for _ in g] for g in groups]
    attributions: list[list[dict]] = [[{} for _ in g] for g in groups]
    scored = criteria(cfg)
    if not scored:
        return diffs, attributions
    queries: list[Query] = []
    where: list[tuple] = []
    for i, (row, group) in enumerate(zip(rows, groups)):
        row_seg = layout.contrast_row(row)
        for c in scored:
            conds = [layout.contrast_condition(text) for text in conditions(c, row)]
            limit = c.max_response_tokens * CHARS_PER_TOKEN
            for j, cand in enumerate(group):
                text = cand.strip()[:limit]
                if not text:
                    continue  # nothing to score: P(pass) stays 0.5
                for cond in conds:
                    queries.append(Query((CONTRAST_HEADER, row_seg, cond, layout.contrast_response(text)),
                                         score_last=True))
                where.append((i, j, c))
    results = evaluator.score_tokens(queries) if queries else []
    for k, (i, j, c) in enumerate(where):
        pos, neg = results[2 * k], results[2 * k + 1]
        d = token_differences(pos, neg, c.max_response_tokens)
        diffs[i][j][c.name] = d
        attributions[i][j][c.name] = attribution(pos.pieces, d)
    for i, group in enumerate(groups):
        for j in range(len(group)):
            for c in scored:
                diffs[i][j].setdefault(c.name, np.zeros(0))
    return diffs, attributions


def p_pass_all(cfg: JudgeConfig, diffs: list[list[dict]]) -> list[list[dict[str, float]]]:
    """P(pass) per candidate and contrast criterion (rubric mode)."""
    by_name = {c.name: c for c in cfg.criteria}
    return [[{name: passes(by_name[name], p_pass(criterion_score(d, by_name[name]), by_name[name].sharpness))
              for name, d in cand.items()} for cand in group] for group in diffs]


def preference(logit_a: float, logit_b: float) -> float:
    """P(A better) = sigmoid(score_A - score_B): each response scored alone, so no position bias and
    P(A>B) + P(B>A) = 1 by construction."""
    return 1.0 / (1.0 + math.exp(-(logit_a - logit_b)))
