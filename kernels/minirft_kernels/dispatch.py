"""Choose between the Triton kernels and their torch references.

``MINIRFT_KERNELS`` (or a call's ``backend=`` argument) selects:

- ``auto`` (default): Triton when the tensors live on a CUDA device and Triton imports; the torch
  reference otherwise. On CPU ``auto`` never picks Triton, even with ``TRITON_INTERPRET=1``: the
  interpreter is a debugging tool, hundreds of times slower than the reference.
- ``triton``: always the kernel. On CPU this needs ``TRITON_INTERPRET=1`` in the environment
  *before* Triton is first imported (tests/conftest.py does that), else it is an error.
- ``reference``: always the torch reference (to rule a kernel out when chasing a bug).

The reference is not a naive path: every reference here is chunked like its kernel, so the CPU path
has the same memory bound as the GPU one.
"""

from __future__ import annotations

import os

import torch

from .errors import KernelError

BACKENDS = ("auto", "triton", "reference")
ENV_VAR = "MINIRFT_KERNELS"


def triton_available() -> bool:
    """True when ``import triton`` works (Linux wheels; absent on macOS and Windows)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def interpreter_on() -> bool:
    """True when Triton's CPU interpreter was requested through the environment."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def requested_backend(backend: str | None = None) -> str:
    """The backend asked for: the argument, else ``$MINIRFT_KERNELS``, else ``auto``."""
    name = (backend or os.environ.get(ENV_VAR) or "auto").strip().lower()
    if name not in BACKENDS:
        raise KernelError(f"{ENV_VAR}={name!r}: expected one of {', '.join(BACKENDS)}")
    return name


def resolve_backend(device: torch.device, backend: str | None = None) -> str:
    """Return ``"triton"`` or ``"reference"`` for tensors on ``device``."""
    name = requested_backend(backend)
    if name == "reference":
        return "reference"
    on_cuda = device.type == "cuda"
    if name == "auto":
        return "triton" if on_cuda and triton_available() else "reference"
    # name == "triton": forced.
    if not triton_available():
        raise KernelError(f"{ENV_VAR}=triton but triton is not installed (pip install triton)")
    if not on_cuda and not interpreter_on():
        raise KernelError(
            f"{ENV_VAR}=triton with tensors on {device.type}: set TRITON_INTERPRET=1 before "
            "starting Python to run the kernels on CPU (slow), or use MINIRFT_KERNELS=reference"
        )
    return "triton"
