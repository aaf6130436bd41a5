"""``judge.cache: PATH``: a SQLite cache of judge results under any backend.

:class:`CachedEvaluator` wraps a backend (an :class:`~minirft.judge.base.Evaluator`). Each query's key
is a SHA-256 of the judge model's identity (its name, and for a local file its size and modification
time), the method (the backend, the label classes read — or ``score_last`` for a contrast query —, the
number of tokens generated and the stop strings) and the full query text; a hit returns the stored
label probabilities and generated text, or a contrast query's token log-probabilities and token texts,
without touching the model (which loads on the first miss). Re-scoring an identical candidate —
``minirft eval`` of base vs tuned, a resumed run, the judge service answering the same row twice —
costs nothing. Everything above the backend (Platt maps, content-free calibration, sharpness and
aggregation of contrast criteria, rubric weights) is recomputed from the cached values, so changing
those never serves a stale reward.

Safe for several threads of one process (one connection, a lock) and for several processes sharing a
file (SQLite's WAL mode; writes are ``INSERT OR REPLACE`` of identical values).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from minirft.errors import MinirftError
from minirft.judge.base import Evaluation, Evaluator, EvaluatorBase, Query, TokenScores

SCHEMA = "CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, probs TEXT, text TEXT, created REAL)"


def model_identity(model: str, extra: str = "") -> str:
    """The judge model's name, plus size and mtime when it is a local file (a changed file: new keys)."""
    p = Path(model).expanduser()
    if p.is_file():
        st = p.stat()
        return f"{p.resolve()}|{st.st_size}|{int(st.st_mtime)}|{extra}"
    return f"{model}|{extra}"


class CachedEvaluator(EvaluatorBase):
    """An :class:`~minirft.judge.base.Evaluator` that answers from the SQLite file when it can and asks
    ``inner`` for the rest."""

    def __init__(self, inner: Evaluator, path: str | Path, identity: str) -> None:
        self.inner = inner
        self.path = Path(path)
        self.identity = identity
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(SCHEMA)
            self._db.commit()
        except sqlite3.Error as exc:
            raise MinirftError(f"judge.cache: {self.path}: cannot open as SQLite ({exc})") from None
        self._lock = threading.Lock()
        self.hits = self.misses = 0
        self._step_hits = self._step_misses = 0

    def key(self, q: Query, classes: Sequence[tuple[str, ...]]) -> str:
        method = {"backend": type(self.inner).__name__, "classes": [list(c) for c in classes],
                  "generate": q.generate, "stop": list(q.stop) if q.generate else []}
        blob = json.dumps([self.identity, method, "".join(q.segments)], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def evaluate(self, queries: Sequence[Query], classes: Sequence[tuple[str, ...]]) -> list[Evaluation]:
        return self._through([self.key(q, classes) for q in queries], queries,
                             lambda qs: self.inner.evaluate(qs, classes),
                             lambda ev: (None if ev.probs is None else json.dumps([float(x) for x in ev.probs]), ev.text),
                             lambda probs, text: Evaluation(None if probs is None else np.asarray(json.loads(probs)),
                                                            text or ""))

    def score_tokens(self, queries: Sequence[Query]) -> list[TokenScores]:
        """Contrast criteria's per-token log-probs, cached like verdicts (the pieces stored as JSON text)."""
        return self._through([self.key(q, [("score_last",)]) for q in queries], queries, self.inner.score_tokens,
                             lambda t: (json.dumps([float(x) for x in t.logprobs]), json.dumps(list(t.pieces))),
                             lambda probs, text: TokenScores(np.asarray(json.loads(probs)), tuple(json.loads(text))))

    def _through(self, keys: list[str], queries: Sequence[Query], compute, to_row, from_row) -> list:
        """Look ``keys`` up; compute the missing ones (each distinct query once) with ``compute``; store them."""
        found: dict[str, object] = {}
        with self._lock:
            unique = list(dict.fromkeys(keys))
            for lo in range(0, len(unique), 500):
                chunk = unique[lo:lo + 500]
                rows = self._db.execute(f"SELECT key, probs, text FROM results WHERE key IN ({','.join('?' * len(chunk))})",
                                        chunk).fetchall()
                for k, probs, text in rows:
                    found[k] = from_row(probs, text)
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k not in found:
                first.setdefault(k, i)
        fresh = compute([queries[i] for i in first.values()]) if first else []
        with self._lock:
            rows = []
            for k, value in zip(first, fresh):
                found[k] = value
                rows.append((k, *to_row(value), time.time()))
            if rows:
                self._db.executemany("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?)", rows)
                self._db.commit()
            hits = len(keys) - len(first)
            self.hits += hits
            self.misses += len(first)
            self._step_hits += hits
            self._step_misses += len(first)
        return [found[k] for k in keys]

    def take_metrics(self) -> dict[str, float]:
        with self._lock:
            h, m = self._step_hits, self._step_misses
            self._step_hits = self._step_misses = 0
        return {"judge/cache_hits": h, "judge/cache_misses": m, **self.inner.take_metrics()}

    def totals(self) -> dict[str, int]:
        with self._lock:
            return {"cache_hits": self.hits, "cache_misses": self.misses}

    def load(self) -> None:
        """Nothing: the model loads on the first miss (a run whose every query hits never loads it)."""

    def close(self) -> None:
        with self._lock:
            self._db.close()
        self.inner.close()

