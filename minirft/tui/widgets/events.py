"""The events pane: checkpoints, NaN skips, judge errors, warnings, resumes and the run's end."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import RichLog

KIND_STYLE = {
    "checkpoint": "cyan", "nan_skip": "bold yellow", "judge_error": "bold red", "warning": "yellow",
    "resume": "magenta", "run_finished": "bold cyan", "run_stopped": "bold yellow", "run_failed": "bold red",
    "crash": "bold red", "drift": "bold yellow", "calibration": "bold cyan",
}


def event_text(rec: dict) -> Text:
    kind = str(rec.get("kind", "event"))
    t = Text()
    step = rec.get("step")
    # the trainer logs a failed run's run_end at step -1: show no step rather than a wrong one
    t.append(f"{step:>5} " if isinstance(step, int) and step >= 0 else "    — ", style="dim")
    t.append(kind, style=KIND_STYLE.get(kind, "bold"))
    t.append(" " + str(rec.get("message", "")))
    return t


class EventsPane(RichLog):
    """Append-only, like the log it mirrors."""

    def __init__(self, **kwargs) -> None:
        super().__init__(max_lines=2000, wrap=True, markup=False, min_width=20, **kwargs)
        self.records: list[dict] = []  # what was written, unwrapped (tests read it)

    def add(self, records: list[dict]) -> None:
        if not records:
            return
        # One write per batch, not per line: opening a long run brings hundreds of checkpoints at once.
        self.write(Text("\n").join(event_text(rec) for rec in records))
        self.records.extend(records)
        self.border_subtitle = f"{len(self.records)}"
