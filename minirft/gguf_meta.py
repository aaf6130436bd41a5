"""One string from a GGUF file's metadata, read by walking the header, without loading anything else.

``gguf.GGUFReader`` maps every field and tensor into numpy objects before answering: on Gemma-3's
GGUF (a 262k-entry vocabulary, one object per token) that is +690 MB of peak RSS and 11-35 s on a
2-core machine, just to learn that the file has no ``tokenizer.chat_template``. Here the key/value
section is walked in order (GGUF v2/v3 layout: magic, version, tensor count, kv count, then
``key, type, value`` records) and stops at the key; arrays are skipped by their lengths.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

# GGUF value types -> their fixed size in bytes (8: string, 9: array)
_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9


class _Bad(ValueError):
    pass


def read_string(path: str | Path, key: str) -> str | None:
    """The string value of metadata ``key`` in the GGUF at ``path``; None when the key is absent.

    Raises ValueError for a file that is not a (version 2 or 3) GGUF or is cut short."""
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:4] != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file")
        version, _n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
        if version not in (2, 3):
            raise ValueError(f"{path}: GGUF version {version} is not supported")
        pos = 24
        want = key.encode("utf-8")
        try:
            for _ in range(n_kv):
                name, pos = _string(buf, pos)
                (vtype,) = struct.unpack_from("<I", buf, pos)
                pos += 4
                if name == want:
                    if vtype != _STRING:
                        return None
                    value, _ = _string(buf, pos)
                    return value.decode("utf-8", errors="replace")
                pos = _skip(buf, pos, vtype)
        except struct.error:
            raise ValueError(f"{path}: the GGUF metadata is cut short") from None
    return None


def _string(buf, pos: int) -> tuple[bytes, int]:
    (n,) = struct.unpack_from("<Q", buf, pos)
    if pos + 8 + n > len(buf):
        raise struct.error("string past the end")
    return buf[pos + 8:pos + 8 + n], pos + 8 + n


def _skip(buf, pos: int, vtype: int) -> int:
    if vtype in _FIXED:
        return pos + _FIXED[vtype]
    if vtype == _STRING:
        (n,) = struct.unpack_from("<Q", buf, pos)
        return pos + 8 + n
    if vtype == _ARRAY:
        item, n = struct.unpack_from("<IQ", buf, pos)
        pos += 12
        if item in _FIXED:
            return pos + n * _FIXED[item]
        for _ in range(n):
            pos = _skip(buf, pos, item)
        return pos
    raise struct.error(f"unknown GGUF value type {vtype}")
