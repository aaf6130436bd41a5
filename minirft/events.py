"""The run's event log: ``events.jsonl``, append-only, one JSON object per line, flushed per line.

Every record has ``type``, ``time`` (unix seconds) and ``step``. Types:

- ``run_start``: ``recipe`` (resolved dict), ``versions``, ``device``, ``total_steps``, ``argv``
- ``step``: ``metrics`` — reward, reward_std, rewards/<name>, criteria/<name>, kl, loss, clip_ratio,
  entropy, completion_length, frac_reward_zero_std, frac_truncated, generation_s, judge_s, update_s,
  tokens_per_s, lr…; with training.drop_zero_std_groups also groups_dropped, groups_kept, refill_rounds
- ``sample``: prompt, completion, reward, advantage, rewards {name: value}, criteria {name: p},
  rationale, criterion_rationales {name: text} (judge.rationale_per_criterion), group, judge_error
- ``event``: ``kind`` (checkpoint, nan_skip, judge_error, resume, warning, eval, …) and ``message``; an
  ``eval`` event (training.eval_every) also has ``sets`` {set: {check: mean}}, ``prompts`` and ``greedy``
- ``run_end``: ``status`` (finished, stopped, failed) and a final ``message``

Listeners given to :class:`EventLog` (the experiment trackers of ``logging.report_to``,
``minirft.trackers``) are called with each record as it is written, parsed back from its line.

The trainer is the only writer; the TUI, ``minirft watch`` and ``minirft report`` only read, so they
work on a live run and a finished one alike. Readers ignore a partial last line until it completes,
and count (``EventReader.skipped``) any other line they cannot read — not JSON, or JSON of the wrong
shape (``check_record``: a foreign or damaged log) — so a viewer can say so and never crashes on it. A writer
that finds a partial last line (a run killed mid-write) cuts it off before appending, so the next
record starts on a line of its own; ``EventLog.repaired`` says what was cut.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterator

from minirft.rundir import open_append, open_update

EVENT_TYPES = ("run_start", "step", "sample", "event", "run_end")


class EventLog:
    """Appends records to ``<run_dir>/events.jsonl``; each line is written whole and flushed."""

    def __init__(self, path: str | Path, listeners: Any = ()):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.repaired = _cut_partial_line(self.path)
        # O_NOFOLLOW: a run dir from elsewhere with events.jsonl linked to another file is refused, never appended to
        self._fh = os.fdopen(open_append(self.path), "a", encoding="utf-8")
        self.listeners = list(listeners)  # callables fed each record (and closed with the log)

    def write(self, type: str, step: int, **fields: Any) -> dict:
        if type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {type!r}")
        record = {"type": type, "time": round(time.time(), 3), "step": step, **fields}
        # One write call per line keeps lines whole even if the process is killed mid-run.
        line = json.dumps(record, ensure_ascii=False, default=_jsonable)
        self._fh.write(line + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        for listener in self.listeners:
            listener(json.loads(line))
        return record

    def event(self, step: int, kind: str, message: str, **fields: Any) -> dict:
        return self.write("event", step, kind=kind, message=message, **fields)

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        for listener in self.listeners:
            getattr(listener, "close", lambda: None)()
        self.listeners = []

    def __enter__(self) -> "EventLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cut_partial_line(path: Path) -> str | None:
    """Truncate an unterminated last line (a record a kill cut in half); a message saying so, or None."""
    fd = open_update(path)
    if fd is None:
        return None
    try:
        with os.fdopen(fd, "rb+") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size == 0:
                return None
            fh.seek(size - 1)
            if fh.read(1) == b"\n":
                return None
            # Find the start of the last line: scan back in blocks for the previous newline.
            pos, start = size, 0
            while pos > 0:
                block = min(65536, pos)
                pos -= block
                fh.seek(pos)
                i = fh.read(block).rfind(b"\n")
                if i >= 0:
                    start = pos + i + 1
                    break
            fh.seek(0)
            lineno = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b"")) + 1
            fh.truncate(start)
            fh.flush()
            os.fsync(fh.fileno())
    except FileNotFoundError:
        return None
    return (f"{path}:{lineno}: cut off an incomplete last record ({size - start} bytes, left by a run "
            "killed while writing it) before appending")


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class EventReader:
    """Incremental reader: ``read_new()`` returns the complete records appended since the last call."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._offset = 0
        self._partial = b""
        self._lineno = 0
        self.skipped: list[int] = []  # line numbers of lines that were not a record (see check_record)
        self.problems: dict[int, str] = {}  # line number -> what was wrong with it

    def read_new(self) -> list[dict]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        data = self._partial + chunk
        *lines, self._partial = data.split(b"\n")
        out = []
        for line in lines:
            self._lineno += 1
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:  # JSONDecodeError, or bytes that are not UTF-8
                record = None
            except RecursionError:  # JSON nested thousands deep
                record = None
            problem = check_record(record)
            if problem is None:
                out.append(record)
            else:  # a corrupt line (e.g. a crash mid-write in an old run) or a foreign record: counted, skipped
                self.skipped.append(self._lineno)
                self.problems[self._lineno] = problem
        return out


# The shape every reader (watch, the TUI, report, track) may rely on; a record that does not fit is skipped
# and counted like a line that is not JSON. Metrics are numbers or null (a few are text); ±inf becomes null.
MAX_STEP = 10**12
TEXT_METRICS = {"calibration"}
RECIPE_SECTIONS = ("policy", "judge", "data", "generation", "training", "checkpoint", "logging")
_SAMPLE_TEXT = ("completion", "rationale", "judge_error")
_SAMPLE_DICTS = ("rewards", "criteria", "criterion_rationales", "attributions", "panel")


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_record(rec: Any) -> str | None:
    """Why ``rec`` is not an event record readers can use (None when it is). Normalises in place what is
    harmless to normalise: an infinite metric or score becomes null."""
    if not isinstance(rec, dict):
        return "not a JSON object"
    kind = rec.get("type")
    if kind not in EVENT_TYPES:
        return f"unknown record type {str(kind)[:40]!r}"
    step = rec.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or not -1 <= step <= MAX_STEP:
        return f"step must be a whole number from -1 to {MAX_STEP}"
    t = rec.get("time")
    if t is not None and not (_is_num(t) and math.isfinite(t)):
        return "time must be a finite number"
    if kind == "step":
        metrics = rec.get("metrics")
        if not isinstance(metrics, dict):
            return "a step record needs a metrics object"
        for k, v in metrics.items():
            if v is None or (isinstance(v, str) and k in TEXT_METRICS):
                continue
            if not _is_num(v):
                return f"metric {k!r} is {type(v).__name__}, not a number"
            if math.isinf(v):
                metrics[k] = None
    elif kind == "sample":
        for k in ("group", "index"):
            v = rec.get(k)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= MAX_STEP):
                return f"{k} must be a whole number >= 0"
        if not isinstance(rec.get("prompt", ""), (str, list)):
            return "prompt must be text (or chat messages)"
        for k in _SAMPLE_TEXT:
            if rec.get(k) is not None and not isinstance(rec[k], str):
                return f"{k} must be text"
        for k in ("reward", "advantage"):
            v = rec.get(k)
            if v is not None and not _is_num(v):
                return f"{k} must be a number"
            if v is not None and math.isinf(v):
                rec[k] = None
        for k in _SAMPLE_DICTS:
            if rec.get(k) is not None and not isinstance(rec[k], dict):
                return f"{k} must be an object"
        for k in ("rewards", "criteria"):
            for name, v in (rec.get(k) or {}).items():
                if v is not None and not _is_num(v):
                    return f"{k}.{name} must be a number"
                if v is not None and math.isinf(v):
                    rec[k][name] = None
    elif kind == "event":
        if not isinstance(rec.get("kind", ""), str) or not isinstance(rec.get("message", ""), str):
            return "an event needs text kind and message"
    elif kind == "run_start":
        total = rec.get("total_steps")
        if total is not None and (not isinstance(total, int) or isinstance(total, bool) or not 0 <= total <= MAX_STEP):
            return "total_steps must be a whole number"
        for k in ("recipe", "versions"):
            if rec.get(k) is not None and not isinstance(rec[k], dict):
                return f"{k} must be an object"
        for section, value in (rec.get("recipe") or {}).items():
            if section in RECIPE_SECTIONS and value is not None and not isinstance(value, dict):
                return f"recipe.{section} must be an object"
        for k in ("run_name", "policy_model", "judge_model", "device"):
            if rec.get(k) is not None and not isinstance(rec[k], str):
                return f"{k} must be text"
    elif kind == "run_end":
        if not isinstance(rec.get("status", ""), str) or not isinstance(rec.get("message", ""), str):
            return "run_end needs text status and message"
    return None


def read_events(path: str | Path) -> list[dict]:
    """All complete records of a log (a partial last line is ignored)."""
    return EventReader(path).read_new()


def iter_events(path: str | Path) -> Iterator[dict]:
    yield from read_events(path)


def failure_message(exc: BaseException) -> str:
    """What a failed run's ``run_end`` says: a MinirftError's own one-line message, else the exception."""
    from minirft.errors import MinirftError

    return str(exc) if isinstance(exc, MinirftError) else f"{type(exc).__name__}: {exc}"
