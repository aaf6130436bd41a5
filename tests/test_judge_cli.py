"""`minirft judge` end to end on a tiny GGUF: output fields, summary, bad rows, atomic output."""

import json

import pytest
from click.testing import CliRunner

from minirft.cli import cli

from judge_fixtures import write_tiny_gguf


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("judgecli")
    model = write_tiny_gguf(d / "tiny.gguf")
    (d / "data.jsonl").write_text('{"prompt": "hi"}\n')
    common = f"data:\n  path: data.jsonl\n"
    (d / "rubric.yaml").write_text(
        "name: r\njudge:\n  model: " + str(model) + "\n  n_threads: 1\n  rationale_max_tokens: 6\n  criteria:\n"
        "    - {name: answers, question: \"Does it answer?\", weight: 2}\n"
        "    - {name: polite, question: \"Is it polite?\"}\n" + common)
    (d / "pref.yaml").write_text(
        "name: p\njudge:\n  model: " + str(model) + "\n  n_threads: 1\n  mode: preference\n  rationale_max_tokens: 6\n"
        + common)
    rows = [{"prompt": "What is 2+2?", "response": "4", "reference": "4", "id": 1},
            {"prompt": "What is 2+2?", "response": "five", "reference": "4", "id": 2},
            {"messages": [{"role": "user", "content": "Say hi"}], "response": "Hello!", "id": 3}]
    (d / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = [{"prompt": "What is 2+2?", "response_a": "4", "response_b": "five"},
             {"prompt": "Say hi", "response_a": "Go away", "response_b": "Hello!"}]
    (d / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    return d


def run(*args):
    return CliRunner().invoke(cli, list(map(str, args)), catch_exceptions=False)


def test_rubric_file(setup):
    out = setup / "scored.jsonl"
    res = run("judge", setup / "rubric.yaml", "--input", setup / "in.jsonl", "--output", out, "--rationales")
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert set(r["criteria"]) == {"answers", "polite"}
        assert r["reward"] == pytest.approx((2 * r["criteria"]["answers"] + r["criteria"]["polite"]) / 3)
        assert isinstance(r["rationale"], str)
    assert "mean reward" in res.output and "P(yes) polite" in res.output


def test_rubric_override_and_no_rationales(setup):
    out = setup / "scored2.jsonl"
    res = run("judge", setup / "rubric.yaml", "judge.deterministic=true", "--input", setup / "in.jsonl",
              "--output", out)
    assert res.exit_code == 0, res.output
    assert all("rationale" not in json.loads(line) for line in out.read_text().splitlines())


def test_preference_file(setup):
    out = setup / "pairs-scored.jsonl"
    res = run("judge", setup / "pref.yaml", "--input", setup / "pairs.jsonl", "--output", out)
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    for r in rows:
        assert r["p_a"] == pytest.approx((r["p_a_first"] + r["p_a_second"]) / 2)
        assert 0 < r["p_a"] < 1
    assert "swap consistency" in res.output


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "x"}', ":2: missing `response`"),
    ('{"prompt": "x", "response": 3}', ":2: `response` must be a string"),
    ('{"response": "x"}', ":2: each row needs exactly one of `prompt`"),
    ('not json', ":2: invalid JSON"),
])
def test_bad_rows_name_the_line_and_write_nothing(setup, line, message):
    bad = setup / "bad.jsonl"
    bad.write_text('{"prompt": "ok", "response": "ok"}\n' + line + "\n")
    out = setup / "never.jsonl"
    res = CliRunner().invoke(cli, ["judge", str(setup / "rubric.yaml"), "--input", str(bad), "--output", str(out)])
    assert res.exit_code == 1
    assert "Error:" in res.output and message in res.output
    assert not out.exists()


def test_preference_rows_need_both_responses(setup):
    bad = setup / "bad-pairs.jsonl"
    bad.write_text('{"prompt": "x", "response_a": "a"}\n')
    res = CliRunner().invoke(cli, ["judge", str(setup / "pref.yaml"), "--input", str(bad), "--output",
                                   str(setup / "x.jsonl")])
    assert res.exit_code == 1 and ":1: missing `response_b`" in res.output


def test_help_has_an_example():
    res = run("judge", "-h")
    assert res.exit_code == 0 and "minirft judge recipes/polite.yaml" in res.output
