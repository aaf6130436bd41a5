"""`minirft train` from the command line: help, user errors, a real run, and kill -9 then --resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from train_fixtures import make_tiny_model, write_prompts  # noqa: E402

from minirft.cli import cli  # noqa: E402
from minirft.events import read_events  # noqa: E402

TIMING = {"generation_s", "judge_s", "update_s", "step_s", "tokens_per_s"}


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    make_tiny_model(d / "model")
    write_prompts(d / "prompts.jsonl")
    text = {
        "name": "clitoy",
        "policy": {"model": "model", "lora": {"r": 4, "alpha": 8}},  # relative to the recipe's folder
        "rewards": [{"type": "python", "name": "letters", "function": "train_fixtures:toy_reward"},
                    {"type": "length", "max_chars": 6, "slack": 4, "weight": 0.5}],
        "data": {"path": "prompts.jsonl"},
        "generation": {"group_size": 4, "max_new_tokens": 8},
        "training": {"steps": 6, "prompts_per_step": 2, "lr": 1e-2},
        "checkpoint": {"every": 2, "keep_last": 2},
    }
    path = d / "toy.yaml"
    path.write_text("# minirft train toy.yaml\n" + yaml.safe_dump(text))
    return path


def test_help_has_examples():
    result = CliRunner().invoke(cli, ["train", "-h"])
    assert result.exit_code == 0 and "Examples:" in result.output and "--resume" in result.output


def test_bad_override_is_a_one_line_error(recipe_file):
    result = CliRunner().invoke(cli, ["train", str(recipe_file), "training.steps=zero"])
    assert result.exit_code == 1 and "training.steps" in result.output and "Traceback" not in result.output


def test_resume_needs_a_run_dir(tmp_path):
    result = CliRunner().invoke(cli, ["train", "--resume", str(tmp_path)])
    assert result.exit_code == 1 and "not a run directory" in result.output


def test_missing_recipe_is_a_usage_error():
    assert CliRunner().invoke(cli, ["train"]).exit_code == 2


def test_cli_run_writes_progress_and_a_loadable_run_dir(recipe_file, tmp_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", str(recipe_file), "training.steps=2", "--run-dir", str(run)])
    assert result.exit_code == 0, result.output
    assert "step 2/2" in result.output  # progress lines (stderr is mixed in by CliRunner)
    resolved = yaml.safe_load((run / "recipe.resolved.yaml").read_text())
    assert Path(resolved["data"]["path"]).is_absolute() and resolved["training"]["steps"] == 2
    assert "training.steps=2" in (run / "command.txt").read_text()


def _env() -> dict:
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(root / "tests"), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_kill_9_then_resume_matches_an_uninterrupted_run(recipe_file, tmp_path):
    full_dir, cut_dir = tmp_path / "full", tmp_path / "cut"
    assert CliRunner().invoke(cli, ["train", str(recipe_file), "--run-dir", str(full_dir)]).exit_code == 0
    child = subprocess.Popen([sys.executable, "-m", "minirft", "train", str(recipe_file), "--run-dir", str(cut_dir)],
                             env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # wait until step 3 is logged: checkpoint step-2 exists, step 3 is not saved
            steps = [e["step"] for e in read_events(cut_dir / "events.jsonl") if e["type"] == "step"]
            if steps and max(steps) >= 3:
                break
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    events = read_events(cut_dir / "events.jsonl")
    assert not any(e["type"] == "run_end" for e in events), "the child finished before it was killed"
    result = CliRunner().invoke(cli, ["train", "--resume", str(cut_dir)])
    assert result.exit_code == 0, result.output

    def metrics(d):
        return {e["step"]: e["metrics"] for e in read_events(d / "events.jsonl") if e["type"] == "step"}

    full, resumed = metrics(full_dir), metrics(cut_dir)
    assert sorted(full) == sorted(resumed) == list(range(1, 7))
    for step, m in full.items():
        for key, value in m.items():
            if key not in TIMING:
                assert resumed[step][key] == pytest.approx(value, rel=1e-5, abs=1e-7), (step, key)
    assert [e["kind"] for e in read_events(cut_dir / "events.jsonl") if e["type"] == "event"].count("resume") == 1
