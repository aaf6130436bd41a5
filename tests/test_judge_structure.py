"""The judge's structure, checked: every backend is registered, every judge and backend has the whole
protocol (the trainer and the CLI call it without probing), and what a missing capability does."""

from __future__ import annotations

import typing

import pytest

from minirft.data import parse_row
from minirft.errors import MinirftError
from minirft.judge import build_judge
from minirft.judge.backends import BACKENDS
from minirft.judge.backends.http import HttpEvaluator
from minirft.judge.backends.llama_cpp import LlamaEvaluator
from minirft.judge.backends.torch import TorchEvaluator
from minirft.judge.base import CalibrationRefused, Evaluator, EvaluatorBase, Judge, JudgeBase
from minirft.judge.cache import CachedEvaluator
from minirft.judge.core import GroupJudge
from minirft.judge.panel import PanelJudge
from minirft.recipe import JudgeConfig
from minirft.stats import Platt
from minirft.train.calibration_watch import apply

ROW = parse_row({"prompt": "What is 2+2?"}, "t", 1)


def members(protocol) -> set[str]:
    return {name for name in vars(protocol) if not name.startswith("_")} | set(typing.get_type_hints(protocol))


def test_every_recipe_backend_is_registered():
    backends = typing.get_args(JudgeConfig.model_fields["backend"].annotation)
    assert set(backends) == set(BACKENDS)


@pytest.mark.parametrize("cls", [GroupJudge, PanelJudge])
def test_every_judge_has_the_whole_protocol(cls):
    missing = {name for name in members(Judge) if not hasattr(cls, name)}
    assert missing == set()


def test_the_judge_base_leaves_only_scoring_to_write():
    assert {name for name in members(Judge) if not hasattr(JudgeBase, name)} == {"score_groups"}


@pytest.mark.parametrize("cls", [LlamaEvaluator, TorchEvaluator, HttpEvaluator, CachedEvaluator])
def test_every_backend_has_the_whole_protocol(cls):
    missing = {name for name in members(Evaluator) if not callable(getattr(cls, name, None))}
    assert missing == set()


def test_the_evaluator_base_leaves_only_label_probabilities_to_write():
    assert {name for name in members(Evaluator) if not hasattr(EvaluatorBase, name)} == {"evaluate"}


class QuestionsOnly(EvaluatorBase):
    """A real llama.cpp evaluator that answers label questions but has no per-token scoring."""

    def __init__(self, inner):
        self.inner = inner

    def evaluate(self, queries, classes):
        return self.inner.evaluate(queries, classes)


def test_a_backend_without_token_scoring_refuses_contrast_criteria_by_name(tiny_gguf):
    cfg = JudgeConfig(model=tiny_gguf, n_threads=1, n_ctx=1024, rationales="none",
                      criteria=[{"name": "polite", "method": "contrast", "positive": "Polite.", "negative": "Rude."}])
    real = build_judge(cfg)
    judge = GroupJudge(cfg, QuestionsOnly(real.evaluator), real.layout)
    try:
        with pytest.raises(MinirftError, match="QuestionsOnly cannot score criteria with method: contrast"):
            judge.score_groups([ROW], [["Four."]])
    finally:
        real.close()


def test_mid_run_calibration_is_taken_or_refused_through_the_protocol(tiny_gguf):
    cfg = JudgeConfig(model=tiny_gguf, n_threads=1, n_ctx=1024, rationales="none",
                      criteria=[{"name": "answers", "question": "Does it answer?"}])
    single = build_judge(cfg)
    panel = PanelJudge(cfg, [("a", 1.0, single)])
    try:
        assert apply(single, {"answers": Platt(2.0, 0.0)}) is True
        assert set(single.platt) == {"answers"}
        assert apply(panel, {"answers": Platt(2.0, 0.0)}) is False  # a jury keeps its members' maps
        with pytest.raises(CalibrationRefused):
            panel.use_calibration({})
        assert panel.take_metrics() == {} and panel.totals() == {} and panel.clipped == 0
    finally:
        panel.close()
