"""`minirft report`: one self-contained HTML page holding the log's numbers (checked against the fixture
run's events.jsonl and an eval.json), rendered by headless Chromium when it is installed."""

from __future__ import annotations

import html
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from minirft.cli import cli
from minirft.events import read_events

FIXTURE = Path(__file__).parent / "fixtures" / "tui_runs" / "polite-20261123-010000"
EVAL = {
    "data": "recipes/data/everyday-questions-heldout.jsonl", "n": 12, "greedy": True, "samples": 1,
    "measures": {"length": {"base": 0.612, "trained": 0.871, "delta": 0.259, "delta_ci95": [0.101, 0.402]},
                 "length_chars": {"base": 311.5, "trained": 188.25, "delta": -123.25, "delta_ci95": [-170.0, -80.5]}},
    "judge": {"model": "gemma3-270m", "backend": "llama_cpp", "question": "Which response is better?"},
    "win_rate": 0.6875, "win_rate_ci95": [0.5312, 0.8219], "wins": 8, "losses": 4,
    "pairs": [{"prompt": "How do I say no to extra work?", "tuned": "Thank you for thinking of me <3",
               "base": "No.", "p_tuned": 0.81, "rationale": "The first reply is kinder & clearer."}],
}


def fmt(v: float, d: int) -> str:
    return f"{v:.{d}f}"


@pytest.fixture
def run_dir(tmp_path) -> Path:
    run = tmp_path / FIXTURE.name
    shutil.copytree(FIXTURE, run)
    (run / "eval.json").write_text(json.dumps(EVAL))
    return run


@pytest.fixture
def page(run_dir, tmp_path) -> str:
    out = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["report", str(run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(out)
    return out.read_text()


def test_help_has_examples():
    result = CliRunner().invoke(cli, ["report", "-h"])
    assert result.exit_code == 0 and "Examples:" in result.output


def test_self_contained(page):
    lowered = page.lower()
    for needle in ("<script", "<link", "src=", "url(", "@import", "http://", "https://"):
        assert needle not in lowered, needle

    class Check(HTMLParser):
        svgs = 0

        def handle_starttag(self, tag, attrs):
            if tag == "svg":
                Check.svgs += 1

    Check().feed(page)
    assert Check.svgs == 7  # reward, its spread, criteria, rules, KL, length, time per phase


def test_page_holds_the_logs_numbers(page):
    records = read_events(FIXTURE / "events.jsonl")
    steps = {r["step"]: r["metrics"] for r in records if r["type"] == "step"}
    for step, m in steps.items():  # every step's row
        row = f'<td class="n">{step}</td><td class="n">{fmt(m["reward"], 4)}</td><td class="n">{fmt(m["reward_std"], 4)}</td>'
        assert row in page, step
        assert f"reward step {step}: {m['reward']:.4f}" in page  # the chart's point
    rewards = [m["reward"] for m in steps.values()]
    assert f"{fmt(sum(rewards[:5]) / 5, 3)} → {fmt(sum(rewards[-5:]) / 5, 3)}" in page
    for name in ("polite", "answers_question", "concise"):
        vals = [m[f"criteria/{name}"] for m in steps.values()]
        a, b = sum(vals[:5]) / 5, sum(vals[-5:]) / 5
        assert f"<td>{name}</td><td class=\"n\">{fmt(a, 3)}</td><td class=\"n\">{fmt(b, 3)}</td>" in page
    kl = [m["kl"] for m in steps.values()]
    assert fmt(sum(kl[-5:]) / 5, 4) in page
    for key in ("generation_s", "judge_s", "update_s"):
        assert f"{sum(m[key] for m in steps.values()):.1f}" in page  # total seconds per phase
    for e in (r for r in records if r["type"] == "event" and r["kind"] in ("warning", "nan_skip", "judge_error")):
        assert html.escape(e["message"]) in page
    samples = sorted((r for r in records if r["type"] == "sample" and r.get("reward") is not None),
                     key=lambda r: r["reward"])
    best, worst = samples[-1], samples[0]
    for s in (best, worst):
        assert html.escape(s["completion"]) in page and fmt(s["reward"], 4) in page
    assert html.escape(best["rationale"]) in page


def test_page_holds_the_eval(page):
    assert "win rate <b>0.688</b>" in page and "[0.531, 0.822]" in page
    assert "<td>length_chars</td>" in page and "-123.250" in page
    assert html.escape("Thank you for thinking of me <3") in page
    assert html.escape("The first reply is kinder & clearer.") in page


def test_run_without_eval_and_errors(tmp_path):
    run = tmp_path / "r"
    shutil.copytree(FIXTURE, run)
    result = CliRunner().invoke(cli, ["report", str(run)])
    assert result.exit_code == 0 and (run / "report.html").is_file()
    assert "No held-out evaluation" in (run / "report.html").read_text()
    bad = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert bad.exit_code == 1 and "not a run dir" in bad.output and "Traceback" not in bad.output
    (run / "eval.json").write_text("{oops")
    bad = CliRunner().invoke(cli, ["report", str(run)])
    assert bad.exit_code == 1 and "eval.json:1: invalid JSON" in bad.output


def test_chromium_renders_it(page, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    from PIL import Image

    html_file = tmp_path / "r.html"
    html_file.write_text(page)
    png = tmp_path / "r.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1180,1400", f"--screenshot={png}",
                    html_file.as_uri()], check=True, capture_output=True, timeout=120)
    img = Image.open(png).convert("RGB")
    assert img.size == (1180, 1400)
    colors = img.getcolors(maxcolors=1 << 20) or []
    assert len(colors) > 50  # text, lines and bands drawn, not a blank page
    blue = sum(n for n, (r, g, b) in colors if b > 200 and r < 80 and g < 120)
    assert blue > 100  # the reward line (#2563eb) is on screen
