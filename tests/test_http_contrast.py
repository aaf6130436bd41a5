"""Contrast criteria through the http backend: the prompt's own log-probabilities (`echo: true`) from
llama-cpp-python's real server on 127.0.0.1 equal the in-process llama_cpp backend's on the same tiny
GGUF, from the library and from `minirft judge`, for contrast and direct criteria; a real server started without prompt log-probs
(`--logits_all false`) is a one-line error naming the method."""

import json
from contextlib import ExitStack

import numpy as np
import pytest
from click.testing import CliRunner

from minirft.cli import cli
from minirft.data import parse_row
from minirft.errors import MinirftError
from minirft.judge import build_judge
from minirft.judge.backends.http import response_token_scores
from minirft.judge.backends.llama_cpp import LlamaEvaluator
from minirft.judge.base import Query
from minirft.judge.prompts import CONTRAST_HEADER
from minirft.recipe import JudgeConfig

from llama_server_fixtures import llama_server

pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

POLITE = {"name": "polite", "method": "contrast", "positive": "The assistant replies politely.",
          "negative": "The assistant replies rudely.", "sharpness": 2.0}
ROW = parse_row({"prompt": "What is 2+2?", "reference": "4"}, "t", 1)
GROUP = ["It is 4, my friend.", "4", "Go away, it is 5."]
# The server evaluates each prompt in one batch; the in-process engine shares prefixes across sequences
# (both keep the KV cache in f16): float rounding only, on the same tokens.
TOL = 1e-3


@pytest.fixture(scope="module")
def servers(tiny_gguf, tmp_path_factory):
    """(llama-cpp-python's server as started by default, the same with --logits_all false)."""
    d = tmp_path_factory.mktemp("servers")
    with ExitStack() as stack:
        yield (stack.enter_context(llama_server(tiny_gguf, d / "echo.log", n_ctx=2048)),
               stack.enter_context(llama_server(tiny_gguf, d / "no-logits.log", "--logits_all", "false", n_ctx=2048)))


def _cfg(model, url=None, **kw):
    base = dict(model=model, criteria=[POLITE], n_threads=1, n_ctx=1024, rationales="none", retries=0)
    if url:
        base.update(backend="http", http={"url": url, "timeout_s": 60, "backoff_s": 0.05, **kw.pop("http", {})})
    base.update(kw)
    return JudgeConfig(**base)


def queries():
    out = []
    for row in ("Human: What is 2+2?\n\n", "Human: Say hello.\n\n"):
        for cond in ("(Be kind.)\n\nAssistant:", "Assistant:"):
            for resp in (" It is 4.", " Four, friend!", " no"):
                out.append(Query((CONTRAST_HEADER, row, cond, resp), score_last=True))
    return out


def test_http_token_logprobs_equal_the_in_process_backend(servers, tiny_gguf):
    from minirft.judge.backends.http import HttpEvaluator

    remote = HttpEvaluator(_cfg(tiny_gguf, servers[0]).http, tiny_gguf)
    local = LlamaEvaluator(tiny_gguf, n_ctx=1024, n_batch=512, n_threads=1, n_gpu_layers=0, max_seqs=16,
                           deterministic=False)
    try:
        qs = queries()
        for q, got, want in zip(qs, remote.score_tokens(qs), local.score_tokens(qs)):
            assert got.pieces == want.pieces  # the same tokens: the response found by its character offset
            np.testing.assert_allclose(got.logprobs, want.logprobs, atol=TOL)
            assert "".join(got.pieces) == q.segments[-1]
        m = remote.take_metrics()
        assert m["judge/requests"] == len(qs) and m["judge/prompt_tokens"] > 0
    finally:
        remote.close()
        local.close()


@pytest.mark.parametrize("api", ["completions", "chat"])  # contrast always asks /completions: plain text
def test_http_contrast_scores_equal_the_in_process_backend(servers, tiny_gguf, api):
    remote = build_judge(_cfg(tiny_gguf, servers[0], http={"api": api}))
    local = build_judge(_cfg(tiny_gguf))
    try:
        got = remote.score_groups([ROW], [GROUP])[0]
        want = local.score_groups([ROW], [GROUP])[0]
        for g, w in zip(got, want):
            assert g.error is None, g.error
            assert g.criteria["polite"] == pytest.approx(w.criteria["polite"], abs=TOL)
            assert g.criteria["polite"] != 0.5  # a real score, not the empty-candidate default
            for side in ("up", "down"):  # the same words earned the score
                assert [t for t, _ in g.attributions["polite"][side]] == [t for t, _ in w.attributions["polite"][side]]
    finally:
        remote.close()
        local.close()


def test_http_contrast_preference_is_antisymmetric(servers, tiny_gguf):
    j = build_judge(_cfg(tiny_gguf, servers[0], mode="preference"))
    try:
        ab, ba = j.compare(ROW, GROUP[0], GROUP[2]), j.compare(ROW, GROUP[2], GROUP[0])
        assert ab.p_a + ba.p_a == pytest.approx(1.0, abs=1e-12) and ab.p_a != 0.5
    finally:
        j.close()


def _recipe(tmp_path, model, url):
    (tmp_path / "data.jsonl").write_text('{"prompt": "hi"}\n')
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\njudge:\n  model: {model}\n  backend: http\n  retries: 0\n"
                      f"  http: {{url: '{url}', max_retries: 0}}\n  criteria:\n"
                      "    - {name: polite, method: contrast, positive: 'The assistant replies politely.', "
                      "negative: 'The assistant replies rudely.', sharpness: 2.0}\ndata: {path: data.jsonl}\n")
    rows = [{"prompt": "What is 2+2?", "response": r} for r in GROUP]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return recipe


def test_minirft_judge_scores_contrast_through_the_server(servers, tiny_gguf, tmp_path):
    recipe = _recipe(tmp_path, tiny_gguf, servers[0])
    out = tmp_path / "scored.jsonl"
    res = CliRunner().invoke(cli, ["judge", str(recipe), "--input", str(tmp_path / "in.jsonl"), "--output", str(out)])
    assert res.exit_code == 0, res.output
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    local = build_judge(_cfg(tiny_gguf))
    try:
        want = local.score_groups([ROW] * 3, [[g] for g in GROUP])
    finally:
        local.close()
    for r, w in zip(scored, want):
        assert r["criteria"]["polite"] == pytest.approx(w[0].criteria["polite"], abs=TOL)


def test_server_without_prompt_logprobs_is_a_one_line_error(servers, tiny_gguf, tmp_path):
    j = build_judge(_cfg(tiny_gguf, servers[1]))
    try:
        with pytest.raises(MinirftError, match=r"cannot return prompt log-probabilities, which criteria with "
                                               r"method: contrast or direct need .*--logits_all true"):
            j.score_groups([ROW], [GROUP])
        assert j.evaluator.take_metrics()["judge/retries"] == 0  # a refusal is not retried
    finally:
        j.close()
    recipe = _recipe(tmp_path, tiny_gguf, servers[1])
    res = CliRunner().invoke(cli, ["judge", str(recipe), "--input", str(tmp_path / "in.jsonl"),
                                   "--output", str(tmp_path / "out.jsonl")])
    assert res.exit_code == 1
    errors = [line for line in res.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and errors[0].startswith("Error: judge.http.url: ") and "method: contrast" in errors[0]
    print(errors[0])
    assert "Traceback" not in res.output and not (tmp_path / "out.jsonl").exists()


def test_a_response_with_the_generated_token_only_names_what_the_server_lacks():
    """The shape llama.cpp's llama-server returns for `echo: true, logprobs: 1` (ggml-org/llama.cpp#27174):
    the generated token's log-prob only, its offset past the prompt."""
    prompt = "Human: hi\n\nAssistant: It is."
    only_generated = {"choices": [{"text": "x", "logprobs": {"tokens": ["x"], "token_logprobs": [-1.0],
                                                             "text_offset": [len(prompt)], "top_logprobs": [{}]}}]}
    for response in (only_generated, {"choices": [{"text": "x", "logprobs": None}]}):
        with pytest.raises(MinirftError, match="returned no log-probabilities for the prompt's tokens, which "
                                               "criteria with method: contrast or direct need"):
            response_token_scores(response, prompt, len(prompt) - len(" It is."), "http://h/v1/completions")


def test_http_direct_scores_equal_the_in_process_backend(servers, tiny_gguf):
    """Direct criteria ask the same prompt log-probabilities (the condition's tokens after the response)."""
    kind = {"name": "kind", "method": "direct", "positive": "The assistant replies politely.",
            "negative": "The assistant replies rudely."}
    remote = build_judge(_cfg(tiny_gguf, servers[0], criteria=[kind]))
    local = build_judge(_cfg(tiny_gguf, criteria=[kind]))
    try:
        got = remote.score_groups([ROW], [GROUP])[0]
        want = local.score_groups([ROW], [GROUP])[0]
        for g, w in zip(got, want):
            assert g.error is None, g.error
            assert g.criteria["kind"] == pytest.approx(w.criteria["kind"], abs=TOL)
            assert g.criteria["kind"] != 0.5
    finally:
        remote.close()
        local.close()
