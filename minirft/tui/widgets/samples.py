"""The current step's samples as a table: scores first (always visible), then the texts.

Sorting, filtering and search only choose and order rows; the values shown are the log's, rounded
for display. The row key is ``"<group>.<index>"`` so the detail screen finds the exact sample.
"""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable

from minirft.tui.fmt import num, one_line
from minirft.tui.run_state import Sample

SORTS = ("log order", "reward ↓", "reward ↑")
FILTERS = ("all", "zero-variance groups", "judge errors", "with signal")


def select_rows(rows: list[Sample], sort: str, filt: str, query: str) -> list[Sample]:
    """The rows the table shows, in order: filter, then search, then sort (stable)."""
    if filt == "zero-variance groups":
        rows = [s for s in rows if s.zero_variance]
    elif filt == "judge errors":
        rows = [s for s in rows if s.judge_error]
    elif filt == "with signal":
        rows = [s for s in rows if not s.zero_variance]
    if query:
        rows = [s for s in rows if s.matches(query)]
    if sort != "log order":
        missing = float("-inf") if sort == "reward ↓" else float("inf")
        rows = sorted(rows, key=lambda s: missing if s.reward is None else s.reward, reverse=sort == "reward ↓")
    return rows


def _score(v: float | None, digits: int = 2) -> Text:
    if v is None:
        return Text("—", style="dim", justify="right")
    style = "green" if v >= 0.7 else "red" if v < 0.3 else "yellow"
    return Text(num(v, digits), style=style, justify="right")


class SamplesTable(DataTable):
    """Arrow left/right move between steps here (the table has no use for them in row mode)."""

    BINDINGS = [
        Binding("left", "app.prev_step", "Prev step", show=False),
        Binding("right", "app.next_step", "Next step", show=False),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.shown: list[Sample] = []

    def show(self, rows: list[Sample], criteria: list[str], marks: dict[tuple, Text] | None = None) -> None:
        """Replace the table's content; keep the cursor on the same sample when it is still shown.

        ``marks`` (once the run has human labels): (step, group, index) -> the person's verdict, shown
        in a ``you`` column, with ``✎`` after the row's g.i."""
        keep = None
        if self.shown and 0 <= self.cursor_row < len(self.shown):
            cur = self.shown[self.cursor_row]
            keep = (cur.step, cur.group, cur.index)
        self.clear(columns=True)
        self.add_column("g.i", key="gi")
        self.add_column("reward", key="reward")
        self.add_column("adv", key="adv")
        for c in criteria:
            self.add_column(one_line(c, 10), key=f"c:{c}")
        if marks is not None:
            self.add_column("you", key="you")
        self.add_column("completion", key="completion", width=36)
        self.add_column("judge rationale", key="rationale", width=60)
        self.add_column("prompt", key="prompt", width=40)
        for s in rows:
            gi = Text(f"{s.group}.{s.index}")
            if s.zero_variance:
                gi.append(" ≡", style="dim")
            mark = marks.get((s.step, s.group, s.index)) if marks is not None else None
            if mark is not None:
                gi.append(" ✎", style="bold green")
            if s.judge_error:
                rationale = Text("⚠ " + one_line(s.judge_error, 58), style="bold red")
            else:
                rationale = Text(one_line(s.rationale or "—", 60))
            self.add_row(
                gi, _score(s.reward, 3),
                Text(num(s.advantage, 2), justify="right",
                     style="green" if (s.advantage or 0) > 0 else "red" if (s.advantage or 0) < 0 else "dim"),
                *[_score(s.criteria.get(c)) for c in criteria],
                *([mark if mark is not None else Text("")] if marks is not None else []),
                one_line(s.completion, 36), rationale, one_line(s.prompt, 40),
                key=f"{s.group}.{s.index}",
            )
        self.shown = list(rows)
        if keep is not None:
            for i, s in enumerate(rows):
                if (s.step, s.group, s.index) == keep:
                    self.move_cursor(row=i, animate=False)
                    break
