"""The pieces of the loop on their own: advantages, the loss, the prompt stream, the rollout generator."""

from __future__ import annotations

import math

import pytest
import torch

from train_fixtures import FakeJudge, make_tiny_model, write_prompts  # noqa: E402

from minirft.data import PromptRow  # noqa: E402
from minirft.recipe import validate_recipe  # noqa: E402
from minirft.rewards import build_rewards  # noqa: E402
from minirft.train.loop import grpo_loss  # noqa: E402
from minirft.train.rollout import PromptSampler, group_advantages, rollouts, shown_mask  # noqa: E402


def test_group_advantages_scaled_unscaled_and_excluded():
    r = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.5, 0.5, 0.5, math.nan])
    scaled = group_advantages(r, 4, scale=True)
    assert scaled[:4].tolist() == pytest.approx([1.0, -1.0, 1.0, -1.0], abs=1e-3)
    assert scaled[4:].tolist() == [0.0, 0.0, 0.0, 0.0]  # zero std → no signal; NaN → excluded, advantage 0
    plain = group_advantages(r, 4, scale=False)
    assert plain[:4].tolist() == pytest.approx([0.5, -0.5, 0.5, -0.5])


def test_grpo_loss_matches_a_hand_computation():
    logp = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
    old = logp.detach() + torch.tensor([[0.0, 0.5, -0.1]])  # ratios 1, e^-0.5, e^0.1
    ref = torch.tensor([[-1.2, -2.0, -0.4]])
    adv = torch.tensor([2.0])
    mask = torch.tensor([[1, 1, 0]])
    loss, stats = grpo_loss(logp, old, ref, adv, mask, beta=0.1, clip_eps=0.2, loss_norm="token", normaliser=2)
    ratio = torch.exp(logp.detach() - old)
    pg = -torch.min(ratio * 2, ratio.clamp(0.8, 1.2) * 2)
    d = ref - logp.detach()
    kl = torch.exp(d) - d - 1
    expected = ((pg + 0.1 * kl) * mask).sum() / 2
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    assert stats["tokens"] == 2 and stats["clip_sum"] == 0  # ratio e^-0.5 < 0.8 but A > 0: not clipped
    assert stats["kl_sum"] == pytest.approx(float((kl * mask).sum()))
    loss.backward()
    assert logp.grad[0, 2] == 0  # masked token gets no gradient


def test_sequence_normalisation_weighs_sequences_equally():
    logp = torch.zeros(2, 4)
    adv = torch.tensor([1.0, 1.0])
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 1]])
    seq, _ = grpo_loss(logp, logp, None, adv, mask, beta=0, clip_eps=0.2, loss_norm="sequence", normaliser=2)
    tok, _ = grpo_loss(logp, logp, None, adv, mask, beta=0, clip_eps=0.2, loss_norm="token", normaliser=5)
    assert float(seq) == pytest.approx(-1.0) and float(tok) == pytest.approx(-1.0)


def test_prompt_sampler_is_reproducible_from_its_position():
    rows = [PromptRow(({"role": "user", "content": str(i)},)) for i in range(5)]
    a = PromptSampler(rows, shuffle=True, seed=3)
    first = [r.prompt for r in a.take(7)]
    b = PromptSampler(rows, shuffle=True, seed=3, position=4)
    assert [r.prompt for r in b.take(3)] == first[4:7]
    assert sorted(first[:5]) == ["0", "1", "2", "3", "4"]  # an epoch is a permutation


def test_shown_mask_spreads_over_groups():
    assert shown_mask(3, 2, 4) == [[True, True], [True, False], [True, False]]


def test_rollout_generator_scores_without_optimising(tmp_path):
    make_tiny_model(tmp_path / "model")
    write_prompts(tmp_path / "p.jsonl")
    recipe = validate_recipe({
        "name": "r", "policy": {"model": str(tmp_path / "model"), "lora": {"r": 2}},
        "judge": {"criteria": [{"name": "vowels", "question": "?"}]}, "judge_weight": 2.0,
        "rewards": [{"type": "regex", "name": "has_e", "pattern": "e"}],
        "data": {"path": str(tmp_path / "p.jsonl")},
        "generation": {"group_size": 3, "max_new_tokens": 6}, "training": {"prompts_per_step": 2},
    })
    from minirft.train.policy import load_policy

    policy = load_policy(recipe.policy, seed=0)
    before = {k: v.clone() for k, v in policy.model.state_dict().items()}
    sampler = PromptSampler([PromptRow(({"role": "user", "content": "hi"},), "1")] * 4, shuffle=False, seed=0)
    stream = rollouts(recipe, policy, sampler, build_rewards(recipe.rewards), FakeJudge())
    batch = next(stream)
    assert len(batch.completions) == 6 and batch.rewards.shape == (6,) and batch.advantages.shape == (6,)
    assert set(batch.per_reward) == {"judge", "has_e"}
    for i in range(6):
        assert float(batch.rewards[i]) == pytest.approx(2.0 * batch.per_reward["judge"][i] + batch.per_reward["has_e"][i])
    assert batch.generated.completion_mask.shape == (6, batch.generated.input_ids.shape[1] - batch.generated.prompt_len)
    next(stream)
    assert sampler.position == 4
    assert all(torch.equal(before[k], v) for k, v in policy.model.state_dict().items())


def test_gpu_only_settings_are_clear_errors_on_cpu(tmp_path):
    from minirft.errors import MinirftError
    from minirft.recipe import PolicyConfig
    from minirft.train.policy import choose_backend, load_policy

    assert choose_backend(PolicyConfig(backend="auto")) == "hf"  # no CUDA here
    with pytest.raises(MinirftError, match="unsloth needs a CUDA GPU"):
        load_policy(PolicyConfig(backend="unsloth"), device="cpu")
    make_tiny_model(tmp_path / "m")
    with pytest.raises(MinirftError, match="4-bit"):
        load_policy(PolicyConfig(model=str(tmp_path / "m"), backend="hf", load_in_4bit=True), device="cpu")


@pytest.mark.parametrize("has_bf16, expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_dtype_on_cpu_follows_native_bf16(monkeypatch, has_bf16, expected):
    from minirft.recipe import PolicyConfig
    from minirft.train import policy as policy_mod

    monkeypatch.setattr(policy_mod, "cpu_has_bf16", lambda: has_bf16)
    assert policy_mod._dtype(PolicyConfig(), cuda=False) == expected
    assert policy_mod._dtype(PolicyConfig(), cuda=True) == torch.bfloat16
    assert policy_mod._dtype(PolicyConfig(dtype="float32"), cuda=False) == torch.float32


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_folded_adapter_matches_the_policy_and_restores_the_base_exactly(tmp_path, dtype):
    from minirft.recipe import PolicyConfig
    from minirft.train.policy import generate, load_policy

    tiny = make_tiny_model(tmp_path / "model")
    policy = load_policy(PolicyConfig(model=str(tiny), dtype=dtype), seed=3)
    with torch.no_grad():  # give the adapter something to fold: LoRA B starts at zero
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    base = {n: p.detach().clone() for n, p in policy.model.named_parameters() if not p.requires_grad}
    ids = torch.tensor([[1, 40, 41, 42, 43, 44]])
    policy.model.eval()
    with torch.no_grad():
        unfolded = policy.model(input_ids=ids).logits.float()
        with policy.folded():
            folded = policy.model(input_ids=ids).logits.float()
        with policy.reference():
            reference = policy.model(input_ids=ids).logits.float()
            with policy.folded():  # inside reference() nothing is folded: the base is what is asked for
                still_reference = policy.model(input_ids=ids).logits.float()
    effect = (unfolded - reference).abs().max()  # what the adapter does to the logits
    error = (folded - unfolded).abs().max()  # what folding it into rounded weights costs
    assert error < (1e-4 if dtype == "float32" else 0.2 * effect), (error, effect)
    assert torch.equal(still_reference, reference)
    generate(policy, [[1, 40, 41]] * 4, max_new_tokens=6, temperature=1.0, top_p=1.0, top_k=0)
    for n, p in policy.model.named_parameters():  # bit-exact base after folding and generating
        if n in base:
            assert torch.equal(p, base[n]), n
