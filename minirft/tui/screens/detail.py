"""One sample in full: prompt, completion, every score, the judge's rationale or error."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from minirft.tui.fmt import num
from minirft.tui.run_state import Sample


def bar(p: float | None, width: int = 20) -> str:
    if p is None:
        return ""
    n = round(max(0.0, min(1.0, p)) * width)
    return "█" * n + "░" * (width - n)


UP, DOWN = "bold black on green", "bold white on red"


def highlighted(completion: str, attributions: dict[str, dict]) -> Text:
    """The completion with the tokens that raised a contrast criterion's score in green and the ones that
    lowered it in red (each token's first occurrence; a person sees which words earned the reward)."""
    text = Text(completion)
    for attr in attributions.values():
        for style, key in ((UP, "up"), (DOWN, "down")):
            for item in attr.get(key) or []:
                token = str(item[0]).strip() if item else ""
                at = completion.find(token) if token else -1
                if at >= 0:
                    text.stylize(style, at, at + len(token))
    return text


def panel_table(s: Sample) -> Table:
    t = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
    names = sorted({c for v in s.panel.values() for c in (v.get("criteria") or {})})
    t.add_column("judge")
    t.add_column("reward", justify="right")
    for n in names:
        t.add_column(n, justify="right")
    for member, v in s.panel.items():
        crit = v.get("criteria") or {}
        t.add_row(member, num(v.get("reward")), *(num(crit.get(n)) for n in names))
    return t


def scores_table(s: Sample) -> Table:
    t = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
    t.add_column("score")
    t.add_column("value", justify="right")
    t.add_column("")
    t.add_row("reward", num(s.reward), bar(s.reward))
    t.add_row("advantage", num(s.advantage), "")
    for k, v in s.rewards.items():
        t.add_row(f"rewards/{k}", num(v), bar(v))
    for k, v in s.criteria.items():
        t.add_row(f"P(pass) {k}", num(v), bar(v))
    return t


class SampleScreen(ModalScreen[None]):
    # the app's label keys (minirft.tui.labelling), which a modal screen does not pass on
    BINDINGS = [Binding("escape,q,enter", "dismiss", "Close"),
                *[Binding(str(k), f"app.label_criterion({k})", show=False) for k in range(1, 10)],
                Binding("plus", "app.label_overall(True)", show=False),
                Binding("minus", "app.label_overall(False)", show=False),
                Binding("z", "app.undo_label", show=False), Binding("c", "app.pair_view", show=False)]

    def __init__(self, sample: Sample, verdict: Text | None = None) -> None:
        super().__init__()
        self.sample = sample
        self.verdict = verdict

    def on_mount(self) -> None:
        self.show_verdict(self.verdict)

    def show_verdict(self, verdict: Text | None) -> None:
        """The person's label on this sample (hidden while there is none)."""
        self.verdict = verdict
        box = self.query_one("#detail-verdict", Static)
        box.update(verdict or "")
        box.display = bool(verdict)

    def compose(self) -> ComposeResult:
        s = self.sample
        with VerticalScroll(id="detail"):
            flags = " · zero-variance group (no learning signal)" if s.zero_variance else ""
            yield Static(Text(f"step {s.step} · group {s.group} · sample {s.index}{flags}", style="bold"),
                         classes="detail-title")
            yield Static("", id="detail-verdict")
            yield Static("Prompt", classes="detail-label")
            yield Static(Text(s.prompt), id="detail-prompt")
            yield Static("Completion", classes="detail-label")
            yield Static(highlighted(s.completion, s.attributions), id="detail-completion")
            yield Static("Scores", classes="detail-label")
            yield Static(scores_table(s), id="detail-scores")
            if s.panel:
                yield Static("Judges of the panel", classes="detail-label")
                yield Static(panel_table(s), id="detail-panel")
            yield Static("Judge rationale", classes="detail-label")
            if s.judge_error:
                yield Static(Text("judge error: " + s.judge_error, style="bold red"), id="detail-rationale")
            else:
                yield Static(Text(s.rationale or "(no rationale logged for this sample)"), id="detail-rationale")
            yield Static(Text("esc / q / enter: close", style="dim"))
