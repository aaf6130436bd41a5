"""Rubric and preference judging on top of any backend that can read label probabilities.

A backend (an :class:`Evaluator`) answers one question: for each query (a tuple of prompt
segments), what is the probability of each label class at the verdict position, and, for queries
that ask for it, what does greedy decoding continue with. Everything else — prompt layout,
rubric math, swaps, pairs, calibration, retries — lives here, once, for every backend.
"""

from __future__ import annotations

import math
import time
import zlib
from typing import Sequence

import numpy as np

from minirft.data import PromptRow
from minirft.errors import MinirftError
from minirft.judge.base import Evaluator, PairVerdict, Query, Score
from minirft.judge import contrast, scoring
from minirft.judge.prompts import CONTRAST_HEADER, Layout
from minirft.recipe import JudgeConfig

CHARS_PER_TOKEN = 4  # candidates are clipped to judge.max_candidate_tokens × this many characters
BACKOFF_S = 0.25  # wait before retry k (k = 1, 2, …): BACKOFF_S · 2^(k-1) seconds
# A rationale is greedy, capped at judge.rationale_max_tokens and ends at its first sentence end or line.
RATIONALE_STOPS = ("\n", ". ", "! ", "? ")


class GroupJudge:
    """The :class:`minirft.judge.base.Judge` protocol over an :class:`Evaluator`."""

    def __init__(self, cfg: JudgeConfig, evaluator: Evaluator, layout: Layout) -> None:
        self.cfg = cfg
        self.mode = cfg.mode
        self.evaluator = evaluator
        self.layout = layout
        self._clipped: set[int] = set()  # hashes of the distinct responses cut so far (retries count once)
        # Platt scaling fitted by `minirft calibrate --fit`: criterion name (or "preference") -> map
        self.platt: dict = {}
        if cfg.platt:
            from minirft.judge.calibration import load_platt_maps

            self.platt = load_platt_maps(cfg.platt)

    def use_calibration(self, platt: dict) -> None:
        """Replace the Platt maps: the trainer calls this between steps when the calibration file changes."""
        self.platt = dict(platt)

    # ------------------------------------------------------------------------------ helpers
    def _clip(self, text: str) -> str:
        limit = self.cfg.max_candidate_tokens * CHARS_PER_TOKEN
        if len(text) <= limit:
            return text
        self._clipped.add(hash(text))
        return text[:limit] + " […]"

    @property
    def clipped(self) -> int:
        """How many distinct responses were cut to ``clip_chars`` characters so far."""
        return len(self._clipped)

    @property
    def clip_chars(self) -> int:
        """Responses longer than this many characters are cut before judging."""
        return self.cfg.max_candidate_tokens * CHARS_PER_TOKEN

    def load(self) -> None:
        """Load the model now instead of on the first call (the trainer does, before its run starts)."""
        for name in ("engine", "model"):  # LlamaEvaluator.engine, TorchEvaluator.model: load on first access
            if isinstance(getattr(type(self.evaluator), name, None), property):
                getattr(self.evaluator, name)
                return

    def _flags(self, groups, rationales) -> list[list[bool]]:
        policy = self.cfg.rationales
        if policy == "none":
            return [[False] * len(g) for g in groups]
        if policy == "all":
            return [[True] * len(g) for g in groups]
        if isinstance(rationales, bool):
            return [[rationales] * len(g) for g in groups]
        return [[bool(f) for f in flags] for flags in rationales]

    def _retrying(self, fn, *args):
        """The one retry layer (the trainer does not retry again): ``judge.retries`` more attempts with
        a short exponential backoff. A MinirftError (a configuration error) is never retried."""
        last: Exception | None = None
        for attempt in range(self.cfg.retries + 1):
            if attempt:
                time.sleep(BACKOFF_S * 2 ** (attempt - 1))
            try:
                return fn(*args)
            except MinirftError:
                raise
            except Exception as exc:  # noqa: BLE001 - any backend failure is retried, then reported
                last = exc
        raise last  # type: ignore[misc]

    # ------------------------------------------------------------------------------ protocol
    def score_groups(self, rows: Sequence[PromptRow], groups: Sequence[Sequence[str]],
                     rationales: Sequence[Sequence[bool]] | bool = False) -> list[list[Score]]:
        if len(rows) != len(groups):
            raise ValueError(f"score_groups: {len(rows)} rows but {len(groups)} groups")
        flags = self._flags(groups, rationales)
        try:
            return self._retrying(self._score, list(rows), list(groups), flags)
        except MinirftError:
            raise
        except Exception as exc:  # noqa: BLE001
            if len(rows) == 1:
                return [[Score(reward=None, error=_describe(exc)) for _ in groups[0]]]
        out = []  # one row at a time, so one bad row does not cost the others their scores
        for row, group, f in zip(rows, groups, flags):
            try:
                out += self._retrying(self._score, [row], [group], [f])
            except MinirftError:
                raise
            except Exception as exc:  # noqa: BLE001
                out.append([Score(reward=None, error=_describe(exc)) for _ in group])
        return out

    def compare(self, row: PromptRow, a: str, b: str, rationale: bool = False) -> PairVerdict:
        return self.compare_many([row], [(a, b)], rationale)[0]

    def compare_many(self, rows: Sequence[PromptRow], pairs: Sequence[tuple[str, str]],
                     rationale: bool = False) -> list[PairVerdict]:
        """Several (A, B) preferences in one batch; raises after the retries (no reward to void here)."""
        if self.mode != "preference":
            raise MinirftError("judge.compare needs judge.mode: preference")
        want = rationale and self.cfg.rationales != "none" or self.cfg.rationales == "all"
        return self._retrying(self._compare, list(rows), list(pairs), want)

    def close(self) -> None:
        self.evaluator.close()

    # ------------------------------------------------------------------------------ rubric
    def _score(self, rows, groups, flags) -> list[list[Score]]:
        if self.mode == "preference":
            return self._preference(rows, groups, flags)
        return self._rubric(rows, groups, flags)

    def _classes(self) -> list[tuple[str, ...]]:
        s = self.cfg.scale
        if s:
            return [scoring.variants(str(k)) for k in range(s.min, s.max + 1)]
        return [scoring.YES_VARIANTS, scoring.NO_VARIANTS]

    def _value(self, probs: np.ndarray) -> float:
        s = self.cfg.scale
        return scoring.expected_scale(probs, s.min, s.max) if s else float(probs[0])

    def _rubric(self, rows, groups, flags) -> list[list[Score]]:
        L, cfg = self.layout, self.cfg
        asked = [c for c in cfg.criteria if c.method == "question"]
        header = L.header()
        queries: list[Query] = []
        where: list[tuple] = []
        for i, (row, group) in enumerate(zip(rows, groups)):
            if not asked:
                break
            resps = [L.response(self._clip(cand)) for cand in group]
            empty = L.response("")
            # The response heading ("Candidate response:\n<response>\n") is the same for every candidate:
            # it goes with the row segment, so the engine decodes it once per row, not once per candidate.
            head = _shared_head(resps + [empty]) if len(resps) > 1 else ""
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
        results = self.evaluator.evaluate(queries, self._classes()) if queries else []
        crit = [[{} for _ in g] for g in groups]
        why = [[None for _ in g] for g in groups]
        why_crit: list[list[dict[str, str]]] = [[{} for _ in g] for g in groups]
        empty_p: dict[tuple[int, str], float] = {}
        for (kind, i, j, name), res in zip(where, results):
            if kind == "crit":
                crit[i][j][name] = self._value(res.probs)
            elif kind == "why" and name is not None:
                if _rationale(res.text):
                    why_crit[i][j][name] = _rationale(res.text)
            elif kind == "why":
                why[i][j] = _rationale(res.text)
            else:
                empty_p[(i, name)] = float(res.probs[0])
        attributions = self._contrast(rows, groups, crit)
        weights = {c.name: c.weight for c in cfg.criteria}
        gates = {c.name for c in cfg.criteria if c.gate}
        passes_on_no = {c.name for c in cfg.criteria if c.pass_when == "no"}
        out = []
        for i, group in enumerate(groups):
            scores = []
            for j in range(len(group)):
                ps = crit[i][j]
                if empty_p:
                    ps = {n: scoring.content_free(p, empty_p[(i, n)]) if (i, n) in empty_p else p
                          for n, p in ps.items()}
                ps = {n: 1.0 - p if n in passes_on_no else p for n, p in ps.items()}  # P(pass)
                if self.platt:
                    ps = {n: self.platt[n](p) if n in self.platt else p for n, p in ps.items()}
                per = why_crit[i][j]
                attr = attributions[i][j]
                if flags[i][j] and attr:  # contrast criteria explain themselves by their words
                    per = {**per, **{n: contrast.describe(a) for n, a in attr.items()}}
                text = "\n".join(f"{n}: {t}" for n, t in per.items()) if per else why[i][j]
                scores.append(Score(reward=scoring.rubric_reward(ps, weights, gates), criteria=ps,
                                    rationale=text, criterion_rationales=per, attributions=attr))
            out.append(scores)
        return out

    def _contrast(self, rows, groups, crit) -> list[list[dict]]:
        """Score the contrast criteria into ``crit`` as P(pass) (in place); returns their attributions."""
        diffs, attributions = self._contrast_diffs(rows, groups)
        by_name = {c.name: c for c in self.cfg.criteria}
        for i, group in enumerate(groups):
            for j in range(len(group)):
                for name, d in diffs[i][j].items():
                    c = by_name[name]
                    crit[i][j][name] = contrast.p_pass(contrast.criterion_score(d, c), c.sharpness)
        return attributions

    def _contrast_diffs(self, rows, groups) -> tuple[list[list[dict]], list[list[dict]]]:
        """Per candidate and contrast criterion: the per-token log-prob differences (empty for an empty
        candidate) and their attribution."""
        L, cfg = self.layout, self.cfg
        diffs: list[list[dict]] = [[{} for _ in g] for g in groups]
        attributions: list[list[dict]] = [[{} for _ in g] for g in groups]
        scored = [c for c in cfg.criteria if c.method == "contrast"]
        if not scored:
            return diffs, attributions
        score_tokens = getattr(self.evaluator, "score_tokens", None)
        if score_tokens is None:
            raise MinirftError(f"judge.backend: {cfg.backend} cannot score criteria with method: contrast "
                               "(it needs the log-probabilities of the response's tokens); use llama_cpp, torch or http")
        queries: list[Query] = []
        where: list[tuple] = []
        for i, (row, group) in enumerate(zip(rows, groups)):
            row_seg = L.contrast_row(row)
            for c in scored:
                conds = [L.contrast_condition(text) for text in contrast.conditions(c, row)]
                limit = c.max_response_tokens * CHARS_PER_TOKEN
                for j, cand in enumerate(group):
                    text = cand.strip()[:limit]
                    if not text:
                        continue  # nothing to score: P(pass) stays 0.5
                    for cond in conds:
                        queries.append(Query((CONTRAST_HEADER, row_seg, cond, L.contrast_response(text)),
                                             score_last=True))
                    where.append((i, j, c))
        results = score_tokens(queries) if queries else []
        for k, (i, j, c) in enumerate(where):
            pos, neg = results[2 * k], results[2 * k + 1]
            d = contrast.token_differences(pos, neg, c.max_response_tokens)
            diffs[i][j][c.name] = d
            attributions[i][j][c.name] = contrast.attribution(pos.pieces, d)
        for i, group in enumerate(groups):
            for j in range(len(group)):
                for c in scored:
                    diffs[i][j].setdefault(c.name, np.zeros(0))  # an empty candidate: s = 0
        return diffs, attributions

    def _contrast_preferred(self) -> bool:
        """Preference mode with contrast criteria (else the A/B question; question criteria are not used)."""
        return any(c.method == "contrast" for c in self.cfg.criteria)

    def _contrast_logit(self, d: dict) -> float:
        """The weighted contrast score of one candidate, in logit units: sum_c w_c * sharpness_c * s_c / sum_c w_c."""
        cs = [c for c in self.cfg.criteria if c.method == "contrast"]
        total = sum(c.weight for c in cs) or 1.0
        return sum(c.weight * c.sharpness * contrast.criterion_score(d[c.name], c) for c in cs) / total

    def _contrast_preference(self, logit_a: float, logit_b: float) -> float:
        """P(A better) = sigmoid(score_A - score_B): each response scored alone, so no position bias and
        P(A>B) + P(B>A) = 1 by construction."""
        return self._pref(1.0 / (1.0 + math.exp(-(logit_a - logit_b))))

    # ------------------------------------------------------------------------------ preference
    def _pair_segments(self, a: str, b: str, cue: str) -> tuple[str, str]:
        """Response A, and response B with ``cue``; B's heading ("Response B:\n<response>\n", the same
        for every B) goes with A's segment, so it is decoded once per A rather than once per pair."""
        L = self.layout
        ra, rb = L.response(self._clip(a), "A"), L.response(self._clip(b), "B")
        head = _shared_head([rb, L.response("", "B")])
        return ra + head, rb[len(head):] + cue

    def _pair_queries(self, header, row_seg, a: str, b: str) -> list[Query]:
        cue = self.layout.preference_cue()
        return [Query((header, row_seg, *self._pair_segments(a, b, cue))),
                Query((header, row_seg, *self._pair_segments(b, a, cue)))]

    def _preference(self, rows, groups, flags) -> list[list[Score]]:
        L, cfg = self.layout, self.cfg
        if self._contrast_preferred():
            diffs, attributions = self._contrast_diffs(rows, groups)
            out = []
            for i, group in enumerate(groups):
                logits = [self._contrast_logit(d) for d in diffs[i]]
                pairs = [(a, b) for a in range(len(group)) for b in range(a + 1, len(group))]
                rates = scoring.win_rates(len(group), pairs, [self._contrast_preference(logits[a], logits[b])
                                                              for a, b in pairs])
                out.append([Score(reward=0.5 if r is None else r, attributions=attributions[i][j],
                                  rationale="; ".join(f"{n}: {contrast.describe(a)}" for n, a in
                                                      attributions[i][j].items()) if flags[i][j] else None)
                            for j, r in enumerate(rates)])
            return out
        header = L.header()
        queries: list[Query] = []
        plan = []
        for i, (row, group) in enumerate(zip(rows, groups)):
            row_seg = L.row(row)
            seed = zlib.crc32(row.prompt.encode("utf-8"))
            pairs = scoring.choose_pairs(len(group), cfg.max_pairs_per_group, seed=seed)
            first = len(queries)
            for a, b in pairs:
                queries += self._pair_queries(header, row_seg, group[a], group[b])
            whys = []
            for j, cand in enumerate(group):
                if flags[i][j]:
                    whys.append((j, len(queries)))
                    queries.append(Query((header, row_seg, L.response(self._clip(cand)), L.rationale_cue()),
                                         generate=cfg.rationale_max_tokens, stop=RATIONALE_STOPS))
            plan.append((pairs, first, whys))
        results = self.evaluator.evaluate(queries, [scoring.variants("A"), scoring.variants("B")])
        out = []
        for (pairs, first, whys), group in zip(plan, groups):
            p_first = [self._pref(scoring.swap_average(float(results[first + 2 * k].probs[0]),
                                                       float(results[first + 2 * k + 1].probs[0])))
                       for k in range(len(pairs))]
            rates = scoring.win_rates(len(group), pairs, p_first)
            text = dict((j, _rationale(results[q].text)) for j, q in whys)
            out.append([Score(reward=0.5 if r is None else r, rationale=text.get(j))
                        for j, r in enumerate(rates)])
        return out

    def _pref(self, p: float) -> float:
        """The swap-averaged P(A better), through the fitted Platt map when there is one."""
        return self.platt["preference"](p) if "preference" in self.platt else p

    def _compare(self, rows, pairs, rationale: bool) -> list[PairVerdict]:
        L = self.layout
        if self._contrast_preferred():  # each response scored once, alone
            diffs, attributions = self._contrast_diffs(list(rows), [[a, b] for a, b in pairs])
            out = []
            for d, attr in zip(diffs, attributions):
                p = self._contrast_preference(self._contrast_logit(d[0]), self._contrast_logit(d[1]))
                why = "; ".join(f"A {n}: {contrast.describe(a)}" for n, a in attr[0].items()) if rationale else None
                out.append(PairVerdict(p_a=p, p_a_first=p, p_a_second=p, rationale=why))
            return out
        header = L.header()
        queries: list[Query] = []
        for row, (a, b) in zip(rows, pairs):
            row_seg = L.row(row)
            queries += self._pair_queries(header, row_seg, a, b)
            if rationale:
                queries.append(Query((header, row_seg, *self._pair_segments(a, b, L.rationale_cue())),
                                     generate=self.cfg.rationale_max_tokens, stop=RATIONALE_STOPS))
        res = self.evaluator.evaluate(queries, [scoring.variants("A"), scoring.variants("B")])
        step = 3 if rationale else 2
        out = []
        for k in range(len(pairs)):
            r = res[k * step:(k + 1) * step]
            p_first, p_b_first = float(r[0].probs[0]), float(r[1].probs[0])
            out.append(PairVerdict(p_a=self._pref(scoring.swap_average(p_first, p_b_first)), p_a_first=p_first,
                                   p_a_second=1.0 - p_b_first, rationale=_rationale(r[2].text) if rationale else None))
        return out


def _shared_head(texts: list[str]) -> str:
    """The lines every text starts with (whole lines, and never all of any text)."""
    import os.path

    common = os.path.commonprefix(texts)
    common = common[:common.rfind("\n") + 1]
    return common if all(len(t) > len(common) for t in texts) else ""


def _rationale(text: str) -> str | None:
    """A generated rationale, or None when the judge produced nothing but markup (the embedded judges
    often echo the prompt's ``<response>`` marker) or nothing at all."""
    words = text.strip()
    for marker in ("<response>", "</response>", "</ response>", "< response>", "Candidate response:"):
        words = words.replace(marker, "")
    return text.strip() if any(ch.isalnum() for ch in words) else None


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]
