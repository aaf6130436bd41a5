"""Selective log-softmax fused with the lm_head: log p(sampled token) without [B, T, V] logits.

The policy's log-prob of each sampled token is ``log_softmax(hidden @ weight.T / temperature)``
gathered at the target id. Done naively, that materialises [B, T, V] logits (and autograd keeps
them, plus the softmax, for the backward): 2 x 4 bytes x 16 x 1024 x 128k = 17 GB in fp32 at
Liger's benchmark shape. Here the rows (positions) are processed in chunks of ``chunk_size``:

forward, per chunk:  logits_c = hidden_c @ weight.T          (cuBLAS / torch matmul, [chunk, V])
                     one pass over logits_c per row: online log-sum-exp over vocab blocks,
                     the target logit, and optionally the entropy          (Triton kernel)
backward, per chunk: logits_c recomputed, then turned *in place* into d loss / d logits
                     (Triton kernel), d hidden_c = dlogits_c @ weight, d weight += dlogits_c.T @ hidden_c

Only the per-row log-sum-exp (and entropy) is saved between forward and backward, so peak memory
is one [chunk, V] buffer plus the inputs, whatever B x T is. The price is a second matmul in the
backward (the logits are recomputed), the same trade Liger-Kernel's fused linear losses make.

Gradients: with z = logits / T, p = softmax(z), y = target, lp = log p_y, H = entropy,
    d lp / d z_j = 1[j = y] - p_j
    d H  / d z_j = -p_j (log p_j + H)
and d/d logits = (d/d z) / T. Targets < 0 (padding) give log-prob 0 and no gradient.

Outputs are float32 whatever the input dtype: importance ratios exp(logp - old_logp) need it.
"""

from __future__ import annotations

import torch

from ..dispatch import resolve_backend
from ._triton import HAVE_TRITON, next_pow2, tl, triton

#: Default working-set size, in logits elements per chunk: 64M on CUDA (128 MB in bf16: big enough
#: for cuBLAS to run at full speed), 16M on CPU (64 MB in fp32; the CPU matmul needs far fewer rows).
CHUNK_ELEMENTS = 1 << 26
CHUNK_ELEMENTS_CPU = 1 << 24
#: Largest vocab block one Triton program loads at a time.
MAX_BLOCK_V = 4096


def default_chunk_size(n_rows: int, vocab: int, device: torch.device | str = "cuda") -> int:
    """Rows per chunk so that one chunk of logits holds about ``CHUNK_ELEMENTS(_CPU)`` values."""
    budget = CHUNK_ELEMENTS if torch.device(device).type == "cuda" else CHUNK_ELEMENTS_CPU
    return max(1, min(n_rows, budget // max(1, vocab)))


# --------------------------------------------------------------------------------------------
# Triton kernels: one program per row of a [rows, V] logits chunk. V is a constexpr so that the
# vocab loop has compile-time bounds (Triton 3.6's interpreter fails on runtime loop bounds with
# numpy >= 2.4; one compile per vocab size is what we want anyway).
# --------------------------------------------------------------------------------------------
if HAVE_TRITON:

    @triton.jit
    def _logprob_fwd_kernel(
        logits_ptr,
        stride_row,
        targets_ptr,
        logp_ptr,
        lse_ptr,
        ent_ptr,
        inv_temp,
        V: tl.constexpr,
        BLOCK_V: tl.constexpr,
        WITH_ENTROPY: tl.constexpr,
    ):
        row = tl.program_id(0).to(tl.int64)
        base = logits_ptr + row * stride_row
        target = tl.load(targets_ptr + row).to(tl.int64)
        valid = target >= 0

        m = float("-inf")  # running max of z
        s = 0.0  # running sum of exp(z - m)
        t = 0.0  # running sum of exp(z - m) * z (entropy only)
        for start in range(0, V, BLOCK_V):
            cols = start + tl.arange(0, BLOCK_V)
            in_vocab = cols < V
            z = tl.load(base + cols, mask=in_vocab, other=float("-inf")).to(tl.float32) * inv_temp
            m_new = tl.maximum(m, tl.max(z, axis=0))
            scale = tl.exp(m - m_new)
            e = tl.exp(z - m_new)
            s = s * scale + tl.sum(e, axis=0)
            if WITH_ENTROPY:
                t = t * scale + tl.sum(e * tl.where(in_vocab, z, 0.0), axis=0)
            m = m_new

        lse = m + tl.log(s)
        z_target = tl.load(base + tl.maximum(target, 0)).to(tl.float32) * inv_temp
        tl.store(logp_ptr + row, tl.where(valid, z_target - lse, 0.0))
        tl.store(lse_ptr + row, lse)
        if WITH_ENTROPY:
            tl.store(ent_ptr + row, lse - t / s)

    @triton.jit
    def _logprob_bwd_kernel(
        logits_ptr,
        stride_row,
        targets_ptr,
        grad_logp_ptr,
        grad_ent_ptr,
        lse_ptr,
        ent_ptr,
        inv_temp,
        V: tl.constexpr,
        BLOCK_V: tl.constexpr,
        HAS_GRAD_LOGP: tl.constexpr,
        HAS_GRAD_ENT: tl.constexpr,
    ):
        """Overwrite one row of logits with d loss / d logits."""
        row = tl.program_id(0).to(tl.int64)
        base = logits_ptr + row * stride_row
        target = tl.load(targets_ptr + row).to(tl.int64)
        lse = tl.load(lse_ptr + row)
        g_lp = 0.0
        if HAS_GRAD_LOGP:
            g_lp = tl.where(target >= 0, tl.load(grad_logp_ptr + row), 0.0)
        g_ent = 0.0
        ent = 0.0
        if HAS_GRAD_ENT:
            g_ent = tl.load(grad_ent_ptr + row)
            ent = tl.load(ent_ptr + row)
        for start in range(0, V, BLOCK_V):
            cols = start + tl.arange(0, BLOCK_V)
            in_vocab = cols < V
            z = tl.load(base + cols, mask=in_vocab, other=0.0).to(tl.float32) * inv_temp
            logp = z - lse
            p = tl.exp(logp)
            g = -g_lp * p
            g = tl.where(cols == target, g + g_lp, g)
            if HAS_GRAD_ENT:
                g = g - g_ent * p * (logp + ent)
            tl.store(base + cols, (g * inv_temp).to(logits_ptr.dtype.element_ty), mask=in_vocab)


def _launch_params(vocab: int, block_v: int | None) -> tuple[int, int]:
    block = block_v or min(MAX_BLOCK_V, next_pow2(vocab))
    num_warps = 4 if block <= 1024 else (8 if block <= 2048 else 16)
    return block, num_warps


def _row_stats_triton(logits, targets, inv_temp, logp, lse, ent, block_v=None):
    rows, vocab = logits.shape
    if rows == 0:
        return
    block, warps = _launch_params(vocab, block_v)
    _logprob_fwd_kernel[(rows,)](
        logits, logits.stride(0), targets, logp, lse, ent if ent is not None else lse, inv_temp,
        V=vocab, BLOCK_V=block, WITH_ENTROPY=ent is not None, num_warps=warps,
    )


def _row_grad_triton(logits, targets, inv_temp, g_logp, g_ent, lse, ent, block_v=None):
    rows, vocab = logits.shape
    if rows == 0:
        return logits
    block, warps = _launch_params(vocab, block_v)
    _logprob_bwd_kernel[(rows,)](
        logits, logits.stride(0), targets,
        g_logp if g_logp is not None else lse, g_ent if g_ent is not None else lse,
        lse, ent if ent is not None else lse, inv_temp,
        V=vocab, BLOCK_V=block, HAS_GRAD_LOGP=g_logp is not None, HAS_GRAD_ENT=g_ent is not None,
        num_warps=warps,
    )
    return logits


# --------------------------------------------------------------------------------------------
# Torch reference of the two row operations (same chunking around them, so same memory bound).
# --------------------------------------------------------------------------------------------
def _scaled_fp32(logits: torch.Tensor, inv_temp: float) -> torch.Tensor:
    """z = logits / T in fp32, reusing the chunk's own buffer when it is already fp32 (we own it)."""
    z = logits.float()  # no copy for fp32 logits
    return z.mul_(inv_temp) if inv_temp != 1.0 else z


def _row_stats_torch(logits, targets, inv_temp, logp, lse, ent, block_v=None):
    # In-place and fused-reduction ops: at most two [chunk, V] fp32 buffers alive (z and p), so the
    # CPU path's peak is about 2-3 chunks of logits.
    z = _scaled_fp32(logits, inv_temp)
    row_lse = torch.logsumexp(z, dim=-1)
    valid = targets >= 0
    z_target = z.gather(1, targets.clamp_min(0).unsqueeze(1)).squeeze(1)
    logp.copy_(torch.where(valid, z_target - row_lse, torch.zeros_like(row_lse)))
    lse.copy_(row_lse)
    if ent is not None:
        p = torch.exp(z - row_lse.unsqueeze(1))
        ent.copy_(row_lse - torch.linalg.vecdot(p, z))


def _row_grad_torch(logits, targets, inv_temp, g_logp, g_ent, lse, ent, block_v=None):
    logp_all = _scaled_fp32(logits, inv_temp).sub_(lse.unsqueeze(1))  # log p, in place
    p = torch.exp(logp_all)  # the second and last [chunk, V] buffer
    ent_term = None
    if g_ent is not None:  # g_ent * p * (log p + H), built in logp_all's buffer
        ent_term = logp_all.add_(ent.unsqueeze(1)).mul_(p).mul_(g_ent.unsqueeze(1))
    if g_logp is not None:
        g_lp = torch.where(targets >= 0, g_logp, torch.zeros_like(g_logp))
        g = p.mul_(-g_lp.unsqueeze(1))
        g.scatter_add_(1, targets.clamp_min(0).unsqueeze(1), g_lp.unsqueeze(1))
        if ent_term is not None:
            g.sub_(ent_term)
    else:
        g = ent_term.neg_()
    if inv_temp != 1.0:
        g.mul_(inv_temp)
    return g.to(logits.dtype)


_IMPLS = {
    "triton": (_row_stats_triton, _row_grad_triton),
    "reference": (_row_stats_torch, _row_grad_torch),
}


class FusedLinearLogprob(torch.autograd.Function):
    """Chunked lm_head + selective log-softmax (+ entropy); ``impl`` picks the row kernels."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, chunk_size, with_entropy, impl, block_v):
        row_stats, _ = _IMPLS[impl]
        rows = hidden.shape[0]
        inv_temp = 1.0 / temperature
        dev = hidden.device
        logp = torch.empty(rows, dtype=torch.float32, device=dev)
        lse = torch.empty(rows, dtype=torch.float32, device=dev)
        ent = torch.empty(rows, dtype=torch.float32, device=dev) if with_entropy else None
        for s in range(0, rows, chunk_size):
            e = min(rows, s + chunk_size)
            logits = hidden[s:e] @ weight.t()
            row_stats(logits, targets[s:e], inv_temp, logp[s:e], lse[s:e],
                      ent[s:e] if ent is not None else None, block_v)
            del logits
        ctx.save_for_backward(hidden, weight, targets, lse, ent if ent is not None else lse)
        ctx.cfg = (inv_temp, chunk_size, with_entropy, impl, block_v)
        ctx.set_materialize_grads(False)
        if ent is None:
            ent = torch.empty(0, dtype=torch.float32, device=dev)
            ctx.mark_non_differentiable(ent)
        return logp, ent

    @staticmethod
    def backward(ctx, g_logp, g_ent):
        hidden, weight, targets, lse, ent = ctx.saved_tensors
        inv_temp, chunk_size, with_entropy, impl, block_v = ctx.cfg
        _, row_grad = _IMPLS[impl]
        if not with_entropy:
            g_ent = None
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if (g_logp is None and g_ent is None) or not (need_h or need_w):
            return (None,) * 8
        g_logp = g_logp.float().contiguous() if g_logp is not None else None
        g_ent = g_ent.float().contiguous() if g_ent is not None else None
        grad_h = torch.empty_like(hidden) if need_h else None
        # d weight accumulates in the weight's dtype (as Liger does): an fp32 copy of a 128k x 4k
        # lm_head would cost 2 GB for a gradient that LoRA training usually does not even need.
        grad_w = torch.zeros_like(weight) if need_w else None
        rows = hidden.shape[0]
        for s in range(0, rows, chunk_size):
            e = min(rows, s + chunk_size)
            h = hidden[s:e]
            logits = h @ weight.t()
            dlogits = row_grad(
                logits, targets[s:e], inv_temp,
                g_logp[s:e] if g_logp is not None else None,
                g_ent[s:e] if g_ent is not None else None,
                lse[s:e], ent[s:e] if with_entropy else None, block_v,
            )
            if need_h:
                torch.matmul(dlogits, weight, out=grad_h[s:e])
            if need_w:
                grad_w.addmm_(dlogits.t(), h)
            del logits, dlogits
        return grad_h, grad_w, None, None, None, None, None, None


def _check(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float):
    if hidden.shape[-1] != weight.shape[-1] or weight.dim() != 2:
        raise ValueError(f"hidden [..., {hidden.shape[-1]}] does not match weight {tuple(weight.shape)}")
    if tuple(targets.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(f"targets {tuple(targets.shape)} must be hidden's leading shape {tuple(hidden.shape[:-1])}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def selective_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    chunk_size: int | None = None,
    with_entropy: bool = False,
    *,
    backend: str | None = None,
    block_v: int | None = None,
):
    """log p(targets) [..] float32 (and the entropy [..] if ``with_entropy``), never [.., V] at once.

    ``hidden`` [..., H] (the final-norm output, before lm_head), ``weight`` [V, H] (lm_head rows),
    ``targets`` [...] token ids, < 0 for padding. Differentiable w.r.t. hidden and weight.
    ``backend``: see :mod:`minirft_kernels.dispatch`. ``block_v`` overrides the Triton vocab block
    (tests use a small one to exercise the online log-sum-exp across blocks).
    """
    _check(hidden, weight, targets, temperature)
    impl = resolve_backend(hidden.device, backend)
    lead = hidden.shape[:-1]
    h2 = hidden.reshape(-1, hidden.shape[-1])
    if not h2.is_contiguous():
        h2 = h2.contiguous()
    t1 = targets.reshape(-1).to(torch.int64).contiguous()
    chunk = int(chunk_size) if chunk_size else default_chunk_size(h2.shape[0], weight.shape[0], h2.device)
    logp, ent = FusedLinearLogprob.apply(
        h2, weight, t1, float(temperature), max(1, chunk), bool(with_entropy), impl, block_v
    )
    logp = logp.reshape(lead)
    return (logp, ent.reshape(lead)) if with_entropy else logp


def selective_logprobs_reference(hidden, weight, targets, temperature=1.0, chunk_size=None,
                                 with_entropy=False):
    """The chunked torch reference (what the CPU path runs): same signature, same memory bound."""
    return selective_logprobs(hidden, weight, targets, temperature, chunk_size, with_entropy,
                              backend="reference")


def selective_logprobs_naive(hidden, weight, targets, temperature=1.0, chunk_size=None,
                             with_entropy=False):
    """Full-logits torch path ([.., V] materialised, kept by autograd): for tests and benchmarks."""
    z = (hidden @ weight.t()).float() / temperature
    logp_all = torch.log_softmax(z, dim=-1)
    valid = targets >= 0
    logp = logp_all.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    logp = torch.where(valid, logp, torch.zeros_like(logp))
    if not with_entropy:
        return logp
    ent = -(logp_all.exp() * logp_all).sum(-1)
    return logp, ent
