"""Follow ``events.jsonl`` from a worker thread without ever blocking the UI.

The worker only reads: it buffers complete new records (``EventReader`` keeps a partial last line
until its newline arrives) and posts a payload-free :class:`LogGrew`. The UI thread drains the
buffer when it handles the message. Because ``LogGrew.can_replace`` is true for any queued
``LogGrew``, a burst of appends collapses into one message, hence one redraw, however many records
it brought. Opening a long log is the same path: the first poll reads the whole file in the thread.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

from textual.message import Message

from minirft.events import EventReader


class LogGrew(Message):
    """New records are waiting in the tail's buffer. Queued duplicates coalesce into one."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, LogGrew)


class LogTail:
    """Thread-safe buffer of records read from a growing log."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._reader = EventReader(self.path)
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()  # the worker polls; the UI polls once more when the child exits
        self._buffer: list[dict] = []

    def poll(self) -> int:
        """Read whatever complete lines were appended; returns how many records were buffered."""
        with self._read_lock:
            records = self._reader.read_new()
        if records:
            with self._lock:
                self._buffer.extend(records)
        return len(records)

    @property
    def skipped(self) -> list[int]:
        """Line numbers of unreadable lines read so far."""
        return list(self._reader.skipped)

    def drain(self) -> list[dict]:
        """Take every buffered record (UI thread)."""
        with self._lock:
            out, self._buffer = self._buffer, []
        return out


def tail_loop(tail: LogTail, post: Callable[[Message], object], is_cancelled: Callable[[], bool],
              interval: float) -> None:
    """Body of the worker: poll, post one message per non-empty poll, sleep, until cancelled."""
    while not is_cancelled():
        if tail.poll():
            post(LogGrew())
        time.sleep(interval)
