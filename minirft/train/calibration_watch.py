"""Live judge calibration: the trainer re-reads the judge's Platt maps between steps when their file changes.

``minirft calibrate ... --fit`` (or ``--from-run RUN_DIR --fit``) writes the file atomically, so a
poll sees the old file or the new one, never half of one. The file watched is the recipe's
``judge.platt`` when it names one, else ``RUN_DIR/calibration.json`` (where ``--from-run``
writes for a recipe without one). Each step's metrics carry ``calibration``: the first 12 hex digits
of the SHA-256 of the file in force for that step's scores; no such key: no calibration was in force.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minirft.errors import MinirftError
from minirft.judge.base import CalibrationRefused, Judge

RUN_CALIBRATION = "calibration.json"


def watched_path(recipe: Any, run_dir: Path) -> Path:
    """The calibration file a run follows (see the module docstring)."""
    configured = recipe.judge.platt if recipe.judge is not None else None
    return Path(configured) if configured else Path(run_dir) / RUN_CALIBRATION


@dataclass(frozen=True)
class Change:
    digest: str | None  # None: the file is gone, calibration off
    platt: dict  # name -> Platt ({} when off)
    message: str


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


class CalibrationWatch:
    """Polled by the loop before each step; ``digest`` is the calibration in force."""

    def __init__(self, path: Path, loaded_at_start: bool) -> None:
        self.path = Path(path)
        self.digest: str | None = None
        self._stat: tuple | None = None
        self._bad: str | None = None  # digest of a file that failed to load (warned once)
        if loaded_at_start and self.path.is_file():  # the judge read it when it was built
            self._stat = self._stat_of()
            self.digest = digest_of(self.path.read_bytes())

    def _stat_of(self) -> tuple | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def poll(self) -> Change | None:
        """A Change when the file differs from the one in force (or a warning string in ``message``
        with ``digest`` unchanged when the new file cannot be read); None when nothing changed."""
        stat = self._stat_of()
        if stat == self._stat:
            return None
        self._stat = stat
        if stat is None:
            if self.digest is None:
                return None
            self.digest = None
            return Change(None, {}, f"judge calibration {self.path} removed: the judge's probabilities are "
                                    "used as they are from this step on")
        data = self.path.read_bytes()
        digest = digest_of(data)
        if digest == self.digest or digest == self._bad:
            return None
        from minirft.judge.calibration import load_platt_maps as load_calibration

        try:
            platt = load_calibration(self.path)
        except MinirftError as exc:
            self._bad = digest
            raise CalibrationUnreadable(f"{exc}; keeping the calibration in force "
                                        f"({self.digest or 'none'})") from None
        self.digest = digest
        try:
            meta = json.loads(data)
            source = f" (fitted on {meta.get('n')} labels from {meta.get('fitted_on')})"
        except ValueError:
            source = ""
        maps = ", ".join(f"{k}: a={v.a:.2f} b={v.b:+.2f}" for k, v in platt.items())
        return Change(digest, platt, f"judge calibration {digest} from {self.path}{source} in force from "
                                     f"this step: {maps}")


class CalibrationUnreadable(Exception):
    """The watched file changed but is not a calibration file; the old one stays in force."""


def apply(judge: Judge, platt: dict) -> bool:
    """Give the judge new Platt maps; False when this judge cannot take them."""
    try:
        judge.use_calibration(platt)
    except CalibrationRefused:
        return False
    return True
