"""Restricted-vocabulary judge head: P(class) from the verdict hidden states and K label rows.

A rubric judge asks a yes/no question and reads the answer off the next-token distribution at the
verdict position. Only the K label tokens matter (" Yes", "yes", " No", ... or "1".."5"), so instead
of ``softmax(hidden @ lm_head.T)`` over the whole vocabulary ([N, V] logits, 150k wide for Qwen)
the kernel computes

    logits = hidden [N, H] @ label_weight[K, H].T        (K tiny: the label tokens' lm_head rows)
    p      = softmax(logits) over the K labels            (renormalised over the labels, as G-Eval)
    P[n, c] = sum of p[n, k] over the labels k with label_class[k] == c

in one kernel: one program per block of verdict rows, the H reduction through ``tl.dot``, the
softmax and the per-class sums in registers; only [N, n_classes] is written.

Renormalising over the labels is deliberate: the judge's probability of *answering at all* is not
the quantity we score (see the judge docs); the label mass it discards can be read separately from
a full log-softmax when wanted.

The backward (for calibration or judge fine-tuning; scoring runs under no_grad) is plain torch:
with K <= 64 the [N, K] logits it recomputes are tiny.
"""

from __future__ import annotations

import torch

from ..dispatch import resolve_backend
from ._triton import HAVE_TRITON, next_pow2, tl, triton

MAX_LABELS = 64
MAX_CLASSES = 64

if HAVE_TRITON:

    @triton.jit
    def _label_head_kernel(
        h_ptr,
        stride_hn,
        w_ptr,
        stride_wk,
        cls_ptr,
        out_ptr,
        stride_on,
        N,
        H: tl.constexpr,
        K: tl.constexpr,
        C: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_H: tl.constexpr,
        BLOCK_K: tl.constexpr,
    ):
        pid = tl.program_id(0)
        rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        row_ok = rows < N
        ks = tl.arange(0, BLOCK_K)
        k_ok = ks < K
        acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
        for start in range(0, H, BLOCK_H):
            hs = start + tl.arange(0, BLOCK_H)
            h_ok = hs < H
            x = tl.load(
                h_ptr + rows[:, None].to(tl.int64) * stride_hn + hs[None, :],
                mask=row_ok[:, None] & h_ok[None, :],
                other=0.0,
            )
            w = tl.load(
                w_ptr + ks[:, None] * stride_wk + hs[None, :],
                mask=k_ok[:, None] & h_ok[None, :],
                other=0.0,
            )
            # Upcast and multiply in true fp32 ("ieee", not tf32): the op reads N x H once and is
            # memory-bound, so fp32 arithmetic costs nothing visible, and bf16 inputs then give
            # the same scores as fp32 math on the same bf16 values. (Also: Triton's CPU
            # interpreter returns garbage for bf16 tl.dot, measured with triton 3.9.)
            acc += tl.dot(x.to(tl.float32), tl.trans(w.to(tl.float32)), input_precision="ieee")
        logits = tl.where(k_ok[None, :], acc, float("-inf"))
        mx = tl.max(logits, axis=1)
        e = tl.exp(logits - mx[:, None])
        e = tl.where(k_ok[None, :], e, 0.0)
        p = e / tl.sum(e, axis=1)[:, None]
        cls = tl.load(cls_ptr + ks, mask=k_ok, other=-1)
        out_row = out_ptr + rows.to(tl.int64) * stride_on
        for c in tl.static_range(C):
            pc = tl.sum(tl.where(cls[None, :] == c, p, 0.0), axis=1)
            tl.store(out_row + c, pc, mask=row_ok)


def _probs_triton(hidden, label_weight, label_class, n_classes):
    n, h = hidden.shape
    k = label_weight.shape[0]
    out = torch.empty(n, n_classes, dtype=torch.float32, device=hidden.device)
    if n == 0:
        return out
    block_n = 16 if n <= 16 else 32
    block_h = min(128, max(16, next_pow2(h)))
    _label_head_kernel[(triton.cdiv(n, block_n),)](
        hidden, hidden.stride(0), label_weight, label_weight.stride(0), label_class, out, out.stride(0),
        n, H=h, K=k, C=n_classes, BLOCK_N=block_n, BLOCK_H=block_h, BLOCK_K=max(16, next_pow2(k)),
        num_warps=4,
    )
    return out


def _label_probs_torch(hidden, label_weight):
    logits = hidden.float() @ label_weight.float().t()  # fp32 math on the given values, as the kernel
    return torch.softmax(logits, dim=-1)


def _probs_torch(hidden, label_weight, label_class, n_classes):
    p = _label_probs_torch(hidden, label_weight)
    out = torch.zeros(hidden.shape[0], n_classes, dtype=torch.float32, device=hidden.device)
    return out.index_add_(1, label_class, p)


_IMPLS = {"triton": _probs_triton, "reference": _probs_torch}


class LabelHeadProbs(torch.autograd.Function):
    """Kernel forward; torch backward (d P / d hidden through the K-wide softmax)."""

    @staticmethod
    def forward(ctx, hidden, label_weight, label_class, n_classes, impl):
        out = _IMPLS[impl](hidden, label_weight, label_class, n_classes)
        ctx.save_for_backward(hidden, label_weight, label_class)
        return out

    @staticmethod
    def backward(ctx, g_out):
        hidden, label_weight, label_class = ctx.saved_tensors
        p = _label_probs_torch(hidden, label_weight)  # [N, K]
        g_p = g_out.float()[:, label_class]  # d loss / d p_k = g_out[n, class(k)]
        g_logits = p * (g_p - (p * g_p).sum(dim=1, keepdim=True))
        g_h = (g_logits.to(hidden.dtype) @ label_weight) if ctx.needs_input_grad[0] else None
        g_w = (g_logits.t().to(hidden.dtype) @ hidden) if ctx.needs_input_grad[1] else None
        return g_h, g_w, None, None, None


def _check(hidden, label_weight, label_class, n_classes):
    if hidden.dim() != 2 or label_weight.dim() != 2 or hidden.shape[1] != label_weight.shape[1]:
        raise ValueError(f"hidden [N, H] {tuple(hidden.shape)} and label_weight [K, H] "
                         f"{tuple(label_weight.shape)} do not match")
    k = label_weight.shape[0]
    if not 1 <= k <= MAX_LABELS:
        raise ValueError(f"need 1..{MAX_LABELS} label tokens, got {k}")
    if label_class.shape != (k,):
        raise ValueError(f"label_class {tuple(label_class.shape)} must be [K] = [{k}]")
    if not 1 <= n_classes <= MAX_CLASSES:
        raise ValueError(f"n_classes must be 1..{MAX_CLASSES}, got {n_classes}")


def label_head_probs(
    hidden: torch.Tensor,
    label_weight: torch.Tensor,
    label_class: torch.Tensor,
    n_classes: int,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """P(class) [N, n_classes] float32: softmax over the K label logits, summed per class.

    ``hidden`` [N, H] at the verdict positions (final-norm output), ``label_weight`` [K, H] the
    lm_head rows of the label tokens (``lm_head.weight[label_ids]``), ``label_class`` [K] the class
    of each label token (e.g. 0 for " No"/"no", 1 for " Yes"/"yes"; or 0..S-1 for score tokens).
    Build ``label_weight`` once per judge and reuse it: gathering K rows is cheap but not free.
    """
    label_class = label_class.to(device=hidden.device, dtype=torch.int64).contiguous()
    _check(hidden, label_weight, label_class, n_classes)
    if label_class.numel() and (int(label_class.min()) < 0 or int(label_class.max()) >= n_classes):
        raise ValueError(f"label_class values must be in 0..{n_classes - 1}")
    impl = resolve_backend(hidden.device, backend)
    if label_weight.dtype != hidden.dtype:
        label_weight = label_weight.to(hidden.dtype)
    return LabelHeadProbs.apply(hidden.contiguous(), label_weight.contiguous(), label_class,
                                int(n_classes), impl)


def expected_score(probs: torch.Tensor, class_values) -> torch.Tensor:
    """sum_c P(c) * value(c) [N]: the G-Eval expected score (P(yes) when values are (0, 1))."""
    values = torch.as_tensor(class_values, dtype=torch.float32, device=probs.device)
    if values.shape != (probs.shape[-1],):
        raise ValueError(f"class_values has {values.numel()} entries, probs has {probs.shape[-1]} classes")
    return probs @ values


def label_head_probs_reference(hidden, label_weight, label_class, n_classes):
    """The torch reference (what the CPU path runs): same signature."""
    return label_head_probs(hidden, label_weight, label_class, n_classes, backend="reference")


def label_head_probs_naive(hidden, lm_head_weight, label_ids, label_class, n_classes):
    """The full-vocabulary path the kernel replaces: [N, V] logits, then pick the label columns."""
    logits = (hidden @ lm_head_weight.t()).float()
    p = torch.softmax(logits[:, label_ids], dim=-1)
    out = torch.zeros(hidden.shape[0], n_classes, dtype=torch.float32, device=hidden.device)
    return out.index_add_(1, torch.as_tensor(label_class, device=hidden.device), p)
