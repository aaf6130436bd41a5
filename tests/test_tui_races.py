"""Timers, the tail worker and worker-state messages racing a modal screen or the app's shutdown
(issue 16, item 12): the 1 s tick fired while the app was closing, found no header on the screen
being torn down (NoMatches) and failed a snapshot test by chance. Every callback now queries the run
view's own screen and does nothing once the app is exiting; the second test fails on the old app."""

from __future__ import annotations

import json
import subprocess
import sys

from minirft.tui.app import WatchApp
from minirft.tui.screens.detail import SampleScreen
from minirft.tui.screens.help import HelpScreen
from minirft.tui.screens.quit import QuitScreen
from minirft.tui.tailer import LogGrew
from minirft.tui.widgets.events import EventsPane
from tui_fixtures import CRASHED, copy_run, last_time, make_run, run_async, screen_text, wait_for

SIZE = (150, 46)


def _by_step(path, step):
    return [ln for ln in path.read_text().splitlines() if json.loads(ln)["step"] == step]


@run_async
async def test_log_growth_timers_and_ticks_while_a_modal_is_on_top(tmp_path):
    run = copy_run(CRASHED, tmp_path)
    full = tmp_path / "full"
    make_run.make_run(full, steps=30, seed=1, t0=make_run.T0 + 3600, end=False)
    now = last_time(run) + 5
    app = WatchApp(run, clock=lambda: now, poll_interval=0.02)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.view_step == 12)
        for modal in (SampleScreen(app.state.samples_for(12)[0]), HelpScreen()):
            app.push_screen(modal)
            await pilot.pause(0.05)
            assert app.screen is modal
            step = app.state.steps_done + 1
            with open(run / "events.jsonl", "a") as fh:  # new records while the modal is open
                fh.write("\n".join(_by_step(full / "events.jsonl", step)) + "\nnot json\n")
            await wait_for(pilot, lambda: app.state.steps_done == step)
            app._tick()  # the 1 s timer, the throttled redraw and a worker error, all under the modal
            app._flush_redraw()
            app.post_message(LogGrew())
            await pilot.pause(0.3)
            assert app.screen is modal and app.return_code is None
            await pilot.press("escape")
            await pilot.pause(0.05)
            assert f"step {step}/30" in screen_text(app)
        assert app.state.steps_done == 14 and len(app.tail.skipped) == 2
        notes = [r["message"] for r in app.query_one(EventsPane).records if "unreadable" in r["message"]]
        assert len(notes) == 2 and all(m.startswith("skipped 1 unreadable line(s) of events.jsonl") for m in notes)


@run_async
async def test_callbacks_after_exit_do_nothing(tmp_path):
    run = copy_run(CRASHED, tmp_path)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        now = last_time(run) + 5
        app = WatchApp(run, child=child, clock=lambda: now, poll_interval=0.02)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.view_step == 12)
            app.push_screen(QuitScreen(child.pid))
            await pilot.pause(0.05)
            child.kill()  # the trainer dies while the quit dialog is open: the tick notices, under the modal
            child.wait()
            app._tick()
            assert app.child_returncode is not None
            app.exit(None)
            app._tick()  # the app is closing: nothing to draw on, and no error
            app._flush_redraw()
            app.on_log_grew(LogGrew())
        # …and once it has gone.
        app._tick()
        app._flush_redraw()
        app.on_log_grew(LogGrew())
    finally:
        if child.poll() is None:
            child.kill()
