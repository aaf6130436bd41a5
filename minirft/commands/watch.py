"""``minirft watch``: attach to a run dir (live or finished). Quitting never stops training."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from minirft.errors import MinirftError


def find_latest_run(runs_dir: Path) -> Path:
    """The run under ``runs_dir`` whose event log changed last (a run dir holds ``events.jsonl``)."""
    if not runs_dir.is_dir():
        raise MinirftError(f"{runs_dir}: no runs folder here; give a RUN_DIR or --runs DIR")
    runs = [d for d in runs_dir.iterdir() if d.is_dir() and (d / "events.jsonl").is_file()]
    if not runs:
        raise MinirftError(f"{runs_dir}: no run dirs (folders with an events.jsonl) found; start one with "
                           "`minirft train RECIPE`")
    return max(runs, key=lambda d: ((d / "events.jsonl").stat().st_mtime, d.name))


def resolve_run_dir(run_dir: Path | None, runs_dir: Path) -> Path:
    if run_dir is None:
        return find_latest_run(runs_dir)
    if run_dir.is_file() and run_dir.name == "events.jsonl":
        return run_dir.parent
    if not run_dir.is_dir():
        raise MinirftError(f"{run_dir}: no such run dir")
    if not (run_dir / "events.jsonl").is_file():
        raise MinirftError(f"{run_dir}: not a run dir, or its run has not started yet: no events.jsonl "
                           "(a run writes it once its models are loaded)")
    return run_dir


@click.command("watch", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("run_dir", required=False, type=click.Path(path_type=Path))
@click.option("--runs", "runs_dir", type=click.Path(path_type=Path), default="runs", show_default=True,
              envvar="MINIRFT_RUNS_DIR", help="Where to look for the latest run when RUN_DIR is omitted.")
@click.option("--plain", is_flag=True, help="One line per step instead of the UI (automatic when stdout is not a terminal).")
@click.option("--json", "as_json", is_flag=True, help="The raw event records, one JSON object per line.")
@click.option("-f", "--follow", is_flag=True, help="With --plain/--json: keep printing until the run ends.")
def watch_command(run_dir: Path | None, runs_dir: Path, plain: bool, as_json: bool, follow: bool) -> None:
    """Watch a training run: rewards, judge rationales, metrics and events, live.

    Reads RUN_DIR/events.jsonl (default: the latest run under ./runs). It only reads the run, so it
    attaches to a live run or a finished one alike, and quitting it never stops training.

    \b
    Examples:
      minirft watch                                   # the latest run under ./runs
      minirft watch runs/polite-20261123-101500       # a given run dir
      minirft watch --plain                           # one line per step (for logs, CI, pipes)
      minirft watch --plain -f | grep judge_error     # follow a live run as text
      minirft watch --json | jq .metrics.reward       # the raw records

    \b
    Keys in the UI: ←/→ or p/n step, l latest, f follow on/off, enter sample detail,
    s sort by reward, / search, x filter, g charts, ? help, q quit.
    Labels (to RUN_DIR/labels.jsonl): 1-9 criterion pass/fail, + / - overall good/bad, c pair view
    (preference judges), z undo, u next sample worth labelling.
    """
    run = resolve_run_dir(run_dir, runs_dir)
    if plain or as_json or not sys.stdout.isatty():
        from minirft.tui.plain import print_run

        try:
            print_run(run / "events.jsonl", sys.stdout, as_json=as_json, follow=follow)
        except KeyboardInterrupt:
            pass
        except BrokenPipeError:  # `| head` closed the pipe: not an error
            sys.stderr.close()
        return
    from minirft.tui.app import WatchApp

    WatchApp(run).run()
