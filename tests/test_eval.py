"""`minirft eval` on a real (tiny) trained run: greedy base vs tuned, judged in both orders by a scripted judge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from train_fixtures import make_tiny_model, write_prompts  # noqa: E402

from minirft.cli import cli  # noqa: E402
from minirft.judge.base import PairVerdict  # noqa: E402
from minirft.commands import common as commands_common  # noqa: E402


def letters(text: str) -> float:
    return sum("a" <= ch <= "z" for ch in text) / max(1, len(text))


class LetterJudge:
    """Prefers the response with more lowercase letters, with a position bias of +0.1 for the first."""

    mode = "preference"

    def __init__(self):
        self.calls = []

    def compare(self, row, a, b, rationale=False):
        self.calls.append((a, b, rationale))
        d = letters(a) - letters(b)
        first = min(1.0, max(0.0, 0.5 + d + 0.1))
        second = min(1.0, max(0.0, 0.5 + d - 0.1))
        return PairVerdict((first + second) / 2, first, second, "more letters" if rationale else None)

    def compare_many(self, rows, pairs, rationale=False):
        return [self.compare(row, a, b, rationale) for row, (a, b) in zip(rows, pairs)]

    def close(self):
        pass


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("evalrun")
    make_tiny_model(d / "model")
    write_prompts(d / "prompts.jsonl")
    recipe = {
        "name": "evaltoy",
        "policy": {"model": "model", "lora": {"r": 4, "alpha": 8}},
        "rewards": [{"type": "python", "name": "letters", "function": "train_fixtures:toy_reward"}],
        "data": {"path": "prompts.jsonl", "eval_path": "prompts.jsonl",
                 "eval_checks": [{"type": "regex", "name": "has_e", "pattern": "e"}]},
        "generation": {"group_size": 4, "max_new_tokens": 8},
        "training": {"steps": 3, "prompts_per_step": 2, "lr": 1e-2},
    }
    (d / "toy.yaml").write_text(yaml.safe_dump(recipe))
    run = d / "run"
    res = CliRunner().invoke(cli, ["train", str(d / "toy.yaml"), "--run-dir", str(run)])
    assert res.exit_code == 0, res.output
    return run


def test_eval_reports_win_rate_ci_rules_and_examples(trained_run, monkeypatch):
    judge = LetterJudge()
    monkeypatch.setattr(commands_common, "make_judge", lambda cfg: judge if cfg.mode == "preference" else None)
    res = CliRunner().invoke(cli, ["eval", str(trained_run), "judge.mode=preference", "--limit", "6",
                                   "--examples", "2", "--check", "{type: length, name: short, max_chars: 4}"])
    assert res.exit_code == 0, res.output
    report = json.loads((trained_run / "eval.json").read_text())
    pairs = report["pairs"]
    assert report["n"] == 6 and len(pairs) == 6 and len(judge.calls) == 6
    # A is always the tuned completion; the win rate is the mean swap-averaged P(tuned better)
    assert [c[0] for c in judge.calls] == [p["tuned"] for p in pairs]
    expected = [min(1, max(0, 0.5 + letters(p["tuned"]) - letters(p["base"]) + 0.1)) / 2
                + min(1, max(0, 0.5 + letters(p["tuned"]) - letters(p["base"]) - 0.1)) / 2 for p in pairs]
    assert report["win_rate"] == pytest.approx(sum(expected) / 6)
    lo, hi = report["win_rate_ci95"]
    assert lo <= report["win_rate"] <= hi
    assert [c[2] for c in judge.calls] == [True, True, False, False, False, False]
    assert set(report["measures"]) >= {"letters", "short", "has_e", "length_chars"}
    # the recipe's eval_checks are measured on the held-out answers, base and tuned
    for side, key in (("base", "base"), ("trained", "tuned")):
        assert report["measures"]["has_e"][side] == pytest.approx(sum("e" in p[key] for p in pairs) / 6)
    m = report["measures"]["letters"]  # paired change with a bootstrap interval around it
    assert m["delta"] == pytest.approx(m["trained"] - m["base"])
    assert m["delta_ci95"][0] <= m["delta"] <= m["delta_ci95"][1]
    assert "win rate" in res.stdout and "more letters" in res.stdout


def test_eval_errors(tmp_path, trained_run):
    res = CliRunner().invoke(cli, ["eval", str(tmp_path)])
    assert res.exit_code == 1 and "not a run dir" in res.output
    res = CliRunner().invoke(cli, ["eval", str(trained_run)])
    assert res.exit_code == 1 and "the run has no judge" in res.output
    res = CliRunner().invoke(cli, ["eval", str(trained_run), "--adapter", str(tmp_path)])
    assert res.exit_code == 1 and "no trained adapter" in res.output
    res = CliRunner().invoke(cli, ["eval", str(trained_run), "judge.mode=preference", "--check", "{type: nope}"])
    assert res.exit_code == 1 and res.output.startswith("Error: --check {type: nope}:") and "Traceback" not in res.output


def test_eval_with_samples_averages_each_prompt(trained_run, monkeypatch):
    monkeypatch.setattr(commands_common, "make_judge", lambda cfg: LetterJudge())
    res = CliRunner().invoke(cli, ["eval", str(trained_run), "judge.mode=preference", "--limit", "3",
                                   "--samples", "4", "--temperature", "1.0", "--examples", "0"])
    assert res.exit_code == 0, res.output
    report = json.loads((trained_run / "eval.json").read_text())
    assert report["greedy"] is False and report["samples"] == 4 and report["n"] == 3 and len(report["pairs"]) == 3
    m = report["measures"]["has_e"]
    # per-prompt means of 4 binary samples: multiples of 1/4, averaged over 3 prompts → multiples of 1/12
    for side in ("base", "trained"):
        assert abs(m[side] * 12 - round(m[side] * 12)) < 1e-9
    assert "4 sampled at T=1 per prompt" in res.stdout
