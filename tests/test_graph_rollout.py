"""The torch_graph rollout engine (static KV cache, one CUDA graph per decode step) and the GPU-memory
settings, on the CPU: the same decode loop without graph capture against Hugging Face ``generate`` and
SDPA on the tiny model, real ``minirft train`` runs, real subprocesses, TRL's real ``GRPOConfig``, and
the GPU check's smoke mode."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from fault_fixtures import env, invoke

from minirft.events import read_events
from minirft.recipe import validate_recipe
from minirft.train import engines
from minirft.train.graph_rollout import GraphGenerator, decode_attention, sample_next, supports
from minirft.train.policy import generate, load_policy

ROOT = Path(__file__).resolve().parent.parent


def _recipe(tiny: Path, **generation):
    return validate_recipe({
        "name": "toy", "policy": {"model": str(tiny / "model"), "dtype": "float32", "lora": {"r": 4, "alpha": 8}},
        "rewards": [{"type": "python", "name": "a_share", "function": "train_fixtures:toy_reward"}],
        "data": {"path": str(tiny / "prompts.jsonl")},
        "generation": {"engine": "torch_graph", "group_size": 2, "max_new_tokens": 12, **generation},
    })


@pytest.fixture(scope="module")
def policy(tiny):
    pol = load_policy(_recipe(tiny).policy)
    torch.manual_seed(1)  # a trained adapter: B != 0, so the LoRA changes the samples
    with torch.no_grad():
        for name, p in pol.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.2)
    return pol


def _prompts(policy) -> list[list[int]]:
    texts = ["<s>user: hi\n<s>assistant:", "<s>user: Say a long thing about owls, cats and maps.\n<s>assistant: ok",
             "<s>user: tea?\n<s>assistant: Tea"]
    return [policy.tokenizer(t)["input_ids"] for t in texts]


def test_greedy_samples_are_generates_token_for_token(tiny, policy):
    prompts = _prompts(policy)  # different lengths: left padding, and a prompt bucket wider than all
    want = generate(policy, prompts, max_new_tokens=12, temperature=None)
    engine = GraphGenerator(_recipe(tiny), policy)
    got = engine.sample(policy, prompts, max_new_tokens=12, temperature=None)
    assert got.prompt_len == want.prompt_len
    assert torch.equal(got.input_ids, want.input_ids)
    assert torch.equal(got.attention_mask, want.attention_mask)
    assert torch.equal(got.completion_mask, want.completion_mask)
    again = engine.sample(policy, prompts, max_new_tokens=12, temperature=None)  # buffers reused
    assert torch.equal(again.input_ids, want.input_ids)


def test_decode_attention_is_sdpa_with_the_mask(policy):
    torch.manual_seed(0)
    n, kv, groups, width, dim = 3, 2, 4, 11, 8
    q = torch.randn(n, kv * groups, 1, dim)
    k, v = torch.randn(n, kv, width, dim), torch.randn(n, kv, width, dim)
    mask = torch.rand(n, 1, 1, width) > 0.4
    mask[..., 0] = True
    out, _ = decode_attention(None, q, k, v, mask, scaling=0.3)
    rep_k, rep_v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    want = torch.nn.functional.scaled_dot_product_attention(q, rep_k, rep_v, attn_mask=mask, scale=0.3)
    assert out.shape == (n, 1, kv * groups, dim)
    torch.testing.assert_close(out, want.transpose(1, 2), rtol=1e-5, atol=1e-6)


def test_sampling_is_seeded_and_top_k_top_p_keep_what_they_say():
    torch.manual_seed(3)
    logits = torch.randn(4, 50) * 3
    torch.manual_seed(7)
    a = [sample_next(logits, 0.8, 0.9, 10) for _ in range(50)]
    torch.manual_seed(7)
    b = [sample_next(logits, 0.8, 0.9, 10) for _ in range(50)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert torch.equal(sample_next(logits, 1.0, 1.0, 1), logits.argmax(-1))  # top-k 1 is greedy
    assert torch.equal(sample_next(logits, None), logits.argmax(-1))
    p = torch.softmax(logits / 0.8, -1)
    for row in range(4):  # every draw is inside the smallest set of tokens reaching top_p
        order = p[row].argsort(descending=True)
        cum = p[row][order].cumsum(0)
        allowed = set(order[: int((cum < 0.9).sum()) + 1].tolist())
        drawn = {int(x[row]) for x in a}
        assert drawn <= allowed and len(drawn) > 1


def test_only_full_attention_models_are_supported(policy):
    from transformers import Gemma3TextConfig, LlamaConfig

    assert supports(LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4))
    assert not supports(Gemma3TextConfig(num_hidden_layers=6, hidden_size=32, num_attention_heads=4, head_dim=8))
    assert supports(policy.model.config)


def test_torch_graph_trains_from_the_cli_and_logs_its_engine(tiny, tmp_path):
    recipe = {"name": "toy", "policy": {"model": str(tiny / "model"), "lora": {"r": 4, "alpha": 8}},
              "rewards": [{"type": "python", "name": "a_share", "function": "train_fixtures:toy_reward"}],
              "data": {"path": str(tiny / "prompts.jsonl")},
              "generation": {"engine": "torch_graph", "group_size": 2, "max_new_tokens": 6},
              "training": {"steps": 2, "prompts_per_step": 2, "lr": 1e-3, "gpu_memory_gb": 8},
              "checkpoint": {"every": 100}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = invoke("train", path, "--run-dir", tmp_path / "run")
    assert result.exit_code == 0, result.output
    events = read_events(tmp_path / "run" / "events.jsonl")
    start = next(e for e in events if e["type"] == "run_start")
    assert start["generation_engine"] == "torch_graph"
    steps = [e["metrics"] for e in events if e["type"] == "step"]
    assert len(steps) == 2 and all(m["generation/graph_captures"] == 0 for m in steps)  # no graphs on the CPU
    assert all(m["completion_length"] > 0 for m in steps)
    warnings = [e["message"] for e in events if e["type"] == "event" and e.get("kind") == "warning"]
    assert any("training.gpu_memory_gb is ignored: no CUDA device" in w for w in warnings)


def test_vllm_engine_is_one_error_line_with_minirfts_trainer_and_reaches_grpo_config(tiny, tmp_path):
    recipe = {"name": "toy", "policy": {"model": str(tiny / "model")}, "rewards": [{"type": "length"}],
              "data": {"path": str(tiny / "prompts.jsonl")}, "generation": {"engine": "vllm"}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = invoke("train", path, "--run-dir", tmp_path / "run")
    assert result.exit_code == 1
    lines = [l for l in result.output.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "--engine trl" in lines[0]
    assert f"{path}:" in lines[0] and not (tmp_path / "run").exists()

    from minirft.train.trl_engine import grpo_config

    for extra, want in (({"vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.4},
                         {"vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.4}),
                        ({"vllm_mode": "server", "vllm_server_url": "http://127.0.0.1:8011"},
                         {"vllm_mode": "server", "vllm_server_base_url": "http://127.0.0.1:8011"})):
        r = validate_recipe({**recipe, "generation": {"engine": "vllm", **extra}})
        config, _ = grpo_config(r, tmp_path / "trl", 1)
        assert config.use_vllm is True
        for key, value in want.items():
            assert getattr(config, key) == value
    plain, _ = grpo_config(validate_recipe(recipe | {"generation": {}}), tmp_path / "trl2", 1)
    assert plain.use_vllm is False


def test_auto_engine_per_device_and_backend(tiny, monkeypatch):
    base = {"name": "t", "rewards": [{"type": "length"}], "data": {"path": "x.jsonl"}}

    def choose(**policy):
        return engines.choose_engine(validate_recipe({**base, "policy": {"model": str(tiny / "model"), **policy}}))

    assert choose() == "torch"  # CPU, a Hugging Face folder
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose(backend="hf") == "torch_graph"
    assert choose(backend="unsloth") == "torch"


def test_allocator_setting_in_a_fresh_process_unless_the_user_set_one():
    code = ("import os, minirft.cuda_memory as m; print(m.configure_allocator()); "
            "print(os.environ['PYTORCH_CUDA_ALLOC_CONF'])")
    e = {k: v for k, v in env().items() if k not in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF")}
    out = subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "expandable_segments:True"
    mine = {**e, "PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:64"}
    out = subprocess.run([sys.executable, "-c", code], env=mine, capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["the user's PYTORCH_CUDA_ALLOC_CONF=max_split_size_mb:64", "max_split_size_mb:64"]


def test_doctor_estimates_a_recipes_footprint_from_its_config(tiny, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    recipe = {"name": "fp", "policy": {"model": str(tiny / "model"), "load_in_4bit": False, "dtype": "float32",
                                       "lora": {"r": 4, "alpha": 8}, "max_prompt_tokens": 100},
              "rewards": [{"type": "length"}], "data": {"path": str(tiny / "prompts.jsonl")},
              "generation": {"group_size": 4, "max_new_tokens": 28}, "training": {"gpu_memory_gb": 3}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = invoke("doctor", path, "training.prompts_per_step=2", "--json")
    assert result.exit_code == 0, result.output
    fp = json.loads(result.output)["footprint"]
    model = AutoModelForCausalLM.from_pretrained(tiny / "model")
    params = sum(p.numel() for p in model.parameters())
    assert fp["parts_gb"]["policy weights (float32)"] == pytest.approx(params * 4 / 2**30, abs=1e-3)
    cfg = AutoConfig.from_pretrained(tiny / "model")
    kv = 2 * 8 * 128 * cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) * 2
    assert fp["parts_gb"]["rollout KV cache (8 seqs x 128 tokens, bf16)"] == pytest.approx(kv / 8 / 2**30, abs=1e-3)
    assert fp["total_gb"] == pytest.approx(sum(fp["parts_gb"].values()), abs=0.01) and fp["cap_gb"] == 3
    text = invoke("doctor", path)
    assert "GPU footprint of fp on CUDA (estimate):" in text.output and "fits training.gpu_memory_gb=3" in text.output


def test_gpu_check_smoke_mode_runs_every_cpu_row(tiny, tmp_path):
    out = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--smoke", "--tokenizer",
                           str(tiny / "model"), "--workdir", str(tmp_path / "w"), "--out", str(out),
                           "--parts", "gen_small,train_small"],
                          env={**env(), "OUT": ""}, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    gen, train = result["parts"]["gen_small"], result["parts"]["train_small"]
    assert gen["rows"]["8"]["graph_tok_s"] > 0 and gen["rows"]["8"]["hf_generate_tok_s"] > 0
    assert gen["greedy_token_agreement_16"] == 1.0 and gen["graph_used"] is False
    assert train["exit"] == 0 and train["generation_engine"] == "torch_graph" and len(train["steps"]) == 1
    assert "gen_small" in proc.stdout and "train_small" in proc.stdout  # the table


def test_docs_gpu_tables_are_the_rendering_of_the_committed_json():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "bench"))
    assert gpu_check.DOCS.read_text(encoding="utf-8") == gpu_check.render_docs(gpu_check.DOC_SOURCES)
