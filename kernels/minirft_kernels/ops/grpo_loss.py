"""Fused GRPO token loss: ratio, clipping, k3 KL, mask and normalisation in one pass, with backward.

Per token t of completion b (only where ``mask`` is 1):

    r      = exp(logp - old_logp)                                  importance ratio
    pg     = max(-A_b * r, -A_b * clip(r, 1 - eps_low, 1 + eps_high))  PPO clipped surrogate
    kl     = exp(ref_logp - logp) - (ref_logp - logp) - 1          k3 estimator (>= 0, unbiased)
    l_t    = w_t * pg + beta * kl

With ``ratio_level="sequence"`` (GSPO, Zheng et al. 2025) the ratio is one number per completion, the
geometric mean of its token ratios, and every token of the completion shares the clipped term:

    s_b    = exp(sum_t m (logp - old_logp) / sum_t m)              sequence importance ratio
    pg_b   = max(-A_b * s_b, -A_b * clip(s_b, 1 - eps_low, 1 + eps_high))
    l_t    = w_t * pg_b + beta * kl                                 (TRL's importance_sampling_level="sequence")

``w_t`` is an optional per-token importance-sampling weight (data, not differentiated; 1 when not
given): the trainer's truncated correction for rollouts sampled by another engine (llama.cpp), which
multiplies the policy-gradient term only, as TRL's ``vllm_importance_sampling_correction`` does.

    norm="token":    loss = sum_{b,t} m l / sum_{b,t} m       (DAPO / Dr.GRPO-style token mean)
    norm="sequence": loss = mean_b (sum_t m l / sum_t m)      (the original GRPO paper)

With ``denominator`` D the divisor is D instead of this batch's own token (or sequence) count: the
step-wide count when a step's batch is split into micro-batches, whose losses then add up to the
step's loss.

Gradient w.r.t. logp (old_logp, ref_logp and advantages are data, not differentiated):

    d pg / d logp = -A r   where the unclipped term is the max, else 0   (times w_t)
    d kl / d logp = 1 - exp(ref_logp - logp)
    sequence level: d (sum_t m w pg_b) / d logp_t = (sum_u m w) * (-A s_b) * m_t / sum_u m   (unclipped, else 0)

The Triton kernel runs one program per sequence and writes the per-token gradient in the forward
(the loss is a scalar, so backward only scales it by the upstream gradient). Metrics come out of
the same pass: the masked mean k3 KL and the fraction of tokens whose surrogate was clipped
(``clip_ratio``, TRL's definition: the clipped term was strictly the max; at sequence level every
token of a clipped completion counts). The sequence level takes one more pass over the row (the
log-ratio sum) before the token pass.
"""

from __future__ import annotations

import torch

from ..dispatch import resolve_backend
from ._triton import HAVE_TRITON, next_pow2, tl, triton

NORMS = ("token", "sequence")
RATIO_LEVELS = ("token", "sequence")

if HAVE_TRITON:

    @triton.jit
    def _grpo_loss_kernel(
        logp_ptr,
        old_ptr,
        ref_ptr,
        adv_ptr,
        w_ptr,
        mask_ptr,
        grad_ptr,
        sums_ptr,  # [B, 4]: sum m*l, sum m, sum m*kl, sum m*clipped
        stride_row,
        clip_low,
        clip_high,
        beta,
        T: tl.constexpr,
        BLOCK_T: tl.constexpr,
        HAS_REF: tl.constexpr,
        HAS_W: tl.constexpr,
        SEQ_RATIO: tl.constexpr,
    ):
        row = tl.program_id(0).to(tl.int64)
        adv = tl.load(adv_ptr + row).to(tl.float32)
        if SEQ_RATIO:  # first pass: the row's mean log-ratio and the sum of its IS weights
            acc_lr = tl.zeros([BLOCK_T], dtype=tl.float32)
            acc_m = tl.zeros([BLOCK_T], dtype=tl.float32)
            acc_w = tl.zeros([BLOCK_T], dtype=tl.float32)
            for start in range(0, T, BLOCK_T):
                cols = start + tl.arange(0, BLOCK_T)
                inb = cols < T
                offs = row * stride_row + cols
                m = tl.load(mask_ptr + offs, mask=inb, other=0).to(tl.float32)
                lp = tl.load(logp_ptr + offs, mask=inb, other=0.0).to(tl.float32)
                old = tl.load(old_ptr + offs, mask=inb, other=0.0).to(tl.float32)
                acc_lr += m * (lp - old)
                acc_m += m
                if HAS_W:
                    acc_w += m * tl.load(w_ptr + offs, mask=inb, other=0.0).to(tl.float32)
                else:
                    acc_w += m
            n_row = tl.maximum(tl.sum(acc_m, axis=0), 1.0)
            s_ratio = tl.exp(tl.sum(acc_lr, axis=0) / n_row)
            s_l1 = -adv * s_ratio
            s_l2 = -adv * tl.minimum(tl.maximum(s_ratio, 1.0 - clip_low), 1.0 + clip_high)
            s_clipped = s_l2 > s_l1
            s_pg = tl.where(s_clipped, s_l2, s_l1)
            # d (sum_t m w pg) / d logp_t, before the mask: (sum m w) * (-A s) / n when unclipped
            s_grad = tl.where(s_clipped, 0.0, s_l1) * tl.sum(acc_w, axis=0) / n_row
        acc_loss = tl.zeros([BLOCK_T], dtype=tl.float32)
        acc_mask = tl.zeros([BLOCK_T], dtype=tl.float32)
        acc_kl = tl.zeros([BLOCK_T], dtype=tl.float32)
        acc_clip = tl.zeros([BLOCK_T], dtype=tl.float32)
        for start in range(0, T, BLOCK_T):
            cols = start + tl.arange(0, BLOCK_T)
            inb = cols < T
            offs = row * stride_row + cols
            m = tl.load(mask_ptr + offs, mask=inb, other=0).to(tl.float32)
            lp = tl.load(logp_ptr + offs, mask=inb, other=0.0).to(tl.float32)
            if SEQ_RATIO:
                is_clipped = (tl.zeros([BLOCK_T], dtype=tl.float32) + s_clipped.to(tl.float32)) > 0.5
                per_tok = tl.zeros([BLOCK_T], dtype=tl.float32) + s_pg
                grad = tl.zeros([BLOCK_T], dtype=tl.float32) + s_grad
                if HAS_W:
                    w = tl.load(w_ptr + offs, mask=inb, other=0.0).to(tl.float32)
                    per_tok = w * per_tok
            else:
                old = tl.load(old_ptr + offs, mask=inb, other=0.0).to(tl.float32)
                ratio = tl.exp(lp - old)
                clipped_ratio = tl.minimum(tl.maximum(ratio, 1.0 - clip_low), 1.0 + clip_high)
                l1 = -adv * ratio
                l2 = -adv * clipped_ratio
                is_clipped = l2 > l1
                per_tok = tl.where(is_clipped, l2, l1)
                grad = tl.where(is_clipped, 0.0, l1)  # d(-A r)/d logp = -A r
                if HAS_W:
                    w = tl.load(w_ptr + offs, mask=inb, other=0.0).to(tl.float32)
                    per_tok = w * per_tok
                    grad = w * grad
            if HAS_REF:
                ref = tl.load(ref_ptr + offs, mask=inb, other=0.0).to(tl.float32)
                d = ref - lp
                ed = tl.exp(d)
                kl = ed - d - 1.0
                per_tok = per_tok + beta * kl
                grad = grad + beta * (1.0 - ed)
                acc_kl += m * kl
            acc_loss += m * per_tok
            acc_mask += m
            acc_clip += m * is_clipped.to(tl.float32)
            tl.store(grad_ptr + offs, m * grad, mask=inb)
        tl.store(sums_ptr + row * 4 + 0, tl.sum(acc_loss, axis=0))
        tl.store(sums_ptr + row * 4 + 1, tl.sum(acc_mask, axis=0))
        tl.store(sums_ptr + row * 4 + 2, tl.sum(acc_kl, axis=0))
        tl.store(sums_ptr + row * 4 + 3, tl.sum(acc_clip, axis=0))


def _token_terms_triton(logp, old_logp, ref_logp, advantages, is_weight, mask, clip_low, clip_high, beta,
                        level="token"):
    """Per-row sums [B, 4] and the masked per-token d l / d logp [B, T] (float32)."""
    rows, seq = logp.shape
    grad = torch.empty(rows, seq, dtype=torch.float32, device=logp.device)
    sums = torch.empty(rows, 4, dtype=torch.float32, device=logp.device)
    if rows == 0:
        return sums, grad
    block = min(1024, next_pow2(seq))
    _grpo_loss_kernel[(rows,)](
        logp, old_logp, ref_logp if ref_logp is not None else logp, advantages,
        is_weight if is_weight is not None else logp, mask, grad, sums,
        logp.stride(0), clip_low, clip_high, beta,
        T=seq, BLOCK_T=block, HAS_REF=ref_logp is not None, HAS_W=is_weight is not None,
        SEQ_RATIO=level == "sequence", num_warps=4,
    )
    return sums, grad


def _token_terms_torch(logp, old_logp, ref_logp, advantages, is_weight, mask, clip_low, clip_high, beta,
                       level="token"):
    """Same as the kernel, in torch ops (float32)."""
    lp = logp.float()
    m = mask.float()
    adv = advantages.float().unsqueeze(1)
    if level == "sequence":
        n = m.sum(1, keepdim=True).clamp_min(1.0)
        ratio = torch.exp((m * (lp - old_logp.float())).sum(1, keepdim=True) / n)  # [B, 1]
    else:
        ratio = torch.exp(lp - old_logp.float())
    l1 = -adv * ratio
    l2 = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    is_clipped = l2 > l1
    per_tok = torch.where(is_clipped, l2, l1)
    grad = torch.where(is_clipped, torch.zeros_like(l1), l1)
    if level == "sequence":
        w_sum = (m * is_weight.float()).sum(1, keepdim=True) if is_weight is not None else m.sum(1, keepdim=True)
        grad = (grad * w_sum / n).expand_as(lp)
        is_clipped = is_clipped.expand_as(lp)
        per_tok = per_tok.expand_as(lp)
        if is_weight is not None:
            per_tok = is_weight.float() * per_tok
    elif is_weight is not None:
        per_tok = is_weight.float() * per_tok
        grad = is_weight.float() * grad
    kl = torch.zeros_like(lp)
    if ref_logp is not None:
        d = ref_logp.float() - lp
        ed = torch.exp(d)
        kl = ed - d - 1.0
        per_tok = per_tok + beta * kl
        grad = grad + beta * (1.0 - ed)
    sums = torch.stack(
        [(m * per_tok).sum(1), m.sum(1), (m * kl).sum(1), (m * is_clipped.float()).sum(1)], dim=1
    )
    return sums, m * grad


_IMPLS = {"triton": _token_terms_triton, "reference": _token_terms_torch}


def _reduce(sums: torch.Tensor, grad: torch.Tensor, norm: str, denominator: float | None):
    """Loss, metrics and the normalised d loss / d logp from per-row sums."""
    if norm == "token":
        total = sums[:, 1].sum().clamp_min(1.0) if denominator is None else denominator
        loss = sums[:, 0].sum() / total
        grad = grad / total
    else:
        rows = max(sums.shape[0], 1) if denominator is None else denominator
        count = sums[:, 1].clamp_min(1.0)
        loss = (sums[:, 0] / count).sum() / rows
        grad = grad / (count.unsqueeze(1) * rows)
    n_tok = sums[:, 1].sum().clamp_min(1.0)
    metrics = {"kl": sums[:, 2].sum() / n_tok, "clip_ratio": sums[:, 3].sum() / n_tok}
    return loss, grad, metrics


class FusedGRPOLoss(torch.autograd.Function):
    """Forward computes the loss *and* d loss / d logp; backward scales it by the upstream grad."""

    @staticmethod
    def forward(ctx, logp, old_logp, ref_logp, advantages, is_weight, mask, clip_low, clip_high, beta, norm,
                denominator, impl, level):
        sums, grad = _IMPLS[impl](logp, old_logp, ref_logp, advantages, is_weight, mask, clip_low, clip_high, beta,
                                  level)
        loss, grad, metrics = _reduce(sums, grad, norm, denominator)
        ctx.save_for_backward(grad)
        ctx.logp_dtype = logp.dtype
        kl, clip = metrics["kl"], metrics["clip_ratio"]
        ctx.mark_non_differentiable(kl, clip)
        return loss, kl, clip

    @staticmethod
    def backward(ctx, g_loss, _g_kl, _g_clip):
        (grad,) = ctx.saved_tensors
        g = None if g_loss is None else (grad * g_loss).to(ctx.logp_dtype)
        return g, None, None, None, None, None, None, None, None, None, None, None, None


def _check(logp, old_logp, ref_logp, advantages, mask, norm, is_weight=None, level="token"):
    if logp.dim() != 2:
        raise ValueError(f"logp must be [B, T], got {tuple(logp.shape)}")
    for name, t in (("old_logp", old_logp), ("ref_logp", ref_logp), ("mask", mask), ("is_weight", is_weight)):
        if t is not None and t.shape != logp.shape:
            raise ValueError(f"{name} {tuple(t.shape)} must match logp {tuple(logp.shape)}")
    if advantages.shape != (logp.shape[0],):
        raise ValueError(f"advantages {tuple(advantages.shape)} must be [B] = [{logp.shape[0]}]")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if level not in RATIO_LEVELS:
        raise ValueError(f"ratio_level must be one of {RATIO_LEVELS}, got {level!r}")


def grpo_token_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
    beta: float = 0.0,
    norm: str = "token",
    *,
    clip_eps_high: float | None = None,
    denominator: float | None = None,
    is_weight: torch.Tensor | None = None,
    ratio_level: str = "token",
    backend: str | None = None,
):
    """GRPO loss (scalar, differentiable w.r.t. ``logp``) and detached metrics ``{kl, clip_ratio}``.

    ``logp``, ``old_logp``, ``ref_logp`` [B, T] per-token log-probs (``ref_logp`` may be None when
    ``beta`` is 0: no KL term, ``kl`` metric 0); ``advantages`` [B]; ``mask`` [B, T] (1 = completion
    token, 0 = prompt or padding; bool or number). ``clip_eps_high`` (default ``clip_eps``) gives
    DAPO's asymmetric clip. With ``old_logp == logp.detach()`` (one optimiser step per batch) the
    ratio is 1 and the gradient is the plain policy gradient. ``denominator``: divide by this count
    (the step's tokens, or sequences with ``norm="sequence"``) instead of this batch's own.
    ``is_weight`` [B, T]: a per-token importance-sampling weight multiplying the policy-gradient term
    (not the KL term), detached; None is a weight of 1. ``ratio_level="sequence"``: GSPO's one
    length-normalised ratio per completion (see the module docstring).
    """
    _check(logp, old_logp, ref_logp, advantages, mask, norm, is_weight, ratio_level)
    if beta != 0.0 and ref_logp is None:
        raise ValueError("beta > 0 needs ref_logp")
    impl = resolve_backend(logp.device, backend)
    ref = ref_logp.detach().contiguous() if (ref_logp is not None and beta != 0.0) else None
    loss, kl, clip = FusedGRPOLoss.apply(
        logp.contiguous(),
        old_logp.detach().contiguous(),
        ref,
        advantages.detach().contiguous(),
        None if is_weight is None else is_weight.detach().to(torch.float32).contiguous(),
        mask.detach().to(torch.float32).contiguous(),
        float(clip_eps),
        float(clip_eps if clip_eps_high is None else clip_eps_high),
        float(beta),
        norm,
        None if denominator is None else float(denominator),
        impl,
        ratio_level,
    )
    return loss, {"kl": kl.detach(), "clip_ratio": clip.detach()}


def grpo_token_loss_reference(logp, old_logp, ref_logp, advantages, mask, clip_eps=0.2, beta=0.0,
                              norm="token", *, clip_eps_high=None, is_weight=None, ratio_level="token"):
    """The torch reference through the same autograd.Function (what the CPU path runs)."""
    return grpo_token_loss(logp, old_logp, ref_logp, advantages, mask, clip_eps, beta, norm,
                           clip_eps_high=clip_eps_high, is_weight=is_weight, ratio_level=ratio_level,
                           backend="reference")


def grpo_token_loss_naive(logp, old_logp, ref_logp, advantages, mask, clip_eps=0.2, beta=0.0,
                          norm="token", *, clip_eps_high=None, is_weight=None, ratio_level="token"):
    """Plain autograd formula, written independently of the kernel: the tests' ground truth."""
    high = clip_eps if clip_eps_high is None else clip_eps_high
    m = mask.float()
    log_ratio = logp.float() - old_logp.float()
    if ratio_level == "sequence":  # broadcast [B, 1]: autograd spreads the gradient over the tokens
        log_ratio = (log_ratio * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1)
    ratio = torch.exp(log_ratio)
    adv = advantages.float().unsqueeze(1)
    pg = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 1 - clip_eps, 1 + high))
    if is_weight is not None:
        pg = is_weight.detach().float() * pg
    per_tok = pg
    kl = torch.zeros_like(pg)
    if beta != 0.0:
        d = ref_logp.float() - logp.float()
        kl = torch.exp(d) - d - 1
        per_tok = pg + beta * kl
    if norm == "token":
        loss = (per_tok * m).sum() / m.sum().clamp_min(1)
    else:
        loss = ((per_tok * m).sum(1) / m.sum(1).clamp_min(1)).mean()
    clipped = ((-adv * torch.clamp(ratio, 1 - clip_eps, 1 + high)) > (-adv * ratio)).float().expand_as(m)
    n = m.sum().clamp_min(1)
    return loss, {"kl": ((kl * m).sum() / n).detach(), "clip_ratio": ((clipped * m).sum() / n).detach()}
