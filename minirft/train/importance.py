"""Truncated importance sampling for rollouts sampled by another engine (``generation.engine: llama_cpp``).

The completions were sampled from π_engine (llama.cpp: quantized matmuls, an f16 KV cache), while
the loss is taken under π_torch, the trainer's own recomputation of the same policy. The two
differ slightly token by token, which makes the update silently off-policy. The correction, per
completion token t:

    w_t = min(exp(log π_torch_old(y_t) − log π_engine(y_t)), cap)          (detached)
    ℓ_t = w_t · pg_t + β · KL_t

i.e. each token's policy-gradient term is reweighted by the (truncated) likelihood ratio of the
trainer's policy to the sampler's; π_torch_old is the trainer's log-prob detached (one optimizer
step per batch). The KL term is not reweighted. This is token-level truncated importance sampling
("TIS") as proposed by Feng Yao, Liyuan Liu, Dinghuai Zhang, Chengyu Dong, Jingbo Shang and
Jianfeng Gao, "Your Efficient RL Framework Secretly Brings You Off-Policy RL Training" (2025,
https://fengyao.notion.site/off-policy-rl), and as TRL's ``GRPOTrainer`` applies it to vLLM
rollouts (``vllm_importance_sampling_correction=True``; the cap is ``vllm_importance_sampling_cap``,
2.0 when introduced, renamed ``vllm_importance_sampling_clip_max`` in later TRL with mode
``token_truncate``): ``per_token_loss = per_token_loss * importance_sampling_ratio`` before the KL
term is added.
"""

from __future__ import annotations

import torch


def truncated_is_weights(logp_torch: torch.Tensor, logp_engine: torch.Tensor, mask: torch.Tensor,
                         cap: float) -> tuple[torch.Tensor, dict[str, float]]:
    """``w = min(exp(logp_torch − logp_engine), cap)`` per token (detached, 1 where ``mask`` is 0), and
    sums over the masked tokens for the step's metrics: Σ|Δ|, ΣΔ (Δ = logp_engine − logp_torch), Σw,
    min w, the number of truncated tokens and of tokens."""
    m = mask.bool()
    diff = (logp_torch.detach().float() - logp_engine.detach().float()).masked_fill(~m, 0.0)
    w = torch.exp(diff).clamp(max=cap)
    w = torch.where(m, w, torch.ones_like(w))
    n = float(m.sum())
    stats = {
        "is_abs_gap_sum": float(diff.abs().sum()),
        "is_gap_sum": float(-diff.sum()),
        "is_weight_sum": float(w[m].sum()) if n else 0.0,
        "is_weight_min": float(w[m].min()) if n else 1.0,
        "is_truncated": float((torch.exp(diff) > cap)[m].sum()) if n else 0.0,
        "is_tokens": n,
    }
    return w, stats


def gap_metrics(sums: dict[str, float]) -> dict[str, float | None]:
    """The step's engine/torch log-prob gap and IS-weight metrics from summed stats (``logprob_gap/``)."""
    n = sums.get("is_tokens", 0.0)
    if not n:
        return {}
    return {
        "logprob_gap/mean_abs": sums["is_abs_gap_sum"] / n,  # mean |log π_engine − log π_torch|
        "logprob_gap/mean": sums["is_gap_sum"] / n,  # mean (log π_engine − log π_torch)
        "is_weight/mean": sums["is_weight_sum"] / n,
        "is_weight/min": sums["is_weight_min"],
        "is_weight/truncated_frac": sums["is_truncated"] / n,
    }
