"""Pilot tests of labelling in the watch UI and `minirft label`: keys pressed on fixture run dirs,
checked against the labels file they write (and read back by `minirft calibrate`)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from minirft import labels as lbl
from minirft.cli import cli
from minirft.tui.app import WatchApp
from minirft.tui.label_file import labels_path_for, make_label_app
from minirft.tui.screens.detail import SampleScreen
from minirft.tui.screens.pair import PairScreen
from minirft.tui.widgets.events import EventsPane
from minirft.tui.widgets.samples import SamplesTable
from tui_fixtures import FINISHED, copy_run, last_time, run_async, screen_text, wait_for

SIZE = (150, 46)


def _app(run_dir, **kw) -> WatchApp:
    now = last_time(run_dir) + 5
    return WatchApp(run_dir, clock=lambda: now, poll_interval=0.02, **kw)


def _rows(path):
    return [json.loads(ln) for ln in path.read_text().splitlines()]


def _you(table: SamplesTable) -> list[str]:
    col = [c.key.value for c in table.ordered_columns].index("you")
    return [str(getattr(table.get_row_at(i)[col], "plain", "")) for i in range(table.row_count)]


@run_async
async def test_rubric_keys_write_verdicts_mark_rows_and_undo(tmp_path):
    run = copy_run(FINISHED, tmp_path)
    path = run / "labels.jsonl"
    app = _app(run)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.view_step == 30)
        table = app.query_one(SamplesTable)
        assert "you" not in [c.key.value for c in table.ordered_columns]  # no labels: the table as always
        first, second = table.shown[0], table.shown[1]
        await pilot.press("1", "2", "2", "plus")  # polite pass, answers_question pass → fail, overall good
        await pilot.press("down", "minus")  # second row: overall bad
        await pilot.press("enter", "3")  # in the detail screen: concise pass
        assert isinstance(app.screen, SampleScreen) and "✎ you: concise pass · overall bad" in screen_text(app)
        await pilot.press("escape")
        rows = _rows(path)
        assert len(rows) == 6  # one appended line per key
        standing = lbl.standing_rows(rows)
        assert [(r["id"], r["labels"], r["overall"]) for r in standing] == [
            ("30/0.0", {"polite": True, "answers_question": False}, True),
            ("30/0.1", {"concise": True}, False)]
        s0 = standing[0]
        assert s0["step"] == 30 and s0["prompt"] == first.prompt and s0["response"] == first.completion
        assert s0["judge"] == {"reward": first.reward, "judge": first.rewards["judge"], "criteria": first.criteria}
        assert _you(table)[:3] == ["✓✗· +", "··✓ −", ""]
        assert table.get_row_at(0)[0].plain.endswith("✎") and not table.get_row_at(2)[0].plain.endswith("✎")
        # the panel: polite 1 (judge 0.93 → pass: agrees), answers_q (0.78 → pass: disagrees), concise (0.94: agrees),
        # overall: first 0.79 good (agrees), second 0.87 vs bad (disagrees) → all 5, 3/5
        text = screen_text(app)
        assert "2 labels in labels.jsonl" in text
        assert f"{'all':<8}{5:>3} 0.60" in text and f"{'overall':<8}{2:>3} 0.50" in text
        await pilot.press("z")  # undo the last line: the concise pass on 30/0.1
        assert _rows(path)[-1]["undo"] == "30/0.1"
        assert _you(table)[:2] == ["✓✗· +", "··· −"]
        await pilot.press("z")  # and the overall bad: 30/0.1 is unlabelled again
        assert _you(table)[:2] == ["✓✗· +", ""] and not table.get_row_at(1)[0].plain.endswith("✎")
        before = len(_rows(path))
    assert path.read_text().count("\n") == before  # quitting writes nothing more
    # a fresh app reads the same standing verdicts back
    app2 = _app(run)
    async with app2.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app2.view_step == 30)
        assert _you(app2.query_one(SamplesTable))[:2] == ["✓✗· +", ""]


@run_async
async def test_queue_key_goes_to_the_most_useful_unlabelled_sample(tmp_path):
    run = copy_run(FINISHED, tmp_path)
    app = _app(run)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.view_step == 30)
        pool = [s for step in app.state.steps() for s in app.state.samples_for(step)]
        seen = []
        for _ in range(3):
            item = lbl.label_queue(pool, app.labels.labelled_samples())[0]
            await pilot.press("u")
            table = app.query_one(SamplesTable)
            s = table.shown[table.cursor_row]
            assert (s.step, s.group, s.index) == (item.sample.step, item.sample.group, item.sample.index)
            assert app.view_step == s.step and app.follow is False
            seen.append(s)
            await pilot.press("plus")  # labelled: the next `u` moves on
        assert len({(s.step, s.group, s.index) for s in seen}) == 3
        notes = [n.message for n in app._notifications]
        assert any(item.reason in m and "more queued" in m for m in notes)


@run_async
async def test_drift_warning_in_the_events_pane(tmp_path):
    run = copy_run(FINISHED, tmp_path)
    app = _app(run, drift_window=3, drift_threshold=0.7)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.view_step == 30)
        # every criterion of row 0 has P > 0.5: failing all three disagrees with the judge 3 times of 3
        await pilot.press("1", "1", "2", "2", "3", "3")
        drift = [e for e in app.query_one(EventsPane).records if e["kind"] == "drift"]
        # the window fills at the first "3": polite fail, answers fail (disagree), concise pass (agrees): 1 of 3
        assert len(drift) == 1 and "only 33% of your last 3 verdicts" in drift[0]["message"]
        assert "drift judge agrees with you" in screen_text(app)


@run_async
async def test_pair_view_records_which_completion_is_better(tmp_path):
    run = copy_run(FINISHED, tmp_path)
    lines = (run / "events.jsonl").read_text().splitlines()
    start = json.loads(lines[0])
    start["recipe"]["judge"]["mode"] = "preference"
    (run / "events.jsonl").write_text("\n".join([json.dumps(start)] + lines[1:]) + "\n")
    app = _app(run)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.view_step == 30)
        await pilot.press("1")  # rubric keys do nothing in a preference run
        assert not (run / "labels.jsonl").exists()
        await pilot.press("c")
        assert isinstance(app.screen, PairScreen)
        a, b = app.screen.a, app.screen.b
        assert (a.group, a.index, b.group, b.index) == (0, 0, 0, 1)
        text = screen_text(app)
        assert a.completion[:40] in text and "not labelled yet" in text
        await pilot.press("b")
        assert "✎ you: B is better" in screen_text(app)
        await pilot.press("a", "z")  # replaced, then undone: B stands again
        assert "✎ you: B is better" in screen_text(app)
        await pilot.press("escape")
        standing = lbl.standing_rows(_rows(run / "labels.jsonl"))
        assert len(standing) == 1
        row = standing[0]
        assert row["kind"] == "preference" and row["human"] == "b" and row["id"] == "30/0:0v1"
        assert row["chosen"] == b.completion and row["rejected"] == a.completion
        # the judge gave B (0.912) more than A (0.856): it agrees
        assert lbl.agreement(standing)["preference"].accuracy == 1.0
        assert _you(app.query_one(SamplesTable))[:2] == ["pair", "pair"]


# ------------------------------------------------------------------------------- minirft label
@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    """A recipe with the tiny GGUF judge and `minirft judge` output for four rows (real llama.cpp)."""
    from judge_fixtures import write_tiny_gguf

    d = tmp_path_factory.mktemp("label")
    model = write_tiny_gguf(d / "tiny.gguf")
    (d / "data.jsonl").write_text('{"prompt": "hi"}\n')
    (d / "r.yaml").write_text(
        "name: r\njudge:\n  model: " + str(model) + "\n  n_threads: 1\n  n_ctx: 1024\n  deterministic: true\n"
        "  criteria:\n    - {name: answers, question: \"Does it answer?\"}\n"
        "    - {name: polite, question: \"Is it polite?\"}\ndata:\n  path: data.jsonl\n")
    (d / "pref.yaml").write_text(
        "name: p\njudge:\n  model: " + str(model) + "\n  n_threads: 1\n  n_ctx: 1024\n  deterministic: true\n"
        "  mode: preference\ndata:\n  path: data.jsonl\n")
    pairs = [{"prompt": "What is 2+2?", "response_a": "4", "response_b": "five"},
             {"prompt": "Say hi", "response_a": "Go away", "response_b": "Hello!"}]
    (d / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    res = CliRunner().invoke(cli, ["judge", str(d / "pref.yaml"), "--input", str(d / "pairs.jsonl"),
                                   "--output", str(d / "pairs-scored.jsonl")])
    assert res.exit_code == 0, res.output
    rows = [{"prompt": "What is 2+2?", "response": "4"}, {"prompt": "What is 2+2?", "response": "five"},
            {"messages": [{"role": "user", "content": "Say hi"}], "response": "Hello!"},
            {"prompt": "Say hi", "response": "Go away"}]
    (d / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = CliRunner().invoke(cli, ["judge", str(d / "r.yaml"), "--input", str(d / "in.jsonl"),
                                   "--output", str(d / "scored.jsonl")])
    assert res.exit_code == 0, res.output
    return d


@run_async
async def test_minirft_label_round_trips_into_minirft_calibrate(judged, tmp_path):
    import shutil

    scored = tmp_path / "scored.jsonl"
    shutil.copy(judged / "scored.jsonl", scored)
    judge_rows = _rows(scored)
    app = make_label_app(scored, poll_interval=0.02)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.view_step == 1 and app.query_one(SamplesTable).row_count == 4)
        table = app.query_one(SamplesTable)
        assert [s.group for s in table.shown] == [1, 2, 3, 4]  # g.i is the file's line
        assert [s.criteria for s in table.shown] == [r["criteria"] for r in judge_rows]
        await pilot.press("1", "2", "2")  # line 1: answers pass, polite fail
        await pilot.press("down", "1", "1", "plus")  # line 2: answers fail, overall good
        await pilot.press("down", "2")  # line 3 (a chat row): polite pass
        await pilot.press("down", "plus")  # line 4: overall only (nothing to calibrate)
        await pilot.press("down")
        await pilot.press("1", "z")  # (still line 4) a criterion, undone
    out = labels_path_for(scored)
    assert out.name == "scored.labels.jsonl"
    standing = lbl.standing_rows(_rows(out))
    assert [r["id"] for r in standing] == ["1/1.0", "1/2.0", "1/3.0", "1/4.0"]
    assert standing[2]["messages"] == [{"role": "user", "content": "Say hi"}] and "prompt" not in standing[2]

    res = CliRunner().invoke(cli, ["calibrate", str(judged / "r.yaml"), str(out), "--json", "--fit"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["n"] == 3  # line 4 had only an overall verdict
    crit = report["criteria"]
    assert crit["answers"]["n"] == 2 and crit["polite"]["n"] == 2
    # calibrate re-judged the labelled texts with the same (deterministic) judge: the same P(yes) as the file
    p = {k: [r["criteria"][k] for r in judge_rows] for k in ("answers", "polite")}
    assert crit["answers"]["mean_p_positive"] == pytest.approx(p["answers"][0], abs=1e-6)
    assert crit["answers"]["mean_p_negative"] == pytest.approx(p["answers"][1], abs=1e-6)
    assert crit["polite"]["mean_p_positive"] == pytest.approx(p["polite"][2], abs=1e-6)
    assert crit["polite"]["mean_p_negative"] == pytest.approx(p["polite"][0], abs=1e-6)
    saved = json.loads((judged / "r.calibration.json").read_text())
    assert set(saved["platt"]) == {"answers", "polite"} and saved["n"] == 3


def test_calibrate_from_run_fits_the_file_the_running_trainer_follows(judged, tmp_path):
    """--from-run: labels from RUN_DIR/labels.jsonl, the run's recipe, the fit to RUN_DIR/calibration.json."""
    from minirft.recipe import dump_recipe, load_recipe
    from minirft.train.calibration_watch import RUN_CALIBRATION

    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.resolved.yaml").write_text(dump_recipe(load_recipe(judged / "r.yaml")))
    log = lbl.LabelLog(run / "labels.jsonl")
    for i, (text, ok) in enumerate([("4", True), ("five", False), ("Hello", True)]):
        log.append({"id": f"1/{i}.0", "kind": "rubric", "step": 1, "group": i, "index": 0, "prompt": "What is 2+2?",
                    "response": text, "judge": {}, "labels": {"answers": ok}, "overall": None})
    log.undo("1/2.0")
    res = CliRunner().invoke(cli, ["calibrate", "--from-run", str(run), "--fit", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["n"] == 2
    saved = json.loads((run / RUN_CALIBRATION).read_text())
    assert saved["fitted_on"] == str(run / "labels.jsonl") and set(saved["platt"]) == {"answers"}
    assert "the run's trainer uses it from its next step" in res.stderr
    res = CliRunner().invoke(cli, ["calibrate", "--from-run", str(tmp_path / "nope")])
    assert res.exit_code == 1 and "not a run dir" in res.output


@run_async
async def test_minirft_label_shows_preference_rows_as_pairs_for_calibrate(judged, tmp_path):
    import shutil

    scored = tmp_path / "pairs-scored.jsonl"
    shutil.copy(judged / "pairs-scored.jsonl", scored)
    judge_rows = _rows(scored)
    app = make_label_app(scored, poll_interval=0.02)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.query_one(SamplesTable).row_count == 4)
        await pilot.press("c")
        assert isinstance(app.screen, PairScreen)
        assert (app.screen.a.completion, app.screen.b.completion) == ("4", "five")
        assert app.screen.a.reward == pytest.approx(judge_rows[0]["p_a"])
        await pilot.press("a", "escape", "down", "down", "c", "b", "escape")  # line 2: "Hello!" (B) is better
    standing = lbl.standing_rows(_rows(labels_path_for(scored)))
    assert [(r["chosen"], r["rejected"]) for r in standing] == [("4", "five"), ("Hello!", "Go away")]
    res = CliRunner().invoke(cli, ["calibrate", str(judged / "pref.yaml"), str(labels_path_for(scored)), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["n"] == 2


def test_minirft_label_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q", "response": "r", "reward": 0.5, "criteria": {}}\n{"prompt": "q"}\n')
    res = CliRunner().invoke(cli, ["label", str(bad)])
    assert res.exit_code == 1 and res.output.strip() == (f"Error: {bad}:2: not a `minirft judge` output row "
                                                         "(needs `response`, or `response_a` and `response_b`)")
    res = CliRunner().invoke(cli, ["label", str(tmp_path / "missing.jsonl")])
    assert res.exit_code == 1 and "no such file" in res.output
    bad.write_text('{"prompt": "q", "response": "r", "reward": 0.5, "criteria": {}}\n')
    res = CliRunner().invoke(cli, ["label", str(bad)])  # CliRunner's stdout is no terminal
    assert res.exit_code == 1 and "needs a terminal" in res.output
    assert "minirft label scored.jsonl" in CliRunner().invoke(cli, ["label", "--help"]).output
