"""The two-line run header: who is training what, how far, in what state, how fast."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from minirft.tui.fmt import duration, judge_phases, num
from minirft.tui.run_state import RunState

STATE_STYLE = {
    "running": "bold green", "finished": "bold cyan", "stopped": "bold yellow",
    "failed": "bold red", "crashed": "bold red", "waiting": "bold yellow",
}


def progress_bar(done: int, total: int | None, width: int = 12) -> str:
    if not total:
        return ""
    filled = min(width, round(width * done / total))
    return "█" * filled + "░" * (width - filled)


class RunHeader(Static):
    """Rendered by :meth:`show`; the app calls it on new records and once a second for the clock."""

    def show(self, state: RunState, now: float, *, follow: bool, unseen_steps: int = 0,
             child_returncode: int | None = None, child_alive: bool = False) -> None:
        self.update(render_header(state, now, follow=follow, unseen_steps=unseen_steps,
                                  child_returncode=child_returncode, child_alive=child_alive))


def render_header(state: RunState, now: float, *, follow: bool, unseen_steps: int = 0,
                  child_returncode: int | None = None, child_alive: bool = False) -> Text:
    st = state.state(now, child_returncode, child_alive)
    top = Text()
    top.append(f" {state.run_name} ", style="bold reverse")
    top.append("  policy ", style="dim")
    top.append(state.policy_model, style="bold")
    top.append("  judge ", style="dim")
    if state.run_start is None:
        top.append("?", style="bold")
    else:
        top.append(state.judge_model or "none (rule rewards only)", style="bold")
    if state.run_start and state.run_start.get("device"):
        top.append("  on ", style="dim")
        top.append(str(state.run_start["device"]))

    done, total = state.steps_done, state.total_steps
    line = Text()
    line.append(" step ", style="dim")
    line.append(f"{done}/{total}" if total else str(done), style="bold")
    if total:
        line.append(f" {progress_bar(done, total)} {100 * done // total}%")
    line.append("  ")
    label = st
    if st == "crashed":
        if child_returncode is not None and child_returncode < 0:
            label = f"crashed (trainer killed by signal {-child_returncode}, no run_end)"
        elif child_returncode is not None:
            label = f"crashed (trainer exited {child_returncode}, no run_end)"
        else:
            label = f"crashed (no run_end, silent {duration(state.silent_for(now))})"
    if st == "waiting":
        label = "waiting for the trainer's first record"
    line.append(f"● {label}", style=STATE_STYLE.get(st, "bold"))
    line.append("  elapsed ", style="dim")
    line.append(duration(state.elapsed(now, child_returncode, child_alive)))
    eta = state.eta(now, child_alive) if st == "running" else None
    line.append("  ETA ", style="dim")
    line.append(duration(eta))
    line.append("  ", style="dim")
    line.append(f"{num(state.latest_metrics().get('tokens_per_s'), 0)} tok/s")
    latest = state.latest_metrics()
    if latest.get("groups_dropped") is not None:  # dynamic sampling (training.drop_zero_std_groups)
        line.append("  dropped ", style="dim")
        line.append(f"{latest['groups_dropped']} zero-std group(s)", style="yellow" if latest["groups_dropped"] else "")
        if latest.get("refill_rounds"):
            line.append(f", {latest['refill_rounds']} refill round(s)", style="dim")
    phases = judge_phases(state.latest_metrics())
    if phases:  # where the judge's time went (llama_cpp backend): scoring, rationales, the rest
        line.append("  ")
        line.append(phases, style="dim")
    if follow:
        line.append("   ▶ following", style="green")
    else:
        line.append("   ❚❚ frozen", style="bold yellow")
        if unseen_steps:
            line.append(f", {unseen_steps} new step{'s' * (unseen_steps != 1)}", style="bold yellow")
    for t in (top, line):  # a narrow terminal crops a line instead of wrapping the state out of sight
        t.no_wrap, t.overflow = True, "ellipsis"
    return Text("\n", no_wrap=True).join([top, line])
