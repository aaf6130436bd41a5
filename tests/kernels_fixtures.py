"""Shared helpers for the kernel tests: devices/backends to run, tolerances, poisoned outputs."""

from __future__ import annotations

import pytest
import torch

from minirft_kernels.dispatch import interpreter_on


def kernel_cases():
    """(device, backend) pairs to compare against the naive fp32 ground truth.

    On CPU: the reference always, Triton when its interpreter is on (tests/conftest.py sets
    TRITON_INTERPRET=1). On a CUDA machine (run with TRITON_INTERPRET=0): both, compiled for real.
    """
    cases = [("cpu", "reference")]
    if interpreter_on():
        cases.append(("cpu", "triton"))
    if torch.cuda.is_available() and not interpreter_on():
        cases += [("cuda", "reference"), ("cuda", "triton")]
    return [pytest.param(d, b, id=f"{d}-{b}") for d, b in cases]


#: Relative error bound ||out - ref|| / ||ref|| against fp32 math on the same input values.
#: bf16 rounds the logits (and the gradients written back into the logits buffer) to 8 bits.
REL_TOL = {torch.float32: 2e-5, torch.bfloat16: 2e-2}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    assert torch.isfinite(out).all(), "non-finite values (an element the kernel never wrote?)"
    return float((out - ref).norm() / ref.norm().clamp_min(1e-30))


def assert_rel(out: torch.Tensor, ref: torch.Tensor, tol: float, what: str = "") -> None:
    assert out.shape == ref.shape, f"{what}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    err = rel_err(out, ref)
    assert err < tol, f"{what}: relative error {err:.3g} >= {tol:.3g}"


@pytest.fixture
def poisoned_empty(monkeypatch):
    """Make every torch.empty / empty_like return NaN (or a huge int): unwritten outputs then show."""
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def _poison(t: torch.Tensor) -> torch.Tensor:
        if t.is_floating_point():
            return t.fill_(float("nan"))
        if t.dtype == torch.bool:
            return t
        return t.fill_(torch.iinfo(t.dtype).max // 2)

    monkeypatch.setattr(torch, "empty", lambda *a, **k: _poison(real_empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: _poison(real_empty_like(*a, **k)))
    yield


def make_generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g
