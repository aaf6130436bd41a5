"""Criterion methods: how a criterion turns (rows, candidates) into judge queries, and the backend's
results into P(pass) per candidate, with a rationale or an attribution.

- :mod:`~minirft.judge.methods.question` asks a yes/no question and reads P(yes) from the label
  tokens' probabilities at the verdict position (no sampling, no parsing); it also asks the A/B
  question of preference mode and generates rationales.
- :mod:`~minirft.judge.methods.contrast` compares the response's token log-probabilities under a
  positive and a negative condition.
- :mod:`~minirft.judge.methods.direct` compares the two conditions' log-probabilities after the
  response (calibrated against an empty reply).

:mod:`minirft.judge.modes` combines the methods' P(pass) into a rubric reward or pairwise win rates.
"""

from __future__ import annotations

from minirft.recipe import Criterion


def passes(c: Criterion, p: float) -> float:
    """P(pass) from the probability a method measured: ``p``, or ``1 - p`` for ``pass_when: no``."""
    return 1.0 - p if c.pass_when == "no" else p
