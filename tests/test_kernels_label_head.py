"""label_head_probs (restricted-vocabulary judge head) vs the full-vocabulary softmax path."""

import pytest
import torch

from kernels_fixtures import REL_TOL, assert_rel, kernel_cases, make_generator, poisoned_empty  # noqa: F401
from minirft_kernels import expected_score, label_head_probs
from minirft_kernels.ops.label_head import label_head_probs_naive

# (N, H, V, label_ids, label_class, n_classes)
CASES = [
    (7, 41, 1000, [17, 993, 5], [1, 0, 1], 2),  # yes/no with two spellings of "yes"
    (37, 300, 1000, [3, 4, 5, 6, 7], [0, 1, 2, 3, 4], 5),  # 1..5 score tokens; 2 row blocks, 3 H blocks
]


def _inputs(n, h, v, dtype, device, seed=0):
    g = make_generator(seed)
    hidden = torch.randn(n, h, generator=g).to(dtype)
    lm_head = (torch.randn(v, h, generator=g) * h**-0.5 * 2).to(dtype)
    g_up = torch.randn(n, generator=g)
    return [x.to(device) for x in (hidden, lm_head, g_up)]


@pytest.mark.parametrize("device,backend", kernel_cases())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", CASES, ids=["yesno-7x41", "score5-37x300"])
def test_probs_and_grads_match_full_vocab_path(device, backend, dtype, case, poisoned_empty):
    n, h, v, ids, cls, n_classes = case
    hidden, lm_head, g_up = _inputs(n, h, v, dtype, device)
    ids_t = torch.tensor(ids, device=device)
    cls_t = torch.tensor(cls, device=device)
    values = torch.arange(n_classes, dtype=torch.float32, device=device)

    hk = hidden.clone().requires_grad_()
    probs = label_head_probs(hk, lm_head[ids_t], cls_t, n_classes, backend=backend)
    assert probs.shape == (n, n_classes) and probs.dtype == torch.float32
    score = expected_score(probs, values)
    (gh,) = torch.autograd.grad((score * g_up).sum(), (hk,))

    hr = hidden.float().requires_grad_()
    probs_r = label_head_probs_naive(hr, lm_head.float(), ids_t, cls_t, n_classes)
    (gh_r,) = torch.autograd.grad(((probs_r @ values) * g_up).sum(), (hr,))

    # The kernel does fp32 math on the given values, so bf16 only rounds the gradient's storage.
    assert_rel(probs, probs_r, 2e-5, "probs")
    assert_rel(gh.float(), gh_r, REL_TOL[dtype], "d hidden")
    assert torch.allclose(probs.sum(1), torch.ones(n, device=device), atol=1e-5)


def test_expected_score_is_p_yes_for_binary():
    probs = torch.tensor([[0.25, 0.75], [1.0, 0.0]])
    assert torch.equal(expected_score(probs, [0.0, 1.0]), torch.tensor([0.75, 0.0]))
    with pytest.raises(ValueError, match="class_values"):
        expected_score(probs, [0.0, 1.0, 2.0])


def test_bad_labels_are_rejected():
    h, w = torch.randn(2, 8), torch.randn(3, 8)
    with pytest.raises(ValueError, match="label_class values"):
        label_head_probs(h, w, torch.tensor([0, 1, 2]), 2)
    with pytest.raises(ValueError, match="label_class"):
        label_head_probs(h, w, torch.tensor([0, 1]), 2)
    with pytest.raises(ValueError, match="do not match"):
        label_head_probs(h, torch.randn(3, 9), torch.tensor([0, 1, 1]), 2)
