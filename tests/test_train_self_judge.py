"""Self-judging inside the trainer: the policy's base (adapter disabled) is the torch judge."""

from __future__ import annotations


from judge_torch_fixtures import tiny_judge_parts  # noqa: E402
from train_fixtures import CHAT_TEMPLATE, write_prompts  # noqa: E402

from minirft.events import read_events  # noqa: E402
from minirft.recipe import validate_recipe  # noqa: E402
from minirft.train import loop  # noqa: E402


def test_self_judge_scores_every_completion_with_the_policy_base(tmp_path, monkeypatch):
    model, tok = tiny_judge_parts()
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(tmp_path / "model")
    model.save_pretrained(tmp_path / "model")
    write_prompts(tmp_path / "prompts.jsonl", n=4)
    recipe = validate_recipe({
        "name": "selfjudge",
        "policy": {"model": str(tmp_path / "model"), "lora": {"r": 4, "alpha": 8}},
        "judge": {"backend": "torch", "self_judge": True, "rationales": "none", "model": "unused",
                  "criteria": [{"name": "ok", "question": "Does the response answer the question?"}]},
        "data": {"path": str(tmp_path / "prompts.jsonl")},
        "generation": {"group_size": 2, "max_new_tokens": 4},
        "training": {"steps": 1, "prompts_per_step": 2, "lr": 1e-3},
    })
    built = {}
    real = loop.build_judge_for

    def spy(r, policy):
        built["judge"] = real(r, policy)
        built["policy_model"] = policy.model
        return built["judge"]

    monkeypatch.setattr(loop, "build_judge_for", spy)
    run = loop.train(recipe, tmp_path / "run", quiet=True)
    assert built["judge"].evaluator.model is built["policy_model"]  # no second model was loaded
    step = [e for e in read_events(run / "events.jsonl") if e["type"] == "step"][0]["metrics"]
    assert step["judge_errors"] == 0 and 0.0 < step["rewards/judge"] < 1.0 and 0.0 < step["criteria/ok"] < 1.0
