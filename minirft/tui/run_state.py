"""A run, folded from its event records: the one model every view reads.

Kept free of Textual so the numbers the UI shows can be tested against the log directly, and so
``--plain`` output and the app agree by construction. Records are applied in log order; the model
never looks at the clock itself — callers pass ``now`` — which keeps tests and snapshots stable.

Rules that are easy to get wrong, stated once here:

- A step is "done" when its ``step`` record arrives; samples may come before or after it.
- A resumed run appends a second ``run_start`` (``resumed_from`` set) and a ``resume`` event:
  later records for the same step replace earlier ones, and a ``run_end`` from before the resume
  no longer counts.
- State without ``run_end``: *running* while records keep arriving; *crashed* when the training
  child has exited, or when the log has been silent far longer than a step takes.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable

# A log silent for this long (or 5 typical step intervals, if longer) with no run_end is a crash.
MIN_STALE_S = 180.0
# Before the first step the trainer loads models and runs a first rollout: allow much longer.
FIRST_STEP_STALE_S = 900.0


@dataclass
class Sample:
    """One logged completion with its scores (a ``sample`` record)."""

    step: int
    group: int
    index: int
    prompt: str
    completion: str
    reward: float | None
    advantage: float | None
    rewards: dict[str, float | None]
    criteria: dict[str, float | None]
    rationale: str | None
    judge_error: str | None
    zero_variance: bool = False  # every sample of its group got the same reward (no learning signal)
    # contrast criteria: {criterion: {"up": [[token, diff], …], "down": […]}} (the words that earned the score)
    attributions: dict[str, dict] = field(default_factory=dict)
    # judge.panel: each judge's own verdict, {member: {"reward": r, "criteria": {…}}}
    panel: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def from_record(cls, rec: dict) -> "Sample":
        return cls(
            step=int(rec.get("step", 0)),
            group=int(rec.get("group") or 0),
            index=int(rec.get("index") or 0),
            prompt=_text(rec.get("prompt")),
            completion=_text(rec.get("completion")),
            reward=_num(rec.get("reward")),
            advantage=_num(rec.get("advantage")),
            rewards={str(k): _num(v) for k, v in (rec.get("rewards") or {}).items()},
            criteria={str(k): _num(v) for k, v in (rec.get("criteria") or {}).items()},
            rationale=rec.get("rationale") if isinstance(rec.get("rationale"), str) else None,
            judge_error=rec.get("judge_error") if isinstance(rec.get("judge_error"), str) else None,
            attributions=rec.get("attributions") if isinstance(rec.get("attributions"), dict) else {},
            panel=rec.get("panel") if isinstance(rec.get("panel"), dict) else {},
        )

    def matches(self, query: str) -> bool:
        """Case-insensitive substring search over the texts a user reads."""
        q = query.lower()
        return any(q in t.lower() for t in (self.prompt, self.completion, self.rationale or "", self.judge_error or ""))


SEARCHED = ("prompt", "completion", "rationale", "judge_error")


def record_matches(rec: dict, q: str) -> bool:
    """:meth:`Sample.matches` on a raw record (``q`` lower-cased), without building the Sample."""
    return any(isinstance(rec.get(k), str) and q in rec[k].lower() for k in SEARCHED)


@dataclass
class Applied:
    """What one batch of records changed, so the app redraws only what it must."""

    new_steps: set[int] = field(default_factory=set)
    new_samples: set[int] = field(default_factory=set)
    events: list[dict] = field(default_factory=list)
    header: bool = False

    def __bool__(self) -> bool:
        return bool(self.new_steps or self.new_samples or self.events or self.header)


class RunState:
    """Everything known about a run from the records applied so far."""

    def __init__(self, name: str = "?") -> None:
        self.default_name = name  # shown until run_start arrives (usually the run dir's name)
        self.run_start: dict | None = None
        self.run_end: dict | None = None
        self.metrics: dict[int, dict[str, Any]] = {}
        self.step_time: dict[int, float] = {}
        # Sample records stay raw until a step is viewed: opening a long run builds only what is shown.
        self._raw_samples: dict[int, list[dict]] = {}
        self._sample_pos: dict[int, dict[tuple, int]] = {}
        self._rows: dict[int, list[Sample]] = {}
        self._metric_steps: list[int] | None = []
        self._metrics_version = 0  # bumped on every step record; keys the series cache
        self._series_cache: dict[str, tuple[int, list[int], list[float]]] = {}
        self._match_cache: tuple[str, int, list[int]] | None = None
        self.events: list[dict] = []  # `event` records plus run_start / run_end notes, in log order
        self.first_time: float | None = None
        self.last_time: float | None = None
        self.records = 0
        self._steps_sorted: list[int] | None = []

    # ------------------------------------------------------------------ folding records
    def apply(self, records: Iterable[dict]) -> Applied:
        out = Applied()
        for rec in records:
            self._apply_one(rec, out)
        for step in out.new_samples:
            self._rows.pop(step, None)  # rebuilt (and zero-variance re-judged) when next viewed
        return out

    def _apply_one(self, rec: dict, out: Applied) -> None:
        if not isinstance(rec, dict):
            return
        kind = rec.get("type")
        step = _int(rec.get("step"))
        t = _num(rec.get("time"))
        self.records += 1
        if t is not None:
            self.first_time = t if self.first_time is None else min(self.first_time, t)
            self.last_time = t if self.last_time is None else max(self.last_time, t)
        if kind == "step":
            if step not in self.metrics:
                self._metric_steps = None
            self.metrics[step] = dict(rec.get("metrics") or {})
            self._metrics_version += 1
            if t is not None:
                self.step_time[step] = t
            self._steps_sorted = None
            out.new_steps.add(step)
        elif kind == "sample":
            rows = self._raw_samples.get(step)
            if rows is None:
                rows = self._raw_samples[step] = []
                self._sample_pos[step] = {}
                self._steps_sorted = None
            # A resumed run logs a step again: replace the row with the same (group, index).
            pos, key = self._sample_pos[step], (rec.get("group"), rec.get("index"))
            if key in pos:
                rows[pos[key]] = rec
            else:
                pos[key] = len(rows)
                rows.append(rec)
            out.new_samples.add(step)
        elif kind == "event":
            self.events.append(rec)
            out.events.append(rec)
        elif kind == "run_start":
            if self.run_start is None:
                self.run_start = rec
            elif rec.get("total_steps"):  # a resume (the trainer logs its own `resume` event) may extend the run
                self.run_start = {**self.run_start, "total_steps": rec["total_steps"]}
            self.run_end = None
            out.header = True
        elif kind == "run_end":
            self.run_end = rec
            note = {**rec, "type": "event", "kind": f"run_{rec.get('status', 'end')}",
                    "message": rec.get("message") or ""}
            self.events.append(note)
            out.events.append(note)
            out.header = True

    # ------------------------------------------------------------------ what the views read
    @property
    def run_name(self) -> str:
        rs = self.run_start or {}
        return str(rs.get("run_name") or (rs.get("recipe") or {}).get("name") or self.default_name)

    @property
    def policy_model(self) -> str:
        return str((self.run_start or {}).get("policy_model") or "?")

    @property
    def judge_model(self) -> str | None:
        jm = (self.run_start or {}).get("judge_model")
        return str(jm) if jm else None

    @property
    def total_steps(self) -> int | None:
        ts = (self.run_start or {}).get("total_steps")
        return int(ts) if isinstance(ts, (int, float)) and ts > 0 else None

    @property
    def start_time(self) -> float | None:
        t = _num((self.run_start or {}).get("time"))
        return t if t is not None else self.first_time

    def steps(self) -> list[int]:
        """Every step that has metrics or samples, ascending."""
        if self._steps_sorted is None:
            self._steps_sorted = sorted(set(self.metrics) | set(self._raw_samples))
        return self._steps_sorted

    def samples_for(self, step: int | None) -> list[Sample]:
        """The samples logged for a step, in log order, with zero-variance groups marked."""
        if step is None or step not in self._raw_samples:
            return []
        rows = self._rows.get(step)
        if rows is None:
            rows = self._rows[step] = [Sample.from_record(r) for r in self._raw_samples[step]]
            _mark_zero_variance(rows)
        return rows

    def sample_count(self, step: int | None) -> int:
        return len(self._raw_samples.get(step, ())) if step is not None else 0

    def steps_matching(self, query: str) -> list[int]:
        """Steps with at least one sample whose texts contain ``query`` (case-insensitive)."""
        q = query.lower()
        if self._match_cache and self._match_cache[:2] == (q, self.records):
            return self._match_cache[2]
        found = [s for s in self.steps() if any(record_matches(r, q) for r in self._raw_samples.get(s, ()))]
        self._match_cache = (q, self.records, found)
        return found

    @property
    def latest_step(self) -> int | None:
        s = self.steps()
        return s[-1] if s else None

    @property
    def steps_done(self) -> int:
        return len(self.metrics)

    def latest_metrics(self) -> dict[str, Any]:
        return self.metrics[max(self.metrics)] if self.metrics else {}

    def series(self, name: str) -> tuple[list[int], list[float]]:
        """(steps, values) of one metric over every step that logged it as a number."""
        cached = self._series_cache.get(name)
        if cached and cached[0] == self._metrics_version:
            return cached[1], cached[2]
        if self._metric_steps is None:
            self._metric_steps = sorted(self.metrics)
        xs, ys = [], []
        for s in self._metric_steps:
            v = _num(self.metrics[s].get(name))
            if v is not None:
                xs.append(s)
                ys.append(v)
        self._series_cache[name] = (self._metrics_version, xs, ys)
        return xs, ys

    def heldout_series(self) -> dict[str, tuple[list[int], list[float]]]:
        """The in-run held-out checks (``event`` records of kind ``eval``, training.eval_every): each
        ``set/check`` rule measure's (steps, values); the answer length is left out."""
        out: dict[str, tuple[list[int], list[float]]] = {}
        for rec in self.events:
            if rec.get("kind") != "eval" or not isinstance(rec.get("sets"), dict):
                continue
            for name, checks in rec["sets"].items():
                for check, value in (checks.items() if isinstance(checks, dict) else ()):
                    v = _num(value)
                    if check != "length_chars" and v is not None:
                        xs, ys = out.setdefault(f"{name}/{check}", ([], []))
                        xs.append(_int(rec.get("step")))
                        ys.append(v)
        return out

    def metric_names(self, prefix: str) -> list[str]:
        """Metric keys with a prefix (``rewards/``, ``criteria/``) in first-seen order."""
        cached = self._series_cache.get("names:" + prefix)
        if cached and cached[0] == self._metrics_version:
            return list(cached[1])
        seen: dict[str, None] = {}
        for m in self.metrics.values():
            for k in m:
                if k.startswith(prefix):
                    seen.setdefault(k, None)
        self._series_cache["names:" + prefix] = (self._metrics_version, list(seen), [])
        return list(seen)

    def criteria_names(self, step: int | None = None) -> list[str]:
        seen: dict[str, None] = {}
        for s in self.samples_for(step):
            for k in s.criteria:
                seen.setdefault(k, None)
        return list(seen)

    def step_interval(self) -> float | None:
        """Typical seconds per step: median gap between the last few step records (fallback step_s)."""
        times = [self.step_time[s] for s in sorted(self.step_time)][-11:]
        gaps = [b - a for a, b in zip(times, times[1:]) if b > a]
        if gaps:
            return statistics.median(gaps)
        step_s = _num(self.latest_metrics().get("step_s"))
        return step_s if step_s and step_s > 0 else None

    def state(self, now: float, child_returncode: int | None = None, child_alive: bool = False) -> str:
        """finished | stopped | failed (from run_end), crashed, running, or waiting (nothing logged yet).

        With a live trainer child (``--tui``) silence alone never means crashed: the process says.
        """
        if self.run_end is not None:
            return str(self.run_end.get("status") or "finished")
        if child_returncode is not None:
            return "crashed"
        if self.last_time is None:
            return "waiting"
        if child_alive:
            return "running"
        limit = max(MIN_STALE_S, 5 * (self.step_interval() or 0.0)) if self.metrics else FIRST_STEP_STALE_S
        if now - self.last_time > limit:
            return "crashed"
        return "running"

    def elapsed(self, now: float, child_returncode: int | None = None, child_alive: bool = False) -> float | None:
        start = self.start_time
        if start is None:
            return None
        if self.state(now, child_returncode, child_alive) == "running":
            end = now
        else:
            end = _num((self.run_end or {}).get("time")) or self.last_time or now
        return max(0.0, end - start)

    def eta(self, now: float, child_alive: bool = False) -> float | None:
        """Seconds left, while running: remaining steps × typical step time."""
        total, interval = self.total_steps, self.step_interval()
        if total is None or interval is None or self.state(now, child_alive=child_alive) != "running":
            return None
        remaining = max(0, total - self.steps_done)
        since_last = now - (self.step_time[max(self.step_time)] if self.step_time else now)
        return max(0.0, remaining * interval - min(since_last, interval))

    def silent_for(self, now: float) -> float | None:
        return None if self.last_time is None else max(0.0, now - self.last_time)


def _mark_zero_variance(rows: list[Sample]) -> None:
    """A group carries no learning signal when its rewards are all equal. GRPO then gives every
    member advantage 0, which is the test used when advantages are logged: it stays right when the
    trainer logs only some of a group's completions (``logging.samples_per_step``)."""
    groups: dict[int, list[Sample]] = {}
    for s in rows:
        groups.setdefault(s.group, []).append(s)
    for members in groups.values():
        if all(s.advantage is not None for s in members):
            flat = all(abs(s.advantage) < 1e-9 for s in members)
        else:
            rewards = [s.reward for s in members if s.reward is not None]
            flat = len(members) > 1 and len(rewards) == len(members) and max(rewards) - min(rewards) < 1e-9
        for s in members:
            s.zero_variance = flat


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v) if v == v else None  # NaN -> None: plots and means skip it
    return None


def _int(v: Any) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, list):  # chat messages: show the last user turn's content
        for m in reversed(v):
            if isinstance(m, dict) and m.get("content"):
                return str(m["content"])
    return str(v)
