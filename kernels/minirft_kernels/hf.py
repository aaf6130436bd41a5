"""Glue between Hugging Face causal LMs (plain or PEFT-wrapped) and the fused ops.

``model(input_ids).logits`` is exactly what the fused ops avoid: it materialises [B, T, V]. The
helpers here run the decoder stack only (``model.get_decoder()``, whose ``last_hidden_state`` is
the final-norm output that lm_head consumes) and hand the hidden states plus ``lm_head.weight`` to
:func:`selective_logprobs` / :func:`label_head_probs`. LoRA layers are injected in place by PEFT,
so the decoder of a PEFT model runs with the adapter (and ``with model.disable_adapter():``
gives the base model: the reference policy, or a self-judge).

Models whose logits are not plain ``hidden @ lm_head.weight.T`` (final-logit soft-capping as in
Gemma 2, Cohere's ``logit_scale``, Granite's ``logits_scaling``, a biased lm_head) are refused with
a clear error rather than scored wrongly; the caller falls back to ordinary logits for them.
"""

from __future__ import annotations

import torch

from minirft.errors import MinirftError

from .ops.label_head import label_head_probs
from .ops.selective_logprobs import selective_logprobs

# config attribute -> value that means "plain logits"
_LOGIT_TRANSFORMS = {"final_logit_softcapping": None, "logit_scale": None, "logits_scaling": 1.0}


def lm_head_weight(model) -> torch.Tensor:
    """The [V, H] lm_head weight of a causal LM, after checking the logits are a plain matmul."""
    cfg = getattr(model, "config", None)
    for key, plain in _LOGIT_TRANSFORMS.items():
        value = getattr(cfg, key, plain)
        if value not in (plain, None, 1.0):
            raise MinirftError(f"model config {key}={value}: the fused log-prob kernels assume plain "
                               "logits (hidden @ lm_head.T); set kernels off for this model")
    head = model.get_output_embeddings()
    if head is None or not isinstance(getattr(head, "weight", None), torch.Tensor):
        raise MinirftError(f"{type(model).__name__} has no lm_head weight the fused kernels can use")
    if getattr(head, "bias", None) is not None:
        raise MinirftError(f"{type(model).__name__}'s lm_head has a bias: not supported by the fused kernels")
    return head.weight


def decoder_hidden_states(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                          **kwargs) -> torch.Tensor:
    """[B, T, H] final-norm hidden states, without computing any logits."""
    out = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)
    return out.last_hidden_state


def sequence_logprobs(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    temperature: float = 1.0,
    with_entropy: bool = False,
    *,
    chunk_size: int | None = None,
    backend: str | None = None,
):
    """log p(input_ids[:, t + 1] | input_ids[:, : t + 1]) for every t: [B, T - 1] float32.

    Position t scores token t + 1, as ``logits[:, :-1]`` against ``input_ids[:, 1:]`` would; targets
    under ``attention_mask == 0`` (padding) get log-prob 0 and no gradient. The caller masks out
    the prompt part with its completion mask (e.g. ``mask[:, 1:]``) in the loss.
    """
    hidden = decoder_hidden_states(model, input_ids, attention_mask)[:, :-1]
    targets = input_ids[:, 1:]
    if attention_mask is not None:
        targets = targets.masked_fill(attention_mask[:, 1:] == 0, -100)
    return selective_logprobs(hidden, lm_head_weight(model), targets, temperature, chunk_size,
                              with_entropy, backend=backend)


def verdict_probs(
    model,
    hidden: torch.Tensor,
    label_ids: torch.Tensor,
    label_class: torch.Tensor,
    n_classes: int,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """P(class) [N, n_classes] from verdict-position hidden states [N, H] and label token ids [K]."""
    weight = lm_head_weight(model)
    label_ids = torch.as_tensor(label_ids, device=weight.device)
    return label_head_probs(hidden, weight[label_ids], label_class, n_classes, backend=backend)
