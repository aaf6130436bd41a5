"""Helpers for the TUI tests: fixture run dirs, waiting on the tail worker, the screen as text."""

from __future__ import annotations

import asyncio
import functools
import io
import json
import os
import shutil
from pathlib import Path

from rich.console import Console

FIXTURES = Path(__file__).resolve().parent / "fixtures"
FINISHED = FIXTURES / "tui_runs" / "polite-20261123-010000"  # 30 steps, run_end finished
CRASHED = FIXTURES / "tui_runs" / "polite-20261123-020000"  # stopped logging after step 12, no run_end
SNAPSHOTS = FIXTURES / "tui_snapshots"
MAKE_RUN = FIXTURES / "make_run.py"

import make_run  # noqa: E402,F401  (the fixture generator, importable for tests; conftest puts it on sys.path)


def run_async(test):
    """Run an async pilot test with asyncio.run (no pytest async plugin needed)."""

    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return wrapper


def records(run_dir: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run_dir / "events.jsonl").read_text().splitlines() if ln.strip()]


def copy_run(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


def last_time(run_dir: Path) -> float:
    return max(r["time"] for r in records(run_dir))


async def wait_for(pilot, condition, timeout: float = 10.0, step: float = 0.02) -> None:
    """Let the app run until ``condition()`` holds and no throttled redraw is pending (the tail
    worker is a real thread)."""
    waited = 0.0
    while not condition() or pilot.app.redraw_pending:
        if waited > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        await pilot.pause(step)
        waited += step
    await pilot.pause()


def screen_text(app) -> str:
    """The current screen as plain text (what a person reads), for assertions and snapshots.

    Textual's public export is SVG; this renders the same compositor output to text instead.
    """
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), record=True, force_terminal=True,
                      color_system=None, legacy_windows=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return "\n".join(line.rstrip() for line in console.export_text().splitlines())


async def settled_screen_text(pilot, tries: int = 40) -> str:
    """The screen once two captures 50 ms apart agree (no render still in flight)."""
    before = screen_text(pilot.app)
    for _ in range(tries):
        await pilot.pause(0.05)
        now = screen_text(pilot.app)
        if now == before:
            return now
        before = now
    return before


def check_snapshot(name: str, text: str) -> None:
    """Compare with ``fixtures/tui_snapshots/NAME.txt``; MINIRFT_UPDATE_SNAPSHOTS=1 rewrites it."""
    path = SNAPSHOTS / f"{name}.txt"
    if os.environ.get("MINIRFT_UPDATE_SNAPSHOTS") == "1" or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")
        if os.environ.get("MINIRFT_UPDATE_SNAPSHOTS") != "1":
            raise AssertionError(f"snapshot {path} did not exist; written now, review and commit it")
        return
    expected = path.read_text(encoding="utf-8").rstrip("\n")
    text = text.rstrip("\n")
    assert text == expected, f"screen differs from {path} (MINIRFT_UPDATE_SNAPSHOTS=1 to accept):\n{text}"
