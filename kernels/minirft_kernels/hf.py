"""Glue between Hugging Face causal LMs (plain or PEFT-wrapped) and the fused ops.

``model(input_ids).logits`` is exactly what the fused ops avoid: it materialises [B, T, V]. The
helpers here run the decoder stack only (``model.get_decoder()``, whose ``last_hidden_state`` is
the final-norm output that lm_head consumes) and give ``lm_head.weight``, for the caller to hand to
:func:`selective_logprobs` / :func:`label_head_probs`. LoRA layers are injected in place by PEFT,
so the decoder of a PEFT model runs with the adapter (and ``with model.disable_adapter():``
gives the base model: the reference policy, or a self-judge).

Models whose logits are not plain ``hidden @ lm_head.weight.T`` (final-logit soft-capping as in
Gemma 2, Cohere's ``logit_scale``, Granite's ``logits_scaling``, a biased lm_head) are refused with
a :class:`KernelError` rather than scored wrongly; the caller falls back to ordinary logits for them.
"""

from __future__ import annotations

import torch

from .errors import KernelError

# config attribute -> value that means "plain logits"
_LOGIT_TRANSFORMS = {"final_logit_softcapping": None, "logit_scale": None, "logits_scaling": 1.0}


def lm_head_weight(model) -> torch.Tensor:
    """The [V, H] lm_head weight of a causal LM, after checking the logits are a plain matmul."""
    cfg = getattr(model, "config", None)
    for key, plain in _LOGIT_TRANSFORMS.items():
        value = getattr(cfg, key, plain)
        if value not in (plain, None, 1.0):
            raise KernelError(f"model config {key}={value}: the fused log-prob kernels assume plain "
                              "logits (hidden @ lm_head.T)")
    head = model.get_output_embeddings()
    if head is None or not isinstance(getattr(head, "weight", None), torch.Tensor):
        raise KernelError(f"{type(model).__name__} has no lm_head weight the fused kernels can use")
    if getattr(head, "bias", None) is not None:
        raise KernelError(f"{type(model).__name__}'s lm_head has a bias: not supported by the fused kernels")
    return head.weight


def decoder_hidden_states(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                          **kwargs) -> torch.Tensor:
    """[B, T, H] final-norm hidden states, without computing any logits."""
    out = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)
    return out.last_hidden_state
