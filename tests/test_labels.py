"""Human labels (minirft.labels): the file (append-only, atomic, undo), agreement math, the label queue."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from minirft import labels as lbl
from minirft.tui.run_state import Sample


def _sample(step=1, group=0, index=0, reward=0.5, criteria=None, rewards=None, error=None, text="x"):
    return Sample(step=step, group=group, index=index, prompt="p", completion=text, reward=reward, advantage=0.0,
                  rewards=rewards if rewards is not None else {"judge": reward}, criteria=criteria or {},
                  rationale=None, judge_error=error)


# ------------------------------------------------------------------------------------------ the file
def test_label_log_appends_whole_fsynced_lines_and_never_rewrites(tmp_path, monkeypatch):
    path = tmp_path / "labels.jsonl"
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(lbl.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    book = lbl.LabelBook(path)
    s = _sample(criteria={"polite": 0.9})
    book.add(lbl.rubric_row(s, {"polite": True}, None))
    first = path.read_bytes()
    book.add(lbl.rubric_row(s, {"polite": False}, True))
    book.undo()
    data = path.read_bytes()
    assert data.startswith(first) and data.endswith(b"\n")  # append-only: earlier bytes untouched
    rows = [json.loads(ln) for ln in data.splitlines()]
    assert len(rows) == 3 and len(synced) == 3  # one fsync per line, before add() returns
    assert rows[2] == {"undo": "1/0.0", "time": rows[2]["time"]}
    assert rows[0]["response"] == "x" and rows[0]["judge"]["criteria"] == {"polite": 0.9}
    # the undo brought back the first verdict
    assert book.verdict("1/0.0").labels == {"polite": True}
    assert lbl.LabelBook(path).verdict("1/0.0").labels == {"polite": True}  # same from disk


def test_undo_walks_back_through_replaced_verdicts():
    a1 = {"id": "a", "labels": {"c": True}}
    b1 = {"id": "b", "labels": {"c": False}}
    a2 = {"id": "a", "labels": {"c": False}}
    rows = [a1, b1, a2]
    assert lbl.standing_rows(rows) == [b1, a2]
    assert lbl.latest_standing_id(rows) == "a"
    rows.append({"undo": "a"})
    assert lbl.standing_rows(rows) == [a1, b1]
    assert lbl.latest_standing_id(rows) == "b"  # b1 was written after a1
    rows.append({"undo": "b"})
    assert lbl.standing_rows(rows) == [a1]
    rows.append({"undo": "a"})
    assert lbl.standing_rows(rows) == [] and lbl.latest_standing_id(rows) is None
    rows.append({"undo": "a"})  # nothing left to undo: ignored
    assert lbl.standing_rows(rows) == []
    plain = {"prompt": "q", "response": "r", "labels": {"c": True}}  # hand-written rows (no id) always stand
    assert lbl.standing_rows([plain, plain]) == [plain, plain]


def test_a_killed_writer_loses_no_finished_label_and_a_torn_line_stays_apart(tmp_path):
    path = tmp_path / "labels.jsonl"
    code = ("import sys, os; sys.path.insert(0, %r); from minirft.labels import LabelLog\n"
            "log = LabelLog(%r)\n"
            "for i in range(5):\n"
            "    log.append({'id': str(i), 'kind': 'rubric', 'labels': {'c': True}})\n"
            "os.kill(os.getpid(), 9)\n") % (os.getcwd(), str(path))
    proc = subprocess.run([sys.executable, "-c", code])
    assert proc.returncode == -9
    assert [r["id"] for r in lbl.read_rows(path)] == ["0", "1", "2", "3", "4"]
    with open(path, "ab") as fh:
        fh.write(b'{"id": "torn", "lab')  # as if a crash cut a line mid-write
    lbl.LabelLog(path).append({"id": "5", "labels": {"c": False}})
    assert [r["id"] for r in lbl.read_rows(path)] == ["0", "1", "2", "3", "4", "5"]


# -------------------------------------------------------------------------------------- agreement
def test_kappa_and_its_interval_against_hand_computed_values():
    # 10 verdicts: human 1 1 1 1 1 1 0 0 0 0, judge 1 1 1 1 1 0 1 0 0 0
    human = [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
    judge = [1, 1, 1, 1, 1, 0, 1, 0, 0, 0]
    k = lbl.kappa_interval(human, judge)
    # p_o = 8/10; p_e = .6·.6 + .4·.4 = .52; κ = (.8 − .52)/(.48) = 0.58333
    assert k.n == 10 and k.accuracy == pytest.approx(0.8)
    assert k.kappa == pytest.approx(0.28 / 0.48)
    # Wilson for p_o: z² = 3.841459, centre = (.8 + .192073)/1.384146 = 0.716737,
    # half = 1.959964·sqrt(.016 + .009604)/1.384146 = 0.226578 → p_o in [0.490159, 0.943315]
    # → κ in [(0.490159 − .52)/.48, (0.943315 − .52)/.48] = [−0.062169, 0.881906]
    assert lbl.wilson(0.8, 10) == pytest.approx((0.490159, 0.943315), abs=1e-5)
    assert (k.lo, k.hi) == pytest.approx((-0.062169, 0.881906), abs=1e-5)
    # perfect agreement on 4 balanced verdicts: κ 1, but 4 labels cannot prove much
    # Wilson(1, 4): centre = (1 + .480182)/1.960365 = 0.755053, half = 1.959964·sqrt(.060029)/1.960365 = 0.244947
    # → p_o ≥ 0.510106; p_e = .5 → κ ≥ (0.510106 − .5)/.5 = 0.020212
    p = lbl.kappa_interval([1, 0, 1, 0], [1, 0, 1, 0])
    assert p.kappa == 1.0 and p.hi == pytest.approx(1.0) and p.lo == pytest.approx(0.020212, abs=1e-4)
    # both raters constant: chance agreement is 1, no interval
    c = lbl.kappa_interval([1, 1, 1], [1, 1, 1])
    assert c.accuracy == 1.0 and c.lo is None and c.hi is None
    assert lbl.kappa_interval([1], [0]).lo is None


def test_agreement_per_criterion_overall_and_pooled():
    rows = [
        {"id": "1", "kind": "rubric", "judge": {"judge": 0.8, "criteria": {"polite": 0.9, "topic": 0.2}},
         "labels": {"polite": True, "topic": True}, "overall": True},
        {"id": "2", "kind": "rubric", "judge": {"judge": 0.3, "criteria": {"polite": 0.4, "topic": 0.7}},
         "labels": {"polite": False}, "overall": True},
        {"id": "3", "kind": "rubric", "judge": {"judge": 0.6, "criteria": {"polite": 0.6, "topic": 0.1}},
         "labels": {"polite": False, "topic": False}, "overall": None},
        {"id": "4", "kind": "preference", "judge": {"reward_a": 0.7, "reward_b": 0.2, "p_a": None}, "human": "a"},
        {"id": "5", "kind": "preference", "judge": {"reward_a": 0.5, "reward_b": 0.5, "p_a": None}, "human": "b"},
    ]
    a = lbl.agreement(rows)
    assert list(a) == ["polite", "topic", "overall", "preference", "all"]
    # polite: human 1 0 0, judge 1 0 1 -> 2/3; p_e = (1/3)(2/3) + (2/3)(1/3) = 4/9; κ = (2/3 − 4/9)/(5/9) = 0.4
    assert a["polite"].n == 3 and a["polite"].accuracy == pytest.approx(2 / 3) and a["polite"].kappa == pytest.approx(0.4)
    # topic: human 1 0, judge 0 0 -> 1/2; overall: human 1 1, judge 1 0 -> 1/2
    assert (a["topic"].n, a["topic"].accuracy) == (2, 0.5) and (a["overall"].n, a["overall"].accuracy) == (2, 0.5)
    assert (a["preference"].n, a["preference"].accuracy) == (1, 1.0)  # the tie (row 5) is left out
    assert a["all"].n == 8 and a["all"].accuracy == pytest.approx(5 / 8)


def test_drift_alarm_fires_once_below_the_threshold_and_rearms():
    alarm = lbl.DriftAlarm(window=4, threshold=0.75)

    def rows(pattern):  # 1 = the judge agreed
        return [{"id": str(i), "kind": "rubric", "judge": {"criteria": {"c": 0.9}}, "labels": {"c": bool(ok)}}
                for i, ok in enumerate(pattern)]

    assert alarm.check(rows([0, 0, 0])) is None  # fewer than `window` verdicts
    assert alarm.check(rows([1, 1, 1, 1])) is None
    msg = alarm.check(rows([1, 1, 1, 1, 0, 0]))  # last 4: 2/4 = 50%
    assert msg and "50% of your last 4" in msg and "below 75%" in msg
    assert alarm.check(rows([1, 1, 1, 1, 0, 0, 0])) is None  # still low: said once
    assert alarm.check(rows([1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1])) is None  # recovered: re-armed
    assert alarm.check(rows([1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 0, 0])) is not None


# ------------------------------------------------------------------------------------ label queue
def test_the_queue_interleaves_unsure_disagreeing_outlying_and_top_samples():
    filler = [_sample(step=1, group=g, index=0, reward=0.3, criteria={"c": 0.1},
                      rewards={"judge": 0.1, "len": 0.1}) for g in range(8)]
    unsure_a = _sample(step=1, group=10, reward=0.3, criteria={"c": 0.52}, rewards={"judge": 0.3, "len": 0.3})
    unsure_b = _sample(step=1, group=11, reward=0.3, criteria={"c": 0.40}, rewards={"judge": 0.3, "len": 0.3})
    clash_a = _sample(step=1, group=12, reward=0.5, criteria={"c": 0.95}, rewards={"judge": 0.95, "len": 0.0})
    clash_b = _sample(step=1, group=13, reward=0.3, criteria={"c": 0.2}, rewards={"judge": 0.2, "len": 0.7})
    outlier = _sample(step=1, group=14, reward=-3.0, criteria={"c": 0.0}, rewards={"judge": 0.0, "len": 0.0})
    top3 = _sample(step=3, group=0, reward=0.9, criteria={"c": 0.9}, rewards={"judge": 0.9, "len": 0.9})
    low3 = _sample(step=3, group=1, reward=0.2, criteria={"c": 0.05}, rewards={"judge": 0.05, "len": 0.1})
    top2 = _sample(step=2, group=0, reward=0.8, criteria={"c": 0.9}, rewards={"judge": 0.9, "len": 0.9})
    broken = _sample(step=3, group=2, reward=None, error="judge timed out")
    labelled = _sample(step=1, group=15, criteria={"c": 0.5}, rewards={"judge": 0.5, "len": 0.5})
    pool = filler + [unsure_a, unsure_b, clash_a, clash_b, outlier, top3, low3, top2, broken, labelled]
    q = lbl.label_queue(pool, {lbl.sample_id(1, 15, 0)}, top_steps=2)
    got = [it.sample for it in q]
    # round 1: nearest to 0.5, widest judge-vs-rules gap, largest |z|, top of the latest step;
    # round 2: the next of each list (top of step 2); the labelled and the judge-error samples never;
    assert got[:4] == [unsure_a, clash_a, outlier, top3]
    assert got[4:7] == [unsure_b, clash_b, top2]
    # then everything else unlabelled: latest step first, the least sure judge first
    assert got[7:] == [low3] + filler
    assert labelled not in got and broken not in got and q[7].reason == "not labelled yet (step 3)"
    assert q[0].reason.startswith("judge unsure (c P=0.52")
    assert "vs rule checks" in q[1].reason and "outlier" in q[2].reason and "top reward of step 3" in q[3].reason
    assert lbl.label_queue(pool, {lbl.sample_id(s.step, s.group, s.index) for s in pool}) == []
