"""The torch judge backend on a tiny random Llama built on the fly: exact label head, prefix sharing,
batching, rationales, the judge protocol through build_judge, and self-judging with a LoRA adapter."""

import contextlib

import numpy as np
import pytest
import torch

from minirft.data import parse_row
from minirft.errors import MinirftError
from minirft.judge import build_judge, scoring
from minirft.judge.backends.llama_cpp import Query
from minirft.judge.backends.torch import BATCH_TOLERANCE, TorchEvaluator, load_hf_judge
from minirft.recipe import JudgeConfig

from judge_torch_fixtures import make_model, tiny_judge_parts

EXACT = 1e-5  # same fp32 model, same tokens: kernel head vs full-logits softmax differ by rounding only
YES_NO = [scoring.YES_VARIANTS, scoring.NO_VARIANTS]
HEADER = "You are a careful judge. Answer Yes or No about the response.\n\n"
CRITERIA = [
    {"name": "answers", "question": "Does the response answer the question?", "weight": 2.0},
    {"name": "polite", "question": "Is the response polite?", "weight": 1.0},
]
ROWS = [parse_row({"prompt": p, "reference": r}, "t") for p, r in [("What is 2+2?", "4"), ("Say hello.", None)]]
GROUPS = [["4", "It is four.", "five"], ["Hello!", "Go away.", "hi"]]


@pytest.fixture(scope="module")
def parts():
    return tiny_judge_parts()


def queries(gen: int = 0) -> list[Query]:
    out = []
    for row in ("Task: what is 2+2?\n", "Task: say hello.\n"):
        for cand in ("Candidate: 4\n", "Candidate: it is four, my friend\n", "Candidate: no\n"):
            for q in ("Is it correct?", "Is it polite?"):
                out.append(Query((HEADER, row, cand, f"Question: {q}\nAnswer:")))
    if gen:
        out.append(Query((HEADER, "Task: say hello.\n", "Candidate: hi\n", "Explain.\nExplanation:"),
                         generate=gen, stop=()))
    return out


def full_logits_probs(ev: TorchEvaluator, q: Query) -> np.ndarray:
    """The naive answer: the whole prompt at once, [vocab] logits, softmax over the label tokens."""
    _, label_class, ids = ev.label_head(YES_NO)
    toks = [t for i, s in enumerate(q.segments) for t in ev.tokenize(s, bos=i == 0)]
    with torch.no_grad():
        logits = ev.model(torch.tensor([toks])).logits[0, -1].double()
    p = torch.softmax(logits[ids], dim=0)
    return torch.zeros(2, dtype=torch.float64).index_add_(0, label_class, p).numpy()


def test_probs_equal_full_logits_softmax_over_labels(parts):
    ev = TorchEvaluator(*parts)
    qs = queries()
    res = ev.evaluate(qs, YES_NO)
    _, _, ids = ev.label_head(YES_NO)
    assert len(ids) >= 4  # several surface forms per class are read ("Yes", " Yes", "yes", ...)
    spread = [r.probs[0] for r in res]
    assert max(spread) - min(spread) > 1e-3  # the candidates really get different scores
    for q, r in zip(qs, res):
        assert r.probs.sum() == pytest.approx(1.0)
        np.testing.assert_allclose(r.probs, full_logits_probs(ev, q), atol=EXACT)


def test_batched_shared_prefix_equals_one_at_a_time(parts):
    qs = queries()
    batched = TorchEvaluator(*parts, max_batch=16).evaluate(qs, YES_NO)
    chunked = TorchEvaluator(*parts, max_batch=5).evaluate(qs, YES_NO)  # chunks cut through a row's group
    alone = TorchEvaluator(*parts, max_batch=1).evaluate(qs, YES_NO)
    for a, b, c in zip(batched, chunked, alone):
        assert np.abs(a.probs - c.probs).max() <= BATCH_TOLERANCE
        assert np.abs(b.probs - c.probs).max() <= BATCH_TOLERANCE


def test_shared_prefix_is_computed_once(parts):
    ev = TorchEvaluator(*parts, max_batch=16)
    qs = queries()
    ev.evaluate(qs, YES_NO)
    header = len(ev.tokenize(HEADER, bos=True))
    rows = {q.segments[1] for q in qs}
    cands = {q.segments[1:3] for q in qs}
    unique = header + sum(len(ev.tokenize(r)) for r in rows) + sum(len(ev.tokenize(c[1])) for c in cands) \
        + sum(len(ev.tokenize(q.segments[3])) for q in qs)
    assert ev.stats.tokens_forwarded == unique
    assert ev.stats.tokens_forwarded < ev.stats.per_query_tokens / 2
    assert ev.stats.header_runs == 1
    ev.evaluate(qs, YES_NO)  # the next call (next training step) reuses the header's cache
    assert ev.stats.header_runs == 1 and ev.stats.header_reuses == 1
    assert ev.stats.tokens_forwarded == 2 * unique - header


def test_rationale_is_greedy_decoding(parts):
    model, tok = parts
    ev = TorchEvaluator(model, tok)
    qs = queries(gen=6)
    res = ev.evaluate(qs, YES_NO)
    q = qs[-1]
    prompt = [t for i, s in enumerate(q.segments) for t in ev.tokenize(s, bos=i == 0)]
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False, pad_token_id=0,
                             eos_token_id=None)
    assert res[-1].text == tok.decode(out[0, len(prompt):], skip_special_tokens=True).strip()
    assert res[-1].text
    assert all(r.text == "" for r in res[:-1])
    assert ev.stats.generated_tokens <= 6


def test_triton_head_matches_reference(parts):
    pytest.importorskip("triton")
    qs = queries()[:4]
    ref = TorchEvaluator(*parts, kernel_backend="reference").evaluate(qs, YES_NO)
    tri = TorchEvaluator(*parts, kernel_backend="triton").evaluate(qs, YES_NO)  # TRITON_INTERPRET=1 on CPU
    for a, b in zip(ref, tri):
        np.testing.assert_allclose(a.probs, b.probs, atol=EXACT)


@pytest.fixture(scope="module")
def hf_folder(parts, tmp_path_factory):
    model, tok = parts
    path = tmp_path_factory.mktemp("hf") / "tiny-judge"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def cfg(model, **kw):
    base = dict(model=model, backend="torch", criteria=CRITERIA, rationale_max_tokens=6, prompt_format="plain")
    base.update(kw)
    return JudgeConfig(**base)


def test_rubric_through_build_judge(hf_folder):
    j = build_judge(cfg(hf_folder, rationales="shown"))
    scores = j.score_groups(ROWS, GROUPS, rationales=[[True, False, False], [False] * 3])
    for group, ss in zip(GROUPS, scores):
        assert len(ss) == len(group)
        for s in ss:
            assert s.error is None and 0.0 < s.reward < 1.0
            assert set(s.criteria) == {"answers", "polite"}
    assert scores[0][0].rationale is not None and scores[0][1].rationale is None
    alone = j.score_groups(ROWS[:1], [GROUPS[0][1:2]])[0][0]
    assert abs(alone.reward - scores[0][1].reward) <= BATCH_TOLERANCE
    j.close()


def test_scale_mode_through_build_judge(hf_folder):
    j = build_judge(cfg(hf_folder, scale={"min": 1, "max": 5}, rationales="none"))
    s = j.score_groups(ROWS[:1], [GROUPS[0]])[0]
    assert all(0.0 <= x.reward <= 1.0 for x in s)
    assert len({round(x.reward, 6) for x in s}) > 1


def test_preference_through_build_judge(hf_folder):
    j = build_judge(cfg(hf_folder, mode="preference", criteria=[], rationales="none"))
    ab = j.compare(ROWS[0], "4", "five")
    ba = j.compare(ROWS[0], "five", "4")
    assert ab.p_a == pytest.approx(1.0 - ba.p_a, abs=BATCH_TOLERANCE)  # swap-averaged: order-free
    rewards = [s.reward for s in j.score_groups(ROWS[:1], [GROUPS[0]])[0]]
    assert all(0.0 <= r <= 1.0 for r in rewards)


def test_self_judge_with_lora_adapter_scores_the_base(parts):
    peft = pytest.importorskip("peft")
    _, tok = parts
    model = make_model(len(tok), seed=1, attention_dropout=0.5)  # train-mode dropout would show
    c = cfg("unused-for-self-judge", self_judge=True, rationales="none")
    base = build_judge(c, policy_model=model, policy_tokenizer=tok).score_groups(ROWS, GROUPS)
    lora = peft.LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "o_proj"],
                           init_lora_weights=False)  # random B: the adapter really changes the model
    policy = peft.get_peft_model(model, lora)
    policy.train()  # as the trainer leaves it: judging must not use dropout, and must restore the mode
    judge = build_judge(c, policy_model=policy, policy_tokenizer=tok)
    self_scores = judge.score_groups(ROWS, GROUPS)
    adapted = GroupJudgeWithoutDisable(c, policy, tok).score_groups(ROWS, GROUPS)
    for b, s, a in zip(base, self_scores, adapted):
        for x, y, z in zip(b, s, a):
            assert y.reward == pytest.approx(x.reward, abs=EXACT)
    diff = max(abs(x.reward - z.reward) for b, a in zip(base, adapted) for x, z in zip(b, a))
    assert diff > 1e-3  # with the adapter on, the scores do move: disabling it is what makes them equal
    assert policy.active_adapter == "default"  # the adapter is back on after judging
    assert policy.training


def GroupJudgeWithoutDisable(c, policy, tok):
    from minirft.judge.core import GroupJudge
    from minirft.judge.prompts import Layout

    return GroupJudge(c, TorchEvaluator(policy, tok, context=contextlib.nullcontext), Layout(c, "plain"))


def test_user_errors_are_one_line(parts):
    with pytest.raises(MinirftError, match="policy_model"):
        build_judge(cfg("x", self_judge=True))
    with pytest.raises(MinirftError, match="backend: torch"):
        build_judge(JudgeConfig(model="x", criteria=CRITERIA, self_judge=True))
    if not torch.cuda.is_available():
        with pytest.raises(MinirftError, match="CUDA"):
            load_hf_judge("x", load_in_4bit=True)
    ev = TorchEvaluator(*parts)
    with pytest.raises(MinirftError, match="single token"):
        ev.evaluate(queries()[:1], [("Yes",), ("Absolutely-not-a-token",)])


def test_query_longer_than_the_model_is_a_runtime_error(parts):
    ev = TorchEvaluator(*parts)  # max_position_embeddings 4096; GroupJudge turns this into error scores
    with pytest.raises(RuntimeError, match="4096"):
        ev.evaluate([Query((HEADER, "row\n", "cand\n", "Explain:"), generate=5000)], YES_NO)
