"""The help screen: what each key does and what the view shows."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# minirft watch

A read-only view of a run's `events.jsonl`. Quitting never stops training
(unless you started it with `minirft train --tui` and choose to stop it).

| key | action |
|---|---|
| `←` / `p` | previous step |
| `→` / `n` | next step |
| `l` | latest step, and follow new steps |
| `f` | follow on/off: off freezes the table and charts (training goes on) |
| `enter` | the selected sample in full |
| `s` | sort: log order → reward ↓ → reward ↑ |
| `/` | search prompt, completion and rationale text (`esc` clears) |
| `]` / `[` | next / previous step with a search match |
| `x` | filter: all → zero-variance groups → judge errors → with signal |
| `g` | hide/show the charts |
| `1`…`9` | your verdict on criterion k of the selected sample: pass → fail → none |
| `+` / `-` | your overall verdict: good / bad (again: clear) |
| `c` | pair view (preference judges): `a` / `b` which is better, `tab` other B |
| `z` | undo your last label |
| `u` | next sample worth labelling (judge unsure, judge vs rules, outliers, top rewards) |
| `?` | this help |
| `q` | quit |

**Header**: run, models, steps done / total, state (*running*; *finished*, *stopped*,
*failed* from the run's end record; *crashed* when there is no end record and the
log went silent, or the trainer process exited), elapsed, ETA, tokens/s.

**Table**: `g.i` is group (prompt) and sample; `≡` marks a group whose rewards
are all equal (no learning signal); criteria columns are the judge's P(yes).

**Labels**: your verdicts go to `RUN_DIR/labels.jsonl` as you press the keys (a
crash loses none). Labelled rows get `✎` and a `you` column (✓ pass, ✗ fail, ·
none, + / − overall); the *you vs the judge* panel shows accuracy and Cohen's κ
with a 95% interval per criterion. Fit a correction for the running judge with
`minirft calibrate --from-run RUN_DIR --fit`.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Markdown(HELP)
