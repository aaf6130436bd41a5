"""``minirft watch --plain`` / ``--json``: the run as lines, for pipes, logs and scripts.

``--plain`` prints one line per step from the same :class:`RunState` the app reads (events and the
run's end get a line too); ``--json`` passes the raw records through unchanged. With ``follow`` the
log is tailed until its ``run_end`` arrives (or Ctrl-C), like ``tail -f``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Callable, TextIO

from minirft.events import EventReader
from minirft.tui.fmt import duration, judge_phases, num
from minirft.tui.run_state import RunState


def step_line(state: RunState, step: int) -> str:
    m = state.metrics.get(step, {})
    total = state.total_steps
    parts = [f"step {step}/{total}" if total else f"step {step}",
             f"reward {num(m.get('reward'))} ±{num(m.get('reward_std'))}"]
    for key in state.metric_names("rewards/") + state.metric_names("criteria/"):
        parts.append(f"{key.split('/', 1)[1]} {num(m.get(key))}")
    parts += [f"kl {num(m.get('kl'), 4)}", f"loss {num(m.get('loss'), 4)}",
              f"len {num(m.get('completion_length'), 1)}", f"{num(m.get('step_s'), 1)}s",
              f"{num(m.get('tokens_per_s'), 0)} tok/s"]
    phases = judge_phases(m)
    if phases:
        parts.append(phases)
    if m.get("groups_dropped") is not None:  # dynamic sampling
        parts.append(f"dropped {m['groups_dropped']} zero-std group(s)"
                     + (f" ({m['refill_rounds']} refill round(s))" if m.get("refill_rounds") else ""))
    if m.get("judge_errors"):
        parts.append(f"judge_errors {m['judge_errors']}")
    return "  ".join(parts)


def event_line(rec: dict) -> str:
    return f"# step {rec.get('step', 0)} {rec.get('kind', 'event')}: {rec.get('message', '')}"


def print_run(events_path: Path, out: TextIO, as_json: bool = False, follow: bool = False,
              interval: float = 0.5, sleep: Callable[[float], None] = time.sleep,
              alive: Callable[[], bool] | None = None) -> RunState:
    """Print the log's records (all so far, then new ones while ``follow``) and return the state.

    ``alive`` (the trainer child's liveness, with ``--tui``) ends following when it turns false."""
    state, reader = RunState(name=events_path.parent.name), EventReader(events_path)
    last_round = False
    skipped_shown = 0
    while True:
        if alive is not None and not alive():
            last_round = True  # read what the child wrote before it exited, then stop
        records = reader.read_new()
        if len(reader.skipped) > skipped_shown:  # with --json on stderr, so stdout stays pure JSON lines
            new = reader.skipped[skipped_shown:]
            skipped_shown = len(reader.skipped)
            (sys.stderr if as_json else out).write(f"# skipped {len(new)} unreadable line(s) of {events_path}: "
                      f"line {', '.join(map(str, new[:10]))}{' …' if len(new) > 10 else ''}\n")
        for rec in records:
            if as_json:
                out.write(json.dumps(rec, ensure_ascii=False) + "\n")
            applied = state.apply([rec])
            if as_json:
                continue
            if rec.get("type") == "run_start" and state.run_start is rec:
                judge = state.judge_model or "no judge"
                out.write(f"# {state.run_name}: policy {state.policy_model}, judge {judge}, "
                          f"{state.total_steps or '?'} steps, {rec.get('device', '?')}\n")
            for ev in applied.events:
                out.write(event_line(ev) + "\n")
            for step in sorted(applied.new_steps):
                out.write(step_line(state, step) + "\n")
        out.flush()
        if not follow or state.run_end is not None or last_round:
            break
        sleep(interval)
    if not as_json and state.run_end is None and not follow:
        now = time.time()
        out.write(f"# no run_end yet: {state.state(now)}, last record {duration(state.silent_for(now))} ago\n")
    return state
