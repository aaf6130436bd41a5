"""judge.cache: PATH — a SQLite cache of judge results (the real llama.cpp judge, the tiny GGUF)."""

import json
import sqlite3
import subprocess
import sys

import pytest
import yaml

from minirft.data import parse_row
from minirft.judge import build_judge
from minirft.recipe import JudgeConfig

from trl_fixtures import env

CRITERIA = [{"name": "answers", "question": "Does the response answer the question?"},
            {"name": "polite", "question": "Is it polite?", "weight": 2}]
ROW = parse_row({"prompt": "What is 2+2?", "reference": "4"}, "t")


def _cfg(gguf, cache, **kw):
    return JudgeConfig(**{"model": gguf, "criteria": CRITERIA, "n_threads": 1, "max_seqs": 4, "n_ctx": 2048,
                          "rationale_max_tokens": 4, "cache": str(cache), "retries": 0, **kw})


def _hits(m: dict) -> tuple[int, int]:
    """The cache's counters (the llama_cpp backend's own judge/* counters come along in the dict)."""
    return m["judge/cache_hits"], m["judge/cache_misses"]


def test_identical_queries_are_answered_from_the_cache(tiny_gguf, tmp_path):
    db = tmp_path / "cache.sqlite"
    j = build_judge(_cfg(tiny_gguf, db, deterministic=True))
    try:
        first = j.score_groups([ROW], [["4", "five"]], rationales=[[True, False]])[0]
        assert _hits(j.evaluator.take_metrics()) == (0, 5)
        again = j.score_groups([ROW], [["4", "five"]], rationales=[[True, False]])[0]
        m = j.evaluator.take_metrics()
        assert _hits(m) == (5, 0) and m["judge/queries"] == 0  # nothing reached the model
        assert [s.criteria for s in again] == [s.criteria for s in first]
        assert again[0].rationale == first[0].rationale
        j.score_groups([ROW], [["4", "six"]])  # only the new candidate's queries reach the model
        m = j.evaluator.take_metrics()
        assert _hits(m) == (2, 2) and m["judge/queries"] == 2
    finally:
        j.close()
    # a new judge (a resumed run, another process) reads the same file; weights above the backend still apply
    j2 = build_judge(_cfg(tiny_gguf, db, deterministic=True, criteria=[dict(CRITERIA[0]), dict(CRITERIA[1], weight=0)]))
    try:
        s = j2.score_groups([ROW], [["4"]])[0][0]
        assert j2.evaluator.take_metrics()["judge/cache_hits"] == 2
        assert s.criteria == first[0].criteria and s.reward == pytest.approx(first[0].criteria["answers"])
    finally:
        j2.close()
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM results").fetchone()[0] == 7


def test_the_key_holds_model_method_and_query(tiny_gguf, tmp_path):
    from judge_fixtures import write_tiny_gguf

    db = tmp_path / "c.sqlite"
    j = build_judge(_cfg(tiny_gguf, db))
    other_model = write_tiny_gguf(tmp_path / "other.gguf", seed=7)
    k = build_judge(_cfg(str(other_model), db))
    p = build_judge(_cfg(tiny_gguf, db, scale={"min": 1, "max": 5}))  # another method: digit classes
    try:
        j.score_groups([ROW], [["4"]])
        k.score_groups([ROW], [["4"]])
        p.score_groups([ROW], [["4"]])
        assert k.evaluator.take_metrics()["judge/cache_misses"] == 2
        assert p.evaluator.take_metrics()["judge/cache_misses"] == 2
    finally:
        for x in (j, k, p):
            x.close()


def test_minirft_judge_cli_with_a_cache(tiny_gguf, tmp_path):
    (tmp_path / "d.jsonl").write_text('{"prompt": "x"}\n')
    recipe = tmp_path / "r.yaml"
    cfg = _cfg(tiny_gguf, "judge-cache.sqlite", deterministic=True).model_dump(mode="json")
    cfg["cache"] = "judge-cache.sqlite"  # relative: next to the recipe
    recipe.write_text(yaml.safe_dump({"name": "c", "judge": cfg, "data": {"path": "d.jsonl"}}))
    rows = tmp_path / "in.jsonl"
    rows.write_text("".join(json.dumps({"prompt": "Hi", "response": t}) + "\n" for t in ("Hello", "Go away", "Hello")))
    outs = []
    for n in (1, 2):
        res = subprocess.run([sys.executable, "-m", "minirft", "judge", str(recipe), "--input", str(rows), "--output",
                              str(tmp_path / f"out{n}.jsonl")], capture_output=True, text=True, env=env(),
                             cwd="/", timeout=300)
        assert res.returncode == 0, res.stderr
        outs.append((tmp_path / f"out{n}.jsonl").read_text())
    assert outs[0] == outs[1]
    assert (tmp_path / "judge-cache.sqlite").is_file()
    assert sqlite3.connect(tmp_path / "judge-cache.sqlite").execute("SELECT COUNT(*) FROM results").fetchone()[0] == 4


def test_a_cache_that_is_not_sqlite_is_a_clear_error(tiny_gguf, tmp_path):
    from minirft.errors import MinirftError

    bad = tmp_path / "notdb.sqlite"
    bad.write_text("this is not a database\n" * 100)
    with pytest.raises(MinirftError, match="judge.cache"):
        build_judge(_cfg(tiny_gguf, bad))
