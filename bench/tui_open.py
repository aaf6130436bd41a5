"""How long `minirft watch` takes to open a long run, and to move between steps once open.

Writes a synthetic run (tests/fixtures/make_run.py: 4 samples with rationales per step, events)
of each size, then, headless (Textual's run_test at 150x46), measures:

- parse:    reading and JSON-decoding events.jsonl (EventReader)
- fold:     folding the records into RunState
- open:     app start → every record applied, table and all four charts drawn, screen rendered
- nav:      one `←` keypress (table + charts redrawn, screen rendered)

Usage:  python bench/tui_open.py [--steps 1000 5000] [--repeats 3]
Prints a table and writes bench/results/tui_open.json. Numbers from a shared 2-core machine are
noisy; the median of the repeats is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))

import make_run  # noqa: E402

from minirft.events import read_events  # noqa: E402
from minirft.tui.app import WatchApp  # noqa: E402
from minirft.tui.run_state import RunState  # noqa: E402


async def _open_once(run_dir: Path, steps: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    app = WatchApp(run_dir, clock=time.time, poll_interval=0.01)
    async with app.run_test(size=(150, 46)) as pilot:
        while app.state.steps_done < steps or app.redraws == 0 or app.redraw_pending:
            await pilot.pause(0.005)
        await pilot.pause()  # let the screen render what was drawn
        opened = time.perf_counter() - t0
        navs = []
        for _ in range(5):
            t1 = time.perf_counter()
            await pilot.press("left")
            navs.append(time.perf_counter() - t1)
    return opened, statistics.median(navs)


def bench(steps: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / f"bench-{steps}"
        path = make_run.make_run(run_dir, steps=steps)
        size_mb = path.stat().st_size / 1e6
        parse, fold, opened, nav = [], [], [], []
        for _ in range(repeats):
            t = time.perf_counter()
            recs = read_events(path)
            parse.append(time.perf_counter() - t)
            t = time.perf_counter()
            RunState().apply(recs)
            fold.append(time.perf_counter() - t)
            o, n = asyncio.run(_open_once(run_dir, steps))
            opened.append(o)
            nav.append(n)
    med = statistics.median
    return {"steps": steps, "records": len(recs), "log_mb": round(size_mb, 1),
            "parse_s": round(med(parse), 3), "fold_s": round(med(fold), 3),
            "open_s": round(med(opened), 3), "open_s_all": [round(x, 3) for x in opened],
            "nav_keypress_s": round(med(nav), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, nargs="+", default=[1000, 5000])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    rows = [bench(s, args.repeats) for s in args.steps]
    cols = ["steps", "records", "log_mb", "parse_s", "fold_s", "open_s", "nav_keypress_s"]
    print(" | ".join(f"{c:>14}" for c in cols))
    for r in rows:
        print(" | ".join(f"{r[c]!s:>14}" for c in cols))
    out = {"machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}",
           "note": "headless run_test 150x46; median of repeats; other jobs were running on the machine",
           "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
           "rows": rows}
    dest = ROOT / "bench" / "results" / "tui_open.json"
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {dest.relative_to(ROOT)} (1-min load average {out['load_average_1min']} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
