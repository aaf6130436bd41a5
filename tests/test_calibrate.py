"""`minirft calibrate` end to end with a scripted judge whose behaviour (and so every number) is known."""

import json

import pytest
from click.testing import CliRunner

from minirft.cli import cli
from minirft.judge.base import PairVerdict, Score
from minirft.commands import common as commands_common
from minirft.judge.calibration import load_platt_maps as load_calibration


class ScriptedJudge:
    """Prefers the response containing 'good'; shown first it is 0.9 sure, shown second 0.7 (position bias)."""

    mode = "preference"
    closed = False

    def compare(self, row, a, b, rationale=False):
        a_good = "good" in a
        first = 0.9 if a_good else 0.3  # P(A better | A first): biased towards the first position
        second = 0.7 if a_good else 0.1  # P(A better | A second)
        return PairVerdict((first + second) / 2, first, second)

    def compare_many(self, rows, pairs, rationale=False):
        return [self.compare(row, a, b, rationale) for row, (a, b) in zip(rows, pairs)]

    def score_groups(self, rows, groups, rationales=False):
        return [[Score(reward=p, criteria={"polite": p, "on_topic": 1 - p})
                 for p in (0.8 if "please" in c else 0.2 for c in g)] for g in groups]

    def close(self):
        ScriptedJudge.closed = True


@pytest.fixture
def scripted(monkeypatch):
    monkeypatch.setattr(commands_common, "make_judge", lambda cfg: ScriptedJudge())


def recipe(tmp_path, mode):
    (tmp_path / "p.jsonl").write_text('{"prompt": "x"}\n')
    crit = "  criteria:\n    - {name: polite, question: 'Polite?'}\n    - {name: on_topic, question: 'On topic?'}\n"
    p = tmp_path / "r.yaml"
    p.write_text(f"name: r\njudge:\n  mode: {mode}\n{crit}data:\n  path: p.jsonl\n")
    return p


def test_pairwise_report(tmp_path, scripted):
    rows = [{"prompt": f"q{i}", "chosen": "a good answer", "rejected": "a bad answer"} for i in range(8)]
    rows += [{"prompt": "q", "chosen": "meh", "rejected": "good but wrong"} for _ in range(2)]
    labels = tmp_path / "pairs.jsonl"
    labels.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = CliRunner().invoke(cli, ["calibrate", str(recipe(tmp_path, "preference")), str(labels), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["n"] == 10 and report["overall"]["accuracy"] == pytest.approx(0.8)
    # single-order verdicts: "good" shown first 0.9 / second 0.7 -> both > .5, so every verdict survives the swap
    assert report["swap_consistency"] == 1.0 and report["accuracy_first_position_only"] == pytest.approx(0.8)
    assert ScriptedJudge.closed


def test_rubric_report_fit_and_plot(tmp_path, scripted):
    rows = [{"prompt": "q", "response": "yes please", "labels": {"polite": True, "on_topic": False}},
            {"prompt": "q", "response": "no", "labels": {"polite": False, "on_topic": False}},
            {"prompt": "q", "response": "please", "labels": {"polite": False, "on_topic": True}}]
    labels = tmp_path / "rub.jsonl"
    labels.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = recipe(tmp_path, "rubric")
    png = tmp_path / "rel.png"
    res = CliRunner().invoke(cli, ["calibrate", str(r), str(labels), "--fit", "--plot", str(png)])
    assert res.exit_code == 0, res.output
    assert "polite" in res.stdout and "on_topic" in res.stdout
    polite_line = next(line for line in res.stdout.splitlines() if line.startswith("polite"))
    # n=3, two of three right; P(yes) 0.8 / 0.2 / 0.8 for labels yes / no / no -> AUC (1 + 0.5) / 2
    assert polite_line.split()[1:3] == ["3", "0.667"] and polite_line.split()[5] == "0.750"
    assert polite_line.split()[8:10] == ["0.800", "0.500"]  # after the AUC interval "[lo, hi]"
    assert png.read_bytes()[:4] == b"\x89PNG"
    fitted = load_calibration(tmp_path / "r.calibration.json")
    assert set(fitted) == {"polite", "on_topic"}


def test_bad_inputs_are_one_line_errors(tmp_path, scripted):
    labels = tmp_path / "pairs.jsonl"
    labels.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n{"prompt": "q"}\n')
    res = CliRunner().invoke(cli, ["calibrate", str(recipe(tmp_path, "preference")), str(labels)])
    assert res.exit_code == 1 and res.output.strip().startswith(f"Error: {labels}:2: a label row needs")
    labels.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n')
    res = CliRunner().invoke(cli, ["calibrate", str(recipe(tmp_path, "rubric")), str(labels)])
    assert res.exit_code == 1 and "add the override judge.mode=preference" in res.output


def test_calibrate_and_the_label_views_give_the_same_kappa_interval(tmp_path, scripted):
    """One κ interval for the CLI and the TUI: the numbers of the hand-computed case in test_labels."""
    from minirft.labels import agreement

    # human 1 1 1 1 1 1 0 0 0 0; judge P(polite) 0.8 for "please" else 0.2 -> verdicts 1 1 1 1 1 0 1 0 0 0
    responses = ["please"] * 5 + ["no", "please", "no", "no", "no"]
    humans = [True] * 6 + [False] * 4
    rows = [{"id": str(k), "kind": "rubric", "prompt": "q", "response": r, "labels": {"polite": h},
             "judge": {"criteria": {"polite": 0.8 if "please" in r else 0.2}}}
            for k, (r, h) in enumerate(zip(responses, humans))]
    labels = tmp_path / "rub.jsonl"
    labels.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = CliRunner().invoke(cli, ["calibrate", str(recipe(tmp_path, "rubric")), str(labels), "--json"])
    assert res.exit_code == 0, res.output
    cli_ci = json.loads(res.stdout)["criteria"]["polite"]["kappa_ci95"]
    tui = agreement(rows)["polite"]
    assert cli_ci == pytest.approx([tui.lo, tui.hi]) and cli_ci == pytest.approx([-0.062169, 0.881906], abs=1e-5)
