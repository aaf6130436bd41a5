"""The trainer end to end on a tiny random model (2 layers, hidden 32) with a fake judge: fast, offline."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from train_fixtures import FakeJudge  # noqa: E402

from minirft.events import EVENT_TYPES, read_events  # noqa: E402
from minirft.recipe import validate_recipe  # noqa: E402
from minirft.train import loop  # noqa: E402
from minirft.train.loop import train  # noqa: E402

TIMING = {"generation_s", "judge_s", "update_s", "step_s", "tokens_per_s"}


def recipe(tiny: Path, judge: bool = True, **training):
    data = {
        "name": "toy",
        "policy": {"model": str(tiny / "model"), "lora": {"r": 4, "alpha": 8}},
        "rewards": [{"type": "python", "name": "a_share", "function": "train_fixtures:toy_reward"}],
        "data": {"path": str(tiny / "prompts.jsonl")},
        "generation": {"group_size": 4, "max_new_tokens": 8},
        "training": {"steps": 3, "prompts_per_step": 2, "micro_batch_prompts": 1, "lr": 1e-2, **training},
        "checkpoint": {"every": 2, "keep_last": 2},
        "logging": {"samples_per_step": 3},
    }
    if judge:
        data["judge"] = {"criteria": [{"name": "vowels", "question": "Mostly vowels?"}], "retries": 1}
        data["judge_weight"] = 0.5
    return validate_recipe(data)


def steps(run_dir: Path) -> dict[int, dict]:
    """Step metrics by step; after a resume the later record of a step wins (the log is append-only)."""
    return {e["step"]: e["metrics"] for e in read_events(run_dir / "events.jsonl") if e["type"] == "step"}


def adapter(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def test_one_step_changes_the_adapter_and_writes_the_run_dir(tiny, tmp_path):
    from peft import get_peft_model_state_dict

    from minirft.train.policy import load_policy

    r = recipe(tiny, steps=1)
    judge = FakeJudge()
    run = train(r, tmp_path / "run", judge=judge, quiet=True)
    initial = get_peft_model_state_dict(load_policy(r.policy, seed=r.training.seed).model)
    trained = adapter(run)
    assert set(trained) == set(initial)
    changed = [k for k in trained if not torch.equal(trained[k], initial[k])]
    assert changed, "no LoRA parameter moved after one step"
    for name in ("recipe.resolved.yaml", "command.txt", "events.jsonl", "checkpoints/step-1/state.json",
                 "adapter/adapter_config.json"):
        assert (run / name).is_file(), name
    assert judge.closed is False  # an injected judge belongs to the caller


def test_events_follow_the_contract(tiny, tmp_path):
    run = train(recipe(tiny, steps=2), tmp_path / "run", judge=FakeJudge(), quiet=True)
    events = read_events(run / "events.jsonl")
    assert all({"type", "time", "step"} <= set(e) and e["type"] in EVENT_TYPES for e in events)
    assert [e["type"] for e in events][0] == "run_start" and events[-1]["type"] == "run_end"
    start = events[0]
    assert {"run_name", "recipe", "policy_model", "judge_model", "total_steps", "argv", "versions", "device",
            "resumed_from"} <= set(start)
    assert start["device"] == "cpu" and start["total_steps"] == 2 and start["resumed_from"] is None
    assert {"minirft", "torch", "transformers", "peft", "llama_cpp"} <= set(start["versions"])
    metrics = [e["metrics"] for e in events if e["type"] == "step"]
    assert len(metrics) == 2
    required = {"reward", "reward_std", "rewards/judge", "rewards/a_share", "criteria/vowels", "kl", "loss",
                "clip_ratio", "entropy", "completion_length", "frac_reward_zero_std", "lr", "grad_norm",
                "judge_errors"} | TIMING
    for m in metrics:
        assert required <= set(m)
        assert 0 <= m["criteria/vowels"] <= 1 and m["entropy"] > 0 and m["kl"] >= 0
    samples = [e for e in events if e["type"] == "sample"]
    assert len(samples) == 2 * 3
    s = samples[0]
    assert {"group", "index", "prompt", "completion", "reward", "advantage", "rewards", "criteria", "rationale",
            "judge_error"} <= set(s)
    assert set(s["rewards"]) == {"judge", "a_share"} and "vowels" in s["criteria"]
    assert s["rationale"] and s["rationale"].endswith("chars")  # shown samples get rationales
    # combined reward = 0.5 * judge + 1.0 * a_share
    assert s["reward"] == pytest.approx(0.5 * s["rewards"]["judge"] + s["rewards"]["a_share"], abs=1e-6)
    kinds = [e["kind"] for e in events if e["type"] == "event"]
    assert kinds == ["checkpoint"]  # every=2, at step 2 (also the last)
    assert events[-1]["status"] == "finished"


def test_resume_after_interruption_gives_the_same_metrics(tiny, tmp_path):
    r = recipe(tiny, steps=5)
    full = steps(train(r, tmp_path / "full", judge=FakeJudge(), quiet=True))

    class Kill(Exception):
        pass

    def die_after_3(step, metrics):
        if step == 3:  # checkpoint at 2 exists; step 3 was logged but never checkpointed
            raise Kill()

    with pytest.raises(Kill):
        train(r, tmp_path / "cut", judge=FakeJudge(), quiet=True, on_step=die_after_3)
    resumed_run = train(r, tmp_path / "cut", resume=True, judge=FakeJudge(), quiet=True)
    resumed = steps(resumed_run)
    events = read_events(resumed_run / "events.jsonl")
    assert [e["kind"] for e in events if e["type"] == "event" and e["kind"] == "resume"] == ["resume"]
    assert [e["resumed_from"] for e in events if e["type"] == "run_start"] == [None, 2]
    assert sorted(resumed) == sorted(full) == [1, 2, 3, 4, 5]
    for step in full:
        for key, value in full[step].items():
            if key not in TIMING:
                assert resumed[step][key] == pytest.approx(value, rel=1e-5, abs=1e-7), (step, key)
    a, b = adapter(tmp_path / "full"), adapter(resumed_run)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_half_written_checkpoint_is_never_loaded(tiny, tmp_path):
    r = recipe(tiny, steps=2)
    run = train(r, tmp_path / "run", judge=FakeJudge(), quiet=True)
    # A kill during a checkpoint leaves a temp dir; a step dir without state.json is not complete either.
    (run / "checkpoints" / ".step-4.abc.tmp").mkdir()
    (run / "checkpoints" / "step-3").mkdir()
    from minirft.train.checkpoint import latest_checkpoint

    assert latest_checkpoint(run / "checkpoints")[0] == 2


def test_nan_loss_skips_the_step_and_leaves_the_adapter(tiny, tmp_path, monkeypatch):
    real = loop.grpo_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        loss, stats = real(*args, **kwargs)
        calls["n"] += 1
        return (loss * math.nan if calls["n"] > 2 else loss), stats  # micro-batches of step 2 onwards

    r = recipe(tiny, steps=1)
    before = adapter(train(r, tmp_path / "one", judge=FakeJudge(), quiet=True))
    monkeypatch.setattr(loop, "grpo_loss", poisoned)
    run = train(recipe(tiny, steps=2), tmp_path / "two", judge=FakeJudge(), quiet=True)
    after = adapter(run)
    assert all(torch.equal(before[k], after[k]) for k in before)  # step 2 did not touch the adapter
    events = read_events(run / "events.jsonl")
    assert [e["step"] for e in events if e.get("kind") == "nan_skip"] == [2]
    assert steps(run)[2]["loss"] is None and events[-1]["status"] == "finished"


def test_a_judge_that_raises_excludes_the_step_without_a_second_retry_layer(tiny, tmp_path):
    # Retrying is the judge's own job (GroupJudge); the trainer calls it once per step. Call 1 fails →
    # step 1 has no judge reward; call 2 (step 2) works — the trainer did not call again for step 1.
    judge = FakeJudge(fail_calls=(1,))
    run = train(recipe(tiny, steps=2), tmp_path / "run", judge=judge, quiet=True)
    assert judge.calls == 2
    events = read_events(run / "events.jsonl")
    errors = [e for e in events if e.get("kind") == "judge_error"]
    assert len(errors) == 1 and all(e["step"] == 1 and "exploded" in e["message"] for e in errors)
    m = steps(run)
    assert m[1]["judge_errors"] == 8 and m[1]["reward"] is None and m[1]["rewards/judge"] is None
    assert m[2]["judge_errors"] == 0 and m[2]["reward"] is not None
    first = [e for e in events if e["type"] == "sample" and e["step"] == 1][0]
    assert first["reward"] is None and first["advantage"] == 0 and "exploded" in first["judge_error"]
    assert events[-1]["status"] == "finished"


def test_adapter_reloads_with_the_same_logprobs(tiny, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from minirft.train.policy import load_policy, token_logprobs

    r = recipe(tiny, steps=2)
    run = train(r, tmp_path / "run", judge=FakeJudge(), quiet=True)
    policy = load_policy(r.policy, seed=123)
    from safetensors.torch import load_file

    policy.load_adapter_state(load_file(str(run / "checkpoints" / "step-2" / "adapter" /
                                             "adapter_model.safetensors")))
    base_dtype = policy.model.get_base_model().dtype  # bf16 on a CPU with native bf16, else fp32
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny / "model", dtype=base_dtype),
                                         run / "adapter")
    ids = torch.tensor([[5, 9, 40, 71, 33, 2, 90, 91]])
    mask = torch.ones_like(ids)
    policy.model.eval()
    reloaded.eval()
    with torch.no_grad():
        a, _ = token_logprobs(policy.model, ids, mask, 5)
        b, _ = token_logprobs(reloaded, ids, mask, 5)
        with policy.reference():
            base, _ = token_logprobs(policy.model, ids, mask, 5)
    assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(a, base, atol=1e-4)  # the adapter does something


def test_mean_reward_rises_on_a_learnable_toy_reward(tiny, tmp_path):
    # Reward = share of lowercase letters; no judge, no KL, lr high: a tiny model learns it in a few dozen steps.
    r = recipe(tiny, judge=False, steps=30, lr=3e-2, beta=0.0, prompts_per_step=2, micro_batch_prompts=2)
    r.generation.group_size = 8
    r.checkpoint.every = 100
    r.logging.samples_per_step = 0
    m = steps(train(r, tmp_path / "run", quiet=True))
    first = sum(m[s]["reward"] for s in range(1, 6)) / 5
    last = sum(m[s]["reward"] for s in range(26, 31)) / 5
    assert last > first + 0.3, (first, last)


def test_detector_alerts_become_warning_events_and_progress_lines(tiny, tmp_path, monkeypatch, capsys):
    from minirft.train.monitor import MonitorConfig, RunMonitor

    class Eager(RunMonitor):  # fires the addressing detector on every step; cooldown keeps it to one warning
        def __init__(self, questions):
            super().__init__(questions, MonitorConfig(max_addressing_share=-1.0, cooldown=10))

    seen = []
    real_update = RunMonitor.update

    def spy(self, step, samples, metrics):
        seen.append((step, len(samples), {k for s in samples for k in s["rewards"]}))
        return real_update(self, step, samples, metrics)

    monkeypatch.setattr(loop, "RunMonitor", Eager)
    monkeypatch.setattr(RunMonitor, "update", spy)
    run = train(recipe(tiny, steps=2), tmp_path / "run", judge=FakeJudge())
    warnings = [e for e in read_events(run / "events.jsonl") if e.get("kind") == "warning"]
    assert [(w["step"], w["detector"]) for w in warnings] == [(1, "judge_addressing")]
    # the detectors see every completion of the step (2 prompts x 4), not only the 3 logged samples
    assert seen == [(1, 8, {"judge", "a_share"}), (2, 8, {"judge", "a_share"})]
    assert "warning [judge_addressing]" in capsys.readouterr().err


def test_sigterm_stops_the_run_even_inside_the_judge(tiny, tmp_path):
    """The stop signal must not be swallowed by an `except Exception` (e.g. the judge's retry loop)."""

    class StopsInsideRetry(FakeJudge):
        def score_groups(self, rows, groups, rationales=False):
            try:
                loop._on_sigterm(15, None)  # what the SIGTERM handler raises, here in the middle of judging
            except Exception:  # a retry loop catching everything would swallow an Exception subclass
                return super().score_groups(rows, groups, rationales)

    with pytest.raises(loop._Stop):
        train(recipe(tiny, steps=2), tmp_path / "run", judge=StopsInsideRetry(), quiet=True)
    end = read_events(tmp_path / "run" / "events.jsonl")[-1]
    assert end["type"] == "run_end" and end["status"] == "stopped"
