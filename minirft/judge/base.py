"""The judge's shared types: what a backend answers (:class:`Evaluator`: label probabilities per
:class:`Query`) and what the judge gives the trainer and the CLI (:class:`Judge`: scores per group).

A judge scores *groups*: the G completions sampled for one prompt row. In rubric mode each completion
gets its own score; in preference mode a completion's reward is its mean swap-averaged win
probability against the other members of its group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from minirft.data import PromptRow


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
    """A backend: llama_cpp, torch or http (minirft.judge.backends)."""

    def evaluate(self, queries: Sequence[Query], classes: Sequence[tuple[str, ...]]) -> list[Evaluation]:
        """Per query: probabilities over ``classes`` (each a tuple of surface forms) and generated text."""
        ...

    # Backends that can (llama_cpp, torch) also have
    #   score_tokens(queries) -> list[TokenScores]   (every query with score_last=True)
    # for contrast criteria; the judge checks for it and names the method when it is missing.

    def close(self) -> None: ...


@dataclass
class Score:
    """The judge's verdict on one completion."""

    reward: float | None  # combined judge reward in [0, 1]; None when judging failed (excluded from training)
    criteria: dict[str, float] = field(default_factory=dict)  # rubric: P(yes) per criterion name
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

    p_a: float  # swap-averaged P(A is better) = (p_a_first + p_a_second) / 2; P(B is better) = 1 - p_a
    p_a_first: float  # P(A better) with A shown first
    p_a_second: float  # P(A better) with A shown second, i.e. 1 - P(B better | B shown first)
    rationale: str | None = None


class Judge(Protocol):
    mode: str  # "rubric" or "preference"

    def score_groups(
        self,
        rows: Sequence[PromptRow],
        groups: Sequence[Sequence[str]],
        rationales: Sequence[Sequence[bool]] | bool = False,
    ) -> list[list[Score]]:
        """Score ``groups[i]`` (completions of ``rows[i]``); ``rationales`` says which get a rationale."""
        ...

    def compare(self, row: PromptRow, a: str, b: str, rationale: bool = False) -> PairVerdict:
        """Preference between two responses (both orders, averaged)."""
        ...

    def compare_many(self, rows: Sequence[PromptRow], pairs: Sequence[tuple[str, str]],
                     rationale: bool = False) -> list[PairVerdict]:
        """Several (A, B) preferences, judged in one batch."""
        ...

    def close(self) -> None: ...
