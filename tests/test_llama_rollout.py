"""Rollouts through llama.cpp (``generation.engine: llama_cpp``) on the tiny model, against real parts:
real llama.cpp (llama-cpp-python), a real LoRA GGUF written by ``gguf_export``, real ``minirft train``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from fault_fixtures import invoke

from minirft.events import read_events
from minirft.recipe import validate_recipe
from minirft.train import loop
from minirft.train.importance import gap_metrics, truncated_is_weights
from minirft.train.engines import choose_engine
from minirft.train.llama_rollout import LlamaGenerator, LlamaRollout, sample_rows
from minirft.train.policy import load_policy, token_logprobs

#: max |Δ logit| between llama.cpp (f32 GGUF, f32 LoRA GGUF, f32 KV cache, no flash attention) and
#: torch (float32) with the same random LoRA, on the tiny model; measured 2.6e-5 against an adapter
#: shift of 9 (logits of the tiny model are large: initializer_range 0.3).
LOGIT_TOL = 2e-4
#: the same with llama.cpp's defaults (f16 KV cache, flash attention): what the rollouts run with
DEFAULT_LOGIT_TOL = 0.1


def _recipe(tiny: Path, **generation):
    return validate_recipe({
        "name": "toy", "policy": {"model": str(tiny / "model"), "dtype": "float32", "lora": {"r": 4, "alpha": 8}},
        "rewards": [{"type": "python", "name": "a_share", "function": "train_fixtures:toy_reward"}],
        "data": {"path": str(tiny / "prompts.jsonl")},
        "generation": {"engine": "llama_cpp", "engine_weights": "f32", "group_size": 4, "max_new_tokens": 8,
                       **generation},
    })


def _random_lora(policy, seed: int = 1, scale: float = 0.2) -> None:
    """peft starts B at zero (the adapter would change nothing): random B, so the adapter matters."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, scale)


def _ids(policy) -> list[int]:
    return policy.tokenizer("<s>user: Say something about owls.\n<s>assistant: Owls are quiet and")["input_ids"]


def test_lora_gguf_in_llama_cpp_gives_the_torch_logits(tiny):
    r = _recipe(tiny)
    policy = load_policy(r.policy, seed=0)
    _random_lora(policy)
    ids = _ids(policy)
    with torch.no_grad():
        tuned = policy.model(torch.tensor([ids])).logits[0].double().numpy()
        with policy.reference():
            base = policy.model(torch.tensor([ids])).logits[0].double().numpy()
    gen = LlamaGenerator(r, policy)
    exact = LlamaRollout(gen.model_path, policy.model.config, lora_alpha=8, n_threads=1, kv_f32=True)
    try:
        exact_base = exact.logits(ids)
        exact.set_lora(policy.adapter_state())
        exact_tuned = exact.logits(ids)
        gen.engine.set_lora(policy.adapter_state())
        default_tuned = gen.engine.logits(ids)
    finally:
        exact.close()
        gen.close()
    shift = np.abs(tuned - base).max()
    assert shift > 1.0  # the adapter changes the logits a lot
    assert np.abs(exact_base - base).max() < LOGIT_TOL
    assert np.abs(exact_tuned - tuned).max() < LOGIT_TOL
    assert np.abs(default_tuned - tuned).max() < DEFAULT_LOGIT_TOL


def test_auto_weights_of_a_bf16_policy_are_torchs_bf16_weights_bit_for_bit(tiny):
    import gguf

    r = _recipe(tiny, engine_weights="auto")
    r.policy.dtype = "bfloat16"
    policy = load_policy(r.policy, seed=0)
    gen = LlamaGenerator(r, policy)
    try:
        assert gen.model_path.name.endswith(".bf16.gguf")
        reader = gguf.GGUFReader(gen.model_path)
        embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
        assert embd.tensor_type == gguf.GGMLQuantizationType.BF16
        torch_bits = policy.model.get_base_model().model.embed_tokens.weight.detach().view(torch.int16).numpy()
        assert np.array_equal(np.asarray(embd.data).view(np.int16).reshape(torch_bits.shape), torch_bits)
        ids = _ids(policy)
        with torch.no_grad():
            want = policy.model(torch.tensor([ids])).logits[0].double().numpy()
        got = gen.engine.logits(ids)
    finally:
        gen.close()
    # bf16 activations in llama.cpp's matmuls, torch's bf16 arithmetic: measured max 0.26 on logits up to 6.7
    assert np.abs(got - want).max() < 0.1 * np.abs(want).max()


def test_engine_logprobs_are_the_torch_logprobs_of_the_sampled_tokens(tiny):
    """The log-prob the engine records for each sampled token is torch's (same f32 weights) up to
    llama.cpp's f16 KV cache: each token sits at the right position of the right sequence, and the
    completions are samples of the policy."""
    r = _recipe(tiny, temperature=0.7)
    policy = load_policy(r.policy, seed=0)
    _random_lora(policy, scale=0.05)
    gen = LlamaGenerator(r, policy)
    try:
        prompts = [_ids(policy)[:20], _ids(policy)[:31]]
        torch.manual_seed(3)
        g = gen.generate(policy, prompts, 4)
    finally:
        gen.close()
    assert g.input_ids.shape[0] == 8 and g.sampling_logp.shape == g.completion_mask.shape
    comp = g.input_ids[:, g.prompt_len:]
    assert len({tuple(row.tolist()) for row in comp}) > 1  # a group's G samples differ
    with torch.no_grad():
        logp, _ = token_logprobs(policy.model, g.input_ids, g.attention_mask, comp.shape[1], 0.7)
    m = g.completion_mask.bool()
    gap = (g.sampling_logp - logp)[m].abs()
    assert gap.max() < 0.05 and gap.mean() < 0.01  # llama.cpp's f16 KV cache (measured max 0.012, mean 0.003)
    assert (g.sampling_logp[~m] == 0).all()


def test_sample_rows_greedy_top_k_top_p_and_logprob():
    logits = np.log(np.array([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]], dtype=np.float32))
    toks, lp = sample_rows(logits, np.array([0.0, 0.0]), None)
    assert toks.tolist() == [3, 0] and np.allclose(lp, np.log([0.4, 0.4]))
    # inverse CDF: u just under 0.1 picks token 0; u = 0.35 is past 0.1 + 0.2
    toks, lp = sample_rows(logits, np.array([0.099, 0.35]), 1.0)
    assert toks.tolist() == [0, 0] and np.allclose(lp, np.log([0.1, 0.4]))
    toks, _ = sample_rows(logits, np.array([0.35, 0.5]), 1.0)
    assert toks.tolist() == [2, 1]
    # top_k 2 keeps {0.3, 0.4}; u = 0.1 → 0.3's share; the log-prob stays the untruncated one
    toks, lp = sample_rows(logits, np.array([0.1, 0.1]), 1.0, top_k=2)
    assert toks.tolist() == [2, 0] and np.allclose(lp, np.log([0.3, 0.4]))
    # top_p 0.5: the smallest set reaching 0.5 is {0.4, 0.3}
    toks, _ = sample_rows(logits, np.array([0.999, 0.999]), 1.0, top_p=0.5)
    assert toks.tolist() == [3, 1]
    # temperature sharpens: log p under logits / T
    _, lp = sample_rows(logits, np.array([0.999, 0.0]), 0.5)
    p = np.array([0.1, 0.2, 0.3, 0.4]) ** 2
    assert np.allclose(lp[0], np.log(p[3] / p.sum()))


def test_blocked_inverse_cdf_is_the_full_cumsum_search():
    from minirft.train.llama_rollout import _inverse_cdf

    rng = np.random.default_rng(0)
    p = (rng.random((5, 1000)) ** 6).astype(np.float32)  # 1000: not a multiple of the 256 block
    p[1, 300:] = 0.0
    for u in rng.random((200, 5)):
        cdf = np.cumsum(p, axis=1, dtype=np.float64)
        want = [int(np.searchsorted(cdf[i], u[i] * cdf[i, -1], side="right")) for i in range(5)]
        assert _inverse_cdf(p, u).tolist() == want


def test_truncated_is_weights_by_hand():
    logp_torch = torch.tensor([[-1.0, -2.0, -0.5, -3.0]], requires_grad=True)
    logp_engine = torch.tensor([[-1.2, -1.0, -0.5 - math.log(3.0), -9.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    w, s = truncated_is_weights(logp_torch, logp_engine, mask, cap=2.0)
    # exp(0.2) = 1.2214; exp(-1) = 0.3679; exp(log 3) = 3 → truncated to 2; masked → 1
    assert w.tolist()[0] == pytest.approx([math.exp(0.2), math.exp(-1.0), 2.0, 1.0], rel=1e-6)
    assert not w.requires_grad
    assert s["is_tokens"] == 3 and s["is_truncated"] == 1
    assert s["is_abs_gap_sum"] == pytest.approx(0.2 + 1.0 + math.log(3.0), rel=1e-6)
    assert s["is_gap_sum"] == pytest.approx(-0.2 + 1.0 - math.log(3.0), rel=1e-6)
    m = gap_metrics(s)
    assert m["is_weight/min"] == pytest.approx(math.exp(-1.0)) and m["is_weight/truncated_frac"] == pytest.approx(1 / 3)
    assert m["is_weight/mean"] == pytest.approx((math.exp(0.2) + math.exp(-1.0) + 2.0) / 3)

    # the weight multiplies each token's policy-gradient term: with π_old = π (ratio 1, no clip, no KL)
    # the loss is −Σ w_t A m_t / Σ m_t and d loss / d logp_t = −w_t A m_t / Σ m_t
    adv = torch.tensor([0.5])
    loss, _ = loop.grpo_loss(logp_torch, logp_torch.detach(), None, adv, mask.float(), beta=0.0, clip_eps=0.2,
                             loss_norm="token", normaliser=3.0, is_weight=w)
    expected = -(math.exp(0.2) + math.exp(-1.0) + 2.0) * 0.5 / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    (g,) = torch.autograd.grad(loss, (logp_torch,))
    assert g.tolist()[0] == pytest.approx([-math.exp(0.2) * 0.5 / 3, -math.exp(-1.0) * 0.5 / 3, -2.0 * 0.5 / 3, 0.0],
                                          rel=1e-6)
    # with a KL term the weight leaves the KL part alone
    ref = torch.tensor([[-1.1, -2.0, -0.4, -3.0]])
    lw, _ = loop.grpo_loss(logp_torch, logp_torch.detach(), ref, adv, mask.float(), beta=0.5, clip_eps=0.2,
                           loss_norm="token", normaliser=3.0, is_weight=w)
    d = ref - logp_torch.detach()
    kl = ((torch.exp(d) - d - 1) * mask).sum().item()
    assert lw.item() == pytest.approx(expected + 0.5 * kl / 3, rel=1e-5)


def test_auto_engine_is_the_default_and_llama_cpp_for_a_gguf_policy_unless_slower(tiny, tmp_path, monkeypatch):
    from judge_fixtures import write_tiny_gguf

    from minirft.train import engines

    gguf = write_tiny_gguf(tmp_path / "p.gguf")
    base = {"name": "t", "rewards": [{"type": "length"}], "data": {"path": "x.jsonl"}}

    def engine(policy, **generation):
        return choose_engine(validate_recipe({**base, "policy": policy, "generation": generation}))

    assert validate_recipe({**base, "policy": {"model": str(gguf)}}).generation.engine == "auto"
    assert engine({"model": str(gguf), "backend": "hf", "dtype": "float32"}) == "llama_cpp"
    assert engine({"model": str(tiny / "model")}) == "torch"  # a Hugging Face folder
    assert engine({"model": str(gguf)}, engine="torch") == "torch"
    assert engine({"model": str(tiny / "model")}, engine="llama_cpp") == "llama_cpp"
    # torch in bf16 against a llama.cpp without AVX512-BF16 (the portable build): HF generate is as fast
    monkeypatch.setattr(engines, "cpu_features", lambda: ["AVX2", "FMA"])
    assert engine({"model": str(gguf), "dtype": "bfloat16"}) == "torch"
    assert engine({"model": str(gguf), "dtype": "float32"}) == "llama_cpp"
    monkeypatch.setattr(engines, "cpu_features", lambda: ["AVX2", "AVX512_BF16"])
    assert engine({"model": str(gguf), "dtype": "bfloat16"}) == "llama_cpp"


def _train(tiny: Path, d: Path, *, steps: int, seed: int = 0) -> Path:
    recipe = {
        "name": "toy", "policy": {"model": str(tiny / "model"), "lora": {"r": 4, "alpha": 8}},
        "rewards": [{"type": "python", "name": "a_share", "function": "train_fixtures:toy_reward"}],
        "data": {"path": str(tiny / "prompts.jsonl")},
        "generation": {"engine": "llama_cpp", "engine_weights": "f32", "group_size": 8, "max_new_tokens": 8},
        "training": {"steps": steps, "prompts_per_step": 2, "micro_batch_prompts": 2, "lr": 3e-2, "beta": 0.0,
                     "seed": seed},
        "checkpoint": {"every": 100},
        "logging": {"samples_per_step": 16},
    }
    d.mkdir(parents=True)
    (d / "r.yaml").write_text(yaml.safe_dump(recipe))
    result = invoke("train", d / "r.yaml", "--run-dir", d / "run")
    assert result.exit_code == 0, result.output
    return d / "run"


def test_llama_cpp_engine_trains_the_toy_reward_reproducibly(tiny, tmp_path):
    """`minirft train` with generation.engine: llama_cpp: the adapter changes, the reward rises, the
    engine/torch gap is logged, and the same seed gives the same completions."""
    from safetensors.torch import load_file

    run = _train(tiny, tmp_path / "a", steps=30)
    events = read_events(run / "events.jsonl")
    start = next(e for e in events if e["type"] == "run_start")
    assert start["generation_engine"] == "llama_cpp"
    m = {e["step"]: e["metrics"] for e in events if e["type"] == "step"}
    first = sum(m[s]["reward"] for s in range(1, 6)) / 5
    last = sum(m[s]["reward"] for s in range(26, 31)) / 5
    assert last > first + 0.3, (first, last)
    for s in m.values():  # f32 weights on both sides: the gap is rounding, the IS weights ≈ 1
        assert 0 <= s["logprob_gap/mean_abs"] < 0.05 and 0.9 < s["is_weight/mean"] <= 2.0
        assert s["generation/lora_sync_s"] > 0
    lora_b = [v for k, v in load_file(str(run / "adapter" / "adapter_model.safetensors")).items() if "lora_B" in k]
    assert any(float(v.abs().max()) > 0 for v in lora_b)  # peft starts B at zero: training moved it

    again = _train(tiny, tmp_path / "b", steps=3)
    other = _train(tiny, tmp_path / "c", steps=3, seed=1)

    def completions(r: Path) -> list[tuple[int, str]]:
        return [(e["step"], e["completion"]) for e in read_events(r / "events.jsonl")
                if e["type"] == "sample" and e["step"] <= 3]

    assert completions(again) == completions(run)
    assert completions(other) != completions(run)


def test_policy_gguf_weights_for_a_folder_policy_is_one_error_line_and_no_run_dir(tiny, tmp_path):
    recipe = {"name": "toy", "policy": {"model": str(tiny / "model"), "lora": {"r": 4, "alpha": 8}},
              "rewards": [{"type": "length"}], "data": {"path": str(tiny / "prompts.jsonl")},
              "generation": {"engine": "llama_cpp", "engine_weights": "policy_gguf", "group_size": 2},
              "training": {"steps": 1, "prompts_per_step": 1}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    result = invoke("train", tmp_path / "r.yaml", "--run-dir", tmp_path / "run")
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "generation.engine_weights: policy_gguf needs a GGUF policy.model" in errors[0]
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()
