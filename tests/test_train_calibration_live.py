"""A running trainer picks up a refitted judge calibration between steps (fake judge, tiny model)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from test_train_loop import recipe  # noqa: E402  (tiny, the tiny-model fixture, comes from conftest)
from train_fixtures import FakeJudge  # noqa: E402

from minirft.events import read_events  # noqa: E402
from minirft.train.calibration_watch import RUN_CALIBRATION, digest_of  # noqa: E402
from minirft.train.loop import train  # noqa: E402
from minirft.judge.calibration import save_platt_maps as save_calibration  # noqa: E402
from minirft.stats import Platt  # noqa: E402


class CalibratedFakeJudge(FakeJudge):
    """FakeJudge whose P(vowels) goes through Platt maps handed over by the trainer, as GroupJudge does."""

    def __init__(self):
        super().__init__()
        self.platt = {}
        self.handed: list[dict] = []

    def use_calibration(self, platt):
        self.platt = dict(platt)
        self.handed.append(self.platt)

    def score_groups(self, rows, groups, rationales=False):
        out = super().score_groups(rows, groups, rationales)
        if "vowels" in self.platt:
            for scores in out:
                for s in scores:
                    s.criteria["vowels"] = s.reward = self.platt["vowels"](s.criteria["vowels"])
        return out


def raw_p(text: str) -> float:
    return sum(ch in "aeiou" for ch in text) / max(1, len(text))


def test_a_changed_calibration_file_is_used_from_the_next_step_and_logged(tiny, tmp_path):
    run = tmp_path / "run"
    target = run / RUN_CALIBRATION  # a recipe without judge.calibration follows RUN_DIR/calibration.json
    first, second = Platt(2.0, 1.0), Platt(0.5, -1.0)

    def refit(step, metrics):
        if step == 1:
            save_calibration(target, {"vowels": first}, str(run / "labels.jsonl"), 12)
        if step == 3:
            save_calibration(target, {"vowels": second}, str(run / "labels.jsonl"), 30)
        if step == 4:
            target.unlink()

    judge = CalibratedFakeJudge()
    train(recipe(tiny, steps=5, prompts_per_step=1), run, judge=judge, quiet=True, on_step=refit)
    events = read_events(run / "events.jsonl")
    metrics = {e["step"]: e["metrics"] for e in events if e["type"] == "step"}
    cal_events = [e for e in events if e["type"] == "event" and e["kind"] == "calibration"]
    d1 = digest_of(json.dumps({"fitted_on": str(run / "labels.jsonl"), "n": 12,
                               "platt": {"vowels": {"a": 2.0, "b": 1.0}}}, indent=2).encode() + b"\n")
    # the step metrics say which calibration was in force: none (no key), the first fit, the second, none
    assert "calibration" not in metrics[1]
    assert metrics[2]["calibration"] == d1 == cal_events[0]["calibration"]
    assert metrics[3]["calibration"] == d1
    assert metrics[4]["calibration"] == cal_events[1]["calibration"] not in (None, d1)
    assert "calibration" not in metrics[5]
    assert [e["step"] for e in cal_events] == [2, 4, 5]
    assert "fitted on 12 labels" in cal_events[0]["message"] and "vowels: a=2.00 b=+1.00" in cal_events[0]["message"]
    assert "removed" in cal_events[2]["message"]
    assert judge.handed == [{"vowels": first}, {"vowels": second}, {}]
    # and the scores of each step went through the map in force then
    samples = [e for e in events if e["type"] == "sample"]
    maps = {1: None, 2: first, 3: first, 4: second, 5: None}
    for s in samples:
        p = raw_p(s["completion"])
        want = p if maps[s["step"]] is None else maps[s["step"]](p)
        assert abs(s["criteria"]["vowels"] - want) < 1e-9, s["step"]


def test_an_unreadable_calibration_file_is_a_warning_and_the_old_one_stays(tiny, tmp_path):
    run = tmp_path / "run"
    target = run / RUN_CALIBRATION

    def refit(step, metrics):
        if step == 1:
            save_calibration(target, {"vowels": Platt(2.0, 0.0)}, "labels.jsonl", 5)
        if step == 2:
            target.write_text("{not json")

    train(recipe(tiny, steps=3, prompts_per_step=1), run, judge=CalibratedFakeJudge(), quiet=True, on_step=refit)
    events = read_events(run / "events.jsonl")
    metrics = {e["step"]: e["metrics"] for e in events if e["type"] == "step"}
    warnings = [e for e in events if e["type"] == "event" and e["kind"] == "warning"
                and e.get("detector") == "calibration"]
    assert metrics[2]["calibration"] == metrics[3]["calibration"] is not None
    assert len(warnings) == 1 and warnings[0]["step"] == 3 and "keeping the calibration in force" in warnings[0]["message"]


def test_the_real_judge_takes_new_maps_mid_run(tmp_path):
    """GroupJudge over real llama.cpp (the tiny GGUF): use_calibration changes the very next scores."""
    import math

    import pytest

    from judge_fixtures import write_tiny_gguf
    from minirft.data import parse_row
    from minirft.judge import build_judge
    from minirft.recipe import JudgeConfig

    gguf = write_tiny_gguf(tmp_path / "tiny.gguf")
    row = parse_row({"prompt": "What is 2+2?"}, "t")
    judge = build_judge(JudgeConfig(model=str(gguf), criteria=[{"name": "answers", "question": "Answers it?"}],
                                    n_threads=1, n_ctx=1024, rationales="none", deterministic=True))
    try:
        before = judge.score_groups([row], [["4"]])[0][0].criteria["answers"]
        judge.use_calibration({"answers": Platt(0.0, math.log(0.8 / 0.2))})  # every P(yes) -> 0.8
        assert judge.score_groups([row], [["4"]])[0][0].criteria["answers"] == pytest.approx(0.8)
        judge.use_calibration({})
        assert judge.score_groups([row], [["4"]])[0][0].criteria["answers"] == pytest.approx(before, abs=1e-9)
    finally:
        judge.close()
