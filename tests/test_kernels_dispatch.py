"""The dispatcher: which implementation runs where, and errors for impossible requests."""

import pytest
import torch

from minirft_kernels import KernelError
from minirft_kernels.dispatch import resolve_backend, triton_available

CPU = torch.device("cpu")


def test_auto_uses_reference_on_cpu_even_with_interpreter(monkeypatch):
    monkeypatch.delenv("MINIRFT_KERNELS", raising=False)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert resolve_backend(CPU) == "reference"


def test_forced_triton_on_cpu_needs_interpreter(monkeypatch):
    monkeypatch.setenv("MINIRFT_KERNELS", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert resolve_backend(CPU) == "triton"
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(KernelError, match="TRITON_INTERPRET=1"):
        resolve_backend(CPU)


def test_forced_reference_wins_everywhere(monkeypatch):
    monkeypatch.setenv("MINIRFT_KERNELS", "reference")
    assert resolve_backend(torch.device("cuda")) == "reference"
    assert resolve_backend(CPU, backend="reference") == "reference"


def test_argument_overrides_environment(monkeypatch):
    monkeypatch.setenv("MINIRFT_KERNELS", "triton")
    assert resolve_backend(CPU, backend="reference") == "reference"


@pytest.mark.skipif(not triton_available(), reason="triton not installed")
def test_auto_picks_triton_on_cuda(monkeypatch):
    monkeypatch.delenv("MINIRFT_KERNELS", raising=False)
    assert resolve_backend(torch.device("cuda")) == "triton"


def test_unknown_backend_is_a_user_error(monkeypatch):
    monkeypatch.setenv("MINIRFT_KERNELS", "cuda")
    with pytest.raises(KernelError, match="MINIRFT_KERNELS='cuda'"):
        resolve_backend(CPU)
