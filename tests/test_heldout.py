"""Several held-out sets per recipe (data.eval_sets), the in-run held-out checks (training.eval_every)
and the over-optimisation detector that compares them with the training reward."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from minirft.cli import cli
from minirft.commands import common as commands_common
from minirft.events import read_events
from minirft.train.monitor import RunMonitor

from test_eval import LetterJudge


# ---------------------------------------------------------------------------- the detector
def _stream(rewards: list[float], heldout: dict[int, float]) -> list:
    """Feed a monitor a synthetic run: one step record per reward, a held-out check at the given steps
    (step 0 = before training); returns every alert."""
    monitor, alerts = RunMonitor(), []
    alerts += monitor.update_heldout(0, {"shifted/correct": heldout[0]}) if 0 in heldout else []
    for step, r in enumerate(rewards, start=1):
        alerts += monitor.update(step, [], {"reward": r})
        if step in heldout:
            alerts += monitor.update_heldout(step, {"shifted/correct": heldout[step], "heldout/correct": 0.5})
    return alerts


def test_reward_up_heldout_down_warns():
    rewards = [0.2 + 0.06 * i for i in range(10)]  # 0.2 -> 0.74
    alerts = _stream(rewards, {0: 0.6, 5: 0.5, 10: 0.3})
    fired = [a for a in alerts if a.detector == "heldout_vs_reward"]
    assert fired and "shifted/correct 0.60 -> 0.30" in fired[-1].message
    assert fired[-1].value == pytest.approx(-0.3)


def test_both_rising_or_flat_reward_does_not_warn():
    rising = [0.2 + 0.06 * i for i in range(10)]
    assert not [a for a in _stream(rising, {0: 0.3, 5: 0.45, 10: 0.6}) if a.detector == "heldout_vs_reward"]
    flat = [0.5] * 10  # held-out falls, but the training reward did not rise: not over-optimisation
    assert not [a for a in _stream(flat, {0: 0.6, 5: 0.5, 10: 0.3}) if a.detector == "heldout_vs_reward"]


# ------------------------------------------------------------------------- recipe checks
def _recipe(d: Path, **data) -> Path:
    recipe = {
        "name": "heldtoy",
        "policy": {"model": "model", "lora": {"r": 4, "alpha": 8}},
        "rewards": [{"type": "python", "name": "letters", "function": "train_fixtures:toy_reward"}],
        "data": {"path": "prompts.jsonl", "eval_path": "prompts.jsonl",
                 "eval_checks": [{"type": "regex", "name": "has_e", "pattern": "e"}], **data},
        "generation": {"group_size": 2, "max_new_tokens": 6},
        "training": {"steps": 3, "prompts_per_step": 2, "lr": 1e-2},
    }
    path = d / "toy.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def _line(path: Path, needle: str) -> int:
    return next(n for n, t in enumerate(path.read_text().splitlines(), 1) if needle in t)


def test_validate_checks_every_eval_set(tiny):
    shifted = tiny / "shifted.jsonl"
    shifted.write_text('{"prompt": "Tell me about frogs.", "reference": "1"}\n')
    p = _recipe(tiny, eval_sets={"shifted": "shifted.jsonl"})
    res = CliRunner().invoke(cli, ["recipes", "validate", str(p)])
    assert res.exit_code == 0, res.output

    p = _recipe(tiny, eval_sets={"shifted": "nowhere.jsonl"})
    res = CliRunner().invoke(cli, ["recipes", "validate", str(p)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert f"{p}:{_line(p, 'nowhere.jsonl')}: data.eval_sets.shifted: no such data file" in res.output

    bad = tiny / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": oops}\n')
    p = _recipe(tiny, eval_sets={"odd": "bad.jsonl"})
    res = CliRunner().invoke(cli, ["recipes", "validate", str(p)])
    assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1
    assert f"{p}:{_line(p, 'bad.jsonl')}: data.eval_sets.odd: {bad}:2: invalid JSON" in res.output

    p = _recipe(tiny, eval_sets={"heldout": "prompts.jsonl"})
    res = CliRunner().invoke(cli, ["recipes", "validate", str(p)])
    assert res.exit_code == 1 and "the name `heldout` is data.eval_path's" in res.output


# ------------------------------------------------------- a real run with held-out checks
@pytest.fixture(scope="module")
def run_with_checks(tiny) -> Path:
    (tiny / "shifted.jsonl").write_text("".join(
        json.dumps({"prompt": f"Write one line on {w}, please.", "reference": str(i)}) + "\n"
        for i, w in enumerate(["frogs", "trains", "salt", "clocks"])))
    p = _recipe(tiny, eval_sets={"shifted": "shifted.jsonl"})
    run = tiny / "run"
    res = CliRunner().invoke(cli, ["train", str(p), "--run-dir", str(run), "training.eval_every=2",
                                   "training.eval_prompts=3"])
    assert res.exit_code == 0, res.output
    return run


def test_train_logs_heldout_checks(run_with_checks):
    evals = [r for r in read_events(run_with_checks / "events.jsonl") if r.get("kind") == "eval"]
    assert [r["step"] for r in evals] == [0, 2, 3]  # before training, every 2 steps, after the last
    for r in evals:
        assert set(r["sets"]) == {"heldout", "shifted"} and r["prompts"] == {"heldout": 3, "shifted": 3}
        assert r["greedy"] is True
        for checks in r["sets"].values():
            assert set(checks) == {"letters", "has_e", "length_chars"}
            assert 0 <= checks["has_e"] <= 1 and abs(checks["has_e"] * 3 - round(checks["has_e"] * 3)) < 1e-9
    # what the TUI plots beside the reward
    from minirft.tui.run_state import RunState

    state = RunState()
    state.apply(read_events(run_with_checks / "events.jsonl"))
    series = state.heldout_series()
    assert set(series) == {"heldout/letters", "heldout/has_e", "shifted/letters", "shifted/has_e"}
    assert series["shifted/has_e"][0] == [0, 2, 3]
    assert series["shifted/has_e"][1] == [r["sets"]["shifted"]["has_e"] for r in evals]


def test_eval_measures_every_set_side_by_side(run_with_checks, monkeypatch):
    monkeypatch.setattr(commands_common, "make_judge", lambda cfg: LetterJudge())
    res = CliRunner().invoke(cli, ["eval", str(run_with_checks), "judge.mode=preference", "--examples", "1"])
    assert res.exit_code == 0, res.output
    report = json.loads((run_with_checks / "eval.json").read_text())
    assert list(report["sets"]) == ["heldout", "shifted"]
    assert report["sets"]["heldout"]["n"] == 8 and report["sets"]["shifted"]["n"] == 4
    assert report["set"] == "heldout" and report["n"] == 8  # the top level is the default set's report
    shifted = report["sets"]["shifted"]
    assert [p["prompt"] for p in shifted["pairs"]][0] == "Write one line on frogs, please."
    for side, key in (("base", "base"), ("trained", "tuned")):
        assert shifted["measures"]["has_e"][side] == pytest.approx(sum("e" in p[key] for p in shifted["pairs"]) / 4)
    assert "set 'heldout'" in res.stdout and "set 'shifted'" in res.stdout
    res = CliRunner().invoke(cli, ["report", str(run_with_checks)])
    assert res.exit_code == 0, res.output
    html = (run_with_checks / "report.html").read_text()
    assert "<th>heldout</th><th>shifted</th>" in html and "judged win rate" in html


def test_eval_prompts_option_measures_that_file_alone(run_with_checks, tiny, monkeypatch):
    monkeypatch.setattr(commands_common, "make_judge", lambda cfg: LetterJudge())
    res = CliRunner().invoke(cli, ["eval", str(run_with_checks), "judge.mode=preference", "--examples", "0",
                                   "--prompts", str(tiny / "shifted.jsonl")])
    assert res.exit_code == 0, res.output
    report = json.loads((run_with_checks / "eval.json").read_text())
    assert list(report["sets"]) == ["shifted"] and report["n"] == 4


# ------------------------------------------------------------------ the shipped shifted sets
def test_shipped_shifted_sets_are_the_script_output_and_new(tmp_path):
    import re
    import runpy

    from minirft.data import load_prompts
    from minirft.recipe import load_recipe, shipped_recipes_dir

    root = Path(__file__).resolve().parent.parent
    runpy.run_path(str(root / "scripts" / "shifted_sets.py"))["main"](tmp_path)
    for recipe_file in sorted(shipped_recipes_dir().glob("*.yaml")):
        r = load_recipe(recipe_file)
        shifted = r.resolve_path(r.data.eval_sets["shifted"])  # every shipped recipe has one
        assert shifted.read_bytes() == (tmp_path / shifted.name).read_bytes(), shifted
        rows = load_prompts(shifted, r.data.columns)
        assert 24 <= len(rows) <= 64
        seen = {row.prompt for p in (r.data.path, r.data.eval_path) for row in load_prompts(r.resolve_path(p))}
        assert not seen & {row.prompt for row in rows}, f"{shifted}: prompts the recipe already uses"
    for row in load_prompts(tmp_path / "arithmetic-shifted.jsonl"):  # each reference checked by rule
        a, b = map(int, re.findall(r"\d+", row.prompt)[:2])
        took = re.search(r"gave|away|Subtract|difference| - ", row.prompt)
        want = (max(a, b) - min(a, b)) if took else a + b
        assert row.reference == str(want), row.prompt


def test_recipes_copy_brings_the_shifted_set(tmp_path):
    res = CliRunner().invoke(cli, ["recipes", "copy", "arithmetic-judge", str(tmp_path / "my.yaml")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "data" / "arithmetic-shifted.jsonl").is_file()
    res = CliRunner().invoke(cli, ["recipes", "validate", str(tmp_path / "my.yaml")])
    assert res.exit_code == 0, res.output


def test_watch_plots_the_heldout_checks_beside_the_reward(run_with_checks):
    from tui_fixtures import last_time, run_async, screen_text, wait_for

    from minirft.tui.app import WatchApp
    from minirft.tui.widgets.plots import MetricPlot

    @run_async
    async def look():
        app = WatchApp(run_with_checks, clock=lambda: last_time(run_with_checks) + 5, poll_interval=0.02)
        async with app.run_test(size=(150, 46)) as pilot:
            await wait_for(pilot, lambda: app.state.run_end is not None and app.view_step == 3)
            plot = next(p for p in app.query(MetricPlot) if p.kind == "reward")
            await wait_for(pilot, lambda: plot._version > 0)
            text = screen_text(app)
            # the reward chart's legend names each held-out series; the events pane lists each check
            assert "reward: mean ± std · held-out checks" in text
            for name in ("heldout/letters", "heldout/has_e", "shifted/letters", "shifted/has_e"):
                assert f"held-out {name}" in text
            assert text.count("eval held-out check") == 3

    look()
