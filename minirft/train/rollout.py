"""Rollout: prompts in, scored groups of completions out — a generator, testable without optimisation.

``rollouts(...)`` yields one :class:`Batch` per step: the prompts of the step, G sampled completions
each, their token ids and masks, every reward function's values, the judge's scores, the combined
reward and the group-relative advantages. Nothing here computes a gradient.

Reward combination (per completion):
``reward = judge_weight · judge + Σ_k weight_k · reward_k`` over the rewards that returned a value.
A judge failure (``Score.reward is None``) or every reward returning ``None`` excludes the sample:
its reward is NaN, its advantage 0 and its tokens are masked out of the loss.

The judge is called once per step: retrying a transient failure is the judge's own job
(``GroupJudge``, ``judge.retries`` with a short backoff), so a failure is never retried twice over.
A :class:`MinirftError` from the judge is a configuration error and stops the run; any other
exception a judge lets out excludes the step's samples (logged as ``judge_error``).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
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

    @property
    def valid(self) -> torch.Tensor:
        return ~torch.isnan(self.rewards)


def group_advantages(rewards: torch.Tensor, group_size: int, *, scale: bool, eps: float = 1e-4) -> torch.Tensor:
    """(r − mean_group) / (std_group + ε), or r − mean_group without scaling; NaN rewards are left out of
    the group statistics and get advantage 0. std is the population std of the valid members."""
    r = rewards.view(-1, group_size)
    valid = ~torch.isnan(r)
    n = valid.sum(dim=1, keepdim=True).clamp(min=1)
    filled = torch.where(valid, r, torch.zeros_like(r))
    mean = filled.sum(dim=1, keepdim=True) / n
    var = (torch.where(valid, (r - mean) ** 2, torch.zeros_like(r))).sum(dim=1, keepdim=True) / n
    adv = r - mean
    if scale:
        adv = adv / (var.sqrt() + eps)
    return torch.where(valid, adv, torch.zeros_like(adv)).view(-1)


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
    while True:
        rows = sampler.take(tr.prompts_per_step)
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
        for reward in rewards:
            per_reward[reward.name] = call_reward(reward, prompts, completions, columns)

        weights = {r.name: r.weight for r in rewards}
        weights["judge"] = recipe.judge_weight
        combined = torch.tensor([_combine(per_reward, weights, i) for i in range(len(completions))],
                                dtype=torch.float32)
        advantages = group_advantages(combined, G, scale=tr.scale_rewards)
        yield Batch(rows, completions, gen, combined, advantages, per_reward, scores, judge_errors, G,
                    {"generation_s": t1 - t0, "judge_s": t2 - t1, **engine_timings}, prompts_cut=len(cut),
                    engine_notes=engine_notes)


def _combine(per_reward: dict[str, list[float | None]], weights: dict[str, float], i: int) -> float:
    if "judge" in per_reward and per_reward["judge"][i] is None:
        return math.nan  # a judge failure excludes the sample rather than scoring it on rules alone
    parts = [weights[name] * values[i] for name, values in per_reward.items() if values[i] is not None]
    return sum(parts) if parts else math.nan
