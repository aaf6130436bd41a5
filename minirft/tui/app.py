"""The watch app, and :func:`watch` — the entry point of ``minirft watch`` and ``minirft train --tui``.

State flows one way: the tail worker buffers records → :class:`LogGrew` (coalesced) → the app folds
them into its :class:`RunState` → widgets redraw from it. Reactive attributes hold what the user
chose (step, follow, sort, filter, search); their ``watch_`` methods redraw the parts they affect.

The app never signals the trainer, with one exception the user asks for: when ``watch`` was given
the training child process, quitting offers to stop it. The one file it writes is the person's own,
``RUN_DIR/labels.jsonl`` (human verdicts on samples, see :mod:`minirft.labels`), never the trainer's log.

Timers, the tail worker's messages and worker-state changes can arrive while a modal screen (detail,
help, quit) is on top or while the app is closing and its widgets are being removed (the 1 s tick then
found no header: NoMatches, a test failing by chance). They therefore query the run view's own screen
(``_q``, not whatever screen ``App.query_one`` picks) and do nothing once the app is exiting (``_live``).
"""

from __future__ import annotations

import bisect
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, TextIO

from rich.text import Text
from textual import events, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, Input, Static
from textual.worker import Worker, WorkerState, get_current_worker

from minirft import labels as lbl
from minirft.tui.fmt import one_line
from minirft.tui.labelling import LABEL_BINDINGS, Labelling
from minirft.tui.run_state import RunState, Sample
from minirft.tui.screens.detail import SampleScreen
from minirft.tui.screens.help import HelpScreen
from minirft.tui.screens.quit import QuitScreen
from minirft.tui.tailer import LogGrew, LogTail, tail_loop
from minirft.tui.widgets.agreement import AgreementPanel
from minirft.tui.widgets.events import EventsPane
from minirft.tui.widgets.header import RunHeader
from minirft.tui.widgets.plots import MetricPlot
from minirft.tui.widgets.samples import FILTERS, SORTS, SamplesTable, select_rows


def preview_text(s: Sample) -> Text:
    """The highlighted sample's rationale (why it got its reward) and completion, under the table."""
    t = Text()
    if s.judge_error:
        t.append("judge error ", style="bold red")
        t.append(one_line(s.judge_error, 300))
    else:
        t.append("rationale ", style="bold")
        t.append(one_line(s.rationale or "—", 300), style="italic")
    t.append("\n")
    t.append("completion ", style="bold")
    t.append(one_line(s.completion, 300))
    return t


class SearchBox(Input):
    BINDINGS = [Binding("escape", "app.clear_search", "Clear search")]


class WatchApp(Labelling, App[str | None]):
    """Live view of one run dir. ``exit`` result: ``"stop"`` / ``"leave"`` (child only) or None."""

    CSS_PATH = "app.tcss"
    TITLE = "minirft watch"
    MIN_REDRAW_S = 0.3
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
        Binding("p", "prev_step", "Prev"),
        Binding("n", "next_step", "Next"),
        Binding("l", "latest", "Latest"),
        Binding("f", "toggle_follow", "Follow"),
        Binding("s", "cycle_sort", "Sort"),
        # priority: handled before the key is forwarded to the table, so the focus moves to the
        # search box before the next typed keys are routed (typing "/query" fast, or pasting it)
        Binding("slash", "search", "Search", priority=True),
        Binding("right_square_bracket", "next_match", "Next match", show=False),
        Binding("left_square_bracket", "prev_match", "Prev match", show=False),
        Binding("x", "cycle_filter", "Filter"),
        Binding("g", "toggle_plots", "Charts"),
        Binding("question_mark", "help", "Help"),
        *LABEL_BINDINGS,
    ]

    view_step: reactive[int | None] = reactive(None, init=False)
    follow: reactive[bool] = reactive(True, init=False)
    sort_mode: reactive[str] = reactive(SORTS[0], init=False)
    filter_mode: reactive[str] = reactive(FILTERS[0], init=False)
    search_text: reactive[str] = reactive("", init=False)

    def __init__(self, run_dir: str | Path, child: subprocess.Popen | None = None, *,
                 clock: Callable[[], float] = time.time, poll_interval: float = 0.25,
                 labels_path: str | Path | None = None, drift_window: int = lbl.DRIFT_WINDOW,
                 drift_threshold: float = lbl.DRIFT_MIN_ACCURACY) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.labels = lbl.LabelBook(labels_path or self.run_dir / lbl.LABELS_FILE)
        self.drift = lbl.DriftAlarm(drift_window, drift_threshold)
        self.child = child
        self.clock = clock
        self.poll_interval = poll_interval
        self.state = RunState(name=self.run_dir.name)
        self.tail = LogTail(self.run_dir / "events.jsonl")
        self.unseen_steps = 0
        self.child_returncode: int | None = None
        self.redraws = 0  # table+chart redraws, for tests of coalescing and the open-time benchmark
        self._pending_plots = self._pending_table = False
        self._redraw_timer = None
        self._last_redraw = float("-inf")
        self._skipped_shown = 0
        self._label_skips_shown = False  # the skipped label lines are said once

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        yield RunHeader(id="header")
        with Vertical(id="plots"):
            for kind in ("reward", "rates", "kl_loss", "length"):
                yield MetricPlot(kind, id=f"plot-{kind}")
        with Horizontal(id="body"):
            with Vertical(id="samples-box"):
                yield SamplesTable(id="samples")
                yield Static("", id="samples-empty")
                yield Static("", id="preview")
                yield SearchBox(placeholder="search prompt / completion / rationale — enter: keep, esc: clear",
                                id="search")
            with Vertical(id="side"):
                yield EventsPane(id="events")
                yield AgreementPanel("", id="agreement")
        yield Footer()

    # ------------------------------------------------------------------ the run view's widgets
    def _base(self) -> Screen | None:
        """The run view's screen (the bottom of the stack), whatever modal is on top."""
        stack = self.screen_stack
        return stack[0] if stack else None

    def _q(self, selector, expect_type=None):
        base = self._base()
        if base is None:
            raise NoMatches(f"no screen to query for {selector!r}")
        return base.query_one(selector, expect_type) if expect_type else base.query_one(selector)

    def _live(self) -> bool:
        """Running, not exiting, with the run view mounted: callbacks may touch widgets."""
        base = self._base()
        return self.is_running and self.return_code is None and base is not None and base.is_attached

    def on_mount(self) -> None:
        self._q("#events", EventsPane).border_title = "events"
        self._q("#agreement", AgreementPanel).border_title = "you vs the judge"
        self._update_agreement()
        self._update_header()
        self._draw_table()  # says what it is waiting for until the first records arrive
        self._update_box_title()
        self._q(SamplesTable).focus()
        self._tail_worker()
        self.set_interval(1.0, self._tick)

    @work(thread=True, exclusive=True, group="tail", exit_on_error=False)
    def _tail_worker(self) -> None:
        worker = get_current_worker()
        tail_loop(self.tail, self.post_message, lambda: worker.is_cancelled, self.poll_interval)

    def on_resize(self, event: events.Resize) -> None:
        """Small terminals (80×24): charts and the preview give room to the table."""
        base = self._base()
        if base is not None:
            base.set_class(event.size.height < 34, "-short")
            base.set_class(event.size.width < 110, "-narrow")

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if not self._live():
            return
        if event.worker.group == "tail" and event.state == WorkerState.ERROR:
            # Say so on screen rather than crash the viewer (training is unaffected either way).
            self._q(EventsPane).add([{"kind": "warning", "step": self.state.latest_step or 0,
                                             "message": f"stopped reading the log: {event.worker.error!r}"}])

    # ------------------------------------------------------------------ new records
    def on_log_grew(self, _: LogGrew) -> None:
        if not self._live():
            return  # the records stay buffered; nothing to draw on
        self._note_skipped_lines()
        records = self.tail.drain()
        if not records:
            return  # an earlier LogGrew already drained this burst
        applied = self.state.apply(records)
        if applied.events:
            self._q(EventsPane).add(applied.events)
        if applied.header and self.view_step is None:
            self._draw_table()  # the waiting message changes once run_start is in
        latest = self.state.latest_step
        if self.follow:
            moved = latest != self.view_step
            if moved:
                self.set_reactive(WatchApp.view_step, latest)  # no watcher: the throttled redraw below
            held_out = any(e.get("kind") == "eval" for e in applied.events)  # a held-out check to plot
            self._request_redraw(plots=moved or bool(applied.new_steps) or held_out,
                                 table=moved or self.view_step in applied.new_samples)
        else:
            self.unseen_steps += len(applied.new_steps)
        self._update_header()

    def _request_redraw(self, plots: bool, table: bool) -> None:
        """Redraw for new records at most every ``MIN_REDRAW_S``: a fast stream costs a few redraws
        a second, not one per record (keys the user presses still redraw at once)."""
        self._pending_plots |= plots
        self._pending_table |= table
        if not (self._pending_plots or self._pending_table) or self._redraw_timer is not None:
            return
        wait = self.MIN_REDRAW_S - (time.monotonic() - self._last_redraw)
        if wait <= 0:
            self._flush_redraw()
        else:
            self._redraw_timer = self.set_timer(wait, self._flush_redraw)

    def _note_skipped_lines(self) -> None:
        """Unreadable lines of the log (not the partial last one) get a warning in the events pane;
        so do unreadable lines of the label file (once)."""
        if self.labels.skipped and not self._label_skips_shown:
            self._label_skips_shown = True
            lines = self.labels.skipped
            self._q(EventsPane).add([{"kind": "warning", "step": self.state.latest_step or 0,
                                      "message": f"skipped {len(lines)} unreadable line(s) of {self.labels.path.name} "
                                                 f"(line {', '.join(map(str, lines[:5]))})"}])
        skipped = self.tail.skipped
        if len(skipped) > self._skipped_shown:
            new = skipped[self._skipped_shown:]
            self._skipped_shown = len(skipped)
            self._q(EventsPane).add([{"kind": "warning", "step": self.state.latest_step or 0,
                                      "message": f"skipped {len(new)} unreadable line(s) of events.jsonl "
                                                 f"(line {', '.join(map(str, new[:5]))})"}])

    def _flush_redraw(self) -> None:
        self._redraw_timer = None
        if not self._live():
            return
        plots, table = self._pending_plots, self._pending_table
        self._pending_plots = self._pending_table = False
        if plots or table:
            self._redraw(plots=plots, table=table)
            self._update_header()

    @property
    def redraw_pending(self) -> bool:
        return self._pending_plots or self._pending_table

    def _tick(self) -> None:
        """Once a second: the clock in the header moves, and a finished child is noticed."""
        if not self._live():
            return
        if self.child is not None and self.child_returncode is None:
            rc = self.child.poll()
            if rc is not None:
                self.child_returncode = rc
                self.tail.poll()  # the child's last records, before judging how it ended
                self.on_log_grew(LogGrew())
                if self.state.run_end is None:
                    self._q(EventsPane).add([self._crash_note(rc)])
        self._update_header()

    def _crash_note(self, rc: int) -> dict:
        log = self.run_dir / "train.log"
        tail = ""
        if log.exists():
            lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
            tail = " | ".join(one_line(ln, 200) for ln in lines[-3:])
        how = f"was killed by signal {-rc} ({_signal_name(-rc)})" if rc < 0 else f"exited with code {rc}"
        msg = f"trainer {how} without a run_end" + (f"; train.log: {tail}" if tail else "")
        return {"type": "event", "kind": "crash", "step": self.state.latest_step or 0, "message": msg}

    # ------------------------------------------------------------------ drawing
    def _update_header(self) -> None:
        self._q(RunHeader).show(self.state, self.clock(), follow=self.follow, unseen_steps=self.unseen_steps,
                                       child_returncode=self.child_returncode,
                                       child_alive=self.child is not None and self.child_returncode is None)

    def _redraw(self, plots: bool = True, table: bool = True) -> None:
        self.redraws += 1
        self._last_redraw = time.monotonic()
        if plots and self._q("#plots").display:
            for plot in self._base().query(MetricPlot):
                plot.draw(self.state, self.view_step)  # hidden ones too: cheap, and current when shown
        if table:
            self._draw_table()
        self._update_box_title()

    def _current_rows(self):
        return select_rows(self.state.samples_for(self.view_step), self.sort_mode, self.filter_mode, self.search_text)

    def _draw_table(self) -> None:
        table = self._q(SamplesTable)
        rows = self._current_rows()
        table.show(rows, self.state.criteria_names(self.view_step), self._marks(rows))
        if not rows:
            self._q("#preview", Static).update("")
        empty = self._q("#samples-empty", Static)
        total = self.state.sample_count(self.view_step)
        if not rows:
            if self.view_step is None and self.state.run_start is not None:
                msg = "training started; waiting for the first step (loading models and the first rollout take a while)"
            elif self.view_step is None:
                msg = f"waiting for records in {self.run_dir / 'events.jsonl'} …"
            elif total:
                msg = f"none of this step's {total} samples match (filter: {self.filter_mode}, search: {self.search_text!r})"
            else:
                msg = f"no samples were logged for step {self.view_step}"
            empty.update(msg)
        empty.display = not rows
        table.display = bool(rows)  # an empty table's header row would push the message out of sight
        if rows and self.focused is None:
            table.focus()

    def _update_box_title(self) -> None:
        box = self._q("#samples-box")
        if self.view_step is None:
            box.border_title = "samples"
            return
        total = self.state.sample_count(self.view_step)
        latest = self.state.latest_step
        where = "latest" if self.view_step == latest else f"of {latest}"
        parts = [f"step {self.view_step} ({where}{'' if self.follow else ', frozen'})",
                 f"{len(self._q(SamplesTable).shown)}/{total} samples"]
        if self.sort_mode != SORTS[0]:
            parts.append(f"sort {self.sort_mode}")
        if self.filter_mode != FILTERS[0]:
            parts.append(f"filter: {self.filter_mode}")
        if self.search_text:
            n = len(self.state.steps_matching(self.search_text))
            parts.append(f"search {self.search_text!r}: {n} steps match, ] [ to jump")
        box.border_title = " · ".join(parts)

    # ------------------------------------------------------------------ reactive watchers
    def watch_view_step(self) -> None:
        self._redraw()
        self._update_header()

    def watch_follow(self, follow: bool) -> None:
        if follow:
            self.unseen_steps = 0
            if self.state.latest_step != self.view_step:
                self.view_step = self.state.latest_step
            else:
                self._redraw()
        self._update_header()

    def watch_sort_mode(self) -> None:
        self._redraw(plots=False)

    def watch_filter_mode(self) -> None:
        self._redraw(plots=False)

    def watch_search_text(self) -> None:
        self._redraw(plots=False)

    # ------------------------------------------------------------------ actions
    def _go(self, step: int | None) -> None:
        if step is None:
            return
        self.follow = False
        self.view_step = step

    def action_prev_step(self) -> None:
        steps = self.state.steps()
        if steps and self.view_step is not None:
            i = bisect.bisect_left(steps, self.view_step)
            self._go(steps[max(0, i - 1)])

    def action_next_step(self) -> None:
        steps = self.state.steps()
        if steps and self.view_step is not None:
            i = bisect.bisect_right(steps, self.view_step)
            self._go(steps[min(len(steps) - 1, i)])

    def action_latest(self) -> None:
        self.follow = True
        self.view_step = self.state.latest_step

    def action_toggle_follow(self) -> None:
        self.follow = not self.follow

    def action_cycle_sort(self) -> None:
        self.sort_mode = SORTS[(SORTS.index(self.sort_mode) + 1) % len(SORTS)]

    def action_cycle_filter(self) -> None:
        self.filter_mode = FILTERS[(FILTERS.index(self.filter_mode) + 1) % len(FILTERS)]

    def action_search(self) -> None:
        box = self._q("#search", SearchBox)
        if box.has_focus:  # the binding has priority: a "/" typed in the box still goes in it
            box.insert_text_at_cursor("/")
            return
        if len(self.screen_stack) > 1:
            return  # a modal (detail, help, quit) is open
        box.display = True  # an inline style applies at once; a CSS class only on the next refresh
        # Focus now, not on the next idle (widget.focus() defers): keys typed or pasted right after
        # `/` are already queued and must reach the box, not the table.
        self.screen.set_focus(box)

    def action_clear_search(self) -> None:
        box = self._q("#search", SearchBox)
        box.value = ""
        box.display = False
        self.search_text = ""
        self._q(SamplesTable).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.search_text = event.value.strip()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.search_text = event.value.strip()
        if not self.search_text:
            self._q("#search", SearchBox).display = False
        self._q(SamplesTable).focus()

    def _match_step(self, forward: bool) -> int | None:
        if not self.search_text or self.view_step is None:
            return None
        steps = self.state.steps_matching(self.search_text)
        if forward:
            later = [s for s in steps if s > self.view_step]
            return later[0] if later else None
        earlier = [s for s in steps if s < self.view_step]
        return earlier[-1] if earlier else None

    def action_next_match(self) -> None:
        step = self._match_step(True)
        if step is None:
            self.notify("no later step matches", timeout=2)
        self._go(step)

    def action_prev_match(self) -> None:
        step = self._match_step(False)
        if step is None:
            self.notify("no earlier step matches", timeout=2)
        self._go(step)

    def action_toggle_plots(self) -> None:
        plots = self._q("#plots")
        plots.display = not plots.display
        if plots.display:
            self._redraw(table=False)

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def on_data_table_row_highlighted(self, event: SamplesTable.RowHighlighted) -> None:
        table = self._q(SamplesTable)
        preview = self._q("#preview", Static)
        if 0 <= event.cursor_row < len(table.shown):
            preview.update(preview_text(table.shown[event.cursor_row]))
        else:
            preview.update("")

    def on_data_table_row_selected(self, event: SamplesTable.RowSelected) -> None:
        table = self._q(SamplesTable)
        if 0 <= event.cursor_row < len(table.shown):
            s = table.shown[event.cursor_row]
            self.push_screen(SampleScreen(s, self.verdict_text(s)))

    async def action_quit(self) -> None:
        if self.child is not None and self.child.poll() is None:
            self.push_screen(QuitScreen(self.child.pid), self._after_quit_choice)
        else:
            self.exit(None)

    def _after_quit_choice(self, choice: str | None) -> None:
        if choice in ("stop", "leave"):
            self.exit(choice)


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return "unknown signal"


# ---------------------------------------------------------------------------- entry point
def stop_child(child: subprocess.Popen, timeout: float = 30.0) -> bool:
    """SIGTERM (the trainer writes its run_end and stops cleanly), then SIGKILL after ``timeout``.
    Returns whether it had to be killed."""
    child.terminate()
    try:
        child.wait(timeout)
        return False
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        return True


def after_exit(run_dir: Path, child: subprocess.Popen | None, choice: str | None, out: TextIO) -> None:
    """What happens to training once the UI is gone, said in words the user can act on."""
    reattach = f"minirft watch {run_dir}"
    if child is None:
        return
    if child.poll() is not None:
        print(f"Training exited with code {child.returncode}. Review the run with: {reattach}", file=out)
    elif choice == "stop":
        print(f"Stopping training (pid {child.pid}) …", file=out, flush=True)
        if stop_child(child):
            print(f"It did not stop within 30 s of SIGTERM and was killed; its last checkpoint is intact "
                  f"(continue with: minirft train --resume {run_dir}). Review the run with: {reattach}", file=out)
        else:
            print(f"Stopped training (exit code {child.returncode}). Review the run with: {reattach}", file=out)
    else:  # "leave", or the UI itself failed: never kill training because the viewer went away
        print(f"Training continues in the background (pid {child.pid}); its output goes to "
              f"{run_dir / 'train.log'}.\nRe-attach with: {reattach}", file=out)


def watch(run_dir: Path, child: subprocess.Popen | None = None) -> None:
    """Show the run in the terminal until the user quits; see the module docstring."""
    run_dir = Path(run_dir)
    if not sys.stdout.isatty():
        # No terminal to draw on: print one line per step until the run (or the child) ends.
        from minirft.tui.plain import print_run

        alive = (lambda: child.poll() is None) if child is not None else None
        print_run(run_dir / "events.jsonl", sys.stdout, follow=True, alive=alive)
        return
    choice = WatchApp(run_dir, child=child).run()
    after_exit(run_dir, child, choice, sys.stderr)
