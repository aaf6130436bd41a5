"""A jury of judges (``judge.panel``): every member scores each candidate with the recipe's criteria;
the verdicts are pooled per criterion, and every member's own score is kept (``Score.panel``) so the
sample rows, the TUI and the agreement metric can show where the judges differ."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from minirft.data import PromptRow
from minirft.judge import scoring
from minirft.judge.base import CHARS_PER_TOKEN, Judge, JudgeBase, PairVerdict, Score
from minirft.recipe import JudgeConfig


class PanelJudge(JudgeBase):
    """The :class:`minirft.judge.base.Judge` protocol over several judges (``members``: name, weight, judge).

    No mid-run calibration (``use_calibration`` refuses) and no backend counters of its own."""

    def __init__(self, cfg: JudgeConfig, members: list[tuple[str, float, Judge]]) -> None:
        self.cfg = cfg
        self.mode = cfg.mode
        self.members = members

    def score_groups(self, rows: Sequence[PromptRow], groups: Sequence[Sequence[str]],
                     rationales: Sequence[Sequence[bool]] | bool = False) -> list[list[Score]]:
        per = {name: judge.score_groups(rows, groups, rationales) for name, _, judge in self.members}
        weights = {name: w for name, w, _ in self.members}
        flat = {name: [s for g in scores for s in g] for name, scores in per.items()}
        pooled = pool([{n: flat[n][k] for n in flat} for k in range(sum(map(len, groups)))], weights,
                      self.cfg, standardise=self.cfg.panel_pool == "standardised")
        out, k = [], 0
        for group in groups:
            out.append(pooled[k:k + len(group)])
            k += len(group)
        return out

    def compare_many(self, rows: Sequence[PromptRow], pairs: Sequence[tuple[str, str]],
                     rationale: bool = False) -> list[PairVerdict]:
        per = [(w, judge.compare_many(rows, pairs, rationale)) for _, w, judge in self.members]
        total = sum(w for w, _ in per)
        out = []
        for k in range(len(pairs)):
            vs = [(w, v[k]) for w, v in per]
            mean = lambda f: sum(w * f(v) for w, v in vs) / total  # noqa: E731
            out.append(PairVerdict(mean(lambda v: v.p_a), mean(lambda v: v.p_a_first), mean(lambda v: v.p_a_second),
                                   next((v.rationale for _, v in vs if v.rationale), None)))
        return out

    def load(self) -> None:
        """Load every member's model now (the trainer does, before its run starts)."""
        for _, _, judge in self.members:
            judge.load()

    @property
    def clipped(self) -> int:
        return max((judge.clipped for _, _, judge in self.members), default=0)

    @property
    def clip_chars(self) -> int:
        return self.cfg.max_candidate_tokens * CHARS_PER_TOKEN

    def close(self) -> None:
        for _, _, judge in self.members:
            judge.close()


def pool(verdicts: list[dict[str, Score]], weights: dict[str, float], cfg: JudgeConfig,
         standardise: bool = False) -> list[Score]:
    """One pooled Score per candidate from each member's Score (``verdicts[k][member]``).

    Rubric: each criterion's P(pass) is the weighted mean over the members that scored the candidate
    (``standardise``: of each member's z-scores over the call's candidates, mapped back by a sigmoid),
    and the reward is the recipe's rubric reward of the pooled criteria. Preference: the weighted mean of
    the members' rewards. A candidate no member could score gets reward None."""
    names = list(weights)
    if cfg.mode == "preference":
        series = {n: [v[n].reward for v in verdicts] for n in names}
    else:
        series = {(n, c.name): [v[n].criteria.get(c.name) if v[n].reward is not None else None for v in verdicts]
                  for n in names for c in cfg.criteria}
    if standardise:
        series = {key: _zscores(values) for key, values in series.items()}
    crit_weights = {c.name: c.weight for c in cfg.criteria}
    gates = {c.name for c in cfg.criteria if c.gate}
    out = []
    for k, v in enumerate(verdicts):
        ok = [n for n in names if v[n].reward is not None]
        panel = {n: {"reward": v[n].reward, "criteria": dict(v[n].criteria)} for n in names}
        if not ok:
            errors = "; ".join(f"{n}: {v[n].error}" for n in names)
            out.append(Score(reward=None, error=f"every judge of the panel failed ({errors})"[:300], panel=panel))
            continue
        total = sum(weights[n] for n in ok)

        def mean(key_of) -> float:
            value = sum(weights[n] * series[key_of(n)][k] for n in ok) / total
            return 1.0 / (1.0 + math.exp(-value)) if standardise else value

        first = v[ok[0]]
        if cfg.mode == "preference":
            out.append(Score(reward=mean(lambda n: n), rationale=first.rationale, panel=panel))
            continue
        criteria = {c.name: mean(lambda n, c=c: (n, c.name)) for c in cfg.criteria}
        out.append(Score(reward=scoring.rubric_reward(criteria, crit_weights, gates), criteria=criteria,
                         rationale=first.rationale, criterion_rationales=first.criterion_rationales,
                         attributions=first.attributions, panel=panel))
    return out


def _zscores(values: list[float | None]) -> list[float | None]:
    got = np.array([x for x in values if x is not None], dtype=float)
    if len(got) < 2 or got.std() == 0:
        return [None if x is None else 0.0 for x in values]
    mu, sd = got.mean(), got.std()
    return [None if x is None else float((x - mu) / sd) for x in values]


def agreement(scores: Sequence[Score | None]) -> float | None:
    """Mean pairwise Pearson correlation of the members' rewards over a step's candidates (None without a
    panel, or when a member's rewards do not vary)."""
    rows = [s.panel for s in scores if s is not None and s.panel]
    if len(rows) < 3:
        return None
    names = list(rows[0])
    cols = {n: [r[n]["reward"] for r in rows] for n in names}
    keep = [i for i in range(len(rows)) if all(cols[n][i] is not None for n in names)]
    corr = []
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            x = np.array([cols[names[a]][i] for i in keep], dtype=float)
            y = np.array([cols[names[b]][i] for i in keep], dtype=float)
            if len(keep) >= 3 and x.std() > 0 and y.std() > 0:
                corr.append(float(np.corrcoef(x, y)[0, 1]))
    return float(np.mean(corr)) if corr else None
