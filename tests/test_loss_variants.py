"""training.loss variants (grpo, dr_grpo, dapo, gspo), scale_rewards, dynamic sampling, truncation masks.

Each variant's loss is computed on the same tensors three ways: minirft's (``loss_setup`` + the fused
kernel through ``grpo_loss``, split into micro-batches as ``update`` does), an independent reference
written from the papers' formulas below, and TRL's own ``GRPOTrainer._compute_loss`` (TRL is a dev
dependency). The trainer's ``update`` gives the same step with 1 and with N micro-batches for every
variant.
"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from train_fixtures import FakeJudge, make_tiny_model, write_prompts  # noqa: E402

from minirft.data import PromptRow  # noqa: E402
from minirft.errors import MinirftError  # noqa: E402
from minirft.events import read_events  # noqa: E402
from minirft.recipe import load_recipe, validate_recipe  # noqa: E402
from minirft.rewards import build_rewards  # noqa: E402
from minirft.train import loop  # noqa: E402
from minirft.train import metrics as metrics_module  # noqa: E402
from minirft.train.policy import Generated  # noqa: E402
from minirft.train.rollout import (PromptSampler, group_advantages, rollouts, truncated_mask,  # noqa: E402
                                   zero_std_groups)

G = 4
L_MAX = 12
#: (name, training overrides): every selectable loss, grpo with both of its normalisations
VARIANTS = [
    ("grpo", {"loss": "grpo"}),
    ("grpo-sequence", {"loss": "grpo", "loss_norm": "sequence"}),
    ("dr_grpo", {"loss": "dr_grpo"}),
    ("dapo", {"loss": "dapo"}),
    ("gspo", {"loss": "gspo"}),
]


def make_recipe(tmp_path=None, data_path="p.jsonl", **training):
    return validate_recipe({
        "name": "v", "rewards": [{"type": "exact_match"}], "data": {"path": str(data_path)},
        "generation": {"group_size": G, "max_new_tokens": L_MAX}, "training": {"beta": 0.04, **training},
    })


def tensors(seed=0, groups=3, spread=0.3):
    """Log-probs of the policy, of π_old (off-policy by ~spread nats, so clips bind) and of π_ref, a
    ragged mask, and rewards with one zero-std group."""
    g = torch.Generator().manual_seed(seed)
    n = groups * G
    logp = torch.randn(n, L_MAX, generator=g) * 0.5 - 2.0
    old = logp + spread * torch.randn(n, L_MAX, generator=g)
    ref = logp + 0.3 * torch.randn(n, L_MAX, generator=g)
    lengths = torch.randint(2, L_MAX + 1, (n,), generator=g)
    mask = (torch.arange(L_MAX)[None, :] < lengths[:, None]).float()
    rewards = torch.rand(n, generator=g)
    rewards[G:2 * G] = 0.5  # a group without signal
    return logp, old, ref, mask, rewards


# ---------------------------------------------------------------- references written from the papers
def paper_loss(variant, logp, old, ref, mask, rewards, *, beta, eps_low, eps_high, max_len):
    """The objective of each paper, in plain autograd (nothing shared with minirft's code)."""
    r = rewards.view(-1, G)
    centred = (r - r.mean(1, keepdim=True)).view(-1)
    std = r.std(1, unbiased=False, keepdim=True).expand_as(r).reshape(-1)
    # GRPO (Shao et al. 2024) and DAPO (Yu et al. 2025) scale by the group std; Dr. GRPO (Liu et al. 2025) does not
    adv = centred if variant == "dr_grpo" else centred / (std + 1e-4)
    a = adv[:, None]
    if variant == "gspo":  # Zheng et al. 2025, eq. (5)-(7): s_i = (π_θ(y_i|x) / π_old(y_i|x))^(1/|y_i|)
        s = torch.exp(((logp - old) * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True))
        surrogate = torch.minimum(s * a, torch.clamp(s, 1 - eps_low, 1 + eps_high) * a).expand_as(logp)
    else:
        rho = torch.exp(logp - old)
        surrogate = torch.minimum(rho * a, torch.clamp(rho, 1 - eps_low, 1 + eps_high) * a)
    kl = torch.exp(ref - logp) - (ref - logp) - 1  # Schulman's k3, as GRPO's paper
    per_token = -surrogate + beta * kl
    if variant in ("grpo-sequence", "gspo"):  # 1/G Σ_i 1/|o_i| Σ_t
        return ((per_token * mask).sum(1) / mask.sum(1)).mean()
    if variant == "dr_grpo":  # 1/G Σ_i Σ_t / MAX_TOKENS
        return (per_token * mask).sum() / (mask.shape[0] * max_len)
    return (per_token * mask).sum() / mask.sum()  # DAPO eq. (8): 1/Σ|o_i| Σ_i Σ_t (and minirft's grpo default)


# ---------------------------------------------------------------- TRL's own loss code on the same inputs
def trl_loss(variant, logp, old, ref, mask, advantages, *, beta, eps_low, eps_high, max_len):
    """TRL's GRPOTrainer._compute_loss with our log-probs fed in where it would run the model."""
    pytest.importorskip("trl")
    from trl.trainer.grpo_trainer import GRPOTrainer

    loss_type, level = {"grpo-sequence": ("grpo", "token"), "dr_grpo": ("dr_grpo", "token"),
                        "dapo": ("dapo", "token"), "gspo": ("grpo", "sequence")}[variant]
    trainer = _bare_trl_trainer(GRPOTrainer, loss_type=loss_type, level=level, beta=beta,
                                eps_low=eps_low, eps_high=eps_high, max_len=max_len, logp=logp)
    n = logp.shape[0]
    inputs = {
        "prompt_ids": torch.ones(n, 1, dtype=torch.long), "prompt_mask": torch.ones(n, 1, dtype=torch.long),
        "completion_ids": torch.ones(n, logp.shape[1], dtype=torch.long), "completion_mask": mask.long(),
        "advantages": advantages, "old_per_token_logps": old, "ref_per_token_logps": ref,
        "num_items_in_batch": mask.sum(),
    }
    return trainer._compute_loss(None, inputs)


def _bare_trl_trainer(cls, *, loss_type, level, beta, eps_low, eps_high, max_len, logp):
    """A GRPOTrainer object holding only the attributes its ``_compute_loss`` reads (TRL 1.16): no model,
    one process, no accumulation; the log-probs it would compute are ours."""
    from collections import defaultdict
    from types import SimpleNamespace

    t = cls.__new__(cls)
    t.args = SimpleNamespace(delta=None, use_bias_correction_kl=False, steps_per_generation=1)
    t.loss_type, t.importance_sampling_level = loss_type, level
    t.beta, t.epsilon_low, t.epsilon_high, t.max_completion_length = beta, eps_low, eps_high, max_len
    t.top_entropy_quantile, t.off_policy_mask_threshold = 1.0, None
    t.use_vllm, t.vllm_importance_sampling_correction = False, False
    t.aux_loss_enabled, t._entropy_bonus_enabled = False, False
    t.current_gradient_accumulation_steps = 1
    t.accelerator = SimpleNamespace(num_processes=1, gather=lambda x: x, gather_for_metrics=lambda x: x,
                                    reduce=lambda x, reduction="sum": x)
    t._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    t.model = SimpleNamespace(training=True)
    t._get_per_token_logps_and_entropies = lambda *a, **k: (logp, torch.zeros_like(logp), None)
    return t


def ours(recipe, logp, old, ref, mask, rewards, splits):
    """minirft: advantages, loss_setup and the kernel, micro-batch by micro-batch as update() does."""
    tr = recipe.training
    adv = group_advantages(rewards, G, scale=tr.advantage_scaling())
    setup = loop.loss_setup(recipe, mask)
    leaf = logp.clone().requires_grad_()
    total = 0.0
    for sl in splits:
        loss, _ = loop.grpo_loss(leaf[sl], old[sl], ref[sl], adv[sl], mask[sl], beta=tr.beta, **setup)
        loss.backward()
        total += float(loss.detach())
    return total, leaf.grad, adv


@pytest.mark.parametrize("variant,training", VARIANTS, ids=[v for v, _ in VARIANTS])
@pytest.mark.parametrize("spread", [0.0, 0.3], ids=["on-policy", "off-policy"])
def test_each_variant_matches_the_paper_formula_and_trl(variant, training, spread):
    recipe = make_recipe(**training)
    low, high = recipe.training.clip_range()
    if variant == "gspo" and spread:  # the paper's 3e-4/4e-4 would clip every row: use a range that splits them
        recipe = make_recipe(**training, clip_eps=0.03, epsilon_high=0.04)
        low, high = 0.03, 0.04
    logp, old, ref, mask, rewards = tensors(seed=1, spread=spread)
    if spread == 0.0:
        old = logp.clone()
    n = logp.shape[0]
    loss, grad, adv = ours(recipe, logp, old, ref, mask, rewards, [slice(0, n)])
    leaf = logp.clone().requires_grad_()
    want = paper_loss(variant if variant != "grpo" else "dapo", leaf, old, ref, mask, rewards, beta=0.04,
                      eps_low=low, eps_high=high, max_len=L_MAX)
    want.backward()
    assert loss == pytest.approx(float(want), rel=1e-5, abs=1e-7)
    assert torch.allclose(grad, leaf.grad, rtol=1e-5, atol=1e-8)
    if variant != "grpo":  # TRL has no step-wide token mean without clip-higher under this name
        got_trl = trl_loss(variant, logp, old, ref, mask, adv, beta=0.04, eps_low=low, eps_high=high,
                           max_len=L_MAX)
        assert loss == pytest.approx(float(got_trl), rel=1e-5, abs=1e-7)


def test_variant_defaults_and_what_differs_on_policy():
    """The clip ranges each variant resolves to, and the on-policy identities the docs state."""
    assert make_recipe().training.clip_range() == (0.2, 0.2)
    assert make_recipe(loss="dapo").training.clip_range() == (0.2, 0.28)
    assert make_recipe(loss="gspo").training.clip_range() == (3e-4, 4e-4)
    assert make_recipe(loss="dapo", epsilon_high=0.3, clip_eps=0.1).training.clip_range() == (0.1, 0.3)
    assert make_recipe(loss="dr_grpo").training.advantage_scaling() == "none"
    assert make_recipe(loss="dapo").training.advantage_scaling() == "group"
    logp, _, ref, mask, rewards = tensors(seed=2)
    n = logp.shape[0]
    res = {v: ours(make_recipe(**t), logp, logp.clone(), ref, mask, rewards, [slice(0, n)]) for v, t in VARIANTS}
    assert torch.allclose(res["grpo"][1], res["dapo"][1], atol=1e-9)  # ratio 1: only the clip differs
    assert torch.allclose(res["gspo"][1], res["grpo-sequence"][1], atol=1e-9)
    assert not torch.allclose(res["grpo"][1], res["grpo-sequence"][1], atol=1e-6)
    assert not torch.allclose(res["grpo"][1], res["dr_grpo"][1], atol=1e-6)


@pytest.mark.parametrize("variant,training", VARIANTS, ids=[v for v, _ in VARIANTS])
def test_micro_batches_give_the_step_loss_and_gradient_for_every_variant(variant, training):
    """Tensor level, off-policy (clips binding): 1 micro-batch = 3 uneven ones."""
    extra = {"clip_eps": 0.03, "epsilon_high": 0.04} if variant == "gspo" else {}
    recipe = make_recipe(**training, **extra)
    logp, old, ref, mask, rewards = tensors(seed=3)
    whole, g_whole, _ = ours(recipe, logp, old, ref, mask, rewards, [slice(0, 12)])
    parts, g_parts, _ = ours(recipe, logp, old, ref, mask, rewards, [slice(0, 4), slice(4, 5), slice(5, 12)])
    assert parts == pytest.approx(whole, rel=1e-5)
    assert torch.allclose(g_parts, g_whole, rtol=1e-5, atol=1e-8)


# ------------------------------------------------------------------ the trainer's update, end to end
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tinyv")
    make_tiny_model(d / "model")
    write_prompts(d / "prompts.jsonl")
    return d


def tiny_recipe(tiny, **training):
    return validate_recipe({
        "name": "toy", "policy": {"model": str(tiny / "model"), "lora": {"r": 4, "alpha": 8}, "dtype": "float32"},
        "rewards": [{"type": "python", "name": "a_share", "function": "train_fixtures:toy_reward"}],
        "data": {"path": str(tiny / "prompts.jsonl")},
        "generation": {"group_size": G, "max_new_tokens": 8},
        "training": {"steps": 2, "prompts_per_step": 3, "lr": 1e-2, **training},
    })


def step_delta(recipe, policy, batch):
    """One real update() with SGD(lr=1) and no gradient clipping: the parameter change is -gradient."""
    params = policy.trainable_parameters()
    before = [p.detach().clone() for p in params]
    opt = torch.optim.SGD(params, lr=1.0)
    upd = loop.update(recipe, policy, batch, opt, params)
    delta = torch.cat([(p.detach() - b).flatten() for p, b in zip(params, before)])
    with torch.no_grad():
        for p, b in zip(params, before):
            p.copy_(b)
    return upd, delta


@pytest.mark.parametrize("variant,training", VARIANTS, ids=[v for v, _ in VARIANTS])
def test_update_is_the_same_with_one_and_with_n_micro_batches(tiny, variant, training):
    from minirft.train.policy import load_policy

    recipe = tiny_recipe(tiny, max_grad_norm=1e9, **training)
    policy = load_policy(recipe.policy, seed=0)
    with torch.no_grad():  # a non-zero adapter, so the KL term has a gradient too
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    rows = [PromptRow(({"role": "user", "content": f"tell me about {w}"},), None) for w in ("owls", "tea", "jazz")]
    torch.manual_seed(0)
    batch = next(rollouts(recipe, policy, PromptSampler(rows, shuffle=False, seed=0), build_rewards(recipe.rewards)))
    results = []
    for micro in (3, 1):
        r = recipe.model_copy(deep=True)
        r.training.micro_batch_prompts = micro
        results.append(step_delta(r, policy, batch))
    (u1, d1), (u3, d3) = results
    assert u1["skipped"] is None and float(d1.abs().sum()) > 0
    assert u3["loss"] == pytest.approx(u1["loss"], rel=1e-5, abs=1e-8)
    assert torch.allclose(d3, d1, rtol=1e-4, atol=1e-7), float((d3 - d1).abs().max())


# ------------------------------------------------------------------------------ advantages
def test_scale_rewards_group_batch_none():
    r = torch.tensor([1.0, 0.0, 1.0, 0.0, 3.0, 1.0, 3.0, 1.0])
    grp = group_advantages(r, 4, scale="group")
    assert grp.tolist() == pytest.approx([1, -1, 1, -1, 1, -1, 1, -1], abs=1e-3)
    batch = group_advantages(r, 4, scale="batch")
    std = float(r.std(unbiased=False))  # mean 1.25: the std of the whole step
    assert batch.tolist() == pytest.approx([x / (std + 1e-4) for x in (0.5, -0.5, 0.5, -0.5, 1, -1, 1, -1)])
    assert group_advantages(r, 4, scale="none").tolist() == [0.5, -0.5, 0.5, -0.5, 1, -1, 1, -1]
    assert torch.equal(group_advantages(r, 4, scale=True), grp)  # the old bool spelling still works


def test_zero_std_groups_counts_flat_and_empty_groups():
    r = torch.tensor([1.0, 1.0, math.nan, 1.0, 0.0, 1.0, 0.0, 0.0] + [math.nan] * 4)
    zero, has = zero_std_groups(r, 4)
    assert zero.tolist() == [True, False, True] and has.tolist() == [True, True, False]


# --------------------------------------------------------------------------- dynamic sampling
class FlatJudge(FakeJudge):
    """The fake judge's verdicts with set scores: every completion of a prompt containing "flat" gets
    0.5, the others 0.1, 0.2, … (distinct), so which groups have a reward spread is known."""

    def score_groups(self, rows, groups, rationales=False):
        out = super().score_groups(rows, groups, rationales)
        for row, scores in zip(rows, out):
            for i, s in enumerate(scores):
                p = 0.5 if "flat" in row.prompt else 0.1 * (i + 1)
                s.reward, s.criteria = p, {"vowels": p}
        return out


def judged_recipe(tiny, **training):
    return validate_recipe({
        "name": "toy", "policy": {"model": str(tiny / "model"), "lora": {"r": 4, "alpha": 8}, "dtype": "float32"},
        "judge": {"criteria": [{"name": "vowels", "question": "Mostly vowels?"}]},
        "data": {"path": str(tiny / "prompts.jsonl")},
        "generation": {"group_size": G, "max_new_tokens": 6},
        "training": {"steps": 2, "prompts_per_step": 4, "micro_batch_prompts": 1, **training},
    })


def flat_rows(pattern):
    return [PromptRow(({"role": "user", "content": f"{kind} prompt {i}"},), None)
            for i, kind in enumerate(pattern)]


@pytest.mark.parametrize("refill,kept,dropped,rounds", [(0, 2, 2, 0), (2, 4, 3, 2)])
def test_dynamic_sampling_drops_flat_groups_and_refills(tiny, refill, kept, dropped, rounds):
    from minirft.train.policy import load_policy

    recipe = judged_recipe(tiny, drop_zero_std_groups=True, refill_rounds=refill)
    policy = load_policy(recipe.policy, seed=0)
    # step 1: flat ok flat ok | refill 1: flat ok | refill 2: ok
    sampler = PromptSampler(flat_rows(["flat", "ok", "flat", "ok", "flat", "ok", "ok", "ok"]), shuffle=False, seed=0)
    batch = next(rollouts(recipe, policy, sampler, [], FlatJudge()))
    assert len(batch.rows) == kept and all("ok" in r.prompt for r in batch.rows)
    assert batch.sampling["groups_dropped"] == dropped and batch.sampling["refill_rounds"] == rounds
    assert batch.sampling["groups_sampled"] == kept + dropped
    assert not bool(batch.dropped.any()) and len(batch.completions) == kept * G
    assert batch.generated.input_ids.shape[0] == kept * G and batch.advantages.shape == (kept * G,)
    metrics = metrics_module.step_metrics(recipe, batch, {"kl_sum": 0, "clip_sum": 0, "tokens": 1, "loss": 0.0,
                                                "entropy_sum": 0, "entropy_tokens": 0, "skipped": None,
                                                "grad_norm": 0.0}, lr=1e-5, update_s=0, step_s=0)
    assert metrics["groups_dropped"] == dropped and metrics["groups_kept"] == kept
    assert metrics["frac_reward_zero_std"] == pytest.approx(dropped / (kept + dropped))
    params = policy.trainable_parameters()
    upd = loop.update(recipe, policy, batch, torch.optim.SGD(params, lr=1e-3), params)
    assert upd["skipped"] is None and upd["tokens"] == float(batch.generated.completion_mask.sum())


def test_dynamic_sampling_with_nothing_to_keep_updates_nothing(tiny):
    from minirft.train.policy import load_policy

    recipe = judged_recipe(tiny, drop_zero_std_groups=True, refill_rounds=1, beta=0.1)
    policy = load_policy(recipe.policy, seed=0)
    batch = next(rollouts(recipe, policy, PromptSampler(flat_rows(["flat"] * 8), shuffle=False, seed=0), [],
                          FlatJudge()))
    assert bool(batch.dropped.all()) and batch.sampling["groups_dropped"] == 8
    params = policy.trainable_parameters()
    before = [p.detach().clone() for p in params]
    upd = loop.update(recipe, policy, batch, torch.optim.SGD(params, lr=1.0), params)
    assert upd.get("no_signal") and all(torch.equal(p, b) for p, b in zip(params, before))


def test_without_dynamic_sampling_flat_groups_stay(tiny):
    from minirft.train.policy import load_policy

    recipe = judged_recipe(tiny)
    policy = load_policy(recipe.policy, seed=0)
    batch = next(rollouts(recipe, policy, PromptSampler(flat_rows(["flat", "ok"] * 2), shuffle=False, seed=0), [],
                          FlatJudge()))
    assert len(batch.rows) == 4 and not bool(batch.dropped.any()) and batch.sampling["groups_zero_std"] == 2
    metrics = metrics_module.step_metrics(recipe, batch, {"kl_sum": 0, "clip_sum": 0, "tokens": 1, "loss": 0.0,
                                                "entropy_sum": 0, "entropy_tokens": 0, "skipped": None,
                                                "grad_norm": 0.0}, lr=1e-5, update_s=0, step_s=0)
    assert metrics["frac_reward_zero_std"] == 0.5 and "groups_dropped" not in metrics


def test_a_run_with_dynamic_sampling_logs_the_dropped_groups(tiny, tmp_path):
    from minirft.tui.plain import step_line
    from minirft.tui.run_state import RunState
    from minirft.events import EventReader

    recipe = judged_recipe(tiny, drop_zero_std_groups=True, refill_rounds=1)
    # the data file's prompts: none contains "flat"; a judge that flattens every second call's groups
    class EveryOther(FakeJudge):
        def score_groups(self, rows, groups, rationales=False):
            out = super().score_groups(rows, groups, rationales)
            for g, scores in enumerate(out):
                for i, s in enumerate(scores):
                    p = 0.25 if (self.calls % 2 == 1 and g < 2) else 0.1 * (i + 1)
                    s.reward, s.criteria = p, {"vowels": p}
            return out

    run = loop.train(recipe, tmp_path / "run", judge=EveryOther(), quiet=True)
    steps = [e for e in read_events(run / "events.jsonl") if e["type"] == "step"]
    assert [s["metrics"]["groups_dropped"] for s in steps] == [2, 2]
    assert [s["metrics"]["refill_rounds"] for s in steps] == [1, 1]
    state = RunState(name="run")
    state.apply(EventReader(run / "events.jsonl").read_new())
    assert "dropped 2 zero-std group(s) (1 refill round(s))" in step_line(state, 1)


# ------------------------------------------------------------------------- truncated completions
def test_truncated_mask_needs_the_length_and_no_eos():
    eos = 2
    ids = torch.tensor([[9, 5, 6, 7], [9, 5, eos, 0], [9, 5, 6, eos], [9, 5, 0, 0]])
    cmask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 0, 0]])
    gen = Generated(ids, torch.ones_like(ids), cmask, 1)
    assert truncated_mask(gen, 3, [eos]).tolist() == [True, False, False, False]


def test_mask_truncated_takes_truncated_completions_out_of_the_loss(tiny):
    from minirft.train.policy import load_policy

    rows = [PromptRow(({"role": "user", "content": "go on"},), None)] * 3
    outcomes = {}
    for flag in (False, True):
        recipe = tiny_recipe(tiny)
        recipe.generation.max_new_tokens = 3  # the random tiny model almost never says EOS this early
        recipe.generation.mask_truncated = flag
        policy = load_policy(recipe.policy, seed=0)
        torch.manual_seed(1)
        batch = next(rollouts(recipe, policy, PromptSampler(rows, shuffle=False, seed=0),
                              build_rewards(recipe.rewards)))
        assert batch.truncated is not None
        params = policy.trainable_parameters()
        outcomes[flag] = (batch.truncated.clone(), batch.generated.completion_mask.clone(),
                          loop.update(recipe, policy, batch, torch.optim.SGD(params, lr=1e-3), params))
    truncated, cmask, upd = outcomes[True]
    assert 0 < int(truncated.sum())
    kept = float(cmask[~truncated].sum())
    assert upd["tokens"] == kept or (kept == 0 and upd.get("no_signal"))
    assert outcomes[False][2]["tokens"] == float(outcomes[False][1].sum())


# ------------------------------------------------------------------------------ overlong penalty
def test_overlong_soft_penalty_values_and_defaults(tiny):
    recipe = tiny_recipe(tiny)
    recipe = validate_recipe({**recipe.model_dump(mode="json"), "rewards": [{"type": "overlong"}]})
    cfg = recipe.rewards[0]
    assert (cfg.max_tokens, cfg.cache_tokens) == (8, 2)  # generation.max_new_tokens and a quarter of it
    [r] = build_rewards(recipe.rewards)
    assert r.fn(["p"] * 5, ["c"] * 5, completion_tokens=[3, 6, 7, 8, 9]) == [0.0, 0.0, -0.5, -1.0, -1.0]
    assert r.fn(["p"], ["c"]) == [None]  # no token counts (e.g. minirft eval): not applicable
    with pytest.raises(MinirftError, match="cache_tokens"):
        validate_recipe({**recipe.model_dump(mode="json"),
                         "rewards": [{"type": "overlong", "max_tokens": 8, "cache_tokens": 8}]})


def test_rollouts_give_rewards_the_completion_token_counts(tiny):
    from minirft.train.policy import load_policy

    recipe = tiny_recipe(tiny)
    recipe = validate_recipe({**recipe.model_dump(mode="json"),
                              "rewards": [{"type": "overlong", "max_tokens": 8, "cache_tokens": 4}]})
    policy = load_policy(recipe.policy, seed=0)
    rows = [PromptRow(({"role": "user", "content": "hello"},), None)] * 3
    batch = next(rollouts(recipe, policy, PromptSampler(rows, shuffle=False, seed=0), build_rewards(recipe.rewards)))
    lengths = batch.generated.completion_mask.sum(1).tolist()
    want = [0.0 if n <= 4 else (4 - n) / 4 for n in lengths]
    assert batch.per_reward["overlong"] == pytest.approx(want)


# ------------------------------------------------------------------------------------ the recipe
@pytest.mark.parametrize("training,message", [
    ({"loss": "dr_grpo", "scale_rewards": "group"}, "dr_grpo is defined without std scaling"),
    ({"loss": "dapo", "loss_norm": "sequence"}, "applies to loss: grpo only"),
    ({"refill_rounds": 2}, "refill_rounds needs drop_zero_std_groups"),
    ({"loss": "ppo"}, "training.loss"),
    ({"clip_eps": 1.5}, "must be below 1"),
])
def test_bad_combinations_are_one_line_errors(tmp_path, training, message):
    (tmp_path / "p.jsonl").write_text('{"prompt": "hi"}\n')
    lines = ["name: r", "rewards:", "  - type: exact_match", "data:", "  path: p.jsonl", "training:"]
    lines += [f"  {k}: {v}" for k, v in training.items()]
    path = tmp_path / "r.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(MinirftError, match=message) as err:
        load_recipe(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    p = subprocess.run([sys.executable, "-m", "minirft", "recipes", "show", str(path)], capture_output=True,
                       text=True)
    assert p.returncode != 0 and p.stderr.startswith("Error:") and "Traceback" not in p.stderr


def test_scale_rewards_bools_still_read_with_a_warning(tmp_path, capsys):
    assert make_recipe(scale_rewards=False).training.scale_rewards == "none"
    assert make_recipe(scale_rewards=True).training.scale_rewards == "group"
    assert "scale_rewards: false is deprecated; use training.scale_rewards: none" in capsys.readouterr().err


def test_recipes_show_lists_the_new_keys_with_defaults(tmp_path):
    p = subprocess.run([sys.executable, "-m", "minirft", "recipes", "show", "arithmetic-judge", "training.loss=dapo",
                        "generation.mask_truncated=true"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    for line in ("  loss: dapo", "  epsilon_high: null", "  scale_rewards: auto", "  drop_zero_std_groups: false",
                 "  refill_rounds: 0", "  mask_truncated: true", "  clip_eps: null"):
        assert line in out, line
