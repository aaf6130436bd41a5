"""Bad inputs, table-driven: every one is exit code 1 (2 for command-line usage), one `Error:` line that
names the file and line or the key (or the override) at fault, and never a traceback.

Each case builds its own bad file, folder or override next to a tiny, valid world (tiny policy folder,
prompts, tiny GGUF judge) and runs the real command in-process; a few run as real processes too. None
loads a model: every one of these is caught before (that is part of what is tested)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from fault_fixtures import invoke, lines, make_world, run_cli, toy_recipe

from minirft.recipe import dump_recipe, load_recipe
from minirft.train import loop


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return make_world(tmp_path_factory.mktemp("world"))


def line_of(path: Path, needle: str) -> int:
    """1-based line of the first line of ``path`` containing ``needle``."""
    for n, text in enumerate(path.read_bytes().split(b"\n"), start=1):
        if needle.encode() in text:
            return n
    raise AssertionError(f"{needle!r} not in {path}")


def recipe_with(world: Path, d: Path, text_edit=None, **sections) -> Path:
    """A copy of the toy recipe in ``d`` (pointing at the world's files), edited."""
    for name in ("model", "prompts.jsonl", "judge.gguf"):
        if not (d / name).exists():
            (d / name).symlink_to(world / name)
    path = toy_recipe(d, with_judge="judge" not in sections, **sections)
    if text_edit:
        path.write_bytes(text_edit(path.read_bytes()))
    return path


# ------------------------------------------------------------------------------------------ cases
# Each case: (world, tmp) -> (argv, exit code, [regexes the one error line must match]).

def c_recipe_not_utf8(w, d):
    p = recipe_with(w, d, lambda b: b.replace(b"name: toy", b"name: toy\ndescription: caf\xe9"))
    return ["recipes", "validate", p], 1, [rf"{re.escape(str(p))}:3: not valid UTF-8 \(byte 0xe9 at column 17\)"]


def c_train_recipe_not_utf8(w, d):
    p = recipe_with(w, d, lambda b: b.replace(b"name: toy", b"name: toy\ndescription: caf\xe9"))
    return ["train", p], 1, [rf"{re.escape(str(p))}:3: not valid UTF-8 \(byte 0xe9"]


def c_yaml_missing_colon(w, d):
    p = d / "r.yaml"
    p.write_text("name: t\ndata\ntraining:\n  steps: 2\n")
    return ["recipes", "validate", p], 1, [rf"{re.escape(str(p))}:2: invalid YAML"]


def c_yaml_unclosed_quote(w, d):
    p = d / "r.yaml"
    p.write_text('name: t\ndescription: "open\ndata:\n  path: p.jsonl\n')
    return ["recipes", "validate", p], 1, [rf"{re.escape(str(p))}:2: invalid YAML"]


def c_unknown_key(w, d):
    p = recipe_with(w, d, training={"stepz": 3})
    return ["recipes", "validate", p], 1, [rf":{line_of(p, 'stepz')}: training.stepz: unknown key"]


def c_wrong_type(w, d):
    p = recipe_with(w, d, training={"steps": "many"})
    return ["train", p], 1, [rf":{line_of(p, 'steps: many')}: training.steps: Input should be a valid integer"]


def c_bad_regex(w, d):
    p = recipe_with(w, d, rewards=[{"type": "regex", "pattern": "("}])
    return ["recipes", "validate", p], 1, [rf":{line_of(p, 'pattern')}: rewards.0.pattern: not a valid regular expression"]


def c_bad_extract_regex(w, d):
    p = recipe_with(w, d, rewards=[{"type": "exact_match", "extract": "[a-"}])
    return ["recipes", "validate", p], 1, [rf":{line_of(p, 'extract')}: rewards.0.extract: not a valid regular"]


def c_python_reward_no_module(w, d):
    p = recipe_with(w, d, rewards=[{"type": "python", "function": "no_such_module_zz:score"}])
    return ["recipes", "validate", p], 1, [rf":{line_of(p, 'function')}: rewards.0.function: .*no module named 'no_such_module_zz'"]


def c_python_reward_missing_function(w, d):
    p = recipe_with(w, d, rewards=[{"type": "python", "function": "train_fixtures:no_such_fn"}])
    return ["recipes", "validate", p], 1, [r"rewards.0.function: .*defines no 'no_such_fn' \(the module was not imported\)"]


def c_python_reward_runs_nothing_on_typo(w, d):
    # `this` prints the Zen of Python when imported: a missing name must be found without importing it.
    p = recipe_with(w, d, rewards=[{"type": "python", "function": "this.nothing"}])
    return ["recipes", "validate", p], 1, [r"rewards.0.function: python function 'this.nothing': .*this.py defines no 'nothing'"]


def c_eval_check_bad_function(w, d):
    p = recipe_with(w, d, data={"path": "prompts.jsonl",
                                "eval_checks": [{"type": "python", "function": "train_fixtures:nope"}]})
    return ["recipes", "validate", p], 1, [r"data.eval_checks.0.function: .*defines no 'nope'"]


def c_recipe_is_a_folder(w, d):
    return ["train", d], 1, [rf"{re.escape(str(d))}: is a folder, not a recipe file"]


def c_recipe_missing(w, d):
    return ["recipes", "validate", d / "nope.yaml"], 1, [r"nope.yaml: no such recipe file"]


def c_override_without_value_as_recipe(w, d):
    return ["train", "training.steps"], 1, [r"'training.steps': not a recipe file; an override needs a value: training.steps=VALUE"]


def c_validate_override_without_value(w, d):
    p = recipe_with(w, d)
    return ["recipes", "validate", p, "training.steps"], 1, [r"an override needs a value: training.steps=VALUE"]


def c_no_reward_at_all(w, d):
    p = d / "r.yaml"
    p.write_text("name: t\ndata:\n  path: prompts.jsonl\n")
    return ["recipes", "validate", p], 1, [r"a recipe needs a `judge` section, a `rewards` list, or both"]


def c_rubric_without_criteria(w, d):
    p = recipe_with(w, d, judge={"model": "judge.gguf", "criteria": []})
    return ["recipes", "validate", p], 1, [rf":{line_of(p, 'judge:')}: judge: rubric mode needs at least one"]


def c_calibration_missing(w, d):
    p = recipe_with(w, d, judge={"model": "judge.gguf", "platt": "nope.calibration.json",
                                 "criteria": [{"name": "v", "question": "q?"}]})
    return ["recipes", "validate", p], 1, [rf":{line_of(p, 'platt')}: judge.platt: no such file"]


# -- data
def c_data_missing(w, d):
    p = recipe_with(w, d, data={"path": "missing.jsonl"})
    return ["train", p], 1, [rf"{re.escape(str(p))}:{line_of(p, 'missing.jsonl')}: data.path: no such data file"]


def c_eval_data_missing(w, d):
    p = recipe_with(w, d, data={"path": "prompts.jsonl", "eval_path": "held.jsonl"})
    return ["recipes", "validate", p], 1, [rf":{line_of(p, 'held.jsonl')}: data.eval_path: no such data file"]


def _data(d: Path, content: bytes) -> Path:
    f = d / "bad.jsonl"
    f.write_bytes(content)
    return f


def c_data_not_utf8(w, d):
    f = _data(d, b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n')
    p = recipe_with(w, d, data={"path": "bad.jsonl"})
    return ["train", p], 1, [rf"{re.escape(str(f))}:2: not valid UTF-8 \(byte 0xe9 at column 16\)"]


def c_data_invalid_json(w, d):
    f = _data(d, b'{"prompt": "ok"}\n{"prompt": \n')
    p = recipe_with(w, d, data={"path": "bad.jsonl"})
    return ["recipes", "validate", p], 1, [rf"{re.escape(str(f))}:2: invalid JSON"]


def c_data_not_an_object(w, d):
    f = _data(d, b'["prompt", "x"]\n')
    p = recipe_with(w, d, data={"path": "bad.jsonl"})
    return ["train", p], 1, [rf"{re.escape(str(f))}:1: expected a JSON object, got list"]


def c_data_row_without_prompt(w, d):
    f = _data(d, b'{"prompt": "ok"}\n\n{"question": "x"}\n')
    p = recipe_with(w, d, data={"path": "bad.jsonl"})
    return ["recipes", "validate", p], 1, [rf"{re.escape(str(f))}:3: each row needs exactly one of `prompt`"]


def c_data_empty(w, d):
    f = _data(d, b"\n\n")
    p = recipe_with(w, d, data={"path": "bad.jsonl"})
    return ["recipes", "validate", p], 1, [rf"{re.escape(str(f))}: no rows"]


def c_data_is_a_folder(w, d):
    (d / "folder.jsonl").mkdir()
    p = recipe_with(w, d, data={"path": "folder.jsonl"})
    return ["recipes", "validate", p], 1, [r"folder.jsonl: a folder, but not one written by datasets' save_to_disk"]


# -- overrides
def c_override_unknown_key(w, d):
    return ["recipes", "validate", recipe_with(w, d), "nope.key=1"], 1, [r"^Error: override 'nope.key=1': nope: unknown key$"]


def c_generation_engine_unknown(w, d):
    p = recipe_with(w, d, generation={"group_size": 2, "engine": "sglang"})
    return ["train", p], 1, [rf":{line_of(p, 'engine: sglang')}: generation.engine: Input should be 'auto', 'torch', "
                             "'torch_graph', 'llama_cpp' or 'vllm'"]


def c_importance_sampling_cap_below_one(w, d):
    p = recipe_with(w, d, generation={"group_size": 2, "importance_sampling_cap": 0.5})
    return ["recipes", "validate", p], 1, [rf":{line_of(p, 'importance_sampling_cap')}: generation.importance_sampling_cap: "
                                           r"Input should be greater than or equal to 1"]


def c_override_engine_weights_unknown(w, d):
    return (["train", recipe_with(w, d), "generation.engine_weights=q4"], 1,
            [r"override 'generation.engine_weights=q4': generation.engine_weights: Input should be 'auto', 'f16', "])


def c_override_wrong_type(w, d):
    return ["train", recipe_with(w, d), "training.steps=zero"], 1, [r"override 'training.steps=zero': training.steps: Input should be a valid integer"]


def c_override_no_such_item(w, d):
    return ["train", recipe_with(w, d), "judge.criteria.5.weight=1"], 1, [r"override 'judge.criteria.5.weight=1': no item 5"]


def c_override_bad_regex(w, d):
    p = recipe_with(w, d, rewards=[{"type": "regex", "pattern": "a"}])
    return ["recipes", "validate", p, "rewards.0.pattern=("], 1, [r"override 'rewards.0.pattern=\(': rewards.0.pattern: not a valid regular"]


# -- models
def c_override_judge_model_typo(w, d):
    return ["train", recipe_with(w, d), "judge.model=typo.gguf"], 1, [r"override 'judge.model=typo.gguf': judge.model: model 'typo.gguf': not a known short name"]


def c_override_policy_model_missing(w, d):
    return ["train", recipe_with(w, d), "policy.model=/nowhere/model"], 1, [r"override 'policy.model=/nowhere/model': policy.model: model '/nowhere/model'"]


def c_judge_model_not_gguf(w, d):
    (d / "fake.gguf").write_text("this is not a model\n")
    p = recipe_with(w, d, judge={"model": "fake.gguf", "criteria": [{"name": "v", "question": "q?"}]})
    return ["recipes", "validate", p], 1, [rf":{line_of(p, 'fake.gguf')}: judge.model: .*fake.gguf is not a GGUF file"]


def c_judge_model_empty_file(w, d):
    (d / "empty.gguf").write_bytes(b"")
    p = recipe_with(w, d, judge={"model": "empty.gguf", "criteria": [{"name": "v", "question": "q?"}]})
    return ["train", p], 1, [r"judge.model: .*empty.gguf is not a GGUF file \(it is empty\)"]


def c_policy_model_not_gguf_suffix(w, d):
    (d / "weights.txt").write_text("x")
    p = recipe_with(w, d, policy={"model": "weights.txt"})
    return ["train", p], 1, [rf":{line_of(p, 'weights.txt')}: policy.model: model .*a model file must be a .gguf file"]


def c_policy_folder_without_model(w, d):
    (d / "emptymodel").mkdir()
    p = recipe_with(w, d, policy={"model": "emptymodel"})
    return ["train", p], 1, [r"policy.model: model .*folder has no config.json"]


def c_policy_folder_without_weights(w, d):
    (d / "noweights").mkdir()
    shutil.copy(w / "model" / "config.json", d / "noweights" / "config.json")
    p = recipe_with(w, d, policy={"model": "noweights"})
    return ["train", p], 1, [r"policy.model: .*a Hugging Face folder without weights"]


def c_policy_broken_config(w, d):
    (d / "badcfg").mkdir()
    (d / "badcfg" / "config.json").write_text("{not json")
    p = recipe_with(w, d, policy={"model": "badcfg"})
    return ["recipes", "validate", p], 1, [r"policy.model: .*config.json: not a readable JSON file"]


def c_llama_judge_given_hf_folder(w, d):
    return ["train", recipe_with(w, d), f"judge.model={w / 'model'}"], 1, [r"judge.model: .*the llama_cpp backend needs a .gguf"]


def c_judge_cli_model_typo(w, d):
    inp = _data(d, b'{"prompt": "hi", "response": "hello"}\n')
    return ["judge", recipe_with(w, d), "judge.model=typo.gguf", "--input", inp, "--output", d / "o.jsonl"], 1, [r"override 'judge.model=typo.gguf': judge.model:"]


# -- judge / calibrate inputs
def c_judge_input_not_utf8(w, d):
    inp = _data(d, b'{"prompt": "hi", "response": "hello"}\n{"prompt": "hi", "response": "\xff"}\n')
    return ["judge", recipe_with(w, d), "--input", inp, "--output", d / "o.jsonl"], 1, [rf"{re.escape(str(inp))}:2: not valid UTF-8 \(byte 0xff at column 31\)"]


def c_judge_input_missing_response(w, d):
    inp = _data(d, b'{"prompt": "hi"}\n')
    return ["judge", recipe_with(w, d), "--input", inp, "--output", d / "o.jsonl"], 1, [rf"{re.escape(str(inp))}:1: missing `response`"]


def c_calibrate_unknown_criterion(w, d):
    labels = _data(d, b'{"prompt": "p", "response": "r", "labels": {"vowels": true}}\n'
                      b'{"prompt": "p", "response": "r", "labels": {"politeness": false}}\n')
    return ["calibrate", recipe_with(w, d), labels], 1, [rf"{re.escape(str(labels))}:2: labels.politeness: unknown criterion"]


# -- run dirs
def c_resume_not_a_run_dir(w, d):
    return ["train", "--resume", d], 1, [r"not a run directory \(no recipe.resolved.yaml\)"]


def c_resume_without_checkpoint(w, d):
    run = d / "run"
    run.mkdir()
    resolved = loop.absolutise(load_recipe(recipe_with(w, d)))
    (run / "recipe.resolved.yaml").write_text(dump_recipe(resolved))
    return ["train", "--resume", run], 1, [rf"{re.escape(str(run))}: cannot resume: it has no complete checkpoint; .*--from-scratch"]


def c_resume_with_a_recipe(w, d):
    run = d / "run"
    run.mkdir()
    (run / "recipe.resolved.yaml").write_text("name: x\n")
    return ["train", "--resume", run, recipe_with(w, d)], 1, [r"--resume takes its recipe from the run dir"]


def c_from_scratch_without_resume(w, d):
    return ["train", recipe_with(w, d), "--from-scratch"], 2, [r"--from-scratch goes with --resume"]


def c_watch_dir_without_events(w, d):
    (d / "orphan").mkdir()
    (d / "orphan" / "command.txt").write_text("minirft train x\n")
    return ["watch", d / "orphan", "--plain"], 1, [r"orphan: not a run dir, or its run has not started yet: no events.jsonl"]


def c_watch_missing(w, d):
    return ["watch", d / "nope", "--plain"], 1, [r"nope: no such run dir"]


def c_eval_judge_model_typo(w, d):
    run = d / "run"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_model.safetensors").write_bytes(b"")  # never read: the check comes first
    (run / "recipe.resolved.yaml").write_text(dump_recipe(loop.absolutise(load_recipe(recipe_with(w, d)))))
    return ["eval", run, "judge.model=typo.gguf"], 1, [r"override 'judge.model=typo.gguf': judge.model: model 'typo.gguf'"]


def c_eval_not_a_run_dir(w, d):
    return ["eval", d], 1, [r"not a run dir \(no recipe.resolved.yaml\)"]


CASES = [v for k, v in sorted(globals().items()) if k.startswith("c_")]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__[2:] for c in CASES])
def test_bad_input_is_one_line_naming_where(world, tmp_path, monkeypatch, case):
    def no_model_loads(*a, **k):  # every case must be caught before a model loads
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(loop, "load_policy", no_model_loads)
    monkeypatch.chdir(tmp_path)
    args, code, patterns = case(world, tmp_path)
    res = invoke(*args)
    out = res.output
    assert res.exit_code == code, out
    assert "Traceback" not in out, out
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    errors = [ln for ln in lines(out) if ln.startswith("Error:")]
    assert len(errors) == 1, out
    assert [ln for ln in lines(out) if not ln.startswith(("Error:", "ok  ", "Usage:", "Try "))] == [], out
    for pattern in patterns:
        assert re.search(pattern, errors[0]), (pattern, errors[0])
    assert "Beautiful is better than ugly" not in out  # nothing a recipe names was run by a typo


def test_table_is_big_enough():
    assert len(CASES) >= 30


def test_validate_goes_on_after_a_bad_file_and_fails_at_the_end(world, tmp_path):
    bad = recipe_with(world, tmp_path, lambda b: b.replace(b"name: toy", b"name: toy\ndescription: \xe9t\xe9"),
                      name="bad.yaml")
    good = recipe_with(world, tmp_path, name="good.yaml")
    res = invoke("recipes", "validate", bad, good)
    assert res.exit_code == 1
    assert lines(res.output) == [f"Error: {bad}:3: not valid UTF-8 (byte 0xe9 at column 14)", f"ok  {good}"]


@pytest.mark.parametrize("args", [
    ["train", "{d}/nope.yaml"],
    ["recipes", "validate", "{d}/bad.yaml"],
    ["train", "{d}/toy.yaml", "judge.model=typo.gguf"],
    ["watch", "{d}"],
], ids=["missing", "not-utf8", "judge-typo", "watch-no-events"])
def test_the_console_command_prints_one_line_too(world, tmp_path, args):
    recipe_with(world, tmp_path)
    (tmp_path / "bad.yaml").write_bytes(b"name: t\ndescription: \xe9\n")
    p = run_cli(*[a.format(d=tmp_path) for a in args], cwd=tmp_path, timeout=120)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert len(lines(p.stderr)) == 1 and p.stderr.startswith("Error: "), p.stderr
    assert p.stdout == ""


def test_a_python_reward_typo_runs_no_module_code(world, tmp_path, capfd):
    import sys

    was_imported = "this" in sys.modules
    res = invoke("recipes", "validate", recipe_with(world, tmp_path,
                                                    rewards=[{"type": "python", "function": "this.nothing"}]))
    assert res.exit_code == 1
    captured = capfd.readouterr()
    assert "Beautiful is better than ugly" not in captured.out + captured.err + res.output
    assert was_imported or "this" not in sys.modules  # the module was never imported
