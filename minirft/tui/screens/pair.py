"""Two samples of one group side by side, for a preference verdict: which completion is better?

The app records the verdict (``WatchApp.record_pair``); this screen only shows the pair and what
the person and the judge said about it. ``tab`` swaps in the group's next sample as B.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from minirft.labels import pair_id
from minirft.tui.fmt import num
from minirft.tui.run_state import Sample


class PairScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("a", "choose('a')", "A is better"),
        Binding("b", "choose('b')", "B is better"),
        Binding("tab", "next_b", "Other B"),
        Binding("z", "undo", "Undo"),
        Binding("escape,q", "dismiss", "Close"),
    ]

    def __init__(self, a: Sample, others: list[Sample]) -> None:
        super().__init__()
        self.a = a
        self.others = others
        self.k = 0

    @property
    def b(self) -> Sample:
        return self.others[self.k]

    @property
    def label_id(self) -> str:
        return pair_id(self.a.step, self.a.group, self.a.index, self.b.index)

    def compose(self) -> ComposeResult:
        with Vertical(id="pair"):
            yield Static("", id="pair-title")
            yield Static(Text(self.a.prompt), id="pair-prompt")
            with Horizontal(id="pair-sides"):
                with VerticalScroll(classes="pair-side"):
                    yield Static("", id="pair-a")
                with VerticalScroll(classes="pair-side"):
                    yield Static("", id="pair-b")
            yield Static("", id="pair-verdict")
            yield Static(Text("a: A is better · b: B is better · tab: other B · z: undo · esc: close", style="dim"))

    def on_mount(self) -> None:
        self.refresh_pair()

    def _side(self, name: str, s: Sample) -> Text:
        t = Text()
        t.append(f"{name}  ", style="bold reverse")
        t.append(f" sample {s.group}.{s.index}  judge reward {num(s.reward)}\n", style="bold")
        t.append(s.completion)
        if s.rationale:
            t.append("\n\njudge: ", style="bold")
            t.append(s.rationale, style="italic")
        return t

    def refresh_pair(self) -> None:
        a, b = self.a, self.b
        self.query_one("#pair-title", Static).update(Text(
            f"step {a.step} · group {a.group} · pair {self.k + 1}/{len(self.others)}: which completion is better?",
            style="bold"))
        self.query_one("#pair-a", Static).update(self._side("A", a))
        self.query_one("#pair-b", Static).update(self._side("B", b))
        human = self.app.labels.preference(self.label_id)
        t = Text()
        if human is None:
            t.append("not labelled yet", style="dim")
        else:
            # a pair is stored by sample indices; say it in terms of what is shown as A / B now
            chosen = self.app.labels.by_id[self.label_id]
            better_index = chosen["a"] if human == "a" else chosen["b"]
            shown = "A" if better_index == a.index else "B"
            t.append(f"✎ you: {shown} is better", style="bold green")
        if a.reward is not None and b.reward is not None and a.reward != b.reward:
            t.append(f"   judge: {'A' if a.reward > b.reward else 'B'} (higher reward)", style="dim")
        self.query_one("#pair-verdict", Static).update(t)

    def action_choose(self, winner: str) -> None:
        self.app.record_pair(self.a, self.b, winner)
        self.refresh_pair()

    def action_next_b(self) -> None:
        self.k = (self.k + 1) % len(self.others)
        self.refresh_pair()

    def action_undo(self) -> None:
        self.app.action_undo_label()
        self.refresh_pair()
