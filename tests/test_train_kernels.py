"""The trainer's two seams run the fused kernels: they must equal the plain-logits formulas."""

from __future__ import annotations


import pytest
import torch

from train_fixtures import make_tiny_model  # noqa: E402

from minirft.train import policy as policy_mod  # noqa: E402
from minirft.train.loop import grpo_loss  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    path = make_tiny_model(tmp_path_factory.mktemp("k") / "m")
    return AutoModelForCausalLM.from_pretrained(path).float()


def test_fused_token_logprobs_equal_the_logits_path(model):
    torch.manual_seed(0)
    ids = torch.randint(3, 250, (3, 17))
    att = torch.ones_like(ids)
    att[0, :4] = 0  # a left-padded prompt
    pos = (att.cumsum(1) - 1).clamp(min=0)
    n = 9
    fused, ent = policy_mod.token_logprobs(model, ids, att, n, temperature=0.7, with_entropy=True)
    plain, ent_plain = policy_mod._logits_logprobs(model, ids, att, pos, ids[:, -n:], 0.7, True)
    torch.testing.assert_close(fused, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent, ent_plain, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(fused)
    params = [p for p in model.parameters() if p.requires_grad]
    grads_fused = torch.autograd.grad((fused * g).sum(), params, allow_unused=True)
    grads_plain = torch.autograd.grad((plain * g).sum(), params, allow_unused=True)
    for a, b in zip(grads_fused, grads_plain):
        if a is not None or b is not None:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("norm", ["token", "sequence"])
def test_grpo_loss_uses_step_wide_normalisation(norm):
    torch.manual_seed(1)
    logp = (torch.randn(4, 6) * 0.1 - 2).requires_grad_()
    old = logp.detach() + torch.randn(4, 6) * 0.05
    ref = logp.detach() + torch.randn(4, 6) * 0.1
    adv = torch.tensor([1.0, -0.5, 0.3, -1.2])
    mask = torch.ones(4, 6)
    mask[1, 3:] = 0
    mask[3] = 0  # an excluded sample
    normaliser = 40.0  # the whole step's tokens (or sequences), more than this micro-batch has
    loss, stats = grpo_loss(logp, old, ref, adv, mask, beta=0.04, clip_eps=0.2, loss_norm=norm, normaliser=normaliser)
    ratio = torch.exp(logp - old)
    a = adv[:, None]
    per = -torch.min(ratio * a, ratio.clamp(0.8, 1.2) * a)
    kl = torch.exp(ref - logp) - (ref - logp) - 1
    per = per + 0.04 * kl
    if norm == "token":
        expected = (per * mask).sum() / normaliser
    else:
        expected = ((per * mask).sum(1) / mask.sum(1).clamp(min=1)).sum() / normaliser
    torch.testing.assert_close(loss, expected, atol=1e-6, rtol=1e-5)
    (g1,) = torch.autograd.grad(loss, logp)
    (g2,) = torch.autograd.grad(expected, logp)
    torch.testing.assert_close(g1, g2, atol=1e-6, rtol=1e-5)
    assert stats["tokens"] == float(mask.sum())
    assert stats["kl_sum"] == pytest.approx(float((kl * mask).sum()), rel=1e-5)
