"""minirft.integrations.trl.judge_reward inside TRL's real GRPOTrainer (CPU, the tiny random policy and the
tiny GGUF judge): per-criterion rewards, rationales in TRL's completions table, async functions, and
preference mode under two processes (groups gathered across processes, or a clear refusal)."""

import json
import sys

import pytest

from minirft.data import PromptRow
from minirft.judge import build_judge
from minirft.recipe import load_recipe

from trl_fixtures import ROOT, accelerate_cmd, run, tiny_recipe

pytest.importorskip("trl")


def _trainer(recipe, funcs, tmp_path, *, G=2, steps=1, per_device=4):
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    r = load_recipe(recipe)
    tok = AutoTokenizer.from_pretrained(r.policy.model)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(r.policy.model, dtype=torch.float32)
    rows = [{"prompt": [{"role": "user", "content": f"Say something about {w}."}], "reference": str(i)}
            for i, w in enumerate(["cats", "rain", "tea", "owls"])]
    logs: list[dict] = []

    class Keep(TrainerCallback):
        def on_log(self, args, state, control, logs_=None, **kw):
            logs.append(dict(kw.get("logs") or logs_ or {}))

    args = GRPOConfig(output_dir=str(tmp_path / "trl"), use_cpu=True, per_device_train_batch_size=per_device,
                      num_generations=G, max_completion_length=6, max_steps=steps, learning_rate=1e-3,
                      logging_steps=1, report_to=[], save_strategy="no", disable_tqdm=True, seed=0,
                      log_completions=True)
    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=Dataset.from_list(rows * 4),
                          processing_class=tok, callbacks=[Keep()],
                          peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    trainer.train()
    return trainer, logs


def test_per_criterion_rewards_and_rationales_in_a_real_grpo_trainer(tmp_path, tiny_gguf):
    from minirft.integrations.trl import judge_reward

    recipe = tiny_recipe(tmp_path, tiny_gguf, judge={"rationales": "all"})
    funcs = judge_reward(str(recipe), per_criterion=True)
    assert [f.__name__ for f in funcs] == ["answers", "polite"]
    trainer, logs = _trainer(recipe, funcs, tmp_path)
    step = next(entry for entry in logs if "rewards/answers/mean" in entry)
    assert 0 < step["rewards/answers/mean"] < 1 and 0 < step["rewards/polite/mean"] < 1
    assert funcs[0].judge.calls == 1  # one judge call per batch for both criteria
    extra = trainer._logs["extra"]["judge_rationale"]
    assert len(extra) == 4 and all(isinstance(t, str) for t in extra)
    # the rewards TRL logged are the judge's own scores of those completions
    comps, prompts = list(trainer._logs["completion"]), list(trainer._logs["prompt"])
    got = list(trainer._logs["rewards"]["answers"])
    j = build_judge(load_recipe(recipe).judge)
    try:
        for k in range(0, 4, 2):
            words = ["cats", "rain", "tea", "owls"]
            ref = str(next(i for i, w in enumerate(words) if w in _text(prompts[k])))
            row = PromptRow(({"role": "user", "content": _text(prompts[k])},), ref)
            want = j.score_groups([row], [[_text(comps[k]), _text(comps[k + 1])]])[0]
            assert [w.criteria["answers"] for w in want] == pytest.approx(got[k:k + 2], abs=2e-3)
    finally:
        j.close()
        funcs[0].judge.close()


def _text(x):
    return x if isinstance(x, str) else x[-1]["content"]


def test_async_combined_reward(tmp_path, tiny_gguf):
    import inspect

    from minirft.integrations.trl import judge_reward

    recipe = tiny_recipe(tmp_path, tiny_gguf)
    fn = judge_reward(str(recipe), async_=True)
    assert inspect.iscoroutinefunction(fn) and fn.__name__ == "judge"
    _, logs = _trainer(recipe, [fn], tmp_path)
    assert 0 < next(e for e in logs if "rewards/judge/mean" in e)["rewards/judge/mean"] < 2
    fn.judge.close()


def _launch(tmp_path, recipe, mode):
    out = tmp_path / mode
    out.mkdir()
    res = run(accelerate_cmd(2) + [str(ROOT / "tests" / "fixtures" / "trl_reward_script.py"), str(recipe), str(out),
                                   mode])
    assert res.returncode == 0, res.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_preference_groups_are_gathered_across_two_processes(tmp_path, tiny_gguf):
    recipe = tiny_recipe(tmp_path, tiny_gguf, mode="preference", generation={"group_size": 4})
    ranks = _launch(tmp_path, recipe, "preference")
    assert all(r["ok"] and r["processes"] == 2 for r in ranks)
    # one prompt's group of 4 was split 2 + 2 over the processes; each scored its half against the whole group
    a, b = ranks[0]["seen"][0], ranks[1]["seen"][0]
    assert len(a["completions"]) == 2 and len(b["completions"]) == 2 and a["prompts"][0] == b["prompts"][0]
    group = a["completions"] + b["completions"]
    j = build_judge(load_recipe(recipe).judge)
    try:
        row = PromptRow(({"role": "user", "content": a["prompts"][0]},), None)
        want = [s.reward for s in j.score_groups([row], [group])[0]]
    finally:
        j.close()
    assert a["rewards"] + b["rewards"] == pytest.approx(want, abs=2e-3)


def test_preference_without_gather_refuses_under_two_processes(tmp_path, tiny_gguf):
    recipe = tiny_recipe(tmp_path, tiny_gguf, mode="preference", generation={"group_size": 4})
    ranks = _launch(tmp_path, recipe, "refuse")
    for r in ranks:
        assert not r["ok"] and "preference under 2 processes" in r["error"] and "gather" in r["error"]
