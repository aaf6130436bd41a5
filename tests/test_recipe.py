import json
from pathlib import Path

import pytest
import yaml

from minirft.errors import MinirftError
from minirft.recipe import dump_recipe, load_recipe, shipped_recipes_dir, validate_recipe

RECIPES = sorted(shipped_recipes_dir().glob("*.yaml"))


def write(tmp_path: Path, text: str, name="r.yaml") -> Path:
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "hi"}) + "\n")
    p = tmp_path / name
    p.write_text(text)
    return p


BASE = """\
name: t
judge:
  criteria:
    - name: ok
      question: Is it ok?
data:
  path: p.jsonl
"""


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_shipped_recipe_validates_and_opens_with_its_command(path):
    recipe = load_recipe(path)
    assert recipe.resolve_path(recipe.data.path).is_file()
    head = path.read_text().splitlines()[:5]
    assert any(f"minirft train recipes/{path.name}" in line for line in head if line.startswith("#"))


def test_shipped_recipes_exist():
    assert len(RECIPES) >= 3


def test_defaults_and_relative_paths(tmp_path):
    r = load_recipe(write(tmp_path, BASE))
    assert r.training.steps == 20 and r.judge.mode == "rubric" and r.judge.criteria[0].weight == 1.0
    assert r.resolve_path(r.data.path) == (tmp_path / "p.jsonl").resolve()


def test_unknown_key_names_file_line_and_path(tmp_path):
    p = write(tmp_path, BASE + "training:\n  stepz: 3\n")
    with pytest.raises(MinirftError) as e:
        load_recipe(p)
    assert str(e.value) == f"{p}:9: training.stepz: unknown key"


def test_wrong_type_says_what_was_expected(tmp_path):
    p = write(tmp_path, BASE + "training:\n  steps: many\n")
    with pytest.raises(MinirftError, match=r"r.yaml:9: training.steps: Input should be a valid integer.*'many'"):
        load_recipe(p)


def test_nested_list_error_path(tmp_path):
    p = write(tmp_path, BASE.replace("question: Is it ok?", "question: Is it ok?\n      weight: -1"))
    with pytest.raises(MinirftError, match=r"judge.criteria.0.weight: Input should be greater than or equal to 0"):
        load_recipe(p)


def test_overrides_apply_and_parse_types(tmp_path):
    p = write(tmp_path, BASE)
    r = load_recipe(p, ["training.steps=4", "judge.criteria.0.weight=2.5", "judge.mode=preference",
                        "generation.temperature=0.7", "judge.deterministic=true"])
    assert r.training.steps == 4 and r.judge.criteria[0].weight == 2.5
    assert r.judge.mode == "preference" and r.generation.temperature == 0.7 and r.judge.deterministic is True


@pytest.mark.parametrize("override,message", [
    ("training.stepz=4", "override 'training.stepz=4': training.stepz: unknown key"),
    ("training.steps=x", "override 'training.steps=x': training.steps: Input should be a valid integer"),
    ("training", "expected key.path=value"),
    ("judge.criteria.5.weight=1", "no item 5"),
    ("data.path.x=1", "is not a section"),
])
def test_bad_overrides(tmp_path, override, message):
    with pytest.raises(MinirftError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_recipe(write(tmp_path, BASE), [override])


def test_rubric_without_criteria_is_an_error(tmp_path):
    p = write(tmp_path, "name: t\njudge:\n  mode: rubric\ndata:\n  path: p.jsonl\n")
    with pytest.raises(MinirftError, match="judge: rubric mode needs at least one entry in judge.criteria"):
        load_recipe(p)


def test_reward_union_is_discriminated(tmp_path):
    p = write(tmp_path, BASE + "rewards:\n  - type: regex\n    patern: x\n")
    with pytest.raises(MinirftError) as e:
        load_recipe(p)
    assert "rewards.0.patern: unknown key" in str(e.value)
    p = write(tmp_path, BASE + "rewards:\n  - type: nope\n")
    with pytest.raises(MinirftError, match="rewards.0"):
        load_recipe(p)


def test_invalid_yaml_names_line(tmp_path):
    p = write(tmp_path, "name: t\ndata: [unclosed\n")
    with pytest.raises(MinirftError, match=r"r.yaml:\d+: invalid YAML"):
        load_recipe(p)


def test_missing_file():
    with pytest.raises(MinirftError, match="no such recipe file"):
        load_recipe("nope/none.yaml")


def test_resolved_dump_round_trips(tmp_path):
    r = load_recipe(write(tmp_path, BASE), ["training.steps=3"])
    again = validate_recipe(yaml.safe_load(dump_recipe(r)))
    assert again.model_dump() == r.model_dump()
