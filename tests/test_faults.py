"""Nothing lost: faults (kill -9, truncated files, failed resumes) against real runs of the tiny policy.

Each test reproduces one item of issue 16 and checks the promise: the run dir keeps its settings, a
damaged checkpoint is skipped out loud, a resume never silently starts over, the event log stays one
record per line, checkpoints load with ``weights_only=True``, files keep their modes, a failed start
leaves no orphan run dir, and a judge configuration error stops the run instead of training blind.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fault_fixtures import env, invoke, lines, make_world, toy_recipe

from minirft.events import read_events
from minirft.judge.base import EvaluatorBase


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return make_world(tmp_path_factory.mktemp("faults"))


def step_metrics(run: Path) -> dict[int, dict]:
    return {e["step"]: e["metrics"] for e in read_events(run / "events.jsonl") if e["type"] == "step"}


def kinds(run: Path) -> list[tuple[str, str]]:
    return [(e["kind"], e["message"]) for e in read_events(run / "events.jsonl") if e["type"] == "event"]


TIMING = {"generation_s", "judge_s", "update_s", "step_s", "tokens_per_s"}


def same_metrics(a: dict, b: dict) -> bool:
    return all(b[k] == pytest.approx(v, rel=1e-5, abs=1e-7) for k, v in a.items() if k not in TIMING)


# ------------------------------------------------------------------------------------------ item 1
def test_a_failed_resume_leaves_the_saved_recipe_and_history_alone(world, tmp_path):
    recipe = toy_recipe(world, with_judge=True, name="resume1.yaml")
    run = tmp_path / "run"
    assert invoke("train", recipe, "--run-dir", run).exit_code == 0
    saved = {n: (run / n).read_bytes() for n in ("recipe.resolved.yaml", "command.txt", "events.jsonl")}

    res = invoke("train", "--resume", run, "judge.model=typo.gguf")
    assert res.exit_code == 1 and "override 'judge.model=typo.gguf': judge.model:" in res.output
    assert {n: (run / n).read_bytes() for n in saved} == saved  # nothing in the run dir changed

    res = invoke("train", "--resume", run)  # a plain resume still works (it was finished: nothing to do)
    assert res.exit_code == 0, res.output
    res = invoke("train", "--resume", run, "training.steps=3")  # an extension is kept, and recorded
    assert res.exit_code == 0, res.output
    assert "steps: 3" in (run / "recipe.resolved.yaml").read_text()
    history = (run / "command.txt").read_text().splitlines()
    assert len(history) == 3 and history[0].startswith("minirft train") and "training.steps=3" in history[2]
    assert sorted(step_metrics(run)) == [1, 2, 3]


# ------------------------------------------------------------------------------------- items 3, 5
def _kill_after(recipe: Path, run: Path, step: int) -> None:
    """Start training as its own process and SIGKILL it once ``step`` is logged."""
    child = subprocess.Popen([sys.executable, "-m", "minirft", "train", str(recipe), "--run-dir", str(run)],
                             env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and child.poll() is None:
            if any(e["type"] == "step" and e["step"] >= step for e in read_events(run / "events.jsonl")):
                break
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert not any(e["type"] == "run_end" for e in read_events(run / "events.jsonl")), "finished before the kill"


def _truncate(path: Path, keep: float = 0.5) -> None:
    os.truncate(path, int(path.stat().st_size * keep))


@pytest.mark.parametrize("manifest", [True, False], ids=["manifest", "no-manifest"])
def test_kill_9_then_a_truncated_checkpoint_and_log_line_still_resume_from_the_previous_one(world, tmp_path,
                                                                                           manifest):
    recipe = toy_recipe(world, name="kill.yaml", training={"steps": 10}, checkpoint={"every": 2, "keep_last": 5})
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert invoke("train", recipe, "--run-dir", full).exit_code == 0
    _kill_after(recipe, cut, 5)  # at least step-2 and step-4 exist; how far it got before the kill is timing
    saved = sorted(int(d.name.split("-")[1]) for d in (cut / "checkpoints").glob("step-*"))
    assert len(saved) >= 2, saved
    newest = cut / "checkpoints" / f"step-{saved[-1]}"
    previous = saved[-2]
    _truncate(newest / "adapter" / "adapter_model.safetensors")
    if not manifest:  # a checkpoint without a manifest (older minirft): the load attempt is the check
        (newest / "manifest.json").unlink()
    _truncate(cut / "events.jsonl", keep=0.999)  # the last record cut in half, as a kill mid-write leaves it
    events_size = (cut / "events.jsonl").stat().st_size

    res = invoke("train", "--resume", cut)
    assert res.exit_code == 0, res.output
    out = lines(res.output)
    assert any(ln.startswith("warning: skipping") and f"{newest.name}: damaged checkpoint" in ln for ln in out), out
    assert any("cut off an incomplete last record" in ln for ln in out), out
    assert any(ln == f"resuming {cut} from checkpoint step-{previous}" for ln in out), out
    assert "Traceback" not in res.output
    # Every line of the log is one whole record: the new run_start was not glued to the cut one.
    raw = (cut / "events.jsonl").read_text().splitlines()
    assert all(isinstance(json.loads(ln), dict) for ln in raw)
    assert (cut / "events.jsonl").stat().st_size > events_size
    starts = [e for e in read_events(cut / "events.jsonl") if e["type"] == "run_start"]
    assert [s["resumed_from"] for s in starts] == [None, previous]
    warnings = [m for k, m in kinds(cut) if k == "warning"]
    assert any(f"{newest.name}: damaged checkpoint" in m for m in warnings)
    assert any("incomplete last record" in m for m in warnings)
    # The resumed run is the uninterrupted one, step for step.
    a, b = step_metrics(full), step_metrics(cut)
    assert sorted(a) == sorted(b) == list(range(1, 11))
    assert all(same_metrics(a[s], b[s]) for s in a)


def test_watch_says_how_many_lines_it_could_not_read(world, tmp_path):
    recipe = toy_recipe(world, name="watch.yaml")
    run = tmp_path / "run"
    assert invoke("train", recipe, "--run-dir", run).exit_code == 0
    log = run / "events.jsonl"
    rows = log.read_text().splitlines()
    rows[3] = rows[3][: len(rows[3]) // 2]  # a corrupt middle line
    log.write_text("\n".join(rows) + "\n")
    res = invoke("watch", run, "--plain")
    assert res.exit_code == 0, res.output
    assert f"# skipped 1 unreadable line(s) of {log}: line 4" in res.output
    res = invoke("watch", run, "--json")
    assert res.exit_code == 0 and "skipped 1 unreadable line(s)" in res.output


# ------------------------------------------------------------------------------------------ item 4
def test_resume_with_no_usable_checkpoint_refuses_unless_from_scratch(world, tmp_path):
    recipe = toy_recipe(world, name="scratch.yaml")
    run = tmp_path / "run"
    assert invoke("train", recipe, "--run-dir", run).exit_code == 0
    _truncate(run / "checkpoints" / "step-2" / "optimizer.pt")
    before = (run / "events.jsonl").read_bytes()

    res = invoke("train", "--resume", run, "training.steps=3")
    assert res.exit_code == 1
    assert lines(res.output)[-1] == (f"Error: {run}: cannot resume: every checkpoint is damaged; to start it again "
                                     "from step 0 give --resume with --from-scratch")
    assert any("step-2: damaged checkpoint: optimizer.pt is" in ln for ln in lines(res.output))
    assert (run / "events.jsonl").read_bytes() == before and "steps: 2" in (run / "recipe.resolved.yaml").read_text()

    res = invoke("train", "--resume", run, "training.steps=3", "--from-scratch")
    assert res.exit_code == 0, res.output
    assert f"{run}: every checkpoint is damaged: starting again from step 0" in res.output
    resume = [m for k, m in kinds(run) if k == "resume"]
    assert resume == ["resumed from the beginning (no usable checkpoint; --from-scratch)"]
    assert "--from-scratch" in (run / "command.txt").read_text().splitlines()[-1]


def test_the_library_asks_before_starting_over(world, tmp_path):
    from minirft.recipe import load_recipe
    from minirft.train.loop import train

    recipe = load_recipe(toy_recipe(world, name="ask.yaml"))
    run = tmp_path / "run"
    run.mkdir()
    asked = []
    with pytest.raises(Exception, match="cannot resume: it has no complete checkpoint"):
        train(recipe, run, resume=True, quiet=True, confirm=lambda q: asked.append(q) or False)
    assert asked == [f"{run}: it has no complete checkpoint; start the run again from step 0?"]
    train(recipe, run, resume=True, quiet=True, confirm=lambda q: True)
    assert sorted(step_metrics(run)) == [1, 2]


# ------------------------------------------------------------------------------------------ item 7
def test_checkpoints_load_with_weights_only_and_pickled_code_is_never_run(world, tmp_path):
    recipe = toy_recipe(world, name="trust.yaml", training={"steps": 4})
    run = tmp_path / "run"
    assert invoke("train", recipe, "--run-dir", run).exit_code == 0
    for ckpt in ("step-2", "step-4"):
        for name in ("optimizer.pt", "scheduler.pt", "rng.pt"):
            torch.load(run / "checkpoints" / ckpt / name, weights_only=True)  # raises on anything but data

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    newest = run / "checkpoints" / "step-4"
    torch.save({"python": Payload()}, newest / "rng.pt")  # someone else's run dir, with pickled code in it
    (newest / "manifest.json").unlink()  # …and a manifest would not catch a deliberate edit either
    res = invoke("train", "--resume", run, "training.steps=5")
    assert res.exit_code == 0, res.output
    assert not marker.exists()
    assert "step-4: damaged checkpoint: UnpicklingError: it holds pickled objects" in res.output
    assert f"resuming {run} from checkpoint step-2" in res.output


# ------------------------------------------------------------------------------------------ item 8
def test_a_run_that_fails_before_it_starts_leaves_no_run_dir(world, tmp_path):
    recipe = toy_recipe(world, with_judge=True, name="orphan.yaml", run_dir=str(tmp_path / "runs"))
    res = invoke("train", recipe, "judge.model=typo.gguf")
    assert res.exit_code == 1 and "judge.model" in res.output
    assert not (tmp_path / "runs").exists()
    res = invoke("train", recipe, "--run-dir", tmp_path / "exact", "policy.model=/no/such/model")
    assert res.exit_code == 1 and not (tmp_path / "exact").exists()


def test_a_judge_configuration_error_stops_the_run_with_its_message(world, tmp_path):
    # item 13 too: the self-judge (the tiny byte-level policy) has no single-token "Yes": a
    # MinirftError at the first judging. The trainer used to turn it into failed scores and go on.
    recipe = toy_recipe(world, name="selfjudge.yaml", judge={
        "backend": "torch", "self_judge": True, "retries": 2, "rationales": "none",
        "criteria": [{"name": "vowels", "question": "Mostly vowels?"}]})
    run = tmp_path / "run"
    res = invoke("train", recipe, "--run-dir", run)
    assert res.exit_code == 1
    error = lines(res.output)[-1]
    assert error.startswith("Error: judge model the policy's base (self_judge): none of") and "single token" in error
    events = read_events(run / "events.jsonl")
    assert [e["type"] for e in events if e["type"] == "step"] == []
    assert events[-1]["type"] == "run_end" and events[-1]["status"] == "failed" and events[-1]["message"] in error


# ----------------------------------------------------------------------------------------- item 10
def test_atomic_writes_keep_the_mode_a_plain_write_would_give(tmp_path):
    from minirft.atomic import atomic_dir, write_text

    old = os.umask(0o022)
    try:
        f = tmp_path / "new.txt"
        write_text(f, "x")
        assert stat.S_IMODE(f.stat().st_mode) == 0o644
        f.chmod(0o640)
        write_text(f, "y")
        assert stat.S_IMODE(f.stat().st_mode) == 0o640 and f.read_text() == "y"
        with atomic_dir(tmp_path / "folder") as d:
            (d / "a").write_text("a")
        assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o755
        os.umask(0o027)
        write_text(tmp_path / "private.txt", "z")
        assert stat.S_IMODE((tmp_path / "private.txt").stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_a_run_dirs_files_are_readable_like_plain_files(world, tmp_path):
    old = os.umask(0o022)
    try:
        run = tmp_path / "run"
        assert invoke("train", toy_recipe(world, name="modes.yaml"), "--run-dir", run).exit_code == 0
    finally:
        os.umask(old)
    for name in ("recipe.resolved.yaml", "command.txt", "events.jsonl", "adapter/adapter_model.safetensors",
                 "checkpoints/step-2/manifest.json", "checkpoints/step-2/adapter/adapter_model.safetensors"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o644, name
    for name in ("adapter", "checkpoints/step-2"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o755, name


# ----------------------------------------------------------------------------------------- item 11
def test_cut_prompts_and_responses_are_said_once_per_run(world, tmp_path):
    recipe = toy_recipe(world, with_judge=True, name="limits.yaml", training={"steps": 3},
                        policy={"model": "model", "lora": {"r": 4, "alpha": 8}, "max_prompt_tokens": 8},
                        generation={"group_size": 2, "max_new_tokens": 40})
    run = tmp_path / "run"
    res = invoke("train", recipe, "--run-dir", run, "judge.max_candidate_tokens=8")
    assert res.exit_code == 0, res.output
    said = [ln for ln in lines(res.output) if "warning [limit]" in ln]
    assert len([ln for ln in said if "policy.max_prompt_tokens=8" in ln]) == 1, res.output
    assert len([ln for ln in said if "judge.max_candidate_tokens=8" in ln and "32 characters" in ln]) == 1, res.output
    warnings = [e for e in read_events(run / "events.jsonl") if e.get("kind") == "warning"]
    assert sorted(e["limit"] for e in warnings) == ["judge.max_candidate_tokens", "policy.max_prompt_tokens"]


def test_judge_cli_names_the_line_of_a_row_it_could_not_score(world, tmp_path):
    recipe = toy_recipe(world, with_judge=True, name="judgecli.yaml")
    rows = [{"prompt": "short", "response": "fine"},
            {"prompt": "word " * 40_000, "response": "fine"},  # 200k characters: more than judge.n_ctx
            {"prompt": "short", "response": "a long answer " * 150}]
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = invoke("judge", recipe, "judge.retries=0", "--input", inp, "--output", tmp_path / "out.jsonl")
    assert res.exit_code == 0, res.output
    assert f"warning: {inp}:2: not scored (RuntimeError: judge query is" in res.output
    assert "warning: 1 response(s) longer than 1536 characters were cut" in res.output
    out = [json.loads(ln) for ln in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert out[1]["reward"] is None and out[1]["line"] == 2 and out[0]["reward"] is not None


# ----------------------------------------------------------------------------------------- item 13
class Flaky(EvaluatorBase):
    """A real evaluator that fails its first ``failures`` calls (a transient fault), recording each call."""

    def __init__(self, inner, failures: int):
        self.inner, self.failures, self.calls = inner, failures, []

    def evaluate(self, queries, classes):
        self.calls.append(time.monotonic())
        if len(self.calls) <= self.failures:
            raise RuntimeError("judge server went away")
        return self.inner.evaluate(queries, classes)

    def close(self):
        self.inner.close()


@pytest.mark.parametrize("failures,calls,excluded", [(1, 2, False), (100, 2 + 2 * 2, True)],
                         ids=["transient", "persistent"])
def test_the_judge_is_retried_in_one_layer_with_a_backoff(world, tmp_path, failures, calls, excluded):
    from minirft.judge import build_judge
    from minirft.judge.core import BACKOFF_S, GroupJudge
    from minirft.recipe import load_recipe
    from minirft.train.loop import train

    recipe = load_recipe(toy_recipe(world, with_judge=True, name="flaky.yaml", training={"steps": 1}))
    real = build_judge(recipe.judge.model_copy(update={"model": str(world / "judge.gguf")}))
    flaky = Flaky(real.evaluator, failures)
    judge = GroupJudge(real.cfg, flaky, real.layout)  # retries: 1
    try:
        run = train(recipe, tmp_path / "run", judge=judge, quiet=True)
    finally:
        judge.close()
    # retries=1: two attempts for the step's batch, then (persistent) two per prompt row; the trainer
    # itself retries nothing, so no attempt is repeated on top.
    assert len(flaky.calls) == calls
    gaps = [b - a for a, b in zip(flaky.calls, flaky.calls[1:])]
    assert gaps[0] >= BACKOFF_S * 0.9
    m = step_metrics(run)[1]
    assert (m["reward"] is None) == excluded and (m["judge_errors"] == 4) == excluded
    errors = [msg for k, msg in kinds(run) if k == "judge_error"]
    assert errors == (["RuntimeError: judge server went away"] if excluded else [])
