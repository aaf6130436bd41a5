"""The HF glue: fused log-probs of a tiny random Llama (with LoRA) equal its own logits' log-softmax."""

import pytest
import torch

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from minirft_kernels.dispatch import interpreter_on  # noqa: E402
from minirft_kernels import KernelError, label_head_probs, selective_logprobs  # noqa: E402
from minirft_kernels.hf import decoder_hidden_states, lm_head_weight  # noqa: E402

CPU_BACKENDS = ["reference"] + (["triton"] if interpreter_on() else [])


@pytest.fixture(scope="module")
def tiny_lora_llama():
    cfg = transformers.LlamaConfig(vocab_size=257, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg)
    lora = peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    return peft.get_peft_model(model, lora)


def sequence_logprobs(model, ids, mask, temperature=1.0, with_entropy=False, backend=None):
    """log p(ids[:, t + 1] | ids[:, : t + 1]) through the glue: decoder hidden states + lm_head weight."""
    hidden = decoder_hidden_states(model, ids, mask)[:, :-1]
    targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    return selective_logprobs(hidden, lm_head_weight(model), targets, temperature, None, with_entropy,
                              backend=backend)


def _ids():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 257, (2, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, -2:] = 0  # right padding
    return ids, mask


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_sequence_logprobs_match_model_logits_and_train_lora(tiny_lora_llama, backend):
    model = tiny_lora_llama
    ids, mask = _ids()
    logp, ent = sequence_logprobs(model, ids, mask, temperature=0.8, with_entropy=True, backend=backend)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float() / 0.8
    ref_all = torch.log_softmax(logits, -1)
    ref = ref_all.gather(-1, ids[:, 1:, None]).squeeze(-1) * mask[:, 1:]
    assert torch.allclose(logp, ref, atol=1e-5)
    assert torch.allclose(ent, -(ref_all.exp() * ref_all).sum(-1), atol=1e-5)
    (logp * mask[:, 1:]).sum().backward()
    lora_grads = [p.grad for n, p in model.named_parameters() if "lora_" in n]
    assert lora_grads and all(g is not None and g.abs().sum() > 0 for g in lora_grads)
    model.zero_grad()


def test_adapter_disabled_gives_the_base_model(tiny_lora_llama):
    """Self-judging / reference policy: the same module with the adapter off."""
    ids, mask = _ids()
    with torch.no_grad():
        with_adapter = sequence_logprobs(tiny_lora_llama, ids, mask)
        with tiny_lora_llama.disable_adapter():
            base = sequence_logprobs(tiny_lora_llama, ids, mask)
    assert not torch.allclose(with_adapter, base)


def test_label_head_on_lm_head_rows_matches_full_softmax_over_labels(tiny_lora_llama):
    hidden = torch.randn(5, 32)
    label_ids = torch.tensor([7, 42, 100])
    weight = lm_head_weight(tiny_lora_llama)
    probs = label_head_probs(hidden, weight[label_ids], torch.tensor([1, 0, 1]), 2)
    logits = hidden @ lm_head_weight(tiny_lora_llama).t()
    p = torch.softmax(logits[:, label_ids], -1)
    assert torch.allclose(probs[:, 1], p[:, 0] + p[:, 2], atol=1e-6)


def test_soft_capped_logits_are_refused():
    cfg = transformers.LlamaConfig(vocab_size=17, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1)
    model = transformers.LlamaForCausalLM(cfg)
    model.config.final_logit_softcapping = 30.0
    with pytest.raises(KernelError, match="final_logit_softcapping"):
        lm_head_weight(model)
