"""The training prompts of recipes/arithmetic-judge.yaml (recipes/data/arithmetic-broad.jsonl): the committed
file is scripts/arithmetic_train.py's output, no prompt is one of the recipe's held-out or shifted prompts,
and every reference is the prompt's sum or difference."""

from __future__ import annotations

import re
import runpy
from collections import Counter
from pathlib import Path

from minirft.data import load_prompts
from minirft.recipe import load_recipe, shipped_recipes_dir

ROOT = Path(__file__).resolve().parent.parent


def test_broad_set_is_the_script_output(tmp_path):
    runpy.run_path(str(ROOT / "scripts" / "arithmetic_train.py"))["main"](tmp_path)
    committed = ROOT / "recipes" / "data" / "arithmetic-broad.jsonl"
    assert committed.read_bytes() == (tmp_path / "arithmetic-broad.jsonl").read_bytes()


def test_arithmetic_judge_trains_on_prompts_it_never_evaluates():
    r = load_recipe(shipped_recipes_dir() / "arithmetic-judge.yaml")
    train = load_prompts(r.resolve_path(r.data.path))
    assert r.resolve_path(r.data.path).name == "arithmetic-broad.jsonl"
    prompts = [row.prompt for row in train]
    assert len(prompts) == len(set(prompts)) == 192
    assert Counter(row.columns["kind"] for row in train) == {
        "small_numbers": 48, "larger_numbers": 48, "phrasing": 48, "word_problem": 48}
    for path in (r.data.eval_path, *r.data.eval_sets.values()):
        held = {row.prompt for row in load_prompts(r.resolve_path(path))}
        assert held and not held & set(prompts), path


def test_broad_set_references_are_the_arithmetic_of_the_prompt():
    rows = load_prompts(ROOT / "recipes" / "data" / "arithmetic-broad.jsonl")
    for row in rows:
        a, b = map(int, re.findall(r"\d+", row.prompt)[:2])
        took = re.search(r" - |minus|Take|takes|lost", row.prompt)
        want = (max(a, b) - min(a, b)) if took else a + b
        assert row.reference == str(want), row.prompt
    # the wordings of the shifted set (scripts/shifted_sets.py) are not among the training prompts'
    for wording in ("Compute", "Add ", "Subtract", "equals what", "away", "Find the", "gets ", "gave"):
        assert not any(wording in row.prompt for row in rows), wording
