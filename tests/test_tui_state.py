"""The run model, plain output and the `minirft watch` command — everything below the Textual app."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from minirft.cli import cli
from minirft.commands.watch import find_latest_run
from minirft.tui.plain import print_run, step_line
from minirft.tui.run_state import RunState
from minirft.tui.tailer import LogTail
from tui_fixtures import CRASHED, FINISHED, MAKE_RUN, copy_run, make_run, records


def _state(run_dir) -> RunState:
    st = RunState()
    st.apply(records(run_dir))
    return st


def test_committed_fixtures_are_what_the_generator_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(make_run, "FIXTURE_RUNS", tmp_path)
    make_run.write_fixtures()
    for src in (FINISHED, CRASHED):
        assert (tmp_path / src.name / "events.jsonl").read_bytes() == (src / "events.jsonl").read_bytes()


def test_state_matches_the_log():
    recs = records(FINISHED)
    st = _state(FINISHED)
    steps = [r for r in recs if r["type"] == "step"]
    assert st.steps_done == len(steps) == 30 and st.total_steps == 30
    assert st.run_name == "polite-20261123-010000"
    assert (st.policy_model, st.judge_model) == ("smollm2-135m-instruct", "gemma3-270m")
    xs, ys = st.series("reward")
    assert xs == [r["step"] for r in steps] and ys == [r["metrics"]["reward"] for r in steps]
    # loss is null on the NaN-skipped step: the series skips it instead of plotting garbage
    assert len(st.series("loss")[0]) == 29
    assert st.metric_names("criteria/") == ["criteria/polite", "criteria/answers_question", "criteria/concise"]
    last = [r for r in recs if r["type"] == "sample" and r["step"] == 30]
    assert [(s.group, s.index, s.reward, s.advantage, s.rationale) for s in st.samples_for(30)] == [
        (r["group"], r["index"], r["reward"], r["advantage"], r["rationale"]) for r in last]
    kinds = [e["kind"] for e in st.events]
    assert kinds.count("checkpoint") == 3 and "nan_skip" in kinds and "judge_error" in kinds
    assert kinds[-1] == "run_finished"
    assert st.steps_matching("IGNORE THE RUBRIC") == sorted(
        {r["step"] for r in recs if r["type"] == "sample" and "ignore the rubric" in r["completion"].lower()})


def test_state_finished_crashed_running_and_clock():
    fin = _state(FINISHED)
    far_future = time.time() + 1e6
    assert fin.state(far_future) == "finished"
    assert fin.elapsed(far_future) == pytest.approx(381.0)  # run_end.time - run_start.time
    assert fin.eta(far_future) is None
    crashed = _state(CRASHED)
    end = max(r["time"] for r in records(CRASHED))
    assert crashed.state(end + 10) == "running"
    assert crashed.eta(end) == pytest.approx(18 * 12.0)  # 18 steps left at 12 s a step
    assert crashed.state(end + 3600) == "crashed"
    assert crashed.state(end + 10, child_returncode=1) == "crashed"
    assert crashed.state(end + 3600, child_alive=True) == "running"  # a live trainer is not a crash
    first = RunState()
    first.apply(records(CRASHED)[:1])  # run_start only: models loading
    assert first.state(first.last_time + 600) == "running" and first.state(first.last_time + 1000) == "crashed"
    assert RunState().state(0.0) == "waiting"


def test_zero_variance_groups_and_judge_errors_are_marked():
    st = _state(FINISHED)
    for rows in map(st.samples_for, st.steps()):
        for s in rows:
            group = [r.reward for r in rows if r.group == s.group]
            assert s.zero_variance == (max(group) == min(group))
    errors = [s for step in st.steps() for s in st.samples_for(step) if s.judge_error]
    assert len(errors) == 1 and errors[0].rationale is None and errors[0].criteria == {}


def test_resume_replaces_repeated_steps_and_clears_an_old_run_end():
    recs = records(FINISHED)
    head = [r for r in recs if r["step"] <= 5 and r["type"] != "run_end"]
    stop = {"type": "run_end", "time": 1, "step": 5, "status": "stopped", "message": "stopped"}
    again = {**recs[0], "resumed_from": 4}
    resume = {"type": "event", "time": 2, "step": 4, "kind": "resume", "message": "resumed from checkpoint step-4"}
    redo = [dict(r) for r in recs if r["step"] == 5 and r["type"] in ("step", "sample")]
    for r in redo:
        if r["type"] == "step":
            r["metrics"] = {**r["metrics"], "reward": 0.999}
        else:
            r["reward"] = 0.5
    st = RunState()
    st.apply(head + [stop])
    assert st.state(0) == "stopped"
    st.apply([again, resume] + redo)
    assert st.run_end is None and st.metrics[5]["reward"] == 0.999
    assert len(st.samples_for(5)) == 4 and {s.reward for s in st.samples_for(5)} == {0.5}
    assert st.events[-1]["kind"] == "resume" and [e["kind"] for e in st.events].count("resume") == 1


def test_tail_ignores_a_partial_last_line_until_it_completes(tmp_path):
    path = tmp_path / "events.jsonl"
    tail = LogTail(path)
    assert tail.poll() == 0  # no file yet: nothing, no error
    line = json.dumps({"type": "step", "time": 1.0, "step": 1, "metrics": {"reward": 0.5}})
    path.write_text(line[:20])
    assert tail.poll() == 0 and tail.drain() == []
    with open(path, "a") as fh:
        fh.write(line[20:] + "\n")
    assert tail.poll() == 1 and tail.drain()[0]["metrics"]["reward"] == 0.5
    assert tail.drain() == []


def test_plain_prints_one_line_per_step_with_the_logs_numbers():
    out = io.StringIO()
    st = print_run(FINISHED / "events.jsonl", out)
    lines = out.getvalue().splitlines()
    step_lines = [ln for ln in lines if ln.startswith("step ")]
    assert len(step_lines) == 30
    m = st.metrics[7]
    assert step_lines[6] == step_line(st, 7)
    assert f"reward {m['reward']:.3f} ±{m['reward_std']:.3f}" in step_lines[6]
    assert f"kl {m['kl']:.4f}" in step_lines[6]
    assert any("nan_skip" in ln for ln in lines) and lines[-1].startswith("# step 30 run_finished")


def test_plain_follow_stops_when_the_child_exits(tmp_path):
    run = tmp_path / "live"
    child = subprocess.Popen([sys.executable, str(MAKE_RUN), str(run), "--live", "--steps", "3",
                              "--delay", "0.05", "--no-end"])
    out = io.StringIO()
    st = print_run(run / "events.jsonl", out, follow=True, interval=0.05, alive=lambda: child.poll() is None)
    assert child.returncode == 0 and st.steps_done == 3
    assert sum(ln.startswith("step ") for ln in out.getvalue().splitlines()) == 3


def test_cli_watch_plain_json_and_errors(tmp_path, monkeypatch):
    runner = CliRunner()
    res = runner.invoke(cli, ["watch", str(FINISHED), "--plain"])
    assert res.exit_code == 0, res.output
    assert sum(ln.startswith("step ") for ln in res.output.splitlines()) == 30
    res = runner.invoke(cli, ["watch", str(FINISHED / "events.jsonl"), "--json"])
    assert res.exit_code == 0 and [json.loads(ln) for ln in res.output.splitlines()] == records(FINISHED)
    res = runner.invoke(cli, ["watch", str(tmp_path / "nope")])
    assert res.exit_code == 1 and "Error:" in res.output and "no such run dir" in res.output
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(cli, ["watch"])
    assert res.exit_code == 1 and "no runs folder" in res.output
    res = runner.invoke(cli, ["watch", "-h"])
    assert res.exit_code == 0 and "Examples:" in res.output


def test_watch_defaults_to_the_latest_run(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    old, new = copy_run(FINISHED, runs), copy_run(CRASHED, runs)
    os.utime(old / "events.jsonl", (1, 1))
    assert find_latest_run(runs) == new
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, ["watch"])  # stdout is not a terminal here: plain output
    assert res.exit_code == 0 and res.output.startswith(f"# {new.name}:")
    assert "crashed" in res.output.splitlines()[-1]


def test_zero_variance_uses_advantages_when_only_part_of_a_group_is_logged():
    base = {"type": "sample", "time": 1.0, "step": 1, "prompt": "p", "completion": "c"}
    st = RunState()
    st.apply([{**base, "group": 0, "index": 0, "reward": 0.5, "advantage": -0.7},   # 2 of 4 logged:
              {**base, "group": 0, "index": 1, "reward": 0.5, "advantage": -0.7},   # equal, yet signal
              {**base, "group": 1, "index": 0, "reward": 0.9, "advantage": 0.0},
              {**base, "group": 1, "index": 1, "reward": 0.9, "advantage": 0.0}])
    assert [s.zero_variance for s in st.samples_for(1)] == [False, False, True, True]
