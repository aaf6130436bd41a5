"""Labelling in the watch UI: the person's verdicts on samples, the agreement panel, the label queue.

A mixin of :class:`minirft.tui.app.WatchApp` (which holds ``self.labels``, a
:class:`minirft.labels.LabelBook`, and ``self.drift``); every verdict is appended to the label file
before the screen shows it. Rubric runs: keys 1-9 cycle criterion k (column order) through pass →
fail → not labelled, ``+`` / ``-`` say overall good / bad (again: clear). Preference runs: ``c`` opens
the pair view of two samples of one group. ``z`` undoes the last label, ``u`` goes to the next most
useful unlabelled sample.
"""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding

from minirft import labels as lbl
from minirft.errors import MinirftError
from minirft.tui.run_state import Sample
from minirft.tui.screens.detail import SampleScreen
from minirft.tui.screens.pair import PairScreen
from minirft.tui.widgets.agreement import AgreementPanel
from minirft.tui.widgets.events import EventsPane
from minirft.tui.widgets.samples import FILTERS, SamplesTable

LABEL_BINDINGS = [
    *[Binding(str(k), f"label_criterion({k})", f"Criterion {k}", show=False) for k in range(1, 10)],
    Binding("plus", "label_overall(True)", "Good", show=False),
    Binding("minus", "label_overall(False)", "Bad", show=False),
    Binding("z", "undo_label", "Undo label", show=False),
    Binding("u", "label_queue", "Label next", show=False),  # in ? help; the footer stays as it was
    Binding("c", "pair_view", "Pair", show=False),
]


def verdict_mark(v: lbl.Verdict, criteria: list[str]) -> Text:
    """✓ / ✗ / · per criterion (column order), then + or − for an overall verdict."""
    t = Text()
    for c in criteria:
        ok = v.labels.get(c)
        t.append("·" if ok is None else "✓" if ok else "✗", style="dim" if ok is None else "green" if ok else "red")
    if v.overall is not None:
        t.append(" +" if v.overall else " −", style="bold green" if v.overall else "bold red")
    return t


class Labelling:
    """The label actions of the watch app (see the module docstring)."""

    @property
    def judge_mode(self) -> str:
        judge = ((self.state.run_start or {}).get("recipe") or {}).get("judge") or {}
        return str(judge.get("mode") or "rubric")

    def _selected(self) -> Sample | None:
        if isinstance(self.screen, SampleScreen):
            return self.screen.sample
        table = self._q(SamplesTable)
        if table.display and 0 <= table.cursor_row < len(table.shown):
            return table.shown[table.cursor_row]
        return None

    def _label_id(self, s: Sample) -> str:
        return lbl.sample_id(s.step, s.group, s.index)

    def _marks(self, rows: list[Sample]) -> dict[tuple, Text] | None:
        if not len(self.labels):
            return None  # no labels yet: no column (the table looks as it always did)
        criteria = self.state.criteria_names(self.view_step)
        paired = self.labels.labelled_samples()
        out = {}
        for s in rows:
            v = self.labels.verdict(self._label_id(s), s.completion)
            if v:
                out[(s.step, s.group, s.index)] = verdict_mark(v, criteria)
            elif self._label_id(s) in paired:
                out[(s.step, s.group, s.index)] = Text("pair", style="bold green")
        return out

    def verdict_text(self, s: Sample) -> Text | None:
        v = self.labels.verdict(self._label_id(s), s.completion)
        if not v:
            return None
        t = Text("✎ you: ", style="bold green")
        parts = [f"{name} {'pass' if ok else 'fail'}" for name, ok in v.labels.items()]
        if v.overall is not None:
            parts.append("overall " + ("good" if v.overall else "bad"))
        t.append(" · ".join(parts))
        return t

    def _rubric_only(self) -> bool:
        if self.judge_mode == "preference":
            self.notify("this run's judge compares pairs: press c for the pair view of two samples", timeout=3)
            return False
        return True

    def action_label_criterion(self, k: int) -> None:
        """Criterion k (its column order): not labelled → pass → fail → not labelled."""
        s = self._selected()
        if s is None or not self._rubric_only():
            return
        names = list(s.criteria) or self.state.criteria_names(s.step)
        if not 1 <= k <= len(names):
            self.notify(f"no criterion {k} (this run has {len(names)})", timeout=2)
            return
        v = self.labels.verdict(self._label_id(s), s.completion)
        name, labels = names[k - 1], dict(v.labels)
        if name not in labels:
            labels[name] = True
        elif labels[name]:
            labels[name] = False
        else:
            del labels[name]
        self._write(lbl.rubric_row(s, labels, v.overall), s)

    def action_label_overall(self, good: bool) -> None:
        s = self._selected()
        if s is None or not self._rubric_only():
            return
        v = self.labels.verdict(self._label_id(s), s.completion)
        self._write(lbl.rubric_row(s, v.labels, None if v.overall is good else good), s)

    def record_pair(self, a: Sample, b: Sample, winner: str) -> None:
        """A preference verdict from the pair view: ``winner`` "a" or "b" is the better completion."""
        self._write(lbl.preference_row(a, b, winner), a)

    def action_undo_label(self) -> None:
        try:
            row = self.labels.undo()
        except (OSError, MinirftError) as exc:
            self.notify(f"could not write {self.labels.path}: {exc}", severity="error", timeout=8)
            return
        if row is None:
            self.notify("no label to undo", timeout=2)
            return
        self.notify(f"undid your label on {row['id']}", timeout=2)
        self._after_label()

    def label_extra(self, sample: Sample) -> dict:
        """Fields added to a label line (``minirft label``: the source row's prompt / messages / reference)."""
        return {}

    def _write(self, row: dict, s: Sample) -> None:
        extra = self.label_extra(s)
        row = {**row, **extra}
        if "messages" in extra and "prompt" not in extra:
            row.pop("prompt", None)  # a chat row: `minirft calibrate` takes exactly one of the two
        try:
            self.labels.add(row)
        except OSError as exc:  # a full disk or a read-only run dir: say so, keep the UI alive
            self.notify(f"could not write {self.labels.path}: {exc}", severity="error", timeout=6)
            return
        except MinirftError as exc:  # the label file is a link: nothing is written through it
            self.notify(str(exc), severity="error", timeout=8)
            return
        self._after_label()

    def _after_label(self) -> None:
        self._draw_table()
        self._update_agreement()
        if isinstance(self.screen, SampleScreen):
            self.screen.show_verdict(self.verdict_text(self.screen.sample))
        alarm = self.drift.check(self.labels.standing)
        if alarm:
            self._q(EventsPane).add([{"type": "event", "kind": "drift", "message": alarm,
                                             "step": self.state.latest_step or 0}])

    def _update_agreement(self) -> None:
        self._q("#agreement", AgreementPanel).show(lbl.agreement(self.labels.standing), len(self.labels),
                                                          self.labels.path.name)

    def action_label_queue(self) -> None:
        """Go to the next most useful unlabelled sample (see :func:`minirft.labels.label_queue`)."""
        if len(self.screen_stack) > 1:
            return
        pool = [s for step in self.state.steps()[-100:] for s in self.state.samples_for(step)]
        queue = lbl.label_queue(pool, self.labels.labelled_samples())
        if not queue:
            self.notify("the label queue is empty: every candidate sample is labelled", timeout=3)
            return
        item = queue[0]
        s = item.sample
        if s.step != self.view_step:
            self._go(s.step)
        table = self._q(SamplesTable)
        if s not in table.shown:  # hidden by the filter or the search: show everything
            self.filter_mode = FILTERS[0]
            self.action_clear_search()
        for i, row in enumerate(table.shown):
            if row is s:
                table.move_cursor(row=i, animate=False)
        self.notify(f"{s.group}.{s.index} at step {s.step}: {item.reason} · {len(queue) - 1} more queued", timeout=4)

    def action_pair_view(self) -> None:
        s = self._selected()
        if s is None or isinstance(self.screen, PairScreen):
            return
        if self.judge_mode != "preference":
            self.notify("the pair view is for preference judges; label criteria with 1-9, overall with + / -",
                        timeout=3)
            return
        mates = [o for o in self.state.samples_for(s.step) if o.group == s.group and o.index != s.index]
        if not mates:
            self.notify("only one sample of this group was logged: raise logging.samples_per_step "
                        "(to prompts_per_step × group_size) to label pairs", timeout=5)
            return
        if s.reward is not None:  # closest reward first: where the judge was least sure which is better
            mates.sort(key=lambda o: abs((o.reward if o.reward is not None else 9.0) - s.reward))
        if isinstance(self.screen, SampleScreen):
            self.screen.dismiss()
        self.push_screen(PairScreen(s, mates))

