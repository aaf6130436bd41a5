"""The torch judge backend on the embedded SmolLM2-135M-Instruct GGUF (dequantised by transformers)."""

import pytest

from minirft.data import parse_row
from minirft.errors import MinirftError
from minirft.judge import build_judge
from minirft.judge.backends.torch import BATCH_TOLERANCE
from minirft.recipe import JudgeConfig

pytestmark = pytest.mark.slow

ROW = parse_row({"prompt": "Say hello to the user."}, "t")
GROUP = ["Hello! Nice to meet you.", "Shut up.", "hi"]
CRITERIA = [{"name": "polite", "question": "Is the response polite?"}]


@pytest.fixture(scope="module")
def judge():
    try:
        from minirft.models import resolve_model

        resolve_model("smollm2-135m-instruct")
    except MinirftError as exc:
        pytest.skip(str(exc))
    j = build_judge(JudgeConfig(model="smollm2-135m-instruct", backend="torch", criteria=CRITERIA,
                                rationale_max_tokens=12))
    yield j
    j.close()


def test_smollm2_scores_batched_equal_alone_and_rationale(judge):
    assert judge.layout.fmt == "chatml"  # read from the GGUF's chat template
    batched = judge.score_groups([ROW], [GROUP], rationales=[[True, False, False]])[0]
    assert batched[0].rationale and batched[1].rationale is None
    for cand, s in zip(GROUP, batched):
        assert s.error is None and 0.0 < s.reward < 1.0
        alone = judge.score_groups([ROW], [[cand]])[0][0]
        assert abs(alone.reward - s.reward) <= BATCH_TOLERANCE
    ev = judge.evaluator
    assert ev.stats.header_runs == 1 and ev.stats.header_reuses >= len(GROUP)
