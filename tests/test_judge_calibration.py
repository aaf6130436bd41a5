"""`minirft calibrate --fit` output (Platt maps) applied by the judge (judge.platt)."""

import json
import math

import pytest

from minirft.data import parse_row
from minirft.errors import MinirftError
from minirft.judge import build_judge
from minirft.recipe import JudgeConfig, load_recipe


CRITERIA = [{"name": "answers", "question": "Does the response answer the question?"},
            {"name": "polite", "question": "Is the response polite?"}]
ROW = parse_row({"prompt": "What is 2+2?"}, "t")


@pytest.fixture(scope="module")
def tiny(tiny_gguf):
    return tiny_gguf


def _logit(p):
    return math.log(p / (1 - p))


def test_rubric_and_preference_scores_go_through_the_fitted_map(tiny, tmp_path):
    cal = tmp_path / "cal.json"
    # answers: a=0 -> every P(yes) becomes sigmoid(b) = 0.8; polite: identity; preference: a=2 (sharper)
    cal.write_text(json.dumps({"platt": {"answers": {"a": 0.0, "b": _logit(0.8)}, "polite": {"a": 1.0, "b": 0.0},
                                         "preference": {"a": 2.0, "b": 0.0}}}))
    base = dict(model=tiny, criteria=CRITERIA, n_threads=1, n_ctx=1024, rationales="none", deterministic=True)
    plain = build_judge(JudgeConfig(**base))
    fitted = build_judge(JudgeConfig(**base, platt=str(cal)))
    try:
        a = plain.score_groups([ROW], [["4", "five"]])[0]
        b = fitted.score_groups([ROW], [["4", "five"]])[0]
        for x, y in zip(a, b):
            assert y.criteria["answers"] == pytest.approx(0.8)
            assert y.criteria["polite"] == pytest.approx(x.criteria["polite"], abs=1e-9)
            assert y.reward == pytest.approx((0.8 + x.criteria["polite"]) / 2)
        pa = build_judge(JudgeConfig(**{**base, "mode": "preference", "criteria": []}))
        pb = build_judge(JudgeConfig(**{**base, "mode": "preference", "criteria": []}, platt=str(cal)))
        va, vb = pa.compare(ROW, "4", "five"), pb.compare(ROW, "4", "five")
        assert vb.p_a == pytest.approx(1 / (1 + math.exp(-2 * _logit(va.p_a))))
        pa.close()
        pb.close()
    finally:
        plain.close()
        fitted.close()


def test_recipe_resolves_the_platt_file_next_to_it(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"prompt": "x"}\n')
    (tmp_path / "r.calibration.json").write_text('{"platt": {"ok": {"a": 1, "b": 0}}}')
    text = "name: r\njudge:\n  platt: r.calibration.json\n  criteria: [{name: ok, question: 'Ok?'}]\ndata: {path: p.jsonl}\n"
    (tmp_path / "r.yaml").write_text(text)
    assert load_recipe(tmp_path / "r.yaml").judge.platt == str(tmp_path / "r.calibration.json")
    (tmp_path / "r.calibration.json").unlink()
    with pytest.raises(MinirftError, match="judge.platt: no such file"):
        load_recipe(tmp_path / "r.yaml")


def test_deprecated_judge_keys_still_work_with_a_warning(tmp_path, capsys):
    (tmp_path / "p.jsonl").write_text('{"prompt": "x"}\n')
    (tmp_path / "r.calibration.json").write_text('{"platt": {"ok": {"a": 1, "b": 0}}}')
    text = ("name: r\njudge:\n  calibration: r.calibration.json\n  content_free_calibration: true\n"
            "  criteria: [{name: ok, question: 'Ok?'}]\ndata: {path: p.jsonl}\n")
    (tmp_path / "r.yaml").write_text(text)
    judge = load_recipe(tmp_path / "r.yaml").judge
    assert judge.platt == str(tmp_path / "r.calibration.json") and judge.content_free is True
    err = capsys.readouterr().err
    assert f"Warning: {tmp_path / 'r.yaml'}:3: judge.calibration is deprecated; use judge.platt" in err
    assert f"{tmp_path / 'r.yaml'}:4: judge.content_free_calibration is deprecated; use judge.content_free" in err
