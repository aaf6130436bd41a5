import json

import pytest
from click.testing import CliRunner

from minirft import __version__
from minirft.cli import cli


@pytest.fixture
def runner():
    return CliRunner()


def test_version_and_help(runner):
    r = runner.invoke(cli, ["--version"])
    assert r.exit_code == 0 and __version__ in r.output
    r = runner.invoke(cli, ["-h"])
    assert r.exit_code == 0 and "Examples:" in r.output and "doctor" in r.output and "recipes" in r.output


def test_unknown_command_is_a_usage_error(runner):
    r = runner.invoke(cli, ["frobnicate"])
    assert r.exit_code == 2 and "No such command" in r.output


def test_doctor_reports_the_machine(runner):
    r = runner.invoke(cli, ["doctor"])
    assert r.exit_code == 0, r.output
    for field in ("python", "torch", "CUDA", "unsloth usable", "bitsandbytes", "llama-cpp-python", "triton",
                  "smollm2-135m-instruct", "gemma3-270m", "memory"):
        assert field in r.output
    info = json.loads(runner.invoke(cli, ["doctor", "--json"]).output)
    assert info["torch"]["installed"] and "batched_api" in info["llama_cpp"]
    # what llama.cpp was compiled for; scripts/setup.sh builds it for this CPU (AVX2 at the least here)
    if " avx2 " in open("/proc/cpuinfo").read():
        assert "AVX2" in info["llama_cpp"]["cpu_features"] and "built for" in r.output
    assert info["unsloth"]["usable"] is (info["torch"]["cuda"] and info["unsloth"]["installed"])


def test_recipes_list_show_validate(runner, root):
    r = runner.invoke(cli, ["recipes", "list"])
    assert r.exit_code == 0 and "polite" in r.output
    r = runner.invoke(cli, ["recipes", "show", "polite", "training.steps=4"])
    assert r.exit_code == 0 and "steps: 4" in r.output
    files = [str(p) for p in sorted((root / "recipes").glob("*.yaml"))]
    r = runner.invoke(cli, ["recipes", "validate", *files])
    assert r.exit_code == 0 and r.output.count("ok  ") == len(files)


def test_validate_bad_recipe_is_one_line_error_exit_1(runner, tmp_path):
    (tmp_path / "p.jsonl").write_text('{"prompt": "hi"}\n{"oops": 1}\n')
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: t\nrewards: [{type: length}]\ndata:\n  path: p.jsonl\ntraining:\n  lr: fast\n")
    r = runner.invoke(cli, ["recipes", "validate", str(bad)])
    assert r.exit_code == 1
    assert r.output.strip() == (f"Error: {bad}:6: training.lr: Input should be a valid number, "
                                "unable to parse string as a number (got 'fast')")
    assert "Traceback" not in r.output
    r = runner.invoke(cli, ["recipes", "validate", str(bad), "training.lr=0.1"])
    assert r.exit_code == 1 and r.output.strip() == (
        f"Error: {tmp_path / 'p.jsonl'}:2: each row needs exactly one of `prompt` (string) or `messages` (chat list)")


def test_show_with_bad_override_exit_1(runner):
    r = runner.invoke(cli, ["recipes", "show", "polite", "training.steps"])
    assert r.exit_code == 1 and r.output.strip() == "Error: override 'training.steps': expected key.path=value"


def test_console_script_gives_no_traceback(tmp_path):
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "minirft", "recipes", "show", str(tmp_path / "x.yaml")],
                       capture_output=True, text=True)
    assert p.returncode == 1 and p.stderr.strip() == f"Error: {tmp_path / 'x.yaml'}: no such recipe file"
    assert p.stdout == ""
