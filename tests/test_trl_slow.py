"""The TRL engine with the embedded models: SmolLM2-135M policy (GGUF, dequantised) + Gemma-3-270M judge."""

import sys

import pytest

from minirft.events import read_events

from trl_fixtures import ROOT, run

pytest.importorskip("trl")


@pytest.mark.slow
def test_polite_recipe_two_steps_with_trl(tmp_path):
    from minirft.models import resolve_model

    try:
        resolve_model("smollm2-135m-instruct")
        resolve_model("gemma3-270m")
    except Exception as exc:  # noqa: BLE001 - the embedded models are an optional extra
        pytest.skip(f"embedded models not installed: {exc}")
    out = tmp_path / "run"
    res = run([sys.executable, "-m", "minirft", "train", str(ROOT / "recipes" / "polite.yaml"), "--engine", "trl",
               "training.steps=2", "training.prompts_per_step=2", "generation.group_size=2",
               "generation.max_new_tokens=16", "--run-dir", str(out)], timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    events = read_events(out / "events.jsonl")
    steps = [e["metrics"] for e in events if e["type"] == "step"]
    assert len(steps) == 2 and all(m["judge/completions"] == 4 for m in steps)
    assert all(0 <= m["criteria/polite"] <= 1 and m["rewards/concise"] is not None for m in steps)
    assert any(isinstance(e.get("rationale"), str) and e["rationale"] for e in events if e["type"] == "sample")
    assert events[-1]["status"] == "finished"
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
