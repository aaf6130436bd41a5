"""Direct criteria (the condition after the response, its tokens scored): the log-ratio against a
brute-force computation from full logits on the tiny GGUF (llama.cpp) and an f32 HF model (torch
backend), batched = one at a time, the response decoded once for every criterion and condition, the
rubric and preference math, the recipe rules, and `minirft judge` from the CLI."""

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from minirft.cli import cli
from minirft.data import parse_row
from minirft.judge import build_judge
from minirft.judge.backends.torch import TorchEvaluator
from minirft.judge.core import GroupJudge
from minirft.judge.methods import contrast, direct
from minirft.judge.prompts import CONTRAST_HEADER, Layout
from minirft.recipe import JudgeConfig

from judge_fixtures import distinct_prefixes
from judge_torch_fixtures import tiny_judge_parts

RIGHT = {"name": "right", "method": "direct", "positive": "The correct answer is {reference}.",
         "negative": "The correct answer is {wrong_reference}."}
KIND = {"name": "kind", "method": "direct", "positive": "The assistant replies politely.",
        "negative": "The assistant replies rudely.", "sharpness": 2.0, "weight": 0.5}
ROWS = [parse_row({"prompt": "What is 2+2?", "reference": "4"}, "t", 1),
        parse_row({"prompt": "What is 3+5?", "reference": "8"}, "t", 2)]
GROUPS = [["It is 4, my friend.", "4", "Go away, it is 5."], ["8", "Eight, I think.", ""]]


def cfg(model, criteria=(RIGHT, KIND), **kw) -> JudgeConfig:
    return JudgeConfig(model=model, criteria=list(criteria), n_threads=1, n_ctx=1024, rationales="none", **kw)


def brute_ratio(logprobs_of, layout: Layout, c, row, cand: str) -> float:
    """s = r(cand) - r(empty reply), r = log P(positive) - log P(negative), from full logits:
    ``logprobs_of(context, target)`` gives the log-probability of each target token after the context,
    from one forward of the whole text."""
    pos, neg = (layout.direct_condition(t) for t in contrast.conditions(c, row))

    def r(reply: str) -> float:
        conv = CONTRAST_HEADER + layout.contrast_row(row) + layout.direct_response(reply)
        return float(np.sum(logprobs_of(conv, pos)) - np.sum(logprobs_of(conv, neg)))
    return r(cand) - r("")


def llama_full_logits(path):
    from llama_cpp import Llama

    naive = Llama(path, logits_all=True, n_ctx=1024, n_threads=1, verbose=False)

    def logprobs_of(engine, context: str, target: str) -> np.ndarray:
        # the engine's tokens: the header on its own (cached), the rest of the context, the target on its own
        ctx = list(engine.tokenize(CONTRAST_HEADER, bos=engine.add_bos)) \
            + list(engine.tokenize(context.removeprefix(CONTRAST_HEADER)))
        tgt = list(engine.tokenize(target))
        naive.reset()
        naive.eval(ctx + tgt)
        z = np.asarray(naive.scores[: len(ctx) + len(tgt)], dtype=np.float64)
        logp = z - z.max(1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(1, keepdims=True))
        return np.array([logp[len(ctx) - 1 + k, t] for k, t in enumerate(tgt)])
    return naive, logprobs_of


def test_llama_cpp_direct_ratios_equal_full_logits_and_p_pass_is_the_sigmoid(tiny_gguf):
    judge = build_judge(cfg(tiny_gguf))
    naive, logprobs_of = llama_full_logits(tiny_gguf)
    try:
        scores = judge.score_groups(ROWS, GROUPS)
        eng, L = judge.evaluator.engine, judge.layout
        for row, group, got in zip(ROWS, GROUPS, scores):
            for cand, score in zip(group, got):
                for c in judge.cfg.criteria:
                    if not cand:
                        assert score.criteria[c.name] == 0.5  # nothing to judge
                        continue
                    s = brute_ratio(lambda a, b: logprobs_of(eng, a, b), L, c, row, cand)
                    # f32 model, f16 KV cache: rounding only
                    assert score.criteria[c.name] == pytest.approx(1 / (1 + math.exp(-c.sharpness * s)), abs=2e-3)
                    assert score.criteria[c.name] != 0.5
                want = (score.criteria["right"] * 1.0 + score.criteria["kind"] * 0.5) / 1.5
                assert score.reward == pytest.approx(want)
    finally:
        judge.close()
        naive.close()


def test_torch_direct_ratios_equal_full_logits_on_an_f32_model():
    model, tok = tiny_judge_parts()
    c = cfg("unused")
    layout = Layout(c)
    judge = GroupJudge(c, TorchEvaluator(model, tok, max_batch=16), layout)
    ev = judge.evaluator

    def logprobs_of(context: str, target: str) -> np.ndarray:
        head, rest = context[:len(CONTRAST_HEADER)], context[len(CONTRAST_HEADER):]
        ids = list(ev.tokenize(head, bos=True)) + list(ev.tokenize(rest))
        tgt = list(ev.tokenize(target))
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids + tgt])).logits[0].double(), -1)
        return np.array([float(logp[len(ids) - 1 + k, t]) for k, t in enumerate(tgt)])

    got = direct.log_ratios(c, layout, ev, ROWS, GROUPS)
    one = direct.log_ratios(c, layout, TorchEvaluator(model, tok, max_batch=1), ROWS, GROUPS)
    for row, group, g, o in zip(ROWS, GROUPS, got, one):
        for cand, ratios, single in zip(group, g, o):
            for crit in c.criteria:
                want = brute_ratio(logprobs_of, layout, crit, row, cand) if cand else 0.0
                assert ratios[crit.name] == pytest.approx(want, abs=1e-4)
                assert single[crit.name] == pytest.approx(ratios[crit.name], abs=1e-4)  # batched = one at a time


def test_llama_cpp_batched_equals_one_at_a_time(tiny_gguf):
    batched, single = build_judge(cfg(tiny_gguf)), build_judge(cfg(tiny_gguf, max_seqs=1))
    try:
        a = batched.score_groups(ROWS, GROUPS)
        b = [single.score_groups([row], [[cand]])[0][0] for row, group in zip(ROWS, GROUPS) for cand in group]
        for x, y in zip([s for g in a for s in g], b):
            for name in ("right", "kind"):
                # the unified cache's batch shapes pick other kernels for the f16 KV cache: rounding only
                assert x.criteria[name] == pytest.approx(y.criteria[name], abs=2e-3)
    finally:
        batched.close()
        single.close()


def test_each_response_is_decoded_once_for_every_direct_criterion_and_condition(tiny_gguf):
    judge = build_judge(cfg(tiny_gguf, max_seqs=32))  # all 12 queries in one chunk: nothing held between chunks
    try:
        row, group = ROWS[0], GROUPS[0][:2]
        judge.score_groups([row], [group])
        eng, L = judge.evaluator.engine, judge.layout
        conds = [L.direct_condition(t) for c in judge.cfg.criteria for t in contrast.conditions(c, row)]
        paths = [(L.contrast_row(row), L.direct_response(g), cond) for g in group for cond in conds]
        paths += [(L.contrast_row(row), L.direct_response(""), cond) for cond in conds]  # the calibration
        header = len(eng.tokenize(CONTRAST_HEADER, bos=eng.add_bos))
        assert eng.stats.tokens_decoded == header + distinct_prefixes(eng, paths, score_last=True)
        once = sum(len(eng.tokenize(L.contrast_row(row) + L.direct_response(g))) for g in group + [""])
        conditions = sum(len(eng.tokenize(c)) for c in conds) * (len(group) + 1)
        assert eng.stats.tokens_decoded - header <= once + conditions  # each response once, not 4 times
        # logits rows only at the conditions' tokens (the one before each, and all but the last)
        assert eng.stats.logit_rows <= conditions
    finally:
        judge.close()


def test_preference_with_direct_criteria_is_antisymmetric_and_ranks_by_the_rubric_logit(tiny_gguf):
    pref = build_judge(cfg(tiny_gguf, mode="preference", deterministic=True))
    try:
        row, group = ROWS[0], GROUPS[0]
        s = direct.log_ratios(pref.cfg, pref.layout, pref.evaluator, [row], [group])[0]

        def logit(q):  # weights 1 and 0.5, sharpness 1 and 2
            return (1.0 * 1.0 * q["right"] + 0.5 * 2.0 * q["kind"]) / 1.5
        ab, ba = pref.compare(row, group[0], group[2]), pref.compare(row, group[2], group[0])
        assert ab.p_a + ba.p_a == pytest.approx(1.0, abs=1e-12)
        assert ab.p_a == pytest.approx(1 / (1 + math.exp(-(logit(s[0]) - logit(s[2])))), abs=1e-9)
        assert ab.p_a != 0.5
    finally:
        pref.close()


@pytest.mark.parametrize("bad, message", [
    ({"name": "x", "method": "direct", "positive": "p", "negative": ""}, "non-empty `negative`"),
    ({"name": "x", "method": "direct", "positive": "p", "negative": "n", "aggregate": "lowest"},
     "`aggregate` belongs to method: contrast"),
    ({"name": "x", "method": "direct", "positive": "p", "negative": "n", "question": "q?"}, "`question` belongs"),
])
def test_direct_criterion_fields(bad, message):
    with pytest.raises(ValueError, match=message):
        JudgeConfig(criteria=[bad])
    ok = JudgeConfig(criteria=[RIGHT, dict(RIGHT, name="c", method="contrast")]).criteria
    assert (ok[0].sharpness, ok[1].sharpness) == (1.0, 10.0)  # each method's own default


def test_minirft_judge_scores_direct_criteria_from_the_cli(tiny_gguf, tmp_path):
    (tmp_path / "data.jsonl").write_text('{"prompt": "hi"}\n')
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\njudge:\n  model: {tiny_gguf}\n  n_threads: 1\n  rationales: all\n  criteria:\n"
                      "    - {name: kind, method: direct, positive: 'The assistant replies politely.', "
                      "negative: 'The assistant replies rudely.'}\ndata: {path: data.jsonl}\n")
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"prompt": "What is 2+2?", "response": r}) + "\n"
                                               for r in GROUPS[0]))
    out = tmp_path / "scored.jsonl"
    res = CliRunner().invoke(cli, ["judge", str(recipe), "--input", str(tmp_path / "in.jsonl"), "--output", str(out),
                                   "--rationales"])
    assert res.exit_code == 0, res.output
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    local = build_judge(cfg(tiny_gguf, criteria=[dict(KIND, sharpness=1.0, weight=1.0)]))
    try:
        want = local.score_groups([ROWS[0]] * 3, [[g] for g in GROUPS[0]])
    finally:
        local.close()
    for r, w in zip(scored, want):
        assert r["criteria"]["kind"] == pytest.approx(w[0].criteria["kind"], abs=2e-3)
        assert "as likely as the negative" in r["rationale"]
