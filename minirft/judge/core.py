"""The judge over one backend: :class:`GroupJudge`.

What it adds to :mod:`minirft.judge.modes` (rubric and preference, built from the criterion methods
in :mod:`minirft.judge.methods`): the one retry layer (``judge.retries`` with a short backoff, then
one row at a time so one bad row does not cost the others their scores), clipping of long candidates
(``judge.max_candidate_tokens``), and the Platt maps (``judge.platt``, replaced mid-run by
:meth:`GroupJudge.use_calibration`). A step's scoring is one call into the mode, which makes one
batched backend call per criterion method.
"""

from __future__ import annotations

import time
from typing import Sequence

from minirft.data import PromptRow
from minirft.errors import MinirftError
from minirft.judge import modes
from minirft.judge.base import CHARS_PER_TOKEN, Evaluator, JudgeBase, PairVerdict, Score
from minirft.judge.prompts import Layout
from minirft.recipe import JudgeConfig

BACKOFF_S = 0.25  # wait before retry k (k = 1, 2, …): BACKOFF_S · 2^(k-1) seconds


class GroupJudge(JudgeBase):
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

    # ------------------------------------------------------------------------------ clipping
    def _clip(self, text: str) -> str:
        limit = self.clip_chars
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

    # ------------------------------------------------------------------------------ backend
    def load(self) -> None:
        """Load the model now instead of on the first call (the trainer does, before its run starts)."""
        self.evaluator.load()

    def take_metrics(self) -> dict[str, float]:
        return self.evaluator.take_metrics()

    def totals(self) -> dict[str, int]:
        return self.evaluator.totals()

    def close(self) -> None:
        self.evaluator.close()

    # ------------------------------------------------------------------------------ retries
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

    def _score(self, rows, groups, flags) -> list[list[Score]]:
        mode = modes.preference if self.mode == "preference" else modes.rubric
        return mode(self.cfg, self.layout, self.evaluator, rows, groups, flags, self._clip, self.platt)

    def _compare(self, rows, pairs, rationale: bool) -> list[PairVerdict]:
        return modes.compare(self.cfg, self.layout, self.evaluator, rows, pairs, rationale, self._clip, self.platt)

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

    def compare_many(self, rows: Sequence[PromptRow], pairs: Sequence[tuple[str, str]],
                     rationale: bool = False) -> list[PairVerdict]:
        """Several (A, B) preferences in one batch; raises after the retries (no reward to void here)."""
        if self.mode != "preference":
            raise MinirftError("judge.compare needs judge.mode: preference")
        want = rationale and self.cfg.rationales != "none" or self.cfg.rationales == "all"
        return self._retrying(self._compare, list(rows), list(pairs), want)


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]
