"""The judge's two modes, combining the criterion methods (:mod:`minirft.judge.methods`).

- **rubric**: every candidate gets P(pass) per criterion (question, contrast and direct criteria alike), then
  each through its Platt map when ``judge.platt`` has one; the reward is
  :func:`~minirft.judge.scoring.rubric_reward` (weighted mean of the plain criteria × every gate).
- **preference**: a candidate's reward is its mean win probability against the other members of its
  group. With contrast or direct criteria each candidate is scored once, alone, and P(A better) =
  sigmoid(score_A − score_B) (:func:`logit`; antisymmetric by construction); otherwise the A/B question is asked in
  both orders and swap-averaged. Either way P(A better) goes through the ``preference`` Platt map.

Each function makes at most one backend call per method; retries, clipping and the Platt maps
themselves are :class:`~minirft.judge.core.GroupJudge`'s, passed in as ``clip`` and ``platt``.
"""

from __future__ import annotations

from typing import Sequence

from minirft.data import PromptRow
from minirft.judge import scoring
from minirft.judge.base import Evaluator, PairVerdict, Score
from minirft.judge.methods import contrast, direct, question
from minirft.judge.methods.question import Clip
from minirft.judge.prompts import Layout
from minirft.recipe import JudgeConfig


def rubric(cfg: JudgeConfig, layout: Layout, evaluator: Evaluator, rows: Sequence[PromptRow],
           groups: Sequence[Sequence[str]], flags: list[list[bool]], clip: Clip, platt: dict) -> list[list[Score]]:
    crit, why, why_crit = question.rubric(cfg, layout, evaluator, rows, groups, flags, clip)
    diffs, attributions = contrast.differences(cfg, layout, evaluator, rows, groups)
    contrast_ps = contrast.p_pass_all(cfg, diffs)
    ratios = direct.log_ratios(cfg, layout, evaluator, rows, groups)
    direct_ps = direct.p_pass_all(cfg, ratios)
    weights = {c.name: c.weight for c in cfg.criteria}
    gates = {c.name for c in cfg.criteria if c.gate}
    out = []
    for i, group in enumerate(groups):
        scores = []
        for j in range(len(group)):
            ps = {**crit[i][j], **contrast_ps[i][j], **direct_ps[i][j]}  # P(pass)
            if platt:
                ps = {n: platt[n](p) if n in platt else p for n, p in ps.items()}
            per = why_crit[i][j]
            attr = attributions[i][j]
            if flags[i][j] and (attr or ratios[i][j]):  # contrast criteria explain themselves by their words,
                per = {**per, **{n: contrast.describe(a) for n, a in attr.items()},  # direct ones by their odds
                       **{n: direct.describe(s) for n, s in ratios[i][j].items()}}
            text = "\n".join(f"{n}: {t}" for n, t in per.items()) if per else why[i][j]
            scores.append(Score(reward=scoring.rubric_reward(ps, weights, gates), criteria=ps,
                                rationale=text, criterion_rationales=per, attributions=attr))
        out.append(scores)
    return out


def by_likelihood(cfg: JudgeConfig) -> bool:
    """Preference mode with contrast or direct criteria (else the A/B question)."""
    return any(c.method in ("contrast", "direct") for c in cfg.criteria)


def logit(cfg: JudgeConfig, diffs: dict, ratios: dict[str, float]) -> float:
    """One candidate's weighted likelihood score, in logit units: sum_c w_c * sharpness_c * s_c / sum_c w_c
    over its contrast criteria (s from ``diffs``) and direct criteria (s in ``ratios``)."""
    total = 0.0
    weight = 0.0
    for c in cfg.criteria:
        if c.method == "contrast":
            s = contrast.criterion_score(diffs[c.name], c)
        elif c.method == "direct":
            s = ratios[c.name]
        else:
            continue
        total += c.weight * c.sharpness * s
        weight += c.weight
    return total / (weight or 1.0)


def _rationale(attr: dict, ratios: dict[str, float], prefix: str = "") -> str:
    return "; ".join([f"{prefix}{n}: {contrast.describe(a)}" for n, a in attr.items()]
                     + [f"{prefix}{n}: {direct.describe(s)}" for n, s in ratios.items()])


def _pref(platt: dict, p: float) -> float:
    """P(A better), through the fitted preference Platt map when there is one."""
    return platt["preference"](p) if "preference" in platt else p


def preference(cfg: JudgeConfig, layout: Layout, evaluator: Evaluator, rows: Sequence[PromptRow],
               groups: Sequence[Sequence[str]], flags: list[list[bool]], clip: Clip, platt: dict) -> list[list[Score]]:
    out = []
    if by_likelihood(cfg):
        diffs, attributions = contrast.differences(cfg, layout, evaluator, rows, groups)
        ratios = direct.log_ratios(cfg, layout, evaluator, rows, groups)
        for i, group in enumerate(groups):
            logits = [logit(cfg, d, r) for d, r in zip(diffs[i], ratios[i])]
            pairs = [(a, b) for a in range(len(group)) for b in range(a + 1, len(group))]
            rates = scoring.win_rates(len(group), pairs, [_pref(platt, contrast.preference(logits[a], logits[b]))
                                                          for a, b in pairs])
            out.append([Score(reward=0.5 if r is None else r, attributions=attributions[i][j],
                              rationale=_rationale(attributions[i][j], ratios[i][j]) if flags[i][j] else None)
                        for j, r in enumerate(rates)])
        return out
    for (pairs, p_first, whys), group in zip(question.pairs(cfg, layout, evaluator, rows, groups, flags, clip), groups):
        rates = scoring.win_rates(len(group), pairs, [_pref(platt, p) for p in p_first])
        out.append([Score(reward=0.5 if r is None else r, rationale=whys.get(j)) for j, r in enumerate(rates)])
    return out


def compare(cfg: JudgeConfig, layout: Layout, evaluator: Evaluator, rows: Sequence[PromptRow],
            pairs: Sequence[tuple[str, str]], rationale: bool, clip: Clip, platt: dict) -> list[PairVerdict]:
    """Preference between A and B per pair."""
    out = []
    if by_likelihood(cfg):  # each response scored once, alone
        groups = [[a, b] for a, b in pairs]
        diffs, attributions = contrast.differences(cfg, layout, evaluator, list(rows), groups)
        ratios = direct.log_ratios(cfg, layout, evaluator, list(rows), groups)
        for d, attr, r in zip(diffs, attributions, ratios):
            p = _pref(platt, contrast.preference(logit(cfg, d[0], r[0]), logit(cfg, d[1], r[1])))
            why = _rationale(attr[0], r[0], "A ") if rationale else None
            out.append(PairVerdict(p_a=p, p_a_first=p, p_a_second=p, rationale=why))
        return out
    for p_first, p_b_first, why in question.compare(cfg, layout, evaluator, rows, pairs, rationale, clip):
        out.append(PairVerdict(p_a=_pref(platt, scoring.swap_average(p_first, p_b_first)), p_a_first=p_first,
                               p_a_second=1.0 - p_b_first, rationale=why))
    return out
