"""grpo_token_loss: fused ratio/clip/k3-KL/mask/normalisation vs an independent autograd formula."""

import pytest
import torch

from kernels_fixtures import REL_TOL, assert_rel, kernel_cases, make_generator, poisoned_empty  # noqa: F401
from minirft_kernels import grpo_token_loss
from minirft_kernels.ops.grpo_loss import grpo_token_loss_naive


def _inputs(b, t, dtype, device, seed=0, bool_mask=False):
    g = make_generator(seed)
    logp = (torch.randn(b, t, generator=g) * 0.5 - 2.0).to(dtype)
    # Old/ref log-probs 0.3 nats away: ratios e^{+-0.3} so that some tokens clip on each side.
    old = logp.float() + 0.3 * torch.randn(b, t, generator=g)
    ref = logp.float() + 0.3 * torch.randn(b, t, generator=g)
    adv = torch.randn(b, generator=g)
    mask = torch.rand(b, t, generator=g) > 0.3
    mask[0, t // 2 :] = False  # a right-padded completion
    if b > 2:
        mask[2] = False  # an empty completion: contributes nothing, must not divide by zero
    mask = mask if bool_mask else mask.float()
    g_up = torch.rand((), generator=g) + 0.5  # shared upstream gradient
    return [x.to(device) for x in (logp, old, ref, adv, mask, g_up)]


CONFIGS = [  # (clip_eps, clip_eps_high, beta, norm)
    (0.2, None, 0.04, "token"),
    (0.2, None, 0.04, "sequence"),
    (0.2, 0.28, 0.0, "token"),  # DAPO asymmetric clip, no KL
    (0.1, None, 0.5, "sequence"),
]

# GSPO: one ratio per completion. Its log-ratio is a mean of ~N(0, 0.3) terms, so clip ranges of a few
# hundredths make some rows clip on each side.
SEQ_CONFIGS = [  # (clip_eps, clip_eps_high, beta, norm)
    (0.03, 0.04, 0.04, "sequence"),  # the GSPO paper's loss (with a KL term)
    (0.03, None, 0.0, "token"),
    (0.02, 0.05, 0.5, "token"),
]


@pytest.mark.parametrize("device,backend", kernel_cases())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("bt", [(3, 17), (2, 1100)], ids=["3x17", "2x1100"])  # 1100 > one T block
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"eps{c[0]}-{c[1]}-beta{c[2]}-{c[3]}")
def test_loss_grad_and_metrics_match_autograd(device, backend, dtype, bt, cfg, poisoned_empty):
    clip, clip_high, beta, norm = cfg
    logp, old, ref, adv, mask, g_up = _inputs(*bt, dtype, device, bool_mask=(norm == "sequence"))
    ref_arg = ref if beta else None
    lk = logp.clone().requires_grad_()
    loss, metrics = grpo_token_loss(lk, old, ref_arg, adv, mask, clip, beta, norm,
                                    clip_eps_high=clip_high, backend=backend)
    (g,) = torch.autograd.grad(loss * g_up, (lk,))
    assert g.dtype == dtype and loss.dim() == 0

    lr = logp.float().requires_grad_()
    loss_r, metrics_r = grpo_token_loss_naive(lr, old, ref_arg, adv, mask, clip, beta, norm,
                                              clip_eps_high=clip_high)
    (g_r,) = torch.autograd.grad(loss_r * g_up, (lr,))

    # Inputs are the same values in both; only bf16 storage of the gradient differs.
    tol = {torch.float32: 1e-5, torch.bfloat16: 1e-2}[dtype]
    assert abs(loss.item() - loss_r.item()) <= 1e-5 * max(1.0, abs(loss_r.item()))
    assert_rel(g.float(), g_r, tol, "d logp")
    assert abs(metrics["kl"].item() - metrics_r["kl"].item()) < 1e-5
    assert abs(metrics["clip_ratio"].item() - metrics_r["clip_ratio"].item()) < 1e-6
    assert 0 < metrics["clip_ratio"].item() < 1
    assert not metrics["kl"].requires_grad
    assert (g.float()[mask == 0] == 0).all()  # masked tokens get no gradient


@pytest.mark.parametrize("device,backend", kernel_cases())
def test_on_policy_gradient_is_plain_policy_gradient(device, backend):
    """old_logp == logp: ratio 1, nothing clipped, d loss / d logp = -A m / sum(m)."""
    logp, _, _, adv, mask, _ = _inputs(3, 17, torch.float32, device, seed=3)
    lk = logp.clone().requires_grad_()
    loss, metrics = grpo_token_loss(lk, logp, None, adv, mask, 0.2, 0.0, "token", backend=backend)
    (g,) = torch.autograd.grad(loss, (lk,))
    expected = -adv[:, None] * mask / mask.sum()
    assert_rel(g, expected, 1e-6, "d logp")
    assert metrics["clip_ratio"].item() == 0.0 and metrics["kl"].item() == 0.0


def test_bad_arguments_are_rejected():
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="advantages"):
        grpo_token_loss(z, z, z, torch.zeros(3), z)
    with pytest.raises(ValueError, match="norm"):
        grpo_token_loss(z, z, z, torch.zeros(2), z, norm="batch")
    with pytest.raises(ValueError, match="ref_logp"):
        grpo_token_loss(z, z, None, torch.zeros(2), z, beta=0.1)


@pytest.mark.parametrize("device,backend", kernel_cases())
@pytest.mark.parametrize("norm", ["token", "sequence"])
def test_micro_batches_with_the_step_denominator_add_up_to_the_whole_batch(device, backend, norm):
    logp, old, ref, adv, mask, _ = _inputs(6, 13, torch.float32, device, seed=3)
    whole = logp.clone().requires_grad_(True)
    full, _ = grpo_token_loss(whole, old, ref, adv, mask, 0.2, 0.04, norm, backend=backend)
    full.backward()
    denominator = float(mask.sum()) if norm == "token" else 6.0
    part = logp.clone().requires_grad_(True)
    total = 0.0
    for sl in (slice(0, 2), slice(2, 6)):
        loss, _ = grpo_token_loss(part[sl], old[sl], ref[sl], adv[sl], mask[sl], 0.2, 0.04, norm,
                                  denominator=denominator, backend=backend)
        loss.backward()
        total += float(loss)
    assert total == pytest.approx(float(full), rel=1e-5)
    assert torch.allclose(part.grad, whole.grad, atol=1e-7)


@pytest.mark.parametrize("device,backend", kernel_cases())
@pytest.mark.parametrize("cfg", CONFIGS[:2], ids=lambda c: f"beta{c[2]}-{c[3]}")
def test_importance_weight_scales_the_policy_gradient_term_only(device, backend, cfg):
    """A per-token IS weight (llama.cpp rollouts) multiplies the clipped surrogate and its gradient,
    never the KL term: kernel and reference against the independent formula."""
    clip, clip_high, beta, norm = cfg
    logp, old, ref, adv, mask, g_up = _inputs(3, 17, torch.float32, device, seed=5)
    w = (torch.rand(3, 17, generator=make_generator(6)) * 2.0).clamp(max=1.7).to(device)
    lk = logp.clone().requires_grad_()
    loss, metrics = grpo_token_loss(lk, old, ref, adv, mask, clip, beta, norm, is_weight=w, backend=backend)
    (g,) = torch.autograd.grad(loss * g_up, (lk,))
    lr = logp.float().requires_grad_()
    loss_r, metrics_r = grpo_token_loss_naive(lr, old, ref, adv, mask, clip, beta, norm, is_weight=w)
    (g_r,) = torch.autograd.grad(loss_r * g_up, (lr,))
    assert abs(loss.item() - loss_r.item()) <= 1e-5 * max(1.0, abs(loss_r.item()))
    assert_rel(g, g_r, 1e-5, "d logp")
    assert abs(metrics["kl"].item() - metrics_r["kl"].item()) < 1e-6
    # and the weight really acts: a weight of one is the unweighted loss, this one is not
    ones, _ = grpo_token_loss(logp, old, ref, adv, mask, clip, beta, norm, is_weight=torch.ones_like(w),
                              backend=backend)
    plain, _ = grpo_token_loss(logp, old, ref, adv, mask, clip, beta, norm, backend=backend)
    assert ones.item() == pytest.approx(plain.item(), abs=1e-7) and abs(loss.item() - plain.item()) > 1e-4


@pytest.mark.parametrize("device,backend", kernel_cases())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("bt", [(6, 17), (4, 1100)], ids=["6x17", "4x1100"])  # 1100 > one T block
@pytest.mark.parametrize("cfg", SEQ_CONFIGS, ids=lambda c: f"eps{c[0]}-{c[1]}-beta{c[2]}-{c[3]}")
@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "is_weight"])
def test_sequence_level_ratio_matches_autograd(device, backend, dtype, bt, cfg, weighted, poisoned_empty):
    """GSPO's sequence-level ratio (one length-normalised ratio per completion, clipped as a whole):
    kernel and reference against the independent formula, loss, gradient and metrics."""
    clip, clip_high, beta, norm = cfg
    logp, old, ref, adv, mask, g_up = _inputs(*bt, dtype, device, seed=11)
    # a per-row shift of the old policy, so that long rows (whose token noise averages out) clip too:
    # even rows move their ratio past the clip in the direction of their advantage, odd rows away from it
    side = torch.tensor([-1.0 if b % 2 == 0 else 1.0 for b in range(bt[0])], device=device)
    old = old + (0.06 * torch.sign(adv) * side)[:, None]
    w = (torch.rand(*bt, generator=make_generator(12)) * 2.0).clamp(max=1.7).to(device) if weighted else None
    ref_arg = ref if beta else None
    lk = logp.clone().requires_grad_()
    loss, metrics = grpo_token_loss(lk, old, ref_arg, adv, mask, clip, beta, norm, clip_eps_high=clip_high,
                                    is_weight=w, ratio_level="sequence", backend=backend)
    (g,) = torch.autograd.grad(loss * g_up, (lk,))
    lr = logp.float().requires_grad_()
    loss_r, metrics_r = grpo_token_loss_naive(lr, old, ref_arg, adv, mask, clip, beta, norm,
                                              clip_eps_high=clip_high, is_weight=w, ratio_level="sequence")
    (g_r,) = torch.autograd.grad(loss_r * g_up, (lr,))
    tol = {torch.float32: 1e-5, torch.bfloat16: 1e-2}[dtype]
    assert abs(loss.item() - loss_r.item()) <= 1e-5 * max(1.0, abs(loss_r.item()))
    assert_rel(g.float(), g_r, tol, "d logp")
    assert abs(metrics["kl"].item() - metrics_r["kl"].item()) < 1e-5
    assert abs(metrics["clip_ratio"].item() - metrics_r["clip_ratio"].item()) < 1e-6
    assert 0 < metrics["clip_ratio"].item() < 1  # some completions clipped, not all
    assert (g.float()[mask == 0] == 0).all()


@pytest.mark.parametrize("device,backend", kernel_cases())
def test_sequence_ratio_differs_from_token_ratio_and_equals_it_on_policy(device, backend):
    """Off-policy the two levels give different losses; on-policy (ratio 1) the same gradient up to the
    per-row weighting: sequence level with norm=sequence equals token level with norm=sequence."""
    logp, old, _, adv, mask, _ = _inputs(4, 9, torch.float32, device, seed=13)
    tok, _ = grpo_token_loss(logp, old, None, adv, mask, 0.2, 0.0, "sequence", backend=backend)
    seq, _ = grpo_token_loss(logp, old, None, adv, mask, 0.2, 0.0, "sequence", ratio_level="sequence",
                             backend=backend)
    assert abs(tok.item() - seq.item()) > 1e-4
    grads = []
    for level in ("token", "sequence"):
        lk = logp.clone().requires_grad_()
        loss, _ = grpo_token_loss(lk, lk.detach(), None, adv, mask, 0.2, 0.0, "sequence", ratio_level=level,
                                  backend=backend)
        grads.append(torch.autograd.grad(loss, (lk,))[0])
    assert_rel(grads[1], grads[0], 1e-6, "on-policy d logp")


@pytest.mark.parametrize("device,backend", kernel_cases())
@pytest.mark.parametrize("norm", ["token", "sequence"])
def test_sequence_level_micro_batches_add_up(device, backend, norm):
    logp, old, ref, adv, mask, _ = _inputs(6, 13, torch.float32, device, seed=14)
    whole = logp.clone().requires_grad_(True)
    full, _ = grpo_token_loss(whole, old, ref, adv, mask, 0.03, 0.04, norm, clip_eps_high=0.05,
                              ratio_level="sequence", backend=backend)
    full.backward()
    denominator = float(mask.sum()) if norm == "token" else 6.0
    part = logp.clone().requires_grad_(True)
    total = 0.0
    for sl in (slice(0, 1), slice(1, 4), slice(4, 6)):
        loss, _ = grpo_token_loss(part[sl], old[sl], ref[sl], adv[sl], mask[sl], 0.03, 0.04, norm,
                                  clip_eps_high=0.05, ratio_level="sequence", denominator=denominator,
                                  backend=backend)
        loss.backward()
        total += float(loss.detach())
    assert total == pytest.approx(float(full), rel=1e-5)
    assert torch.allclose(part.grad, whole.grad, atol=1e-7)


def test_bad_ratio_level_is_rejected():
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="ratio_level"):
        grpo_token_loss(z, z, None, torch.zeros(2), z, ratio_level="batch")
