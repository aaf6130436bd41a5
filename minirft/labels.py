"""Human labels of judged samples: the ``labels.jsonl`` file, agreement with the judge, the label queue.

A person labels samples in the watch UI (``minirft watch``, ``minirft train --tui``) or in
``minirft label FILE.jsonl``. Every verdict is one appended line, written whole, flushed and
fsynced before the UI shows it, so quitting or a crash loses no label. The trainer never writes
this file. Lines, one JSON object each:

- rubric: ``{"id", "kind": "rubric", "step", "group", "index", "prompt", "response", "judge": {"reward",
  "judge", "criteria": {name: P}}, "labels": {criterion: true/false}, "overall": true/false/null, "time"}``
  — the full verdict on that sample at that moment (a later line for the same ``id`` replaces it);
  ``judge`` is the judge's score when it was labelled (``judge.judge`` is the judge's own reward,
  ``reward`` the combined one).
- preference: ``{"id", "kind": "preference", "step", "group", "a", "b", "prompt", "chosen", "rejected",
  "judge": {"reward_a", "reward_b", "p_a"}, "human": "a" | "b", "time"}``.
- undo: ``{"undo": id, "time"}`` retracts the latest standing line with that id (an earlier verdict on
  the same sample, if any, stands again). Nothing is ever rewritten.

The rubric and preference lines are exactly the rows ``minirft calibrate`` reads (``prompt``,
``response`` + ``labels``, or ``chosen`` + ``rejected``); :func:`standing_rows` is how it skips
undone and replaced lines.

Agreement: per criterion (and ``overall``, ``preference``, and ``all`` pooled), the judge's verdict is
P > 0.5 (the judge's own reward > 0.5 for ``overall``; the higher reward of the pair for preference,
ties left out); accuracy, Cohen's κ and its 95% interval as :mod:`minirft.agreement` computes them
(the same numbers ``minirft calibrate`` prints).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from minirft.agreement import KappaStats, grouped_kappa, kappa_interval, wilson  # noqa: F401 (re-exported)
from minirft.rundir import open_append

LABELS_FILE = "labels.jsonl"
DRIFT_WINDOW = 20  # decisions (one per labelled criterion / overall / pair) the drift warning looks at
DRIFT_MIN_ACCURACY = 0.7


# ---------------------------------------------------------------------------------------- the file
class LabelLog:
    """Appends label lines to a file: one ``write`` per line, flushed and fsynced before returning."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def append(self, row: dict) -> dict:
        row = {**row, "time": round(time.time(), 3)} if "time" not in row else dict(row)
        data = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Never through a link (a labels.jsonl in someone else's run dir linked to ~/.bashrc, say), and one
        # appender at a time (two viewers of one run): O_NOFOLLOW, and a short flock while the line goes in.
        fd = open_append(self.path, mode=0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_size and not _ends_with_newline(fd):
                data = b"\n" + data  # a torn last line (a crash mid-write elsewhere) stays its own line
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        return row

    def undo(self, label_id: str) -> dict:
        return self.append({"undo": label_id})


def _ends_with_newline(fd: int) -> bool:
    return os.pread(fd, 1, os.fstat(fd).st_size - 1) == b"\n"


def read_rows(path: str | Path, skipped: list[int] | None = None) -> list[dict]:
    """Every complete label line of a file; [] if absent. A torn, corrupt or wrong-shaped line
    (:func:`check_row`) is skipped, and its line number appended to ``skipped``."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    out = []
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            obj = None
        if check_row(obj) is None:
            out.append(obj)
        elif skipped is not None:
            skipped.append(lineno)
    return out


_TEXT_FIELDS = ("prompt", "response", "chosen", "rejected")
_INT_FIELDS = ("step", "group", "index", "a", "b")


def check_row(obj: Any) -> str | None:
    """Why ``obj`` is not a label line the UI and the agreement figures can use (None when it is)."""
    if not isinstance(obj, dict):
        return "not a JSON object"
    if "undo" in obj:
        return None if isinstance(obj["undo"], (str, int)) and not isinstance(obj["undo"], bool) else "bad undo id"
    if obj.get("id") is not None and (not isinstance(obj["id"], (str, int)) or isinstance(obj["id"], bool)):
        return "id must be text"
    kind = obj.get("kind")
    if kind not in (None, "rubric", "preference"):
        return "kind must be rubric or preference"
    for k in _INT_FIELDS:
        if k in obj and (not isinstance(obj[k], int) or isinstance(obj[k], bool)):
            return f"{k} must be a whole number"
    if kind == "preference" and not all(k in obj for k in ("step", "group", "a", "b")):
        return "a preference line needs step, group, a and b"
    for k in _TEXT_FIELDS:
        if obj.get(k) is not None and not isinstance(obj[k], str):
            return f"{k} must be text"
    labels = obj.get("labels")
    if labels is not None and not (isinstance(labels, dict)
                                   and all(v is None or isinstance(v, bool) for v in labels.values())):
        return "labels must map criteria to true/false"
    if obj.get("overall") is not None and not isinstance(obj["overall"], bool):
        return "overall must be true, false or null"
    if obj.get("human") is not None and obj["human"] not in ("a", "b"):
        return "human must be \"a\" or \"b\""
    judge = obj.get("judge")
    if judge is not None:
        if not isinstance(judge, dict):
            return "judge must be an object"
        crit = judge.get("criteria")
        if crit is not None and not isinstance(crit, dict):
            return "judge.criteria must be an object"
    return None


def standing_rows(rows: Iterable[Any]) -> list[Any]:
    """The rows that stand, in the order they were written: undo lines retract the latest standing
    row with their id, and a later row with the same id replaces an earlier one.

    ``rows`` are dicts, or ``(lineno, dict)`` pairs (kept as they are, so callers keep line numbers).
    Rows without an ``id`` (hand-written label files) always stand."""
    history: dict[str, list[int]] = {}  # id -> positions of its rows, oldest first
    items: list[Any] = []
    alive: list[bool] = []
    for item in rows:
        obj = item[1] if isinstance(item, tuple) else item
        if not isinstance(obj, dict):
            continue
        if "undo" in obj:
            stack = history.get(str(obj["undo"]))
            if stack:
                alive[stack.pop()] = False
                if stack:
                    alive[stack[-1]] = True
            continue
        pos = len(items)
        items.append(item)
        alive.append(True)
        if obj.get("id") is not None:
            stack = history.setdefault(str(obj["id"]), [])
            if stack:
                alive[stack[-1]] = False
            stack.append(pos)
    return [it for it, a in zip(items, alive) if a]


def latest_standing_id(rows: Sequence[dict]) -> str | None:
    """The id of the most recently written standing row (what one more undo retracts)."""
    standing = [r for r in standing_rows(rows) if r.get("id") is not None]
    if not standing:
        return None
    # standing rows keep file order, but a replaced-then-undone id stands again at its old place:
    # undo the one whose line came last in the file
    order = {id(r): i for i, r in enumerate(rows)}
    return str(max(standing, key=lambda r: order[id(r)])["id"])


# ------------------------------------------------------------------------------------- the rows
def sample_id(step: int, group: int, index: int) -> str:
    return f"{step}/{group}.{index}"


def pair_id(step: int, group: int, a: int, b: int) -> str:
    lo, hi = sorted((a, b))
    return f"{step}/{group}:{lo}v{hi}"


def rubric_row(sample: Any, labels: dict[str, bool], overall: bool | None, *, label_id: str | None = None) -> dict:
    """A rubric label line for a :class:`minirft.tui.run_state.Sample` (or anything with its fields)."""
    return {"id": label_id or sample_id(sample.step, sample.group, sample.index), "kind": "rubric",
            "step": sample.step, "group": sample.group, "index": sample.index,
            "prompt": sample.prompt, "response": sample.completion,
            "judge": {"reward": sample.reward, "judge": sample.rewards.get("judge"),
                      "criteria": dict(sample.criteria)},
            "labels": dict(labels), "overall": overall}


def preference_row(a: Any, b: Any, winner: str, *, label_id: str | None = None, p_a: float | None = None) -> dict:
    """A preference line: the person found ``a`` (winner "a") or ``b`` better. Samples of one group."""
    chosen, rejected = (a, b) if winner == "a" else (b, a)
    return {"id": label_id or pair_id(a.step, a.group, a.index, b.index), "kind": "preference",
            "step": a.step, "group": a.group, "a": a.index, "b": b.index, "prompt": a.prompt,
            "chosen": chosen.completion, "rejected": rejected.completion,
            "judge": {"reward_a": a.reward, "reward_b": b.reward, "p_a": p_a}, "human": winner}


@dataclass
class Verdict:
    """The person's standing verdict on one sample (rubric) — what the table's mark shows."""

    labels: dict[str, bool] = field(default_factory=dict)
    overall: bool | None = None
    response: str = ""

    def __bool__(self) -> bool:
        return bool(self.labels) or self.overall is not None


class LabelBook:
    """The label file in memory: standing verdicts by id, plus the writer. The UI's single source."""

    def __init__(self, path: str | Path) -> None:
        self.log = LabelLog(path)
        self.skipped: list[int] = []  # line numbers of label lines that could not be read (left as they are)
        self.rows: list[dict] = read_rows(path, self.skipped)
        self._index()

    @property
    def path(self) -> Path:
        return self.log.path

    def _index(self) -> None:
        self.standing = [r for r in standing_rows(self.rows) if r.get("id") is not None]
        self.by_id = {str(r["id"]): r for r in self.standing}

    def add(self, row: dict) -> dict:
        written = self.log.append(row)
        self.rows.append(written)
        self._index()
        return written

    def undo(self) -> dict | None:
        """Retract the last standing label; returns the row it retracted (None when there is none)."""
        target = latest_standing_id(self.rows)
        if target is None:
            return None
        row = self.by_id[target]
        self.rows.append(self.log.undo(target))
        self._index()
        return row

    def verdict(self, label_id: str, response: str | None = None) -> Verdict:
        """The standing rubric verdict for a sample id; empty when unlabelled, or when the labelled
        text differs from ``response`` (a resumed run logged a new completion under the same id)."""
        row = self.by_id.get(label_id)
        if row is None or row.get("kind") != "rubric":
            return Verdict()
        if response is not None and row.get("response") != response:
            return Verdict()
        return Verdict(dict(row.get("labels") or {}), row.get("overall"), row.get("response", ""))

    def preference(self, label_id: str) -> str | None:
        row = self.by_id.get(label_id)
        return row.get("human") if row and row.get("kind") == "preference" else None

    def labelled_samples(self) -> set[str]:
        """Sample ids with a standing verdict (pairs count for both of their samples)."""
        out = set()
        for r in self.standing:
            if r.get("kind") == "preference":
                out.add(sample_id(r["step"], r["group"], r["a"]))
                out.add(sample_id(r["step"], r["group"], r["b"]))
            elif r.get("labels") or r.get("overall") is not None:
                out.add(str(r["id"]))
        return out

    def __len__(self) -> int:
        return len(self.standing)


# ------------------------------------------------------------------------------------ agreement
def decisions(rows: Sequence[dict]) -> list[tuple[str, int, int]]:
    """(what, human 0/1, judge 0/1) for every verdict in standing ``rows``, in label order."""
    out: list[tuple[str, int, int]] = []
    for r in rows:
        judge = r.get("judge") or {}
        if r.get("kind") == "preference":
            ra, rb = judge.get("reward_a"), judge.get("reward_b")
            p_a = judge.get("p_a")
            if isinstance(p_a, (int, float)) and p_a != 0.5:
                judge_a = p_a > 0.5
            elif isinstance(ra, (int, float)) and isinstance(rb, (int, float)) and ra != rb:
                judge_a = ra > rb
            else:
                continue  # the judge had no preference: nothing to agree with
            out.append(("preference", int(r.get("human") == "a"), int(judge_a)))
            continue
        crit = judge.get("criteria") or {}
        for name, value in (r.get("labels") or {}).items():
            p = crit.get(name)
            if isinstance(p, (int, float)) and isinstance(value, bool):
                out.append((name, int(value), int(p > 0.5)))
        own = judge.get("judge") if isinstance(judge.get("judge"), (int, float)) else judge.get("reward")
        if isinstance(r.get("overall"), bool) and isinstance(own, (int, float)):
            out.append(("overall", int(r["overall"]), int(own > 0.5)))
    return out


def agreement(rows: Sequence[dict]) -> dict[str, KappaStats]:
    """Per criterion (first-seen order), then ``all`` pooled, over standing label rows."""
    return grouped_kappa(decisions(rows))


class DriftAlarm:
    """Fires once when accuracy over the last ``window`` decisions drops below ``threshold``; re-arms
    when it recovers."""

    def __init__(self, window: int = DRIFT_WINDOW, threshold: float = DRIFT_MIN_ACCURACY) -> None:
        self.window = window
        self.threshold = threshold
        self.low = False

    def check(self, rows: Sequence[dict]) -> str | None:
        recent = decisions(rows)[-self.window:]
        if len(recent) < self.window:
            return None
        acc = sum(h == j for _, h, j in recent) / len(recent)
        if acc >= self.threshold:
            self.low = False
            return None
        if self.low:
            return None
        self.low = True
        return (f"judge agrees with you on only {acc:.0%} of your last {len(recent)} verdicts "
                f"(below {self.threshold:.0%}): the judge may be drifting from what you want; "
                f"fit a correction with `minirft calibrate --from-run RUN_DIR --fit`")


# ---------------------------------------------------------------------------------- label queue
UNCERTAIN_MARGIN = 0.15  # |P − 0.5| at most this: the judge is unsure
OUTLIER_Z = 2.0
TOP_STEPS = 3


@dataclass(frozen=True)
class QueueItem:
    sample: Any
    reason: str


def _judge_value(s: Any) -> float | None:
    v = s.rewards.get("judge")
    if isinstance(v, (int, float)):
        return float(v)
    ps = [p for p in s.criteria.values() if p is not None]
    return sum(ps) / len(ps) if ps else None


def label_queue(samples: Sequence[Any], labelled: set[str] = frozenset(), top_steps: int = TOP_STEPS) -> list[QueueItem]:
    """The unlabelled samples where a person's verdict is worth most, best first.

    Four lists, each in its own order, interleaved one from each in turn (a sample appears once):

    1. judge unsure: min over criteria of |P − 0.5| ≤ 0.15 (no criteria: the judge's reward), nearest first;
    2. judge and rule checks disagree: the judge's reward and the mean of the rule rewards fall on
       different sides of 0.5, widest gap first;
    3. reward outliers: |z| ≥ 2 against every sample given, largest first;
    4. the top-reward sample of each of the latest ``top_steps`` steps (latest first): gaming shows there first.

    Then every other unlabelled sample, latest step first, least sure judge first, so ``u`` never
    runs dry while something is left to label.
    """
    pool = [s for s in samples if s.judge_error is None]
    todo = [s for s in pool if sample_id(s.step, s.group, s.index) not in labelled]

    unsure = []
    for s in todo:
        ps = [p for p in s.criteria.values() if p is not None] or [v for v in [_judge_value(s)] if v is not None]
        if ps:
            m = min(abs(p - 0.5) for p in ps)
            if m <= UNCERTAIN_MARGIN:
                name = min((k for k, p in s.criteria.items() if p is not None), default=None,
                           key=lambda k: abs(s.criteria[k] - 0.5))
                what = f"{name} P={s.criteria[name]:.2f}" if name else f"judge {_judge_value(s):.2f}"
                unsure.append((m, QueueItem(s, f"judge unsure ({what})")))
    unsure.sort(key=lambda t: t[0])

    disagree = []
    for s in todo:
        j = _judge_value(s)
        rules = [v for k, v in s.rewards.items() if k != "judge" and isinstance(v, (int, float))]
        if j is None or not rules:
            continue
        r = sum(rules) / len(rules)
        if (j > 0.5) != (r > 0.5):
            disagree.append((-abs(j - r), QueueItem(s, f"judge {j:.2f} vs rule checks {r:.2f}")))
    disagree.sort(key=lambda t: t[0])

    rewards = [s.reward for s in pool if s.reward is not None]
    outliers = []
    if len(rewards) >= 3:
        mean = sum(rewards) / len(rewards)
        std = math.sqrt(sum((x - mean) ** 2 for x in rewards) / len(rewards))
        if std > 0:
            for s in todo:
                if s.reward is not None:
                    z = (s.reward - mean) / std
                    if abs(z) >= OUTLIER_Z:
                        outliers.append((-abs(z), QueueItem(s, f"reward outlier (z {z:+.1f})")))
    outliers.sort(key=lambda t: t[0])

    top = []
    steps = sorted({s.step for s in pool}, reverse=True)[:top_steps]
    for step in steps:
        cands = [s for s in todo if s.step == step and s.reward is not None]
        if cands:
            best = max(cands, key=lambda s: s.reward)
            top.append(QueueItem(best, f"top reward of step {step} ({best.reward:.2f}): gaming shows here first"))

    lists = [[q for _, q in unsure], [q for _, q in disagree], [q for _, q in outliers], top]
    out, seen = [], set()
    for k in range(max((len(x) for x in lists), default=0)):
        for lst in lists:
            if k < len(lst):
                key = (lst[k].sample.step, lst[k].sample.group, lst[k].sample.index)
                if key not in seen:
                    seen.add(key)
                    out.append(lst[k])

    def margin(s: Any) -> float:
        ps = [p for p in s.criteria.values() if p is not None] or [v for v in [_judge_value(s)] if v is not None]
        return min((abs(p - 0.5) for p in ps), default=1.0)

    rest = [s for s in todo if (s.step, s.group, s.index) not in seen]
    rest.sort(key=lambda s: (-s.step, margin(s)))
    out += [QueueItem(s, f"not labelled yet (step {s.step})") for s in rest]
    return out
