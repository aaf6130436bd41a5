"""Hostile and damaged inputs: foreign log records, alias bombs, catastrophic regexes, huge or deeply nested
data, numbers the schema must refuse, user code that fails, and the judge service's trust boundary.
Real files, real processes and a real server on 127.0.0.1; every bad input is one `Error:` line."""

from __future__ import annotations

import http.client
import http.server
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from fault_fixtures import env, invoke, lines, make_world, toy_recipe

from minirft.data import MAX_PROMPT_CHARS, load_prompts, parse_row
from minirft.errors import MinirftError
from minirft.events import EventReader, check_record, read_events
from minirft.labels import LabelBook
from minirft.recipe import load_recipe
from minirft.rewards import REGEX_TIMEOUT_S, build_rewards, call_reward
from minirft.recipe import RegexReward, ExactMatchReward, PythonReward


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return make_world(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def finished(world, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    res = invoke("train", toy_recipe(world, name="finished.yaml"), "--run-dir", run)
    assert res.exit_code == 0, res.output
    return run


def one_error_line(output: str) -> str:
    assert "Traceback" not in output, output
    errors = [ln for ln in lines(output) if ln.startswith("Error:")]
    assert len(errors) == 1, output
    return errors[0]


# ------------------------------------------------------------------- class 3: foreign and damaged logs
FOREIGN = [
    {"type": "step", "time": 1.0, "step": 3, "metrics": {"reward": "high"}},  # a string where a number belongs
    {"type": "step", "time": 1.0, "step": float("inf"), "metrics": {"reward": 0.5}},  # step: 1e999999
    {"type": "step", "time": 1.0, "step": 4, "metrics": ["reward", 0.5]},
    {"type": "step", "time": "noon", "step": 5, "metrics": {}},
    {"type": "sample", "time": 1.0, "step": 2, "group": "a", "index": 0, "completion": "x"},
    {"type": "sample", "time": 1.0, "step": 2, "group": 0, "index": 0, "completion": 7},
    {"type": "sample", "time": 1.0, "step": 2, "group": 0, "index": 1, "completion": "x", "criteria": [1]},
    {"type": "sample", "time": 1.0, "step": 2, "group": 0, "index": 2, "completion": "x", "rewards": {"a": "1"}},
    {"type": "event", "time": 1.0, "step": 2, "kind": ["warning"], "message": "x"},
    {"type": "run_start", "time": 1.0, "step": 0, "total_steps": "many"},
    {"type": "run_start", "time": 1.0, "step": 0, "recipe": {"judge": "gemma"}},
    {"type": "run_end", "time": 1.0, "step": 2, "status": 1},
    {"type": "party", "time": 1.0, "step": 2},
    {"time": 1.0, "step": 2},
    [1, 2, 3],
    "just a string",
]


def damage(run: Path) -> int:
    """Insert each FOREIGN record (as written by another tool) after the log's second line."""
    rows = (run / "events.jsonl").read_text().splitlines()
    bad = [json.dumps(r).replace("Infinity", "1e999999") for r in FOREIGN]
    bad.append('{"type": "step", "step": 6, "metrics": ' + "[" * 100_000 + "]" * 100_000 + "}")  # deep
    (run / "events.jsonl").write_text("\n".join(rows[:2] + bad + rows[2:]) + "\n")
    return len(bad)


def test_every_foreign_record_is_refused_by_the_one_check():
    for rec in FOREIGN:
        parsed = json.loads(json.dumps(rec).replace("Infinity", "1e999999"))
        assert check_record(parsed) is not None, rec
    good = {"type": "step", "time": 1.0, "step": 1, "metrics": {"reward": 0.5, "kl": float("inf"),
                                                                 "calibration": "abc123", "loss": None}}
    assert check_record(good) is None and good["metrics"]["kl"] is None  # inf becomes null


def test_watch_report_and_track_skip_and_count_foreign_records(finished, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    n = damage(run)
    reader = EventReader(run / "events.jsonl")
    good = reader.read_new()
    assert len(reader.skipped) == n and reader.skipped == list(range(3, 3 + n))
    assert [r["type"] for r in good].count("step") == 2
    res = invoke("watch", run, "--plain")
    assert res.exit_code == 0 and "Traceback" not in res.output, res.output
    assert f"# skipped {n} unreadable line(s)" in res.output
    res = invoke("report", run, "--out", tmp_path / "r.html")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r.html").read_text().count("<h2>") >= 2


def test_the_tui_shows_a_damaged_log(finished, tmp_path):
    import asyncio
    import shutil

    from tui_fixtures import wait_for

    from minirft.tui.app import WatchApp

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    n = damage(run)
    (run / "labels.jsonl").write_text('{"id": 5, "kind": "rubric", "labels": "yes"}\n{"undo": [1]}\n'
                                      '{"id": "2/0.0", "kind": "preference", "step": 2}\n[]\n')

    async def go():
        app = WatchApp(run, clock=lambda: 1e10, poll_interval=0.02)
        async with app.run_test(size=(150, 46)) as pilot:
            await wait_for(pilot, lambda: app.view_step == 2)
            await pilot.press("plus", "z", "down", "minus")  # label keys still work next to the bad lines
            await pilot.pause(0.1)
            return app.labels.skipped, len(app.labels), [str(e.get("message")) for e in app.state.events]

    skipped, standing, _ = asyncio.run(go())
    assert skipped == [1, 2, 3, 4] and standing == 1


def test_label_refuses_a_wrong_shape_judged_file_by_line(tmp_path):
    from minirft.tui.label_file import records_from_judged

    f = tmp_path / "scored.jsonl"
    f.write_text(json.dumps({"prompt": "Hi", "response": "Hello", "reward": 0.5}) + "\n"
                 + json.dumps({"prompt": "Hi", "response": "Yo", "reward": "high"}) + "\n")
    with pytest.raises(MinirftError, match=r"scored.jsonl:2: reward must be a number"):
        records_from_judged(f)
    f.write_text(json.dumps({"prompt": "Hi", "response": ["Hello"]}) + "\n")
    with pytest.raises(MinirftError, match=r"scored.jsonl:1: response must be text"):
        records_from_judged(f)
    f.write_text(json.dumps({"prompt": "Hi", "response": "x", "criteria": [0.5]}) + "\n")
    with pytest.raises(MinirftError, match=r"scored.jsonl:1: criteria must be an object"):
        records_from_judged(f)


def test_label_book_skips_wrong_shape_lines(tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_text('{"id": "1/0.0", "kind": "rubric", "labels": {"a": true}, "overall": null}\n'
                    '{"id": "1/0.1", "kind": "rubric", "labels": {"a": "yes"}}\n'
                    '{"id": "1/0:0v1", "kind": "preference", "step": 1, "group": 0, "a": "x", "b": 1, "human": "a"}\n'
                    '{"id": "1/0.2", "overall": 3}\n{"undo": {"id": 1}}\n' + "[" * 50_000 + "\n")
    book = LabelBook(path)
    assert book.skipped == [2, 3, 4, 5, 6] and len(book) == 1
    assert book.labelled_samples() == {"1/0.0"}


def test_track_survives_a_foreign_trackers_state_and_log(finished, tmp_path):
    pytest.importorskip("tensorboard")
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    damage(run)
    (run / "trackers.json").write_text('["not", "a", "dict"]')
    res = invoke("track", run, "--report-to", "tensorboard")
    assert res.exit_code == 0 and "Traceback" not in res.output, res.output


# --------------------------------------------------------------------------- class 4: bounded work
def _recipe(tmp_path: Path, text: str) -> Path:
    (tmp_path / "p.jsonl").write_text('{"prompt": "x"}\n')
    path = tmp_path / "r.yaml"
    path.write_text("name: r\ndata: {path: p.jsonl}\nrewards: [{type: length}]\n" + text)
    return path


def alias_bomb(levels: int) -> str:
    out = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        out.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "description:\n  " + "\n  ".join(out) + "\n"


@pytest.mark.parametrize("levels", [6, 9])
def test_an_alias_bomb_is_refused_without_expanding_it(tmp_path, levels):
    path = _recipe(tmp_path, alias_bomb(levels))
    assert path.stat().st_size < 1200
    res = invoke("recipes", "validate", path)
    assert res.exit_code == 1
    assert "more than 100,000 values once its aliases" in one_error_line(res.output)


def test_a_few_aliases_are_fine(tmp_path):
    path = _recipe(tmp_path, "generation: &g {group_size: 2}\n")
    assert load_recipe(path).generation.group_size == 2


def test_a_catastrophic_regex_reward_stops_with_its_name():
    fns = build_rewards([RegexReward(type="regex", name="greedy", pattern=r"^(a|aa)+$")])
    with pytest.raises(MinirftError) as exc:
        call_reward(fns[0], ["p"], ["a" * 60 + "!"], {})
    assert "regex reward 'greedy'" in str(exc.value) and f"more than {REGEX_TIMEOUT_S:g} s" in str(exc.value)
    fns = build_rewards([ExactMatchReward(type="exact_match", name="em", extract=r"((x|x)+y)")])
    with pytest.raises(MinirftError, match="exact_match reward 'em': extract"):
        call_reward(fns[0], ["p"], ["x" * 60], {"reference": ["1"]})
    fns = build_rewards([RegexReward(type="regex", name="ok", pattern=r"please|thanks")])
    assert call_reward(fns[0], ["p", "p"], ["thanks!", "no"], {}) == [1.0, 0.0]


def test_a_huge_prompt_is_refused_by_line(tmp_path):
    f = tmp_path / "big.jsonl"
    f.write_text('{"prompt": "ok"}\n' + json.dumps({"prompt": "x" * (MAX_PROMPT_CHARS + 1)}) + "\n")
    with pytest.raises(MinirftError, match=r"big.jsonl:2: the prompt is 1,000,001 characters; the limit is"):
        load_prompts(f)
    assert parse_row({"prompt": "x" * MAX_PROMPT_CHARS}, "w").prompt  # the limit itself is fine
    c = tmp_path / "big.csv"
    c.write_text("prompt\nok\n" + "y" * (4 * MAX_PROMPT_CHARS + 1) + "\n")
    with pytest.raises(MinirftError, match=r"big.csv:3: not a readable CSV row \(field larger than field limit"):
        load_prompts(c)


def test_sample_records_keep_only_a_long_prompts_end():
    from minirft.train.metrics import LOG_PROMPT_CHARS, log_text

    text = "start " + "y" * (LOG_PROMPT_CHARS + 10) + " the question?"
    logged = log_text(text)
    assert logged.startswith("[…] ") and logged.endswith(" the question?") and len(logged) == LOG_PROMPT_CHARS + 4


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
def test_deeply_nested_json_data_is_an_error_naming_the_file(tmp_path, fmt):
    deep = "[" * 200_000 + "]" * 200_000
    f = tmp_path / f"d.{fmt}"
    if fmt == "jsonl":
        f.write_text('{"prompt": "ok"}\n{"prompt": "x", "extra": ' + deep + "}\n")
        match = r"d.jsonl:2: the JSON nests too deeply"
    elif fmt == "json":
        f.write_text('[{"prompt": "x", "extra": ' + deep + "}]")
        match = r"d.json: the JSON nests too deeply"
    else:
        f.write_text('messages\n"' + deep + '"\n')
        match = r"d.csv:2: `messages` must be a JSON list"
    with pytest.raises(MinirftError, match=match):
        load_prompts(f)


def test_a_prompt_past_the_policys_context_is_said(world, tmp_path):
    data = tmp_path / "long.jsonl"
    data.write_text(json.dumps({"prompt": "word " * 200}) + "\n")  # ~1000 byte tokens, context 512
    recipe = toy_recipe(world, name="ctx.yaml", data={"path": str(data)}, training={"steps": 1},
                        policy={"max_prompt_tokens": 1000})
    run = tmp_path / "run"
    res = invoke("train", recipe, "--run-dir", run)
    assert res.exit_code == 0, res.output
    warnings = [ln for ln in lines(res.output) if "warning [limit]" in ln and "context of 512 tokens" in ln]
    assert len(warnings) == 1, res.output


# ---------------------------------------------------------------- class 5: numbers the schema refuses
@pytest.mark.parametrize("override,key", [
    ("training.lr=.inf", "training.lr"), ("training.lr=.nan", "training.lr"),
    ("generation.temperature=.inf", "generation.temperature"), ("policy.lora.alpha=.nan", "policy.lora.alpha"),
    ("training.beta=.inf", "training.beta"), ("judge_weight=.inf", "judge_weight"),
    ("rewards.0.weight=.nan", "rewards.0.weight"),
])
def test_non_finite_numbers_are_refused(tmp_path, override, key):
    res = invoke("recipes", "validate", _recipe(tmp_path, ""), override)
    assert res.exit_code == 1
    line = one_error_line(res.output)
    assert key in line and "finite number" in line


@pytest.mark.parametrize("seed", [-1, 2**32, 10**30])
def test_seeds_outside_32_bits_are_refused_with_their_line(tmp_path, seed):
    path = _recipe(tmp_path, f"training:\n  seed: {seed}\n")
    res = invoke("recipes", "validate", path)
    assert res.exit_code == 1
    assert f"{path}:5: training.seed" in one_error_line(res.output)
    assert load_recipe(_recipe(tmp_path, f"training:\n  seed: {2**32 - 1}\n")).training.seed == 2**32 - 1


def test_min_chars_above_max_chars_is_refused(tmp_path):
    path = tmp_path / "r.yaml"
    (tmp_path / "p.jsonl").write_text('{"prompt": "x"}\n')
    path.write_text("name: r\ndata: {path: p.jsonl}\nrewards:\n  - type: length\n    min_chars: 50\n"
                    "    max_chars: 10\n")
    res = invoke("recipes", "validate", path)
    assert res.exit_code == 1
    assert f"{path}:4: rewards.0: min_chars (50) is larger than max_chars (10)" in one_error_line(res.output)


def test_a_duplicate_key_names_both_lines(tmp_path):
    path = _recipe(tmp_path, "training:\n  steps: 3\njudge_weight: 1\ntraining:\n  lr: 0.001\n")
    res = invoke("recipes", "validate", path)
    assert res.exit_code == 1
    assert f"{path}:7: key 'training' is given twice in one section (first on line 4)" in one_error_line(res.output)


# ------------------------------------------------------------------- class 6: errors naming the culprit
def raises_reward(prompts, completions, **_):
    return {}["missing"]


def wrong_type_reward(prompts, completions, **_):
    return ["good" for _ in completions]


def wrong_shape_reward(prompts, completions, **_):
    return 0.5


@pytest.mark.parametrize("fn,expect", [
    ("raises_reward", "reward 'boom' (rewards.0 (test_hostile_inputs:raises_reward)) raised KeyError: 'missing' at "),
    ("wrong_type_reward", "reward 'boom' (rewards.0 (test_hostile_inputs:wrong_type_reward)) returned str 'good'"),
    ("wrong_shape_reward", "returned float; expected a list of 2 numbers"),
])
def test_a_python_reward_that_fails_is_named(fn, expect):
    fns = build_rewards([PythonReward(type="python", name="boom", function=f"test_hostile_inputs:{fn}")])
    with pytest.raises(MinirftError) as exc:
        call_reward(fns[0], ["p", "p"], ["a", "b"], {})
    assert expect in str(exc.value)


def test_a_failing_python_reward_ends_the_run_with_one_line(world, tmp_path):
    recipe = toy_recipe(world, name="boom.yaml", rewards=[{"type": "python", "name": "boom",
                                                           "function": "test_hostile_inputs:raises_reward"}])
    res = invoke("train", recipe, "--run-dir", tmp_path / "run")
    assert res.exit_code == 1
    assert "reward 'boom'" in one_error_line(res.output) and "raised KeyError" in res.output
    end = [e for e in read_events(tmp_path / "run" / "events.jsonl") if e["type"] == "run_end"]
    assert end[0]["status"] == "failed" and "reward 'boom'" in end[0]["message"]


def test_excel_csv_with_a_bom_and_a_cp1252_file(tmp_path):
    f = tmp_path / "excel.csv"
    f.write_bytes("\ufeffprompt,reference\nSay hi,hi\n".encode("utf-8"))
    assert load_prompts(f)[0].prompt == "Say hi"
    f.write_bytes("prompt\nCaf\xe9 au lait?\n".encode("cp1252"))
    with pytest.raises(MinirftError, match=r"excel.csv:2: not valid UTF-8 \(byte 0xe9 at column 4\).*CSV UTF-8"):
        load_prompts(f)
    j = tmp_path / "bom.jsonl"
    j.write_bytes("\ufeff".encode() + b'{"prompt": "x"}\n')
    assert load_prompts(j)[0].prompt == "x"
    j = tmp_path / "bom.json"
    j.write_bytes("\ufeff".encode() + b'[{"prompt": "x"}]')
    assert load_prompts(j)[0].prompt == "x"
    j.write_bytes(b'[{"prompt": "caf\xe9"}]')
    with pytest.raises(MinirftError, match=r"bom.json:1: not valid UTF-8"):
        load_prompts(j)


class _Refuses(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"error": {"message": "Invalid API key"}}'
        self.send_response(401)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def test_an_http_judge_answering_401_stops_instead_of_training_without_it(tiny_gguf):
    from minirft.judge import build_judge
    from minirft.recipe import JudgeConfig

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refuses)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cfg = JudgeConfig(model=tiny_gguf, backend="http", prompt_format="plain", retries=2,
                          http={"url": f"http://127.0.0.1:{server.server_port}/v1", "backoff_s": 0.01},
                          criteria=[{"name": "polite", "question": "Is it polite?"}])
        judge = build_judge(cfg)
        try:
            with pytest.raises(MinirftError) as exc:
                judge.score_groups([parse_row({"prompt": "Hi"}, "t")], [["Hello"]])
        finally:
            judge.close()
    finally:
        server.shutdown()
    assert "HTTP 401: Invalid API key" in str(exc.value) and "judge.http.api_key_env" in str(exc.value)


# ------------------------------------------------------------------- class 7: the judge service's token
@pytest.fixture(scope="module")
def served_with_token(tiny_gguf, tmp_path_factory):
    from trl_fixtures import free_port

    d = tmp_path_factory.mktemp("serve")
    (d / "p.jsonl").write_text('{"prompt": "x"}\n')
    recipe = d / "judge.yaml"
    recipe.write_text(yaml.safe_dump({"name": "svc", "data": {"path": "p.jsonl"},
                                      "judge": {"model": tiny_gguf, "n_threads": 1, "retries": 0,
                                                "rationales": "none",
                                                "criteria": [{"name": "polite", "question": "Is it polite?"}]}}))
    port = free_port()
    e = env()
    e["MINIRFT_JUDGE_TOKEN"] = "s3cret-token"
    log = open(d / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "minirft", "judge", "serve", str(recipe), "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=e)
    try:
        deadline = time.time() + 60
        while "listening on" not in (d / "serve.log").read_text():
            assert proc.poll() is None, (d / "serve.log").read_text()
            assert time.time() < deadline
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
    assert "Traceback" not in (d / "serve.log").read_text()


def _request(port, method, path, body=None, token=None, raw=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    c.request(method, path, body=raw if raw is not None else (json.dumps(body) if body is not None else None),
              headers=headers)
    r = c.getresponse()
    out = r.status, json.loads(r.read() or b"{}"), r.getheader("WWW-Authenticate")
    c.close()
    return out


def test_the_service_answers_401_without_the_token(served_with_token):
    port = served_with_token
    row = {"rows": [{"prompt": "Hi", "response": "Hello!"}]}
    for token in (None, "wrong", "s3cret-token-but-longer", ""):
        status, body, challenge = _request(port, "POST", "/score", row, token=token)
        assert status == 401 and "bearer token" in body["error"] and challenge.startswith("Bearer")
        assert _request(port, "GET", "/health", token=token)[0] == 401
    status, body, _ = _request(port, "POST", "/score", row, token="s3cret-token")
    assert status == 200 and isinstance(body["results"][0]["reward"], float)
    assert _request(port, "GET", "/health", token="s3cret-token")[1]["status"] == "ok"


def test_the_service_refuses_deep_json_and_keeps_serving(served_with_token):
    port = served_with_token
    status, body, _ = _request(port, "POST", "/score", token="s3cret-token",
                               raw=b'{"rows": ' + b"[" * 200_000 + b"]" * 200_000 + b"}")
    assert status == 400 and "nests deeper" in body["error"]
    status, body, _ = _request(port, "POST", "/score", token="s3cret-token",
                               raw=json.dumps({"rows": [{"prompt": "[[[[", "response": "]]]]" * 100}]}).encode())
    assert status == 200  # brackets inside strings are not nesting
    assert _request(port, "GET", "/health", token="s3cret-token")[0] == 200


def test_verl_sends_the_token_from_the_environment(served_with_token, monkeypatch):
    from minirft.integrations import verl

    monkeypatch.setenv("MINIRFT_JUDGE_URL", f"http://127.0.0.1:{served_with_token}")
    monkeypatch.setenv("MINIRFT_JUDGE_TOKEN", "s3cret-token")
    out = verl.compute_score("d", "Hello!", None, {"prompt": "Hi"})
    assert out["judge_error"] == 0 and 0.0 <= out["score"] <= 1.0
