"""`minirft train RECIPE --engine trl`: the recipe trained by TRL's real GRPOTrainer, one process and two
(accelerate launch, torchrun underneath, gloo on CPU), with the tiny random policy and the tiny GGUF judge."""

import sys

import pytest

from minirft.events import read_events

from trl_fixtures import accelerate_cmd, run, tiny_recipe

pytest.importorskip("trl")


def _check_run(run_dir, *, processes: int, steps: int = 2, completions: int = 4):
    events = read_events(run_dir / "events.jsonl")
    kinds = [e["type"] for e in events]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end"
    assert events[0]["engine"] == "trl" and events[0]["processes"] == processes
    assert events[-1]["status"] == "finished", events[-1]
    step_recs = [e for e in events if e["type"] == "step"]
    assert [e["step"] for e in step_recs] == list(range(1, steps + 1))
    for rec in step_recs:
        m = rec["metrics"]
        # every completion of the step, from every process, was judged
        assert m["judge/completions"] == completions and m["judge/processes"] == processes
        for key in ("reward", "kl", "loss", "lr", "criteria/answers", "criteria/polite", "rewards/judge",
                    "rewards/length", "judge_s", "step_s"):
            assert m.get(key) is not None, key
    samples = [e for e in events if e["type"] == "sample"]
    assert samples and all(0 <= s["criteria"]["answers"] <= 1 for s in samples)
    assert any(isinstance(s["rationale"], str) for s in samples)
    assert {s["rank"] for s in samples} == set(range(processes))
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert (run_dir / "recipe.resolved.yaml").is_file()
    return events


def test_two_processes_under_accelerate(tmp_path, tiny_gguf):
    recipe = tiny_recipe(tmp_path, tiny_gguf)
    out = tmp_path / "run"
    res = run(accelerate_cmd(2) + ["-m", "minirft", "train", str(recipe), "--engine", "trl", "training.steps=2",
                                   "--run-dir", str(out)])
    assert res.returncode == 0, res.stderr[-3000:]
    _check_run(out, processes=2)
    assert res.stderr.count("step 2/2") == 1  # only rank 0 reports


def test_one_process_then_watch_and_eval(tmp_path, tiny_gguf):
    recipe = tiny_recipe(tmp_path, tiny_gguf)
    out = tmp_path / "run"
    res = run([sys.executable, "-m", "minirft", "train", str(recipe), "--engine", "trl", "--run-dir", str(out)])
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr and "{'loss'" not in res.stderr + res.stdout
    _check_run(out, processes=1)
    watch = run([sys.executable, "-m", "minirft", "watch", str(out), "--plain"])
    assert watch.returncode == 0, watch.stderr
    assert "step 2" in watch.stdout
    ev = run([sys.executable, "-m", "minirft", "eval", str(out), "--limit", "2", "--json"])
    assert ev.returncode == 0, ev.stderr[-2000:]


def test_unmappable_key_is_an_error_naming_it(tmp_path, tiny_gguf):
    from click.testing import CliRunner

    from minirft.cli import cli

    recipe = tiny_recipe(tmp_path, tiny_gguf, policy={"max_prompt_tokens": 256})
    res = CliRunner().invoke(cli, ["train", str(recipe), "--engine", "trl", "--run-dir", str(tmp_path / "r")])
    assert res.exit_code == 1
    line = res.output.strip().splitlines()[-1]
    assert line.startswith(f"Error: {recipe}:") and "policy.max_prompt_tokens" in line
    assert res.exception is None or isinstance(res.exception, SystemExit)
    res = CliRunner().invoke(cli, ["train", str(recipe), "--engine", "trl", "policy.backend=unsloth",
                                   "--run-dir", str(tmp_path / "r")])
    assert res.exit_code == 1 and "policy.backend" in res.output
    assert not (tmp_path / "r").exists()  # nothing written for a recipe that cannot run


def test_without_trl_the_error_names_the_extra(tmp_path, tiny_gguf, monkeypatch):
    from click.testing import CliRunner

    from minirft.cli import cli

    monkeypatch.setitem(sys.modules, "trl", None)  # `import trl` now raises ImportError
    recipe = tiny_recipe(tmp_path, tiny_gguf)
    res = CliRunner().invoke(cli, ["train", str(recipe), "--engine", "trl", "--run-dir", str(tmp_path / "r")])
    assert res.exit_code == 1 and "pip install 'minirft[trl]'" in res.output.strip().splitlines()[-1]
