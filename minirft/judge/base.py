"""The judge's shared types: what a backend answers (:class:`Evaluator`: label probabilities per
:class:`Query`, or the log-probabilities of a query's last segment) and what the judge gives the
trainer and the CLI (:class:`Judge`: scores per group, preferences per pair).

A judge scores *groups*: the G completions sampled for one prompt row. In rubric mode each completion
gets its own score; in preference mode a completion's reward is its mean win probability against the
other members of its group.

Both protocols come with a base class (:class:`EvaluatorBase`, :class:`JudgeBase`) whose defaults
say what an implementation that lacks a capability does (no counters, no load step, no mid-run
calibration), so callers use the protocol as it stands and never probe for a method.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from minirft.data import PromptRow
from minirft.errors import MinirftError

CHARS_PER_TOKEN = 4  # candidates are clipped to judge.max_candidate_tokens × this many characters


@dataclass
class Query:
    """One question to a backend: text segments (shared-first) and what to read at the end."""

    segments: tuple[str, ...]  # segments[0] is the header; the last one ends with the verdict cue
    generate: int = 0  # greedy-generate up to this many tokens after the cue (rationales)
    stop: tuple[str, ...] = ("\n",)
    # Contrast scoring: read log P of every token of the last segment given all before it, instead of
    # label probabilities after it.
    score_last: bool = False


class Evaluation:
    """What a backend returns per query."""

    __slots__ = ("probs", "text")

    def __init__(self, probs: np.ndarray | None, text: str = "") -> None:
        self.probs = probs
        self.text = text


@dataclass
class TokenScores:
    """What a backend returns per ``score_last`` query: the log-probability of each token of the last
    segment given everything before it, and each token's text (for attributions)."""

    logprobs: np.ndarray
    pieces: tuple[str, ...]


class Evaluator(Protocol):
    """A backend: llama_cpp, torch or http (:mod:`minirft.judge.backends`), or the cache around one."""

    def evaluate(self, queries: Sequence[Query], classes: Sequence[tuple[str, ...]]) -> list[Evaluation]:
        """Per query: probabilities over ``classes`` (each a tuple of surface forms) and generated text."""
        ...

    def score_tokens(self, queries: Sequence[Query]) -> list[TokenScores]:
        """Per ``score_last`` query: log P of each token of its last segment (contrast criteria)."""
        ...

    def load(self) -> None:
        """Load the model now rather than on the first call."""
        ...

    def take_metrics(self) -> dict[str, float]:
        """Counters since the last call (``judge/…`` step metrics: tokens, requests, cache hits…)."""
        ...

    def totals(self) -> dict[str, int]:
        """Running totals since the start (the judge service's health: cache hits and misses)."""
        ...

    def close(self) -> None: ...


class _Quiet:
    """What both base classes default to: nothing to load, no counters, nothing to close."""

    def load(self) -> None:
        return None

    def take_metrics(self) -> dict[str, float]:
        return {}

    def totals(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        return None


class EvaluatorBase(_Quiet):
    """Defaults for :class:`Evaluator`: no contrast scoring, nothing to load, no counters."""

    def score_tokens(self, queries: Sequence[Query]) -> list[TokenScores]:
        raise MinirftError(f"judge backend {type(self).__name__} cannot score criteria with method: contrast or direct "
                           "(it needs the log-probabilities of the response's tokens); use llama_cpp, torch or http")


@dataclass
class Score:
    """The judge's verdict on one completion."""

    reward: float | None  # combined judge reward in [0, 1]; None when judging failed (excluded from training)
    # rubric: P(pass) per criterion name, as the criterion's method computes it (question: P(yes), or
    # P(no) with pass_when: no, after content-free calibration; contrast: sigmoid(sharpness · s)), then
    # through the criterion's Platt map when judge.platt has one
    criteria: dict[str, float] = field(default_factory=dict)
    rationale: str | None = None  # a short explanation from the judge, when asked for
    error: str | None = None  # why reward is None
    # rubric with judge.rationale_per_criterion: a rationale per criterion name (`rationale` joins them)
    criterion_rationales: dict[str, str] = field(default_factory=dict)
    # contrast criteria: the response tokens that raised / lowered the score most,
    # {criterion: {"up": [[token, diff], …], "down": […]}}
    attributions: dict[str, dict] = field(default_factory=dict)
    # judge.panel: each member's own verdict, {member: {"reward": r, "criteria": {name: p}}}
    panel: dict[str, dict] = field(default_factory=dict)


@dataclass
class PairVerdict:
    """Preference between two responses to the same prompt, judged in both orders."""

    # question (A/B): p_a = (p_a_first + p_a_second) / 2, swap-averaged; contrast: each response scored
    # alone, p_a = sigmoid(score_A - score_B) = p_a_first = p_a_second. P(B is better) = 1 - p_a.
    p_a: float
    p_a_first: float  # P(A better) with A shown first
    p_a_second: float  # P(A better) with A shown second, i.e. 1 - P(B better | B shown first)
    rationale: str | None = None


class CalibrationRefused(Exception):
    """Raised by :meth:`Judge.use_calibration` when a judge cannot take new Platt maps mid-run."""


class Judge(Protocol):
    """What the trainer, the CLI, the judge service and the integrations call."""

    mode: str  # "rubric" or "preference"

    def load(self) -> None:
        """Load the model(s) now instead of on the first call (the trainer does, before its run starts)."""
        ...

    def score_groups(
        self,
        rows: Sequence[PromptRow],
        groups: Sequence[Sequence[str]],
        rationales: Sequence[Sequence[bool]] | bool = False,
    ) -> list[list[Score]]:
        """Score ``groups[i]`` (completions of ``rows[i]``); ``rationales`` says which get a rationale."""
        ...

    def compare(self, row: PromptRow, a: str, b: str, rationale: bool = False) -> PairVerdict:
        """Preference between two responses."""
        ...

    def compare_many(self, rows: Sequence[PromptRow], pairs: Sequence[tuple[str, str]],
                     rationale: bool = False) -> list[PairVerdict]:
        """Several (A, B) preferences, judged in one batch."""
        ...

    def use_calibration(self, platt: dict) -> None:
        """Replace the Platt maps between steps (raises :class:`CalibrationRefused` when it cannot)."""
        ...

    @property
    def clipped(self) -> int:
        """How many distinct responses were cut to ``clip_chars`` characters so far."""
        ...

    @property
    def clip_chars(self) -> int:
        """Responses longer than this many characters are cut before judging."""
        ...

    def take_metrics(self) -> dict[str, float]:
        """The backend's counters since the last call (logged per step)."""
        ...

    def totals(self) -> dict[str, int]:
        """Running totals since the start (cache hits and misses under judge.cache)."""
        ...

    def close(self) -> None: ...


class JudgeBase(_Quiet):
    """Defaults for :class:`Judge`: nothing to load, no clipping, no counters, no mid-run calibration;
    ``compare`` through ``compare_many`` and ``compare_many`` one pair at a time through ``compare``
    (an implementation defines at least one of the two, and ``score_groups``)."""

    mode = "rubric"
    clipped = 0
    clip_chars = 0

    def compare(self, row: PromptRow, a: str, b: str, rationale: bool = False) -> PairVerdict:
        return self.compare_many([row], [(a, b)], rationale)[0]

    def compare_many(self, rows: Sequence[PromptRow], pairs: Sequence[tuple[str, str]],
                     rationale: bool = False) -> list[PairVerdict]:
        return [self.compare(row, a, b, rationale) for row, (a, b) in zip(rows, pairs)]

    def use_calibration(self, platt: dict) -> None:
        raise CalibrationRefused(f"{type(self).__name__} cannot take a new calibration")
