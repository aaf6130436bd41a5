"""`minirft export`: each format checked against the torch model it came from.

- merged: the reloaded Hugging Face folder gives base+adapter's log-probs (peft, float32);
- gguf: llama.cpp (llama-cpp-python) loads the file, generates, and its log-probs are the merged
  model's (f32: within llama.cpp's own f16 KV-cache rounding; q8_0: far closer to the tuned model
  than to the base);
- lora-gguf: llama.cpp with the adapter applied at load time moves its log-probs from the base's by
  what the torch adapter moves them.

The tiny random model (tests/train_fixtures.py) runs always; SmolLM2-135M (the embedded Q4_1 GGUF
base) runs with the `slow` marker. The measured differences are printed (pytest -s).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from export_fixtures import llama_logprobs, make_adapter_run, target_logprobs, torch_logprobs  # noqa: E402
from train_fixtures import make_tiny_model  # noqa: E402

from minirft.cli import cli  # noqa: E402

TEXT = "assistant: The quick brown fox jumps over the lazy dog, and then it rests."


def run_export(*args: str) -> str:
    result = CliRunner().invoke(cli, ["export", *args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("export")
    make_tiny_model(d / "model")
    return make_adapter_run(d / "run", str(d / "model"))


@pytest.fixture(scope="module")
def torch_models(tiny_run):
    """(peft model with the adapter, the token ids of TEXT); disable_adapter() gives the base."""
    from peft import PeftModel

    from minirft.export import load_base, run_recipe

    base, tokenizer, _ = load_base(run_recipe(tiny_run))
    model = PeftModel.from_pretrained(base, str(tiny_run / "adapter"))
    model.eval()
    return model, tokenizer(TEXT)["input_ids"]


@pytest.fixture(scope="module")
def reference(torch_models):
    model, ids = torch_models
    tuned = torch_logprobs(model, ids)
    with model.disable_adapter():
        base = torch_logprobs(model, ids)
    assert np.abs(tuned - base).max() > 1.0  # the adapter matters, so matching it means something
    return tuned, base


def test_help_has_examples():
    result = CliRunner().invoke(cli, ["export", "-h"])
    assert result.exit_code == 0 and "Examples:" in result.output and "lora-gguf" in result.output


def test_merged_folder_has_the_adapter_folded_in(tiny_run, torch_models, reference, tmp_path):
    from transformers import AutoModelForCausalLM

    run_export(str(tiny_run), "--format", "merged", "--out", str(tmp_path / "merged"))
    assert (tmp_path / "merged" / "model.safetensors").is_file() and (tmp_path / "merged" / "tokenizer.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    diff = np.abs(torch_logprobs(merged, torch_models[1]) - reference[0]).max()
    print(f"\nmerged vs base+adapter (float32): max |Δ log p| = {diff:.2e}")
    assert diff < 1e-4


def test_gguf_loads_in_llama_cpp_matches_and_generates(tiny_run, torch_models, reference, tmp_path):
    from llama_cpp import Llama

    ids = torch_models[1]
    tuned, base = reference
    run_export(str(tiny_run), "--format", "gguf", "--quant", "f32", "--out", str(tmp_path / "m.f32.gguf"))
    f32 = np.abs(llama_logprobs(tmp_path / "m.f32.gguf", ids) - tuned).max()
    run_export(str(tiny_run), "--format", "gguf", "--out", str(tmp_path / "m.q8_0.gguf"))  # default q8_0
    q8 = llama_logprobs(tmp_path / "m.q8_0.gguf", ids)
    q8_tuned, q8_base = np.abs(q8 - tuned).mean(), np.abs(q8 - base).mean()
    print(f"\ngguf f32 vs torch merged: max |Δ log p| = {f32:.2e}; q8_0: mean |Δ| {q8_tuned:.3f} "
          f"to the tuned model, {q8_base:.3f} to the base")
    assert f32 < 0.05  # llama.cpp keeps its KV cache in f16
    assert q8_tuned < 0.2 * q8_base
    llm = Llama(model_path=str(tmp_path / "m.q8_0.gguf"), n_ctx=128, verbose=False, n_threads=1, seed=0)
    try:
        out = llm.create_completion("assistant: hello", max_tokens=8, temperature=0.0)
    finally:
        llm.close()
    assert out["usage"]["completion_tokens"] > 0


def test_lora_gguf_moves_llama_cpp_as_the_torch_adapter_does(tiny_run, torch_models, reference, tmp_path):
    from minirft import gguf_export
    from minirft.export import load_base, run_recipe

    ids = torch_models[1]
    tuned, base = reference
    # The base as GGUF (what llama.cpp's convert_hf_to_gguf.py would write for this HF folder).
    model, tokenizer, _ = load_base(run_recipe(tiny_run))
    tokenizer.save_pretrained(tmp_path / "tok")
    gguf_export.write_model_gguf(model, tokenizer, tmp_path / "base.gguf", quant="f32", tokenizer_dir=tmp_path / "tok")
    out = run_export(str(tiny_run), "--format", "lora-gguf", "--quant", "f32", "--out", str(tmp_path / "lora.gguf"))
    assert "convert_hf_to_gguf" in out  # says where the base GGUF must come from
    plain = llama_logprobs(tmp_path / "base.gguf", ids)
    adapted = llama_logprobs(tmp_path / "base.gguf", ids, lora=tmp_path / "lora.gguf")
    err = np.abs((adapted - plain) - (tuned - base)).max()
    print(f"\nlora-gguf f32: llama.cpp shift vs torch adapter shift: max |Δ| = {err:.2e} "
          f"(shift itself up to {np.abs(tuned - base).max():.2f})")
    assert np.abs(plain - base).max() < 0.05 and err < 0.05
    run_export(str(tiny_run), "--format", "lora-gguf", "--out", str(tmp_path / "lora.f16.gguf"))  # default f16
    f16 = llama_logprobs(tmp_path / "base.gguf", ids, lora=tmp_path / "lora.f16.gguf")
    assert np.abs(f16 - tuned).max() < 0.1


def test_export_errors_are_one_line(tiny_run, tmp_path):
    def fails(*args: str) -> str:
        result = CliRunner().invoke(cli, ["export", *args])
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        return result.output

    assert "not a run dir" in fails(str(tmp_path), "--format", "merged", "--out", str(tmp_path / "o"))
    assert "ending in .gguf" in fails(str(tiny_run), "--format", "gguf", "--out", str(tmp_path / "o.bin"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert "already exists; give --force" in fails(str(tiny_run), "--format", "merged", "--out", str(tmp_path / "full"))
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "recipe.resolved.yaml").write_text((tiny_run / "recipe.resolved.yaml").read_text())
    assert "no trained adapter" in fails(str(bare), "--format", "merged", "--out", str(tmp_path / "o2"))


# ----------------------------------------------------------------------------- SmolLM2 (slow)
@pytest.mark.slow
def test_smollm2_exports(tmp_path):
    """The embedded SmolLM2-135M-Instruct (a Q4_1 GGUF base, dequantized by transformers for training)
    with a random rank-8 adapter: merged folder, q8_0 GGUF, and the LoRA GGUF on the original Q4_1 file."""
    from llama_cpp import Llama
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from minirft.errors import MinirftError
    from minirft.export import load_base, run_recipe
    from minirft.models import resolve_model

    try:
        resolve_model("smollm2-135m-instruct")
    except MinirftError as exc:
        pytest.skip(str(exc))
    run = make_adapter_run(tmp_path / "run", "smollm2-135m-instruct", r=8, alpha=16, scale=0.03)
    base, tokenizer, gguf_file = load_base(run_recipe(run))
    assert gguf_file == resolve_model("smollm2-135m-instruct").path
    model = PeftModel.from_pretrained(base, str(run / "adapter"))
    model.eval()
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Tell me about the moon in one sentence."}],
                                        add_generation_prompt=True, tokenize=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    ids += tokenizer("The moon is Earth's only natural satellite, and it shapes our tides.")["input_ids"]
    tuned = torch_logprobs(model, ids)
    with model.disable_adapter():
        plain = torch_logprobs(model, ids)
    t_tuned, t_plain = target_logprobs(tuned, ids), target_logprobs(plain, ids)
    shift = np.abs(t_tuned - t_plain).mean()
    report = [f"SmolLM2 adapter shift: mean |Δ log p(next token)| = {shift:.3f}"]
    assert shift > 0.05

    run_export(str(run), "--format", "merged", "--out", str(tmp_path / "merged"))
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    merged_err = np.abs(torch_logprobs(merged, ids) - tuned).max()
    report.append(f"merged (float32) vs base+adapter: max |Δ log p| = {merged_err:.2e}")
    assert merged_err < 1e-3

    out = run_export(str(run), "--format", "gguf", "--out", str(tmp_path / "smol.q8_0.gguf"))
    assert "Q4_1" in out  # says the precision the base carried
    g = target_logprobs(llama_logprobs(tmp_path / "smol.q8_0.gguf", ids), ids)
    g_tuned, g_plain = np.abs(g - t_tuned).mean(), np.abs(g - t_plain).mean()
    # llama.cpp's own distance to torch on the untouched Q4_1 base file: the floor any export can reach.
    l_plain = target_logprobs(llama_logprobs(gguf_file, ids), ids)
    floor = np.abs(l_plain - t_plain).mean()
    report.append(f"gguf q8_0 vs torch tuned: mean |Δ log p| = {g_tuned:.3f} (vs the base: {g_plain:.3f}; "
                  f"llama.cpp on the Q4_1 base vs torch base: {floor:.3f})")
    assert g_tuned < g_plain and g_tuned < 2 * floor + 0.02
    llm = Llama(model_path=str(tmp_path / "smol.q8_0.gguf"), n_ctx=512, verbose=False, n_threads=1, seed=0)
    try:
        reply = llm.create_chat_completion([{"role": "user", "content": "What is the capital of France?"}],
                                           max_tokens=16, temperature=0.0)["choices"][0]["message"]["content"]
    finally:
        llm.close()
    report.append(f"gguf q8_0 generates: {reply!r}")
    assert reply.strip()

    run_export(str(run), "--format", "lora-gguf", "--out", str(tmp_path / "smol-lora.gguf"))
    l_tuned = target_logprobs(llama_logprobs(gguf_file, ids, lora=tmp_path / "smol-lora.gguf"), ids)
    l_shift, t_shift = l_tuned - l_plain, t_tuned - t_plain
    corr = float(np.corrcoef(l_shift, t_shift)[0, 1])
    err = np.abs(l_shift - t_shift).mean()
    report.append(f"lora-gguf (f16) on the Q4_1 base: llama.cpp shift vs torch shift: corr {corr:.3f}, "
                  f"mean |Δ| {err:.3f} (shift {np.abs(t_shift).mean():.3f})")
    print("\n" + "\n".join(report))
    assert corr > 0.9 and err < 0.5 * np.abs(t_shift).mean()
