"""The rules every writer of a run dir follows: one writer at a time, no run written twice, no link followed.

A run dir is the user's data, and it may come from someone else (a shared drive, an archive). So:

- **One writer.** A process that writes a run dir (``minirft train`` for its whole life; a label key in
  ``minirft watch``, ``minirft eval``, ``minirft report`` for their writes) holds an exclusive
  ``fcntl.flock`` on ``RUN_DIR/.minirft.lock``, which holds its pid and command. A second one gets
  ``Error: RUN_DIR: in use by pid N (minirft train); …`` at once, never a wait. The lock goes with the
  process (the kernel drops it on exit, even on SIGKILL), so a stale lock file is harmless.
- **Never twice.** ``minirft train`` refuses a dir that already holds something unless it is
  ``--resume``-d (or ``--overwrite``-n: its old contents are removed first, under the lock).
- **No links.** Nothing is written through a symbolic link found in a run dir: every folder between
  the run dir and the file, and the file itself, must not be a link (:func:`guard`), and append-mode
  opens use ``O_NOFOLLOW`` (:func:`open_append`), so a link swapped in after the check is refused too.
  The run dir itself may be a link (``runs -> /data/runs``): that is the user's own choice of place.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from pathlib import Path

from minirft.errors import MinirftError

LOCK_FILE = ".minirft.lock"
# A write that failed for one of these is the user's to fix (space, permissions), said in one line.
WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG}
# What a fresh run dir may already hold: the lock, and the log `train --tui` opens before its child starts.
FRESH_OK = {LOCK_FILE, "train.log"}


def _link_error(path: Path) -> MinirftError:
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    return MinirftError(f"{path}: is a symbolic link (to {target}); minirft never writes through a link "
                        "in a run dir (remove the link, or copy the run dir without it)")


def guard(run_dir: str | os.PathLike, path: str | os.PathLike) -> Path:
    """``path`` (inside ``run_dir``), after checking that no folder between them, and not ``path``
    itself, is a symbolic link; a MinirftError naming the link otherwise. A path that is not
    inside ``run_dir`` at all (``..``, another folder) is an error too."""
    run_dir, path = Path(run_dir), Path(path)
    try:
        rel = path.relative_to(run_dir)
    except ValueError:
        raise MinirftError(f"{path}: not inside the run dir {run_dir}") from None
    if ".." in rel.parts:
        raise MinirftError(f"{path}: not inside the run dir {run_dir}")
    cur = run_dir
    for part in rel.parts:
        cur = cur / part
        if cur.is_symlink():
            raise _link_error(cur)
    return path


def open_append(path: str | os.PathLike, run_dir: str | os.PathLike | None = None, *,
                mode: int = 0o666) -> int:
    """An ``O_APPEND`` (read-write) file descriptor for ``path`` (created if absent) that never follows a link:
    ``O_NOFOLLOW`` refuses a link at the file itself, :func:`guard` one in the folders above it."""
    path = Path(path)
    if run_dir is not None:
        guard(run_dir, path)
    try:
        return os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _link_error(path) from None
        raise


def open_update(path: str | os.PathLike) -> int | None:
    """A read-write descriptor for an existing ``path`` (None if it is absent), refusing a link."""
    try:
        return os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _link_error(Path(path)) from None
        raise


# ------------------------------------------------------------------------------------------ lock
class RunLock:
    """An exclusive ``flock`` on ``RUN_DIR/.minirft.lock`` for as long as it is held.

    ``RunLock(run_dir, "minirft train").acquire()`` creates the dir if needed (``created`` says so)
    and raises MinirftError naming the holder's pid when another process holds it."""

    def __init__(self, run_dir: str | os.PathLike, what: str = "minirft") -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.what = what
        self.fd: int | None = None
        self.created = False  # the dir did not exist: acquire made it
        self.made_dirs: list[Path] = []
        self.made_file = False  # nor did the lock file

    def acquire(self) -> "RunLock":
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise MinirftError(f"{self.run_dir}: not a directory")
        if not self.run_dir.exists():
            missing = [self.run_dir, *(p for p in self.run_dir.parents if not p.exists())]
            try:
                self.run_dir.mkdir(parents=True)
                self.created = True
                self.made_dirs = missing  # the run dir and any parents (runs/) made for it, innermost first
            except FileExistsError:
                pass
            except OSError as exc:
                raise MinirftError(f"{self.run_dir}: cannot create the run dir ({exc.strerror})") from None
        self.made_file = not (self.path.exists() or self.path.is_symlink())
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise _link_error(self.path) from None
                raise MinirftError(f"{self.run_dir}: cannot write in the run dir ({exc.strerror})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise MinirftError(f"{self.run_dir}: in use by {holder}; wait for it to finish, or stop it "
                                   "first (one process writes a run dir at a time)") from None
            # The file we locked must still be the one at the path (not one a finished holder removed).
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path, follow_symlinks=False))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {self.what}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.ftruncate(self.fd, 0)  # no pid left behind to mislead a reader
            except OSError:
                pass
            os.close(self.fd)  # closing drops the flock; the file stays (removing it would race)
            self.fd = None

    def forget_dir(self) -> None:
        """Release; and when nothing but the lock is in the dir (a run that failed before it started),
        remove what :meth:`acquire` made (the lock file, the dir), so such a run leaves nothing behind."""
        try:
            alone = self.made_file and [p.name for p in self.run_dir.iterdir()] == [LOCK_FILE]
        except OSError:
            alone = False
        if alone:
            self.path.unlink(missing_ok=True)  # while still held: no one can have locked it meanwhile
        self.release()
        if alone and self.created:
            for d in self.made_dirs:  # innermost first; a folder something else has written into stays
                try:
                    d.rmdir()
                except OSError:
                    break

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    pid, _, what = text.partition(" ")
    if pid.isdigit():
        return f"pid {pid} ({what or 'minirft'})"
    return "another minirft process"


# ------------------------------------------------------------------------------------- fresh runs
def existing_contents(run_dir: Path) -> list[str]:
    """What a dir holds beyond what a fresh run may find there (see FRESH_OK); [] if absent."""
    try:
        return sorted(p.name for p in run_dir.iterdir() if p.name not in FRESH_OK)
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        raise MinirftError(f"{run_dir}: not a directory") from None


def check_fresh(run_dir: Path, *, overwrite: bool = False) -> None:
    """A new run may go into ``run_dir``: it is absent or empty, or ``overwrite`` was asked for."""
    if run_dir.is_symlink() and not run_dir.exists():
        raise MinirftError(f"{run_dir}: a dangling symbolic link")
    found = existing_contents(run_dir)
    if found and not overwrite:
        shown = ", ".join(found[:4]) + (", …" if len(found) > 4 else "")
        raise MinirftError(f"{run_dir}: already exists and holds {shown}; continue that run with "
                           f"--resume {run_dir}, or replace it with --overwrite")


def clear(run_dir: Path) -> None:
    """Remove everything in ``run_dir`` but what a fresh run may find there (the lock, the log
    ``train --tui`` is writing): ``--overwrite``, with the lock held. Links are removed as links:
    nothing outside the dir is touched."""
    for p in run_dir.iterdir():
        if p.name in FRESH_OK:
            continue
        if p.is_symlink() or not p.is_dir():
            p.unlink()
        else:
            shutil.rmtree(p)


# ------------------------------------------------------------------------------- output files
def check_output(path: str | os.PathLike, *, force: bool, flag: str = "--force") -> Path:
    """An output file or folder a command is about to write, checked before any work: refused when it
    exists (an empty folder counts as absent) unless ``force``, and when its folder cannot be written.
    The one rule for every output (``minirft export``, ``minirft judge --output``)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        exists = any(path.iterdir())
    else:
        exists = path.exists() or path.is_symlink()
    if exists and not force:
        kind = "folder" if path.is_dir() else "file"
        raise MinirftError(f"{path}: the {kind} already exists; give {flag} to replace it")
    writable_parent(path)
    return path


def writable_parent(path: Path) -> None:
    """The folder ``path`` goes into exists (created if need be) and can be written; else a MinirftError."""
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MinirftError(f"{parent}: cannot create the folder for {path.name} ({exc.strerror})") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise MinirftError(f"{parent}: the folder is not writable; cannot write {path.name} there")


def write_error(path: str | os.PathLike, exc: BaseException, what: str = "") -> MinirftError:
    """One line for a write that failed (a full disk, a read-only folder): the file, what, and why.
    (torch.save reports a full disk as a RuntimeError about stream positions: said as such.)"""
    if isinstance(exc, OSError):
        why = exc.strerror or str(exc)
    else:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        why = f"{first}; is the disk full?"
    return MinirftError(f"{path}: could not write {what or 'it'} ({why}); nothing half-written was left")

