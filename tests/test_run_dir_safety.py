"""A run dir is the user's data: one writer at a time (a real flock held by real processes), a run is never
written twice, nothing is written through a symbolic link, and output files are replaced only with --force.

Real files, real links, real `minirft train` processes on the tiny random policy (tests/fault_fixtures.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fault_fixtures import env, invoke, lines, make_world, toy_recipe
from tui_fixtures import FINISHED, last_time, run_async, wait_for
from tui_fixtures import copy_run as tui_copy_run

from minirft import rundir
from minirft.errors import MinirftError
from minirft.events import EventLog, read_events
from minirft.labels import LabelBook, LabelLog


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return make_world(tmp_path_factory.mktemp("rundir"))


@pytest.fixture(scope="module")
def finished(world, tmp_path_factory) -> Path:
    """A finished 2-step run (checkpoint at step 2, adapter/)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    res = invoke("train", toy_recipe(world, name="finished.yaml"), "--run-dir", run)
    assert res.exit_code == 0, res.output
    return run


def snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and p.name != rundir.LOCK_FILE}


def copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst, symlinks=True)
    return dst


def one_error_line(output: str) -> str:
    assert "Traceback" not in output, output
    errors = [ln for ln in lines(output) if ln.startswith("Error:")]
    assert len(errors) == 1, output
    return errors[0]


# ------------------------------------------------------------------------------------ links (class 1)
def test_a_label_key_never_appends_through_a_linked_labels_file(tmp_path):
    victim = tmp_path / "bashrc"
    victim.write_text("# the user's shell start-up file\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "labels.jsonl").symlink_to(victim)
    book = LabelBook(run / "labels.jsonl")  # what `minirft watch` opens
    with pytest.raises(MinirftError, match="labels.jsonl: is a symbolic link"):
        book.add({"id": "1/0.0", "kind": "rubric", "prompt": "secret prompt text", "labels": {"a": True}})
    with pytest.raises(MinirftError, match="symbolic link"):
        LabelLog(run / "labels.jsonl").undo("1/0.0")
    assert victim.read_text() == "# the user's shell start-up file\n"


@run_async
async def test_the_watch_ui_says_so_on_screen_and_writes_nothing(tmp_path):
    from minirft.tui.app import WatchApp

    run = tui_copy_run(FINISHED, tmp_path)
    victim = tmp_path / "target.txt"
    victim.write_text("untouched\n")
    (run / "labels.jsonl").symlink_to(victim)
    now = last_time(run) + 5
    app = WatchApp(run, clock=lambda: now, poll_interval=0.02)
    async with app.run_test(size=(150, 46)) as pilot:
        await wait_for(pilot, lambda: app.view_step == 30)
        await pilot.press("plus")  # overall good on the selected sample
        await pilot.pause(0.1)
        notes = [str(n.message) for n in app._notifications]
    assert victim.read_text() == "untouched\n"
    assert any("labels.jsonl: is a symbolic link" in n for n in notes), notes


def test_the_event_log_refuses_a_link(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("x")  # no trailing newline: the partial-line repair would truncate it
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "events.jsonl").symlink_to(victim)
    with pytest.raises(MinirftError, match="events.jsonl: is a symbolic link"):
        EventLog(tmp_path / "run" / "events.jsonl")
    assert victim.read_text() == "x"


@pytest.mark.parametrize("linked", ["events.jsonl", "command.txt", "checkpoints", "recipe.resolved.yaml"])
def test_resume_refuses_a_run_dir_with_a_link_in_it(finished, tmp_path, linked):
    run = copy_run(finished, tmp_path / "run")
    outside = tmp_path / "outside"
    if (run / linked).is_dir():
        import shutil

        shutil.copytree(run / linked, outside)
        shutil.rmtree(run / linked)
    else:
        outside.write_bytes((run / linked).read_bytes())
        (run / linked).unlink()
    (run / linked).symlink_to(outside)
    before = {p: p.stat().st_mtime_ns for p in [outside, *outside.rglob("*")]} if outside.is_dir() else \
        {outside: outside.stat().st_mtime_ns}
    res = invoke("train", "--resume", run, "training.steps=3")
    assert res.exit_code == 1
    assert f"{run / linked}: is a symbolic link" in one_error_line(res.output)
    assert {p: p.stat().st_mtime_ns for p in before} == before  # nothing outside was written


def test_eval_and_report_refuse_to_write_through_links(finished, tmp_path):
    run = copy_run(finished, tmp_path / "run")
    victim = tmp_path / "victim.html"
    victim.write_text("mine\n")
    (run / "report.html").symlink_to(victim)
    res = invoke("report", run)
    assert res.exit_code == 1 and "report.html: is a symbolic link" in one_error_line(res.output)
    (run / "eval.json").symlink_to(victim)
    res = invoke("eval", run)
    assert res.exit_code == 1 and "eval.json: is a symbolic link" in one_error_line(res.output)
    assert victim.read_text() == "mine\n"


def test_guard_rules(tmp_path):
    run = tmp_path / "run"
    (run / "sub").mkdir(parents=True)
    assert rundir.guard(run, run / "sub" / "f") == run / "sub" / "f"
    with pytest.raises(MinirftError, match="not inside the run dir"):
        rundir.guard(run, tmp_path / "elsewhere")
    with pytest.raises(MinirftError, match="not inside the run dir"):
        rundir.guard(run, run / ".." / "x")
    (run / "link").symlink_to(tmp_path)
    with pytest.raises(MinirftError, match="link: is a symbolic link"):
        rundir.guard(run, run / "link" / "deep" / "file")
    linked_run = tmp_path / "runs-link"
    linked_run.symlink_to(run)  # the run dir itself may be a link: the user's choice of place
    assert rundir.guard(linked_run, linked_run / "sub" / "f")


# ------------------------------------------------------------------------------ never twice (class 2)
def test_train_refuses_an_existing_run_dir_and_leaves_it_as_it_was(world, finished, tmp_path):
    run = copy_run(finished, tmp_path / "run")
    before = snapshot(run)
    res = invoke("train", toy_recipe(world, name="again.yaml"), "--run-dir", run)
    assert res.exit_code == 1
    line = one_error_line(res.output)
    assert f"{run}: already exists" in line and "--resume" in line and "--overwrite" in line
    assert snapshot(run) == before


def test_overwrite_replaces_the_old_run_whole(world, finished, tmp_path):
    run = copy_run(finished, tmp_path / "run")
    (run / "stale.txt").write_text("from the old run")
    res = invoke("train", toy_recipe(world, name="again.yaml"), "--run-dir", run, "--overwrite",
                 "training.steps=1", "checkpoint.every=1")
    assert res.exit_code == 0, res.output
    assert not (run / "stale.txt").exists()
    events = read_events(run / "events.jsonl")
    assert [e["type"] for e in events].count("run_start") == 1  # one run, not two appended
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-1"]
    assert (run / "command.txt").read_text().count("\n") == 1
    res = invoke("train", "--resume", run, "--overwrite")
    assert res.exit_code == 2 and "--overwrite" in res.output


def test_an_empty_existing_dir_is_fine_and_a_failed_start_removes_only_what_it_made(world, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = invoke("train", toy_recipe(world, name="empty.yaml"), "--run-dir", empty, "policy.model=/no/such")
    assert res.exit_code == 1
    assert empty.is_dir() and list(empty.iterdir()) == []  # not even the lock file is left
    fresh = tmp_path / "fresh"
    res = invoke("train", toy_recipe(world, name="empty.yaml"), "--run-dir", fresh, "policy.model=/no/such")
    assert res.exit_code == 1 and not fresh.exists()


HOLD = """
import sys, time
from minirft.rundir import RunLock
lock = RunLock(sys.argv[1], "test holder").acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_the_lock_names_its_holder_and_dies_with_it(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True, env=env())
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(MinirftError) as exc:
            rundir.RunLock(run, "second").acquire()
        assert f"in use by pid {holder.pid} (test holder)" in str(exc.value)
        assert "\n" not in str(exc.value)
    finally:
        holder.kill()  # SIGKILL: the kernel drops the flock with the process
        holder.wait()
    lock = rundir.RunLock(run, "third").acquire()
    try:
        assert (run / rundir.LOCK_FILE).read_text() == f"{os.getpid()} third\n"
    finally:
        lock.release()


def start_trainer(args: list, log: Path) -> subprocess.Popen:
    """A real `minirft train` process; its stderr goes to a file (a pipe nobody reads would fill and block it)."""
    with open(log, "w") as fh:
        return subprocess.Popen([sys.executable, "-m", "minirft", "train", *map(str, args)],
                                stdout=subprocess.DEVNULL, stderr=fh, env=env())


def wait_for_steps(proc: subprocess.Popen, run: Path, log: Path, starts: int = 1) -> None:
    """Until the process has logged its own run_start (the ``starts``-th) and a step after it."""
    deadline = time.time() + 120
    while True:
        events = read_events(run / "events.jsonl") if (run / "events.jsonl").exists() else []
        begun = [i for i, e in enumerate(events) if e["type"] == "run_start"]
        if len(begun) >= starts and any(e["type"] == "step" for e in events[begun[starts - 1]:]):
            return
        assert proc.poll() is None, log.read_text()
        assert time.time() < deadline, "the trainer did not start"
        time.sleep(0.1)


def test_two_trainers_on_one_run_dir(world, finished, tmp_path):
    """A real `minirft train` holds the lock for its whole life; a concurrent --resume stops at once."""
    run = copy_run(finished, tmp_path / "run")
    log = tmp_path / "first.log"
    first = start_trainer(["--resume", run, "training.steps=100000", "checkpoint.every=100000"], log)
    try:
        wait_for_steps(first, run, log, starts=2)
        second = subprocess.run([sys.executable, "-m", "minirft", "train", "--resume", str(run), "training.steps=400"],
                                capture_output=True, text=True, env=env(), timeout=120)
        assert second.returncode == 1
        line = one_error_line(second.stderr)
        assert f"in use by pid {first.pid} (minirft train)" in line
    finally:
        first.send_signal(signal.SIGTERM)  # the TUI's "stop training": run_end stopped, exit 130
        first.wait(timeout=60)
    assert first.returncode == 130, log.read_text()
    events = read_events(run / "events.jsonl")
    assert [e["type"] for e in events].count("run_start") == 2  # the finished run's and the first trainer's only
    steps = [e["step"] for e in events if e["type"] == "step" and e["step"] > 2]
    assert steps and len(steps) == len(set(steps))  # no step logged twice


def test_stopped_before_the_first_checkpoint_does_not_offer_resume(world, tmp_path):
    run, log = tmp_path / "run", tmp_path / "train.log"
    proc = start_trainer([toy_recipe(world, name="stop.yaml"), "--run-dir", run, "training.steps=100000",
                          "checkpoint.every=100000"], log)
    try:
        wait_for_steps(proc, run, log)
        proc.send_signal(signal.SIGTERM)  # (not SIGINT: a background job may inherit it ignored)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    err = log.read_text()
    assert proc.returncode == 130, err
    assert "continue with: minirft train --resume" not in err
    assert "no checkpoint was saved yet" in err and f"--resume {run} --from-scratch" in err, err
    end = read_events(run / "events.jsonl")[-1]
    assert end["status"] == "stopped" and "no checkpoint was saved yet" in end["message"]


def test_resume_hint_only_offers_what_exists(tmp_path):
    from minirft.train.loop import resume_hint

    assert "--from-scratch" in resume_hint(tmp_path) and "no checkpoint" in resume_hint(tmp_path)
    (tmp_path / "checkpoints" / "step-2").mkdir(parents=True)
    (tmp_path / "checkpoints" / "step-2" / "state.json").write_text("{}")
    assert resume_hint(tmp_path) == f"continue with: minirft train --resume {tmp_path}"


# --------------------------------------------------------------------------------- output files: --force
def test_export_refuses_an_existing_file_in_every_format_unless_force(finished, tmp_path):
    for fmt, name in (("lora-gguf", "a.gguf"), ("gguf", "m.gguf"), ("merged", "merged")):
        out = tmp_path / name
        if fmt == "merged":
            out.mkdir()
            (out / "keep.txt").write_text("mine")
        else:
            out.write_text("mine")
        res = invoke("export", finished, "--format", fmt, "--out", out)
        assert res.exit_code == 1, res.output
        assert f"{out}: the {'folder' if fmt == 'merged' else 'file'} already exists; give --force" \
            in one_error_line(res.output)
    res = invoke("export", finished, "--format", "lora-gguf", "--out", tmp_path / "a.gguf", "--force")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "a.gguf").read_bytes()[:4] == b"GGUF"


def test_judge_output_refuses_an_existing_file_unless_force(world, tmp_path):
    recipe = toy_recipe(world, with_judge=True, name="judgeout.yaml")
    rows = tmp_path / "in.jsonl"
    rows.write_text(json.dumps({"prompt": "Hi", "response": "Hello"}) + "\n")
    out = tmp_path / "out.jsonl"
    out.write_text("precious\n")
    res = invoke("judge", recipe, "--input", rows, "--output", out)
    assert res.exit_code == 1 and "out.jsonl: the file already exists; give --force" in one_error_line(res.output)
    assert out.read_text() == "precious\n"
    res = invoke("judge", recipe, "--input", rows, "--output", out, "--force")
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["response"] == "Hello"


FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG, like a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
from minirft.cli import main
sys.argv = ["minirft", *sys.argv[1:]]
main()
"""


def test_a_write_that_fails_is_one_line_and_leaves_no_partial_file(finished, tmp_path):
    out = tmp_path / "big.gguf"  # 4096 bytes in: where gguf's own writer stops without an error
    res = subprocess.run([sys.executable, "-c", FULL_DISK, "export", str(finished), "--format", "lora-gguf",
                          "--out", str(out)], capture_output=True, text=True, env=env(), timeout=300)
    assert res.returncode == 1, res.stderr
    line = one_error_line(res.stderr)
    assert str(out) in line and "could not write the export" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither the file nor a .partial


def test_a_full_disk_during_a_checkpoint_is_one_line(world, tmp_path):
    run = tmp_path / "run"
    script = FULL_DISK.replace("4096, 4096", "32768, 32768")  # the log fits; the optimizer state (56 kB) does not
    recipe = toy_recipe(world, name="fulldisk.yaml")
    res = subprocess.run([sys.executable, "-c", script, "train", str(recipe), "--run-dir", str(run)],
                         capture_output=True, text=True, env=env(), timeout=300, cwd=world)
    assert res.returncode == 1, res.stderr
    line = one_error_line(res.stderr)
    assert f"{run / 'checkpoints' / 'step-2'}: could not write the checkpoint" in line
    assert list((run / "checkpoints").iterdir()) == []  # no half-written checkpoint (nor its temp dir)
    end = read_events(run / "events.jsonl")[-1]
    assert end["type"] == "run_end" and end["status"] == "failed" and "could not write" in end["message"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_run_dir_is_one_error_line(finished, tmp_path):
    run = copy_run(finished, tmp_path / "run")
    os.chmod(run, 0o555)
    try:
        res = invoke("train", "--resume", run, "training.steps=3")
        assert res.exit_code == 1 and "cannot write in the run dir" in one_error_line(res.output)
        res = invoke("export", run, "--format", "lora-gguf", "--out", run / "x.gguf")
        assert res.exit_code == 1 and "not writable" in one_error_line(res.output)
    finally:
        os.chmod(run, 0o755)


def test_resume_with_another_lora_rank_is_one_line(finished, tmp_path):
    run = copy_run(finished, tmp_path / "run")
    res = invoke("train", "--resume", run, "training.steps=3", "policy.lora.r=8")
    assert res.exit_code == 1
    line = one_error_line(res.output)
    assert "checkpoint does not fit" in line and "size mismatch" in line
    assert len(lines(res.output)) <= 3, res.output
