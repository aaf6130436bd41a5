"""Import Triton if it is there; the references work without it (macOS, Windows, minimal installs)."""

from __future__ import annotations

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - Linux CI always has triton through torch
    triton = None
    tl = None

HAVE_TRITON = triton is not None


def next_pow2(n: int) -> int:
    """Smallest power of two >= n (Triton block shapes must be powers of two)."""
    return 1 << max(0, int(n) - 1).bit_length()
