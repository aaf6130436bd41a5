"""A jury of judges (judge.panel): pooling math, agreement, the detector, and two real judges end to end."""

import math

import pytest

from minirft.data import parse_row
from minirft.judge import build_judge
from minirft.judge.base import Score
from minirft.judge.panel import PanelJudge, agreement, pool
from minirft.recipe import JudgeConfig
from minirft.train.monitor import MonitorConfig, RunMonitor

CFG = JudgeConfig(criteria=[{"name": "a", "question": "A?", "weight": 2.0}, {"name": "b", "question": "B?"},
                            {"name": "g", "question": "G?", "gate": True}])


def s(a, b, g=1.0):
    return Score(reward=0.0, criteria={"a": a, "b": b, "g": g})


def test_mean_pool_is_the_weighted_mean_per_criterion_then_the_rubric_reward():
    (out,) = pool([{"x": s(0.9, 0.2, 0.8), "y": s(0.3, 0.6, 0.4)}], {"x": 3.0, "y": 1.0}, CFG)
    a, b, g = (3 * 0.9 + 0.3) / 4, (3 * 0.2 + 0.6) / 4, (3 * 0.8 + 0.4) / 4
    assert out.criteria == pytest.approx({"a": a, "b": b, "g": g})
    assert out.reward == pytest.approx((2 * a + b) / 3 * g)
    assert out.panel["x"]["criteria"]["a"] == 0.9 and out.panel["y"]["criteria"]["b"] == 0.6


def test_a_failed_member_is_left_out_and_all_failed_gives_none():
    bad = Score(reward=None, error="boom")
    (one,) = pool([{"x": s(0.9, 0.2), "y": bad}], {"x": 1.0, "y": 1.0}, CFG)
    assert one.criteria["a"] == pytest.approx(0.9)
    (none,) = pool([{"x": bad, "y": bad}], {"x": 1.0, "y": 1.0}, CFG)
    assert none.reward is None and "every judge of the panel failed" in none.error


def test_standardised_pool_ranks_by_mean_zscore():
    # x spreads its scores widely, y barely: standardising gives both the same say in the ranking.
    verdicts = [{"x": s(0.9, 0.5), "y": s(0.50, 0.5)}, {"x": s(0.1, 0.5), "y": s(0.52, 0.5)},
                {"x": s(0.5, 0.5), "y": s(0.51, 0.5)}]
    out = pool(verdicts, {"x": 1.0, "y": 1.0}, CFG, standardise=True)
    z = lambda v, xs: (v - sum(xs) / 3) / (sum((t - sum(xs) / 3) ** 2 for t in xs) / 3) ** 0.5  # noqa: E731
    want = [(z(xa, [0.9, 0.1, 0.5]) + z(ya, [0.5, 0.52, 0.51])) / 2 for xa, ya in [(0.9, 0.5), (0.1, 0.52), (0.5, 0.51)]]
    assert [o.criteria["a"] for o in out] == pytest.approx([1 / (1 + math.exp(-w)) for w in want])


def test_agreement_is_the_mean_pairwise_reward_correlation():
    rows = [Score(reward=None, panel={"x": {"reward": x}, "y": {"reward": y}, "z": {"reward": zz}})
            for x, y, zz in [(0.1, 0.2, 0.9), (0.5, 0.6, 0.5), (0.9, 1.0, 0.1), (0.3, 0.4, 0.7)]]
    # x and y move together (r = 1), z moves against both (r = -1): mean (1 - 1 - 1) / 3
    assert agreement(rows) == pytest.approx(-1 / 3)
    assert agreement([Score(reward=0.5)] * 5) is None


def test_monitor_warns_when_the_panel_stops_agreeing():
    m = RunMonitor(config=MonitorConfig(window=3))
    fired = [m.update(step, [], {"judge/agreement": v}) for step, v in enumerate([0.6, 0.5, 0.05, 0.0, -0.1])]
    assert [a.detector for alerts in fired for a in alerts] == ["panel_agreement"]
    assert fired[4] and fired[4][0].value == pytest.approx((0.05 + 0.0 - 0.1) / 3, abs=1e-4)


def test_two_real_judges_pooled_end_to_end(tiny_gguf, tmp_path):
    import shutil

    other = tmp_path / "other.gguf"
    shutil.copy(tiny_gguf, other)
    cfg = JudgeConfig(criteria=[{"name": "q", "question": "Is it right?"},
                                {"name": "c", "method": "contrast", "positive": "The answer is {reference}.",
                                 "negative": ""}],
                      panel=[{"model": tiny_gguf, "name": "one", "weight": 3.0}, {"model": str(other), "name": "two"}],
                      n_threads=1, n_ctx=1024, rationales="none", deterministic=True)
    row = parse_row({"prompt": "What is 2+2?", "reference": "4"}, "t", 1)
    judge = build_judge(cfg)
    single = build_judge(cfg.model_copy(update={"model": tiny_gguf, "panel": []}))
    try:
        assert isinstance(judge, PanelJudge)
        scores = judge.score_groups([row], [["4", "five"]])[0]
        alone = single.score_groups([row], [["4", "five"]])[0]
        for pooled, one in zip(scores, alone):
            assert set(pooled.panel) == {"one", "two"}
            assert pooled.panel["one"]["criteria"] == pytest.approx(one.criteria)  # the same model twice
            assert pooled.criteria == pytest.approx(one.criteria)
        pref = build_judge(cfg.model_copy(update={"mode": "preference", "criteria": []}))
        v = pref.compare(row, "4", "five")
        assert v.p_a + pref.compare(row, "five", "4").p_a == pytest.approx(1.0)
        pref.close()
    finally:
        judge.close()
        single.close()


def test_panel_member_names_must_be_unique():
    with pytest.raises(ValueError, match="member names must be unique"):
        JudgeConfig(criteria=[{"name": "q", "question": "Q?"}], panel=[{"model": "m"}, {"model": "m"}])


def test_calibrate_shows_each_judge_of_the_panel_side_by_side(tiny_gguf, tmp_path):
    import json
    import shutil

    from click.testing import CliRunner

    from minirft.cli import cli

    shutil.copy(tiny_gguf, tmp_path / "b.gguf")
    (tmp_path / "p.jsonl").write_text('{"prompt": "x"}\n')
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\njudge:\n  n_threads: 1\n  n_ctx: 1024\n  panel: [{{model: {tiny_gguf}, name: a}}, "
                      f"{{model: {tmp_path / 'b.gguf'}, name: b}}]\n  criteria:\n"
                      "    - {name: kind, method: contrast, positive: 'The assistant is kind.', negative: ''}\n"
                      "data: {path: p.jsonl}\n")
    rows = [{"prompt": "Say hi.", "response": r, "labels": {"kind": y}}
            for r, y in [("Hello, friend!", True), ("Go away.", False), ("Hi there!", True), ("Shut up.", False)]]
    labels = tmp_path / "l.jsonl"
    labels.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = CliRunner().invoke(cli, ["calibrate", str(recipe), str(labels), "--fit", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert set(report["criteria"]) == {"kind", "kind@a", "kind@b"}
    assert report["criteria"]["kind@a"]["auc"] == report["criteria"]["kind@b"]["auc"]  # the same model twice
    assert report["overall"]["n"] == 4  # the pooled score only
    assert set(json.loads((tmp_path / "r.calibration.json").read_text())["platt"]) == {"kind"}
