"""The judge protocol: what every backend (llama_cpp, http, torch) gives the trainer and the CLI.

A judge scores *groups*: the G completions sampled for one prompt row. In rubric mode each completion
gets its own score; in preference mode a completion's reward is its mean swap-averaged win
probability against the other members of its group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

from minirft.data import PromptRow


@dataclass
class Score:
    """The judge's verdict on one completion."""

    reward: float | None  # combined judge reward in [0, 1]; None when judging failed (excluded from training)
    criteria: dict[str, float] = field(default_factory=dict)  # rubric: P(yes) per criterion name
    rationale: str | None = None  # a short explanation from the judge, when asked for
    error: str | None = None  # why reward is None
    # rubric with judge.rationale_per_criterion: a rationale per criterion name (`rationale` joins them)
    criterion_rationales: dict[str, str] = field(default_factory=dict)


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

    def close(self) -> None: ...
