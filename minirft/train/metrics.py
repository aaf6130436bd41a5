"""What the training loop logs about a step: the ``step`` record's metrics, the ``sample`` records,
the progress line, the judge's counters, and the once-per-run notes on input limits. Pure functions of
a step's batch and update (``loop.py`` calls them; tests call them on hand-made batches)."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from minirft import cuda_memory
from minirft.events import EventLog
from minirft.judge.base import Judge
from minirft.judge.panel import agreement
from minirft.recipe import Recipe
from minirft.stats import mean_of
from minirft.train.importance import gap_metrics
from minirft.train.policy import Policy
from minirft.train.rollout import Batch, shown_mask


def step_metrics(recipe: Recipe, batch: Batch, upd: dict, *, lr: float, update_s: float, step_s: float) -> dict:
    """The step's metrics record (TRL's names where TRL has one): reward and per-reward means, criteria,
    KL, loss, clip ratio, entropy, lengths, zero-std and truncated fractions, dynamic sampling, timings,
    the engine's own timings, the jury's agreement, GPU memory peaks."""
    G = batch.group_size
    r = batch.rewards.view(-1, G)
    valid = ~torch.isnan(r)
    zero_std = []
    for g in range(r.shape[0]):
        vals = r[g][valid[g]]
        if len(vals) > 0:
            zero_std.append(float(vals.max() - vals.min()) < 1e-8)
    finite = batch.rewards[batch.valid]
    lengths = batch.generated.completion_mask.sum(dim=1).float()
    gen_s = batch.timings["generation_s"]
    m: dict[str, Any] = {
        "reward": float(finite.mean()) if len(finite) else None,
        "reward_std": float(finite.std(unbiased=False)) if len(finite) else None,
    }
    for name, values in batch.per_reward.items():
        m[f"rewards/{name}"] = mean_of(values)
    criteria: dict[str, list] = {}
    for s in batch.scores:
        if s is not None:
            for name, p in s.criteria.items():
                criteria.setdefault(name, []).append(p)
    for name, ps in criteria.items():
        m[f"criteria/{name}"] = mean_of(ps)
    tokens = upd["tokens"] or 1.0
    m.update({
        "kl": upd["kl_sum"] / tokens,
        "loss": upd["loss"] if upd["skipped"] is None else None,
        "clip_ratio": upd["clip_sum"] / tokens,
        "entropy": upd["entropy_sum"] / upd["entropy_tokens"] if upd["entropy_tokens"] else None,
        "completion_length": float(lengths.mean()),
        "frac_reward_zero_std": sum(zero_std) / len(zero_std) if zero_std else 1.0,
        "frac_truncated": float(batch.truncated.float().mean()) if batch.truncated is not None else None,
        "generation_s": gen_s,
        "judge_s": batch.timings["judge_s"],
        "update_s": update_s,
        "step_s": step_s,
        # Generation throughput: completion tokens sampled per second of generation.
        "tokens_per_s": float(lengths.sum()) / gen_s if gen_s > 0 else None,
        "lr": lr,
        "grad_norm": upd["grad_norm"],
        "judge_errors": sum(1 for s in batch.scores if s is not None and s.reward is None),
    })
    ds = batch.sampling
    if recipe.training.drop_zero_std_groups and ds:  # dynamic sampling: over every round of the step
        with_rewards = ds["groups_with_rewards"]
        m["frac_reward_zero_std"] = ds["groups_zero_std"] / with_rewards if with_rewards else 1.0
        m["groups_dropped"] = ds["groups_dropped"]
        m["groups_kept"] = len(batch.rows) if batch.dropped is None or not bool(batch.dropped.all()) else 0
        m["refill_rounds"] = ds["refill_rounds"]
    m.update(gap_metrics(upd))  # llama.cpp rollouts: engine/torch log-prob gap and IS weights
    for key, value in batch.timings.items():  # the engine's own (llama.cpp: lora_sync_s, the step's LoRA)
        if key not in ("generation_s", "judge_s"):
            m[key if "/" in key else f"generation/{key}"] = value
    if recipe.judge is not None and recipe.judge.panel:  # a jury: how much its judges agree this step
        m["judge/agreement"] = agreement(batch.scores)
    m.update(cuda_memory.peaks())  # CUDA: allocated and reserved peaks since the run started
    return m


LOG_PROMPT_CHARS = 20_000  # a sample record keeps a long prompt's end (what the policy saw), not megabytes of it


def log_text(text: str) -> str:
    """A prompt as a sample record keeps it: whole, or its last LOG_PROMPT_CHARS characters."""
    return text if len(text) <= LOG_PROMPT_CHARS else "[…] " + text[-LOG_PROMPT_CHARS:]


def sample_record(batch: Batch, k: int) -> dict:
    """Completion ``k`` of the step as a log record: rewards, advantage, the judge's verdict."""
    score = batch.scores[k]
    reward = float(batch.rewards[k])
    g, i = divmod(k, batch.group_size)
    return {
        "group": g, "index": i, "prompt": log_text(batch.rows[g].prompt), "completion": batch.completions[k],
        "reward": None if math.isnan(reward) else reward, "advantage": float(batch.advantages[k]),
        "rewards": {name: values[k] for name, values in batch.per_reward.items()},
        "criteria": dict(score.criteria) if score is not None else {},
        "rationale": score.rationale if score is not None else None,
        "criterion_rationales": dict(score.criterion_rationales) if score is not None else {},
        "attributions": dict(score.attributions) if score is not None else {},
        "panel": dict(score.panel) if score is not None else {},
        "judge_error": score.error if score is not None else None,
    }


def sample_rows(recipe: Recipe, batch: Batch) -> list[dict]:
    """The logged samples (logging.samples_per_step), group-major: all shown samples of prompt 0, then 1…"""
    G = batch.group_size
    shown = shown_mask(len(batch.rows), G, recipe.logging.samples_per_step)
    return [sample_record(batch, k) for k in range(len(batch.rows) * G) if shown[k // G][k % G]]


def all_samples(batch: Batch) -> list[dict]:
    """Every completion of the step (not only the logged ones), for the detectors."""
    return [sample_record(batch, k) for k in range(len(batch.completions))]


def progress_line(step: int, total: int, m: dict) -> str:
    """The step's one line on stderr."""
    def f(v: Any, spec: str) -> str:
        return "—" if v is None else format(v, spec)

    dropped = f"  dropped {m['groups_dropped']}" if m.get("groups_dropped") is not None else ""
    return (f"step {step}/{total}  reward {f(m['reward'], '.3f')} ±{f(m['reward_std'], '.3f')}  "
            f"kl {f(m['kl'], '.4f')}  loss {f(m['loss'], '+.4f')}  len {m['completion_length']:.1f}  "
            f"gen {m['generation_s']:.1f}s judge {m['judge_s']:.1f}s update {m['update_s']:.1f}s{dropped}")


def judge_counters(judge: Judge | None, judge_s: float) -> dict:
    """The judge's own counters of the step (cache hits, requests, phases) and its overhead."""
    out = judge.take_metrics() if judge is not None else {}
    if "judge/score_s" in out:  # judge_s = scoring + rationales + overhead (prompt layout, parsing, retries)
        out["judge/overhead_s"] = max(0.0, judge_s - out["judge/score_s"] - out.get("judge/rationale_s", 0.0))
    return out


class LimitNotes:
    """Say once per run (a warning event and a line on stderr) when an input limit cut something:
    prompts longer than ``policy.max_prompt_tokens`` (the start is dropped, the end kept) and
    responses longer than the judge reads (``judge.max_candidate_tokens`` × 4 characters)."""

    def __init__(self, recipe: Recipe, log: EventLog, say: Callable[[str], None], context: int | None = None) -> None:
        self.recipe, self.log, self.say = recipe, log, say
        self.prompts_said = self.responses_said = self.context_said = False
        self.context = context  # the policy model's context (max_position_embeddings), when it says

    def _note(self, step: int, message: str, **fields: Any) -> None:
        self.log.event(step, "warning", message, **fields)
        self.say(f"step {step}/{self.recipe.training.steps}  warning [limit] {message}")

    def check(self, step: int, batch: Any, judge: Judge | None) -> None:
        if batch.prompts_cut and not self.prompts_said:
            self.prompts_said = True
            self._note(step, f"{batch.prompts_cut} prompt(s) longer than policy.max_prompt_tokens="
                             f"{self.recipe.policy.max_prompt_tokens} tokens: only their last "
                             f"{self.recipe.policy.max_prompt_tokens} tokens are given to the policy "
                             "(said once per run)", limit="policy.max_prompt_tokens")
        longest = batch.generated.prompt_len + self.recipe.generation.max_new_tokens
        if self.context and longest > self.context and not self.context_said:
            self.context_said = True
            self._note(step, f"a prompt of {longest - self.recipe.generation.max_new_tokens} tokens + "
                             f"generation.max_new_tokens={self.recipe.generation.max_new_tokens} is longer than the "
                             f"policy's context of {self.context} tokens (max_position_embeddings): positions past "
                             "it are outside what the model was trained on; lower policy.max_prompt_tokens "
                             "(said once per run)", limit="policy.context")
        if judge is not None and judge.clipped and not self.responses_said:
            self.responses_said = True
            self._note(step, f"{judge.clipped} response(s) longer than {judge.clip_chars} characters "
                             f"(judge.max_candidate_tokens={self.recipe.judge.max_candidate_tokens} x 4): "
                             "the judge reads only their start (said once per run)",
                       limit="judge.max_candidate_tokens")


def policy_context(policy: Policy) -> int | None:
    """The policy model's context in tokens (``max_position_embeddings``), when its config says."""
    value = getattr(policy.model.config, "max_position_embeddings", None)  # not every architecture has one
    return value if isinstance(value, int) and value > 0 else None
