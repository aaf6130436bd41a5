"""Number and text formatting shared by the app and ``--plain`` output, so both print the same."""

from __future__ import annotations

from typing import Any


def num(v: Any, digits: int = 3) -> str:
    """A metric for display: fixed digits, ``—`` when missing or not a number."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
        return "—"
    if v != 0 and abs(v) < 10 ** -digits:
        return f"{v:.1e}"
    return f"{v:.{digits}f}"


def duration(seconds: float | None) -> str:
    """``42s``, ``6m05s``, ``2h03m``; ``—`` when unknown."""
    if seconds is None:
        return "—"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def one_line(text: str | None, width: int) -> str:
    """Collapse whitespace to one line and cut to ``width`` with an ellipsis."""
    t = " ".join((text or "").split())
    return t if len(t) <= width else t[: max(0, width - 1)] + "…"


def judge_phases(m: dict) -> str | None:
    """``judge 8.2s: score 6.1 · why 1.5 · other 0.6`` from a step's metrics (judge_s and the llama_cpp
    backend's judge/score_s, judge/rationale_s, judge/overhead_s); None when the step has no breakdown."""
    if not isinstance(m.get("judge/score_s"), (int, float)):
        return None
    parts = [f"score {num(m.get('judge/score_s'), 1)}", f"why {num(m.get('judge/rationale_s'), 1)}"]
    if isinstance(m.get("judge/overhead_s"), (int, float)):
        parts.append(f"other {num(m.get('judge/overhead_s'), 1)}")
    return f"judge {num(m.get('judge_s'), 1)}s: " + " · ".join(parts)
