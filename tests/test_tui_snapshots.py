"""A few text snapshots of whole screens, from the fixture run dirs with a frozen clock.

They catch layout regressions a value assertion misses. Update after an intended change with
``MINIRFT_UPDATE_SNAPSHOTS=1 pytest tests/test_tui_snapshots.py`` and review the diff of
``tests/fixtures/tui_snapshots/*.txt``.
"""

from __future__ import annotations

import pytest

from minirft.tui.app import WatchApp
from tui_fixtures import CRASHED, FINISHED, check_snapshot, last_time, run_async, settled_screen_text, wait_for

SIZE = (120, 36)


def _app(run_dir, now: float) -> WatchApp:
    return WatchApp(run_dir, clock=lambda: now, poll_interval=0.02)


@run_async
async def test_snapshot_finished_run_latest_step():
    app = _app(FINISHED, last_time(FINISHED) + 60)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.state.run_end is not None and app.view_step == 30)
        check_snapshot("finished_latest", await settled_screen_text(pilot))


@run_async
async def test_snapshot_crashed_run_frozen_on_an_earlier_step_sorted():
    app = _app(CRASHED, last_time(CRASHED) + 1800)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.view_step == 12)
        await pilot.press("p", "p", "s")
        check_snapshot("crashed_step10_sorted", await settled_screen_text(pilot))


@run_async
async def test_snapshot_sample_detail_with_judge_error():
    app = _app(FINISHED, last_time(FINISHED) + 60)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.view_step == 30)
        app.follow = False
        app.view_step = 22  # the fixture's judge-error step
        await pilot.press("x", "x", "enter")
        check_snapshot("detail_judge_error", await settled_screen_text(pilot))


@run_async
async def test_snapshot_small_terminal_keeps_the_state_and_the_table_visible():
    app = _app(FINISHED, last_time(FINISHED) + 60)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.view_step == 30)
        text = await settled_screen_text(pilot)
        assert "● finished" in text.splitlines()[1]
        check_snapshot("small_80x24", text)
