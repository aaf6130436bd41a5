"""selective_logprobs (fused lm_head + selective log-softmax): kernel and reference vs fp32 autograd."""

import pytest
import torch

from kernels_fixtures import REL_TOL, assert_rel, kernel_cases, make_generator, poisoned_empty  # noqa: F401
from minirft_kernels import selective_logprobs
from minirft_kernels.ops import selective_logprobs as slp_mod
from minirft_kernels.ops.selective_logprobs import selective_logprobs_naive

# (B, T, H, V, block_v, chunk_size): odd sizes; block_v < V exercises the online log-sum-exp
# across vocab blocks, a chunk_size that does not divide B*T exercises the ragged last chunk.
SHAPES = [
    (3, 17, 41, 1000, 256, 10),
    (2, 9, 33, 341, None, None),
]


def _inputs(b, t, h, v, dtype, device, seed=0):
    g = make_generator(seed)
    hidden = torch.randn(b, t, h, generator=g).to(dtype)
    weight = (torch.randn(v, h, generator=g) * h**-0.5 * 3).to(dtype)
    targets = torch.randint(0, v, (b, t), generator=g)
    targets[0, -3:] = -100  # padding: log-prob 0, no gradient
    g_logp = torch.randn(b, t, generator=g)
    g_ent = torch.randn(b, t, generator=g)
    return [x.to(device) for x in (hidden, weight, targets, g_logp, g_ent)]


@pytest.mark.parametrize("device,backend", kernel_cases())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:4])))
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_forward_and_grads_match_fp32_autograd(device, backend, dtype, shape, temperature, poisoned_empty):
    b, t, h, v, block_v, chunk = shape
    hidden, weight, targets, g_logp, g_ent = _inputs(b, t, h, v, dtype, device)
    hk = hidden.clone().requires_grad_()
    wk = weight.clone().requires_grad_()
    logp, ent = selective_logprobs(hk, wk, targets, temperature, chunk, with_entropy=True,
                                   backend=backend, block_v=block_v)
    assert logp.dtype == torch.float32 and ent.dtype == torch.float32
    gh, gw = torch.autograd.grad((logp * g_logp).sum() + (ent * g_ent).sum(), (hk, wk))

    # Ground truth: fp32 autograd over full logits, on the same (possibly bf16-rounded) values.
    hr = hidden.float().requires_grad_()
    wr = weight.float().requires_grad_()
    logp_r, ent_r = selective_logprobs_naive(hr, wr, targets, temperature, with_entropy=True)
    gh_r, gw_r = torch.autograd.grad((logp_r * g_logp).sum() + (ent_r * g_ent).sum(), (hr, wr))

    tol = REL_TOL[dtype]
    assert_rel(logp, logp_r, tol, "logp")
    assert_rel(ent, ent_r, tol, "entropy")
    assert_rel(gh.float(), gh_r, 3 * tol, "d hidden")
    assert_rel(gw.float(), gw_r, 3 * tol, "d weight")
    pad = targets < 0
    assert (logp[pad] == 0).all()


@pytest.mark.parametrize("device,backend", kernel_cases())
def test_logp_only_and_hidden_grad_only(device, backend, poisoned_empty):
    """The trainer's call: no entropy, lm_head frozen (no weight grad)."""
    hidden, weight, targets, g_logp, _ = _inputs(3, 17, 41, 1000, torch.float32, device, seed=1)
    hk = hidden.clone().requires_grad_()
    logp = selective_logprobs(hk, weight, targets, backend=backend, block_v=256, chunk_size=16)
    (gh,) = torch.autograd.grad((logp * g_logp).sum(), (hk,))
    hr = hidden.clone().requires_grad_()
    logp_r = selective_logprobs_naive(hr, weight, targets)
    (gh_r,) = torch.autograd.grad((logp_r * g_logp).sum(), (hr,))
    assert_rel(logp, logp_r, REL_TOL[torch.float32], "logp")
    assert_rel(gh, gh_r, 3 * REL_TOL[torch.float32], "d hidden")
    # Padded positions get exactly zero gradient.
    assert (gh[0, -3:] == 0).all()


@pytest.mark.parametrize("device,backend", kernel_cases())
def test_kernel_and_reference_agree_in_bf16(device, backend):
    """Same bf16 logits chunks in, so kernel and reference agree far closer than either to fp32."""
    hidden, weight, targets, g_logp, g_ent = _inputs(3, 17, 41, 1000, torch.bfloat16, device, seed=2)
    out = {}
    for name in (backend, "reference"):
        hk = hidden.clone().requires_grad_()
        logp, ent = selective_logprobs(hk, weight, targets, with_entropy=True, backend=name, block_v=256)
        (gh,) = torch.autograd.grad((logp * g_logp).sum() + (ent * g_ent).sum(), (hk,))
        out[name] = (logp, ent, gh)
    for a, r, what in zip(out[backend], out["reference"], ("logp", "entropy", "d hidden")):
        assert_rel(a.float(), r.float(), 1e-2, what)


def test_reference_never_builds_more_than_chunk_rows(monkeypatch):
    """The CPU path's memory bound: logits exist only [chunk_size, V] at a time."""
    seen = []
    real_stats, real_grad = slp_mod._IMPLS["reference"]

    def stats(logits, *a):
        seen.append(logits.shape[0])
        return real_stats(logits, *a)

    def grad(logits, *a):
        seen.append(logits.shape[0])
        return real_grad(logits, *a)

    monkeypatch.setitem(slp_mod._IMPLS, "reference", (stats, grad))
    hidden, weight, targets, g_logp, _ = _inputs(3, 17, 41, 1000, torch.float32, "cpu")
    hk = hidden.requires_grad_()
    logp = selective_logprobs(hk, weight, targets, chunk_size=8, backend="reference")
    logp.sum().backward()
    assert max(seen) == 8 and sum(seen) == 2 * 3 * 17


def test_default_chunk_bounds_the_logits():
    assert slp_mod.default_chunk_size(16 * 1024, 151_936, "cuda") * 151_936 <= slp_mod.CHUNK_ELEMENTS
    assert slp_mod.default_chunk_size(16 * 1024, 151_936, "cpu") * 151_936 <= slp_mod.CHUNK_ELEMENTS_CPU
    assert slp_mod.default_chunk_size(5, 1000) == 5


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="targets"):
        selective_logprobs(torch.randn(2, 3, 4), torch.randn(10, 4), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="weight"):
        selective_logprobs(torch.randn(2, 3, 4), torch.randn(10, 5), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="temperature"):
        selective_logprobs(torch.randn(2, 3, 4), torch.randn(10, 4), torch.zeros(2, 3, dtype=torch.long), 0.0)


@pytest.mark.parametrize("device,backend", kernel_cases())
def test_entropy_only_gradient(device, backend):
    """An entropy bonus alone (no log-prob term in the loss) still back-propagates."""
    hidden, weight, targets, _, g_ent = _inputs(2, 9, 33, 341, torch.float32, device, seed=4)
    hk = hidden.clone().requires_grad_()
    _, ent = selective_logprobs(hk, weight, targets, 0.7, with_entropy=True, backend=backend, block_v=128)
    (gh,) = torch.autograd.grad((ent * g_ent).sum(), (hk,))
    hr = hidden.clone().requires_grad_()
    _, ent_r = selective_logprobs_naive(hr, weight, targets, 0.7, with_entropy=True)
    (gh_r,) = torch.autograd.grad((ent_r * g_ent).sum(), (hr,))
    assert_rel(gh, gh_r, 3 * REL_TOL[torch.float32], "d hidden")
