"""The one exception type a user sees.

Library code raises :class:`MinirftError` with a message that names the file, line or key at
fault and what was expected. The CLI turns it into ``Error: <message>`` and exit code 1 — never a
traceback.
"""

from __future__ import annotations


class MinirftError(Exception):
    """A problem the user can act on (bad recipe, bad data line, missing model package...)."""


def read_utf8(path, data: bytes | None = None) -> str:
    """A text file's content; bytes that are not UTF-8 are a MinirftError naming the line and column.

    ``Error: FILE:LINE: not valid UTF-8 (byte 0xe9 at column N)`` rather than a UnicodeDecodeError."""
    if data is None:
        with open(path, "rb") as fh:
            data = fh.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise not_utf8(path, data, exc) from None


def not_utf8(path, data: bytes, exc: UnicodeDecodeError, first_line: int = 1) -> MinirftError:
    """The one-line error for ``exc`` raised decoding ``data`` (which starts at line ``first_line``)."""
    line = first_line + data.count(b"\n", 0, exc.start)
    column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
    return MinirftError(f"{path}:{line}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at column {column})")
