"""Rollout: prompts in, scored groups of completions out — a generator, testable without optimisation.

``rollouts(...)`` yields one :class:`Batch` per step: the prompts of the step, G sampled completions
each, their token ids and masks, every reward function's values, the judge's scores, the combined
reward and the group-relative advantages. Nothing here computes a gradient.

Reward combination (per completion):
``reward = judge_weight · judge + Σ_k weight_k · reward_k`` over the rewards that returned a value.
A judge failure (``Score.reward is None``) or every reward returning ``None`` excludes the sample:
its reward is NaN, its advantage 0 and its tokens are masked out of the loss.

Advantages (``training.scale_rewards``): group: (r − group mean) / (group std + ε); batch: (r − group
mean) / (std of every valid reward of the step + ε) (TRL's ``scale_rewards="batch"``); none: r − group mean.

Dynamic sampling (``training.drop_zero_std_groups``): a group whose valid rewards are all equal (or that
has none) has every advantage 0 and so no policy-gradient signal; such groups leave the batch before the
update. With ``training.refill_rounds`` N, up to N more rounds sample fresh prompts for the places of
the dropped groups (their zero-std groups are dropped too). ``Batch.sampling`` counts what happened. When
every group of every round is dropped the batch keeps the last round's groups, all marked ``dropped``,
so the step logs its samples and makes no update.

Rule rewards receive ``completion_tokens`` (each completion's token count) besides the data columns;
``Batch.truncated`` marks completions that reached ``generation.max_new_tokens`` without an EOS.

The judge is called once per step: retrying a transient failure is the judge's own job
(``GroupJudge``, ``judge.retries`` with a short backoff), so a failure is never retried twice over.
A :class:`MinirftError` from the judge is a configuration error and stops the run; any other
exception a judge lets out excludes the step's samples (logged as ``judge_error``).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import torch

from minirft.data import PromptRow
from minirft.errors import MinirftError
from minirft.judge.base import Judge, Score
from minirft.recipe import Recipe
from minirft.rewards import NamedReward, call_reward, reward_columns
from minirft.train.policy import Generated, Policy, decode, encode_prompts, generate

if TYPE_CHECKING:
    from minirft.train.engines import RolloutEngine


class PromptSampler:
    """An endless, reproducible stream of prompt rows: epoch e is a permutation seeded by (seed, e).

    The whole state is one integer, ``position`` (rows handed out so far), so a checkpoint stores it and
    a resumed run continues with exactly the rows the uninterrupted run would have seen.
    """

    def __init__(self, rows: Sequence[PromptRow], *, shuffle: bool, seed: int, position: int = 0):
        self.rows = list(rows)
        self.shuffle = shuffle
        self.seed = seed
        self.position = position

    def _order(self, epoch: int) -> list[int]:
        order = list(range(len(self.rows)))
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def take(self, n: int) -> list[PromptRow]:
        out = []
        for _ in range(n):
            epoch, i = divmod(self.position, len(self.rows))
            out.append(self.rows[self._order(epoch)[i]])
            self.position += 1
        return out


@dataclass
class Batch:
    rows: list[PromptRow]  # P prompt rows
    completions: list[str]  # P·G texts, group-major (row i's completions are [i·G, (i+1)·G))
    generated: Generated
    rewards: torch.Tensor  # [P·G] combined reward, NaN where excluded
    advantages: torch.Tensor  # [P·G], 0 where excluded
    per_reward: dict[str, list[float | None]]  # name -> value per completion ("judge" among them)
    scores: list[Score | None]  # the judge's verdict per completion (None without a judge)
    judge_errors: list[str]
    group_size: int
    timings: dict[str, float] = field(default_factory=dict)
    prompts_cut: int = 0  # prompts longer than policy.max_prompt_tokens (their start was dropped)
    engine_notes: list[str] = field(default_factory=list)  # the rollout engine's warnings this step
    truncated: torch.Tensor | None = None  # [P·G] bool: reached max_new_tokens without an EOS
    dropped: torch.Tensor | None = None  # [P·G] bool: left out of the update (dynamic sampling)
    # dynamic sampling: groups sampled / with zero reward std / dropped, and the extra rounds run
    sampling: dict[str, int] = field(default_factory=dict)

    @property
    def valid(self) -> torch.Tensor:
        return ~torch.isnan(self.rewards)


def group_advantages(rewards: torch.Tensor, group_size: int, *, scale: bool | str, eps: float = 1e-4) -> torch.Tensor:
    """r − mean_group, divided by (std_group + ε) with ``scale`` "group" (or True), by (std of every
    valid reward + ε) with "batch", not divided with "none" (or False). NaN rewards are left out of the
    statistics and get advantage 0. std is the population std of the valid members."""
    mode = {True: "group", False: "none"}.get(scale, scale) if isinstance(scale, bool) else scale
    r = rewards.view(-1, group_size)
    valid = ~torch.isnan(r)
    n = valid.sum(dim=1, keepdim=True).clamp(min=1)
    filled = torch.where(valid, r, torch.zeros_like(r))
    mean = filled.sum(dim=1, keepdim=True) / n
    var = (torch.where(valid, (r - mean) ** 2, torch.zeros_like(r))).sum(dim=1, keepdim=True) / n
    adv = r - mean
    if mode == "group":
        adv = adv / (var.sqrt() + eps)
    elif mode == "batch":
        finite = rewards[~torch.isnan(rewards)]
        std = float(finite.std(unbiased=False)) if len(finite) else 0.0
        adv = adv / (std + eps)
    elif mode != "none":
        raise ValueError(f"scale must be group, batch or none, got {scale!r}")
    return torch.where(valid, adv, torch.zeros_like(adv)).view(-1)


def zero_std_groups(rewards: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per group: (no signal: fewer than two distinct valid rewards, has at least one valid reward)."""
    r = rewards.view(-1, group_size)
    valid = ~torch.isnan(r)
    hi = torch.where(valid, r, torch.full_like(r, -math.inf)).max(dim=1).values
    lo = torch.where(valid, r, torch.full_like(r, math.inf)).min(dim=1).values
    has = valid.any(dim=1)
    return ~has | ((hi - lo) < 1e-8), has


def truncated_mask(gen: Generated, max_new_tokens: int, eos_ids: Sequence[int]) -> torch.Tensor:
    """[N] bool: the completion has max_new_tokens tokens and its last one is not an EOS."""
    n = gen.completion_mask.sum(dim=1).long().cpu()
    completion = gen.input_ids[:, gen.prompt_len:].cpu()
    last = completion.gather(1, (n - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
    is_eos = torch.isin(last, torch.tensor(list(eos_ids), dtype=last.dtype))
    return (n >= max_new_tokens) & ~is_eos


def concat_generated(parts: Sequence[Generated], pad_id: int) -> Generated:
    """Stack rollouts of several rounds: prompts re-left-padded, completions re-right-padded."""
    if len(parts) == 1:
        return parts[0]
    P = max(g.prompt_len for g in parts)
    C = max(g.completion_mask.shape[1] for g in parts)
    ids, att, cms, slps = [], [], [], []
    for g in parts:
        n, p, c = g.input_ids.shape[0], g.prompt_len, g.completion_mask.shape[1]
        i = torch.full((n, P + C), pad_id, dtype=g.input_ids.dtype, device=g.input_ids.device)
        a = torch.zeros((n, P + C), dtype=g.attention_mask.dtype, device=g.attention_mask.device)
        i[:, P - p:P + c] = g.input_ids
        a[:, P - p:P + c] = g.attention_mask
        cm = torch.zeros((n, C), dtype=g.completion_mask.dtype, device=g.completion_mask.device)
        cm[:, :c] = g.completion_mask
        ids.append(i), att.append(a), cms.append(cm)
        if g.sampling_logp is not None:
            sl = torch.zeros((n, C), dtype=g.sampling_logp.dtype, device=g.sampling_logp.device)
            sl[:, :c] = g.sampling_logp
            slps.append(sl)
    return replace(parts[0], input_ids=torch.cat(ids), attention_mask=torch.cat(att),
                   completion_mask=torch.cat(cms), prompt_len=P,
                   sampling_logp=torch.cat(slps) if len(slps) == len(parts) else None)


def concat_batches(parts: Sequence[Batch], pad_id: int) -> Batch:
    """One batch from the rounds of a step (group-major order kept)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    timings: dict[str, float] = {}
    for b in parts:
        for k, v in b.timings.items():
            timings[k] = timings.get(k, 0.0) + v
    return Batch(
        rows=[r for b in parts for r in b.rows], completions=[c for b in parts for c in b.completions],
        generated=concat_generated([b.generated for b in parts], pad_id),
        rewards=torch.cat([b.rewards for b in parts]), advantages=torch.cat([b.advantages for b in parts]),
        per_reward={k: [v for b in parts for v in b.per_reward[k]] for k in first.per_reward},
        scores=[s for b in parts for s in b.scores],
        judge_errors=list(dict.fromkeys(e for b in parts for e in b.judge_errors)),
        group_size=first.group_size, timings=timings, prompts_cut=sum(b.prompts_cut for b in parts),
        truncated=torch.cat([b.truncated for b in parts]))


def select_groups(batch: Batch, keep: Sequence[int]) -> Batch:
    """The batch restricted to the groups ``keep`` (indices into batch.rows)."""
    G = batch.group_size
    idx = torch.tensor([g * G + i for g in keep for i in range(G)], dtype=torch.long)
    gen = batch.generated
    dev = gen.input_ids.device
    gen = replace(gen, input_ids=gen.input_ids[idx.to(dev)], attention_mask=gen.attention_mask[idx.to(dev)],
                  completion_mask=gen.completion_mask[idx.to(dev)],
                  sampling_logp=None if gen.sampling_logp is None else gen.sampling_logp[idx.to(dev)])
    ks = idx.tolist()
    return replace(batch, rows=[batch.rows[g] for g in keep], completions=[batch.completions[k] for k in ks],
                   generated=gen, rewards=batch.rewards[idx], advantages=batch.advantages[idx],
                   per_reward={n: [v[k] for k in ks] for n, v in batch.per_reward.items()},
                   scores=[batch.scores[k] for k in ks],
                   truncated=None if batch.truncated is None else batch.truncated[idx])


def shown_mask(n_prompts: int, group_size: int, n_shown: int) -> list[list[bool]]:
    """Which samples are logged (and get rationales when ``rationales: shown``): one per group in turn,
    so the shown rows cover as many prompts as possible."""
    shown = [[False] * group_size for _ in range(n_prompts)]
    for k in range(min(n_shown, n_prompts * group_size)):
        shown[k % n_prompts][k // n_prompts] = True
    return shown


def judge_groups(judge: Judge, rows: list[PromptRow], groups: list[list[str]],
                 rationales: Any) -> tuple[list[list[Score]], list[str]]:
    """Score groups once (the judge retries on its own); the distinct errors of the step.

    A MinirftError (a configuration error: the judge can never work) propagates and stops the run;
    any other exception gives every sample a failed Score (reward None), which excludes it."""
    try:
        scores = judge.score_groups(rows, groups, rationales)
        if len(scores) != len(groups) or any(len(s) != len(g) for s, g in zip(scores, groups)):
            raise RuntimeError("judge returned a wrong number of scores")
    except MinirftError:
        raise
    except Exception as exc:  # noqa: BLE001 - a judge failure excludes the samples, it does not stop training
        error = f"{type(exc).__name__}: {exc}"
        return [[Score(None, error=error) for _ in g] for g in groups], [error]
    errors = list(dict.fromkeys(s.error for g in scores for s in g if s.error))
    return scores, errors


def rollouts(recipe: Recipe, policy: Policy, sampler: PromptSampler, rewards: list[NamedReward],
             judge: Judge | None = None, engine: RolloutEngine | None = None) -> Iterator[Batch]:
    """Yield one scored batch per call to ``next``; sampling uses torch's global RNG.

    ``engine``: the rollout engine (``engines.open_generator``: torch_graph or llama_cpp) or None for
    HF ``generate``."""
    gen_cfg, tr = recipe.generation, recipe.training
    G = gen_cfg.group_size
    rationale_mode = recipe.judge.rationales if recipe.judge is not None else "none"

    def sample_round(rows: list[PromptRow]) -> Batch:
        """Sample, judge and reward G completions for each row (advantages are set by the caller)."""
        t0 = time.perf_counter()
        cut: list[int] = []
        prompt_ids = encode_prompts(policy, [r.messages for r in rows], recipe.policy.max_prompt_tokens,
                                    cut=cut)
        engine_timings: dict[str, float] = {}
        engine_notes: list[str] = []
        if engine is not None:
            gen = engine.generate(policy, prompt_ids, G)
            engine_timings = dict(engine.step_timings)
            engine_notes = engine.take_notes()
        else:
            repeated = [ids for ids in prompt_ids for _ in range(G)]
            gen = generate(policy, repeated, max_new_tokens=gen_cfg.max_new_tokens,
                           temperature=gen_cfg.temperature, top_p=gen_cfg.top_p, top_k=gen_cfg.top_k)
        completions = decode(policy, gen)
        t1 = time.perf_counter()

        per_reward: dict[str, list[float | None]] = {}
        scores: list[Score | None] = [None] * len(completions)
        judge_errors: list[str] = []
        if judge is not None:
            groups = [completions[i * G:(i + 1) * G] for i in range(len(rows))]
            shown = shown_mask(len(rows), G, recipe.logging.samples_per_step)
            which = {"none": False, "all": True}.get(rationale_mode, shown)
            group_scores, judge_errors = judge_groups(judge, rows, groups, which)
            scores = [s for g in group_scores for s in g]
            per_reward["judge"] = [s.reward for s in scores]
        t2 = time.perf_counter()

        prompts = [r.prompt for r in rows for _ in range(G)]
        columns = reward_columns(rows, G)
        columns["completion_tokens"] = [int(n) for n in gen.completion_mask.sum(dim=1).tolist()]
        for reward in rewards:
            per_reward[reward.name] = call_reward(reward, prompts, completions, columns)

        weights = {r.name: r.weight for r in rewards}
        weights["judge"] = recipe.judge_weight
        combined = torch.tensor([_combine(per_reward, weights, i) for i in range(len(completions))],
                                dtype=torch.float32)
        return Batch(rows, completions, gen, combined, torch.zeros_like(combined), per_reward, scores, judge_errors,
                     G, {"generation_s": t1 - t0, "judge_s": t2 - t1, **engine_timings}, prompts_cut=len(cut),
                     engine_notes=engine_notes, truncated=truncated_mask(gen, gen_cfg.max_new_tokens, policy.eos_ids))

    while True:
        batch = sample_round(sampler.take(tr.prompts_per_step))
        zero, has = zero_std_groups(batch.rewards, G)
        stats = {"groups_sampled": len(batch.rows), "groups_zero_std": int((zero & has).sum()),
                 "groups_with_rewards": int(has.sum()), "groups_dropped": 0, "refill_rounds": 0}
        if tr.drop_zero_std_groups:
            batch, zero = _dynamic_sampling(batch, zero, sample_round, sampler, tr.refill_rounds, stats,
                                            policy.pad_id)
        else:
            zero = torch.zeros_like(zero)
        batch.advantages = group_advantages(batch.rewards, G, scale=tr.advantage_scaling())
        batch.dropped = zero.repeat_interleave(G)
        batch.sampling = stats
        yield batch


def _dynamic_sampling(batch: Batch, zero: torch.Tensor, sample_round: Any, sampler: PromptSampler, rounds: int,
                      stats: dict[str, int], pad_id: int) -> tuple[Batch, torch.Tensor]:
    """Drop the zero-std groups; refill their places for up to ``rounds`` extra rounds. Returns the batch
    and its per-group ``dropped`` flags (all False, unless nothing was kept: then the last round, all True)."""
    G = batch.group_size
    quota = len(batch.rows)
    kept = [select_groups(batch, [g for g in range(len(batch.rows)) if not zero[g]])]
    n_kept = len(kept[0].rows)
    stats["groups_dropped"] += int(zero.sum())
    last, last_zero = batch, zero
    timings, cut = dict(batch.timings), batch.prompts_cut  # every round's time counts, kept or not
    errors = list(batch.judge_errors)  # and every round's judge errors are logged
    notes = list(batch.engine_notes)
    while n_kept < quota and stats["refill_rounds"] < rounds:
        stats["refill_rounds"] += 1
        more = sample_round(sampler.take(quota - n_kept))
        z, has = zero_std_groups(more.rewards, G)
        stats["groups_sampled"] += len(more.rows)
        stats["groups_zero_std"] += int((z & has).sum())
        stats["groups_with_rewards"] += int(has.sum())
        stats["groups_dropped"] += int(z.sum())
        part = select_groups(more, [g for g in range(len(more.rows)) if not z[g]])
        kept.append(part)
        n_kept += len(part.rows)
        last, last_zero = more, z
        for k, v in more.timings.items():
            timings[k] = timings.get(k, 0.0) + v
        cut += more.prompts_cut
        errors += more.judge_errors
        notes += more.engine_notes
    kept = [b for b in kept if b.rows]
    errors = list(dict.fromkeys(errors))
    if not kept:  # nothing has a signal: log the last round, update nothing
        return (replace(last, timings=timings, prompts_cut=cut, judge_errors=errors, engine_notes=notes),
                torch.ones_like(last_zero))
    out = concat_batches(kept, pad_id)
    return (replace(out, timings=timings, prompts_cut=cut, judge_errors=errors, engine_notes=notes),
            torch.zeros(len(out.rows), dtype=torch.bool))


def _combine(per_reward: dict[str, list[float | None]], weights: dict[str, float], i: int) -> float:
    if "judge" in per_reward and per_reward["judge"][i] is None:
        return math.nan  # a judge failure excludes the sample rather than scoring it on rules alone
    parts = [weights[name] * values[i] for name, values in per_reward.items() if values[i] is not None]
    return sum(parts) if parts else math.nan
