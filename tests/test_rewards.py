"""Rule rewards: each type on hand-made completions, None semantics, user callables, bad input."""

import math

import pytest

from minirft.errors import MinirftError
from minirft.recipe import ExactMatchReward, LengthReward, PythonReward, RegexReward
from minirft.rewards import build_rewards, call_reward, exact_match, length, load_callable, regex


def test_exact_match_extracts_the_last_number_and_normalises():
    fn = exact_match(ExactMatchReward(type="exact_match"))
    got = fn(["q"] * 5, ["The answer is 42.", "42.0", "4, no wait, 41", "no idea", "it is 1000!"],
             reference=["42", "42", "42", "42", "1000"])
    assert got == [1.0, 1.0, 0.0, 0.0, 1.0]


def test_exact_match_without_reference_is_not_applicable():
    fn = exact_match(ExactMatchReward(type="exact_match", extract=None))
    assert fn(["q", "q"], ["Paris", "paris."], reference=["Paris", None]) == [1.0, None]
    assert fn(["q"], ["x"]) == [None]


def test_regex_and_negation():
    assert regex(RegexReward(type="regex", pattern=r"\bplease\b"))(["q"] * 2, ["yes please", "no"]) == [1.0, 0.0]
    assert regex(RegexReward(type="regex", pattern="idiot", negate=True))(["q"] * 2, ["ok", "idiot"]) == [1.0, 0.0]


def test_regex_bad_pattern_is_a_user_error():
    # The schema rejects it (so `recipes validate` does); the reward itself still refuses one built around it.
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="not a valid regular expression"):
        RegexReward(type="regex", name="r", pattern="(unclosed")
    with pytest.raises(MinirftError, match="invalid pattern"):
        regex(RegexReward.model_construct(type="regex", name="r", pattern="(unclosed", negate=False))


def test_length_is_one_inside_and_falls_off_linearly():
    fn = length(LengthReward(type="length", min_chars=10, max_chars=20, slack=10))
    assert fn(["q"] * 4, ["x" * 15, "x" * 5, "x" * 25, "x" * 40]) == [1.0, 0.5, 0.5, 0.0]


def test_python_callable_by_dotted_path_gets_columns(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        "def shout(prompts, completions, topic, **kw):\n"
        "    return [1.0 if t in c else None for c, t in zip(completions, topic)]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    [r] = build_rewards([PythonReward(type="python", function="my_rewards:shout")])
    assert r.name == "shout"
    got = call_reward(r, ["p", "p"], ["about cats", "dogs"], {"topic": ["cats", "cats"], "reference": [None, None]})
    assert got == [1.0, None]
    assert load_callable("my_rewards.shout") is r.fn


def test_call_reward_turns_nan_into_none_and_checks_length():
    from minirft.rewards import NamedReward

    r = NamedReward("n", 1.0, lambda p, c, **k: [math.nan, math.inf, 0.5])
    assert call_reward(r, ["p"] * 3, ["a", "b", "c"], {}) == [None, None, 0.5]
    short = NamedReward("short", 1.0, lambda p, c, **k: [1.0])
    with pytest.raises(MinirftError, match="returned 1 values for 2"):
        call_reward(short, ["p"] * 2, ["a", "b"], {})


def test_build_rewards_rejects_missing_functions_and_duplicate_names():
    with pytest.raises(MinirftError, match="no module named 'no_such_module_xyz'"):
        build_rewards([PythonReward(type="python", function="no_such_module_xyz:f")])
    with pytest.raises(MinirftError, match="has no"):
        build_rewards([PythonReward(type="python", function="math:no_such_fn")])
    with pytest.raises(MinirftError, match="used twice"):
        build_rewards([RegexReward(type="regex", pattern="a"), RegexReward(type="regex", pattern="b")])
