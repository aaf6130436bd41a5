"""The ``question`` criterion method: a yes/no question about the response, answered by the label
tokens' probabilities at the verdict position (no sampling, no parsing).

From (rows, candidates) to P(pass): :func:`rubric` lays out one query per candidate and question
criterion (:class:`~minirft.judge.prompts.Layout`: header → row → response → question and verdict
cue), the backend's ``evaluate`` returns P over the label classes ("Yes"/"No" surface forms, or the
points of ``judge.scale``), and P(yes) (the expected point, mapped to [0, 1], on a scale) becomes
P(pass) after content-free calibration (``judge.content_free``: divided by P(yes) for an empty
response, :func:`minirft.judge.scoring.content_free`) and ``pass_when``. Rationales are greedy
generations after a rationale cue, cut at the first sentence end.

The same method asks preference mode's A/B question: every pair in both orders (:func:`pairs`,
:func:`compare`), so a position bias averages out.
"""

from __future__ import annotations

import os.path
import zlib
from typing import Callable, Sequence

import numpy as np

from minirft.data import PromptRow
from minirft.judge import scoring
from minirft.judge.base import Evaluator, Query
from minirft.judge.methods import passes
from minirft.judge.prompts import Layout
from minirft.recipe import JudgeConfig

# A rationale is greedy, capped at judge.rationale_max_tokens and ends at its first sentence end or line.
RATIONALE_STOPS = ("\n", ". ", "! ", "? ")
AB_CLASSES = [scoring.variants("A"), scoring.variants("B")]

Clip = Callable[[str], str]  # a candidate cut to what the judge reads


def classes(cfg: JudgeConfig) -> list[tuple[str, ...]]:
    """The label classes a question's verdict is read over: Yes/No, or the scale's points."""
    s = cfg.scale
    if s:
        return [scoring.variants(str(k)) for k in range(s.min, s.max + 1)]
    return [scoring.YES_VARIANTS, scoring.NO_VARIANTS]


def value(cfg: JudgeConfig, probs: np.ndarray) -> float:
    """P(yes), or the expected point of the scale mapped to [0, 1]."""
    s = cfg.scale
    return scoring.expected_scale(probs, s.min, s.max) if s else float(probs[0])


def rubric(cfg: JudgeConfig, layout: Layout, evaluator: Evaluator, rows: Sequence[PromptRow],
           groups: Sequence[Sequence[str]], flags: list[list[bool]], clip: Clip
           ) -> tuple[list[list[dict[str, float]]], list[list[str | None]], list[list[dict[str, str]]]]:
    """P(pass) per candidate and question criterion, the candidates' rationales (flagged ones) and,
    with ``judge.rationale_per_criterion``, a rationale per criterion; one ``evaluate`` call."""
    L = layout
    asked = [c for c in cfg.criteria if c.method == "question"]
    header = L.header()
    queries: list[Query] = []
    where: list[tuple] = []
    for i, (row, group) in enumerate(zip(rows, groups)):
        if not asked:
            break
        resps = [L.response(clip(cand)) for cand in group]
        empty = L.response("")
        # The response heading ("Candidate response:\n<response>\n") is the same for every candidate:
        # it goes with the row segment, so the engine decodes it once per row, not once per candidate.
        head = shared_head(resps + [empty]) if len(resps) > 1 else ""
        row_seg = L.row(row) + head
        for j, cand in enumerate(group):
            resp = resps[j][len(head):]
            for c in asked:
                queries.append(Query((header, row_seg, resp, L.criterion_cue(c.question))))
                where.append(("crit", i, j, c.name))
            if flags[i][j] and cfg.rationale_per_criterion:
                for c in asked:
                    queries.append(Query((header, row_seg, resp, L.criterion_rationale_cue(c.question)),
                                         generate=cfg.rationale_max_tokens, stop=RATIONALE_STOPS))
                    where.append(("why", i, j, c.name))
            elif flags[i][j]:
                queries.append(Query((header, row_seg, resp, L.rationale_cue()),
                                     generate=cfg.rationale_max_tokens, stop=RATIONALE_STOPS))
                where.append(("why", i, j, None))
        if cfg.content_free and not cfg.scale:
            for c in asked:
                queries.append(Query((header, row_seg, empty[len(head):], L.criterion_cue(c.question))))
                where.append(("empty", i, None, c.name))
    results = evaluator.evaluate(queries, classes(cfg)) if queries else []
    crit: list[list[dict[str, float]]] = [[{} for _ in g] for g in groups]
    why: list[list[str | None]] = [[None for _ in g] for g in groups]
    why_crit: list[list[dict[str, str]]] = [[{} for _ in g] for g in groups]
    empty_p: dict[tuple[int, str], float] = {}
    for (kind, i, j, name), res in zip(where, results):
        if kind == "crit":
            crit[i][j][name] = value(cfg, res.probs)
        elif kind == "why" and name is not None:
            if rationale(res.text):
                why_crit[i][j][name] = rationale(res.text)
        elif kind == "why":
            why[i][j] = rationale(res.text)
        else:
            empty_p[(i, name)] = float(res.probs[0])
    by_name = {c.name: c for c in cfg.criteria}
    for i, group in enumerate(crit):
        for j, ps in enumerate(group):
            if empty_p:
                ps = {n: scoring.content_free(p, empty_p[(i, n)]) if (i, n) in empty_p else p for n, p in ps.items()}
            crit[i][j] = {n: passes(by_name[n], p) for n, p in ps.items()}
    return crit, why, why_crit


# ------------------------------------------------------------------------------ A or B
def pair_segments(layout: Layout, clip: Clip, a: str, b: str, cue: str) -> tuple[str, str]:
    """Response A, and response B with ``cue``; B's heading ("Response B:\\n<response>\\n", the same
    for every B) goes with A's segment, so it is decoded once per A rather than once per pair."""
    ra, rb = layout.response(clip(a), "A"), layout.response(clip(b), "B")
    head = shared_head([rb, layout.response("", "B")])
    return ra + head, rb[len(head):] + cue


def pair_queries(layout: Layout, clip: Clip, header: str, row_seg: str, a: str, b: str) -> list[Query]:
    """The A/B question in both orders: (a, b) then (b, a)."""
    cue = layout.preference_cue()
    return [Query((header, row_seg, *pair_segments(layout, clip, a, b, cue))),
            Query((header, row_seg, *pair_segments(layout, clip, b, a, cue)))]


def pairs(cfg: JudgeConfig, layout: Layout, evaluator: Evaluator, rows: Sequence[PromptRow],
          groups: Sequence[Sequence[str]], flags: list[list[bool]], clip: Clip
          ) -> list[tuple[list[tuple[int, int]], list[float], dict[int, str | None]]]:
    """Per group: the pairs compared (``judge.max_pairs_per_group`` at most, chosen by a hash of the
    prompt), each pair's swap-averaged P(first better), and the flagged candidates' rationales; one
    ``evaluate`` call."""
    L = layout
    header = L.header()
    queries: list[Query] = []
    plan = []
    for i, (row, group) in enumerate(zip(rows, groups)):
        row_seg = L.row(row)
        seed = zlib.crc32(row.prompt.encode("utf-8"))
        chosen = scoring.choose_pairs(len(group), cfg.max_pairs_per_group, seed=seed)
        first = len(queries)
        for a, b in chosen:
            queries += pair_queries(L, clip, header, row_seg, group[a], group[b])
        whys = []
        for j, cand in enumerate(group):
            if flags[i][j]:
                whys.append((j, len(queries)))
                queries.append(Query((header, row_seg, L.response(clip(cand)), L.rationale_cue()),
                                     generate=cfg.rationale_max_tokens, stop=RATIONALE_STOPS))
        plan.append((chosen, first, whys))
    results = evaluator.evaluate(queries, AB_CLASSES)
    out = []
    for chosen, first, whys in plan:
        p_first = [scoring.swap_average(float(results[first + 2 * k].probs[0]), float(results[first + 2 * k + 1].probs[0]))
                   for k in range(len(chosen))]
        out.append((chosen, p_first, {j: rationale(results[q].text) for j, q in whys}))
    return out


def compare(cfg: JudgeConfig, layout: Layout, evaluator: Evaluator, rows: Sequence[PromptRow],
            pairs_: Sequence[tuple[str, str]], want_rationale: bool, clip: Clip
            ) -> list[tuple[float, float, str | None]]:
    """Per (A, B): P(A better | A first), P(B better | B first) and a rationale when asked; one call."""
    L = layout
    header = L.header()
    queries: list[Query] = []
    for row, (a, b) in zip(rows, pairs_):
        row_seg = L.row(row)
        queries += pair_queries(L, clip, header, row_seg, a, b)
        if want_rationale:
            queries.append(Query((header, row_seg, *pair_segments(L, clip, a, b, L.rationale_cue())),
                                 generate=cfg.rationale_max_tokens, stop=RATIONALE_STOPS))
    res = evaluator.evaluate(queries, AB_CLASSES)
    step = 3 if want_rationale else 2
    out = []
    for k in range(len(pairs_)):
        r = res[k * step:(k + 1) * step]
        out.append((float(r[0].probs[0]), float(r[1].probs[0]), rationale(r[2].text) if want_rationale else None))
    return out


# ------------------------------------------------------------------------------ text
def shared_head(texts: list[str]) -> str:
    """The lines every text starts with (whole lines, and never all of any text)."""
    common = os.path.commonprefix(texts)
    common = common[:common.rfind("\n") + 1]
    return common if all(len(t) > len(common) for t in texts) else ""


def rationale(text: str) -> str | None:
    """A generated rationale, or None when the judge produced nothing but markup (the embedded judges
    often echo the prompt's ``<response>`` marker) or nothing at all."""
    words = text.strip()
    for marker in ("<response>", "</response>", "</ response>", "< response>", "Candidate response:"):
        words = words.replace(marker, "")
    return text.strip() if any(ch.isalnum() for ch in words) else None
