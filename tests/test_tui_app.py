"""Pilot tests of the watch app, driven from the fixture run dirs (no model, real tail thread)."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from minirft.tui.app import WatchApp, after_exit, stop_child, watch
from minirft.tui.fmt import num
from minirft.tui.screens.detail import SampleScreen
from minirft.tui.screens.help import HelpScreen
from minirft.tui.screens.quit import QuitScreen
from minirft.tui.widgets.events import EventsPane
from minirft.tui.widgets.samples import SamplesTable
from tui_fixtures import (
    CRASHED, FINISHED, MAKE_RUN, copy_run, last_time, make_run, records, run_async, screen_text, wait_for,
)

SIZE = (150, 46)


def _app(run_dir, now: float | None = None, **kw) -> WatchApp:
    now = last_time(run_dir) + 5 if now is None else now
    return WatchApp(run_dir, clock=lambda: now, poll_interval=0.02, **kw)


def _cells(table: SamplesTable) -> list[list[str]]:
    return [[str(getattr(c, "plain", c)) for c in table.get_row_at(i)] for i in range(table.row_count)]


def _log_samples(run_dir, step):
    return [r for r in records(run_dir) if r["type"] == "sample" and r["step"] == step]


@run_async
async def test_opens_a_finished_run_and_shows_the_logs_numbers():
    app = _app(FINISHED)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.state.run_end is not None and app.view_step == 30)
        text = screen_text(app)
        last = [r for r in records(FINISHED) if r["type"] == "step"][-1]["metrics"]
        assert "polite-20261123-010000" in text and "smollm2-135m-instruct" in text and "gemma3-270m" in text
        assert "step 30/30" in text and "● finished" in text and "elapsed 6m21s" in text
        assert f"{num(last['tokens_per_s'], 0)} tok/s" in text
        table = app.query_one(SamplesTable)
        log = _log_samples(FINISHED, 30)
        rows = _cells(table)
        assert len(rows) == len(log) == 4
        for row, rec in zip(rows, log):
            assert row[0].split()[0] == f"{rec['group']}.{rec['index']}"
            assert row[1] == f"{rec['reward']:.3f}" and row[2] == f"{rec['advantage']:.2f}"
            assert row[3:6] == [f"{rec['criteria'][c]:.2f}" for c in ("polite", "answers_question", "concise")]
        assert log[0]["rationale"] in text  # the preview under the table shows the highlighted rationale
        events = [e["message"] for e in records(FINISHED) if e["type"] == "event"]
        assert all(m.split()[0] in text for m in events)
        assert "run_finished" in text


@run_async
async def test_step_navigation_and_follow_toggle():
    app = _app(FINISHED)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.view_step == 30)
        await pilot.press("left", "left", "p")
        assert app.view_step == 27 and app.follow is False
        assert [c[1] for c in _cells(app.query_one(SamplesTable))] == [
            f"{r['reward']:.3f}" for r in _log_samples(FINISHED, 27)]
        assert "step 27 (of 30, frozen)" in screen_text(app) and "❚❚ frozen" in screen_text(app)
        await pilot.press("right", "n")
        assert app.view_step == 29
        await pilot.press("n", "n")  # the last step stays the last
        assert app.view_step == 30
        await pilot.press("l")
        assert app.view_step == 30 and app.follow is True
        await pilot.press("f")
        assert app.follow is False and "frozen" in screen_text(app)


@run_async
async def test_sort_filter_and_search():
    app = _app(FINISHED)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.view_step == 30)
        table = app.query_one(SamplesTable)
        await pilot.press("s")
        shown = [float(c[1]) for c in _cells(table)]
        assert shown == sorted(shown, reverse=True)
        await pilot.press("s")
        shown = [float(c[1]) for c in _cells(table)]
        assert shown == sorted(shown)
        await pilot.press("s")  # back to log order

        await pilot.press("x")  # zero-variance groups only
        assert app.filter_mode == "zero-variance groups"
        assert all(s.zero_variance for s in table.shown) and len(table.shown) == 2
        await pilot.press("x")  # judge errors: none at step 30
        assert table.row_count == 0 and "none of this step's 4 samples match" in screen_text(app)
        await pilot.press("x", "x")
        assert app.filter_mode == "all" and table.row_count == 4

        # search narrows the table, then ] / [ jump between the steps whose samples match
        await pilot.press("slash", *"rubric", "enter")
        assert app.search_text == "rubric"
        fields = ("prompt", "completion", "rationale", "judge_error")
        matching = sorted({r["step"] for r in records(FINISHED) if r["type"] == "sample"
                           and any("rubric" in (r[f] or "").lower() for f in fields)})
        assert len(matching) >= 2
        app.view_step = 1
        await pilot.press("right_square_bracket")
        assert app.view_step == next(s for s in matching if s > 1) and app.follow is False
        assert table.row_count >= 1 and all(s.matches("rubric") for s in table.shown)
        assert f"{len(matching)} steps match" in screen_text(app)
        await pilot.press("right_square_bracket", "left_square_bracket")
        assert app.view_step == next(s for s in matching if s > 1)
        await pilot.press("slash", "escape")
        assert app.search_text == "" and table.row_count == app.state.sample_count(app.view_step)


@run_async
async def test_judge_error_filter_and_detail_panel():
    app = _app(FINISHED)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.view_step == 30)
        err_step = next(r["step"] for r in records(FINISHED) if r["type"] == "sample" and r["judge_error"])
        app.follow = False
        app.view_step = err_step
        await pilot.press("x", "x")
        table = app.query_one(SamplesTable)
        assert table.row_count == 1 and table.shown[0].judge_error
        await pilot.press("enter")
        assert isinstance(app.screen, SampleScreen)
        text = screen_text(app)
        assert "judge error: judge timed out" in text and table.shown[0].prompt in text
        await pilot.press("escape")
        await pilot.press("x", "x")  # back to all
        await pilot.press("down", "enter")
        sample = table.shown[1]
        text = screen_text(app)
        assert isinstance(app.screen, SampleScreen) and app.screen.sample is sample
        assert sample.completion[:60] in text and sample.rationale in text
        for name, p in sample.criteria.items():
            assert f"P(pass) {name}" in text and f"{p:.3f}" in text
        await pilot.press("q")
        assert not isinstance(app.screen, SampleScreen)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen) and "zero-variance" in screen_text(app)
        await pilot.press("escape", "g")
        assert app.query_one("#plots").display is False


@run_async
async def test_sees_records_appended_while_running_and_waits_for_partial_lines(tmp_path):
    run = copy_run(CRASHED, tmp_path)
    full = tmp_path / "full"
    make_run.make_run(full, steps=30, seed=1, t0=make_run.T0 + 3600, end=False)
    lines = (full / "events.jsonl").read_text().splitlines()
    by_step = lambda s: [ln for ln in lines if json.loads(ln)["step"] == s]  # noqa: E731
    app = _app(run, now=last_time(run) + 20)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.view_step == 12)
        assert "● running" in screen_text(app) and "step 12/30" in screen_text(app)
        redraws = app.redraws
        with open(run / "events.jsonl", "a") as fh:
            fh.write("\n".join(by_step(13)) + "\n")
            partial = by_step(14)[0]
            fh.write(partial[:25])  # a record cut mid-line: must not show up yet
        await wait_for(pilot, lambda: app.state.steps_done == 13)
        await pilot.pause(0.1)
        assert app.view_step == 13 and app.state.sample_count(14) == 0
        new = [json.loads(ln) for ln in by_step(13) if json.loads(ln)["type"] == "sample"]
        assert [c[1] for c in _cells(app.query_one(SamplesTable))] == [f"{r['reward']:.3f}" for r in new]
        assert "step 13/30" in screen_text(app)
        # a burst of steps coalesces: far fewer redraws than records
        with open(run / "events.jsonl", "a") as fh:
            fh.write(partial[25:] + "\n")
            for s in range(14, 26):
                fh.write("\n".join(ln for ln in by_step(s) if ln != partial) + "\n")
        await wait_for(pilot, lambda: app.state.steps_done == 25)
        assert app.view_step == 25 and app.redraws - redraws <= 6
        # frozen: new steps arrive in the model, the view stays, the header counts them
        await pilot.press("f")
        with open(run / "events.jsonl", "a") as fh:
            fh.write("\n".join(by_step(26)) + "\n")
        await wait_for(pilot, lambda: app.state.steps_done == 26)
        assert app.view_step == 25 and "1 new step" in screen_text(app)
        await pilot.press("f")
        assert app.view_step == 26


@run_async
async def test_a_silent_log_without_run_end_reads_as_crashed():
    app = _app(CRASHED, now=last_time(CRASHED) + 3600)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.view_step == 12)
        text = screen_text(app)
        assert "crashed (no run_end, silent 1h00m)" in text and "ETA —" in text


def _live_child(run_dir, steps=200, delay=0.3):
    return subprocess.Popen([sys.executable, str(MAKE_RUN), str(run_dir), "--live", "--steps", str(steps),
                             "--delay", str(delay)])


@pytest.mark.parametrize("choice", ["leave", "stop"])
@run_async
async def test_quitting_with_a_training_child_asks_whether_to_stop_it(tmp_path, choice):
    run = tmp_path / "live-run"
    child = _live_child(run)
    try:
        app = WatchApp(run, child=child, poll_interval=0.02)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.state.steps_done >= 2)
            assert "● running" in screen_text(app)
            await pilot.press("q")
            assert isinstance(app.screen, QuitScreen)
            await pilot.press("c")  # cancel: still watching
            assert not isinstance(app.screen, QuitScreen)
            await pilot.press("q", "b" if choice == "leave" else "s")
        assert app.return_value == choice
        out = io.StringIO()
        after_exit(run, child, app.return_value, out)
        if choice == "leave":
            assert child.poll() is None
            assert f"Re-attach with: minirft watch {run}" in out.getvalue()
        else:
            assert child.poll() is not None and "Stopped training" in out.getvalue()
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize("ending, header, note", [
    ("sys.exit(3)", "crashed (trainer exited 3, no run_end)", "exited with code 3"),
    ("os.kill(os.getpid(), 9)", "crashed (trainer killed by signal 9, no run_end)", "signal 9 (SIGKILL)"),
])
@run_async
async def test_a_child_that_dies_without_run_end_shows_as_crashed(tmp_path, ending, header, note):
    run = tmp_path / "dying"
    script = (f"import os, sys; sys.path.insert(0, {str(MAKE_RUN.parent)!r}); import make_run; "
              f"make_run.live_run(__import__('pathlib').Path({str(run)!r}), 2, 0.05, end=False); "
              f"print('RuntimeError: CUDA out of memory', flush=True); {ending}")
    run.mkdir()
    with open(run / "train.log", "w") as log:
        child = subprocess.Popen([sys.executable, "-c", script], stdout=log, stderr=subprocess.STDOUT)
    app = WatchApp(run, child=child, poll_interval=0.02)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.child_returncode is not None, timeout=15)
        await pilot.pause(0.05)
        text = screen_text(app)
        assert header in text and "step 2/2" in text
        notes = [e["message"] for e in app.query_one(EventsPane).records if e["kind"] == "crash"]
        assert len(notes) == 1 and note in notes[0] and "out of memory" in notes[0]  # + the tail of train.log
        assert "crash trainer" in text
        await pilot.press("q")  # the child is gone: no question asked
    assert app.return_value is None


def test_watch_without_a_terminal_prints_plain_lines_until_the_child_ends(tmp_path, capsys):
    run = tmp_path / "short"
    child = _live_child(run, steps=3, delay=0.05)
    watch(run, child)
    out = capsys.readouterr().out.splitlines()
    assert child.returncode == 0
    assert [ln.split()[1] for ln in out if ln.startswith("step ")] == ["1/3", "2/3", "3/3"]
    assert out[-1].startswith("# step 3 run_finished")


@run_async
async def test_an_empty_run_dir_waits_and_says_for_what(tmp_path):
    run = tmp_path / "fresh"
    run.mkdir()
    app = _app(run, now=make_run.T0 + 30)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.1)
        assert "waiting for records in" in screen_text(app) and "judge ?" in screen_text(app)
        start = records(FINISHED)[0]
        (run / "events.jsonl").write_text(json.dumps(start) + "\n")
        await wait_for(pilot, lambda: app.state.run_start is not None)
        text = screen_text(app)
        assert "training started; waiting for the first step" in text and "judge gemma3-270m" in text
        assert "● running" in text and "step 0/30" in text


def test_stop_child_kills_a_trainer_that_ignores_sigterm():
    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert stop_child(polite, timeout=10) is False and polite.returncode == -15
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, sys, time; "
                                 "signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
                                 "time.sleep(60)"], stdout=subprocess.PIPE)
    stubborn.stdout.readline()  # its handler is installed
    assert stop_child(stubborn, timeout=0.3) is True and stubborn.returncode == -9


@run_async
async def test_detail_panel_highlights_the_words_a_contrast_criterion_scored_and_each_judge(tmp_path):
    from minirft.tui.screens.detail import DOWN, UP, highlighted

    run = copy_run(FINISHED, tmp_path)
    recs = records(run)
    first = next(i for i, r in enumerate(recs) if r["type"] == "sample" and r["step"] == 30)
    completion = recs[first]["completion"]
    words = completion.split()
    recs[first]["attributions"] = {"polite": {"up": [[" " + words[1], 0.4]], "down": [[" " + words[-1], -0.2]]}}
    recs[first]["panel"] = {"gemma3-270m": {"reward": 0.71, "criteria": {"polite": 0.7}},
                            "smollm2-135m-instruct": {"reward": 0.42, "criteria": {"polite": 0.4}}}
    (run / "events.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    app = _app(run)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.view_step == 30)
        await pilot.press("enter")
        assert isinstance(app.screen, SampleScreen)
        text = screen_text(app)
        assert "Judges of the panel" in text and "smollm2-135m-instruct" in text and "0.420" in text
    marked = highlighted(completion, recs[first]["attributions"])
    spans = {(completion[s.start:s.end], str(s.style)) for s in marked.spans}
    assert (words[1], UP) in spans and (words[-1], DOWN) in spans
