"""The judge's arithmetic on hand-made numbers: label renormalisation, rubric rewards, swaps, pairs."""

import math

import numpy as np
import pytest

from minirft.judge import scoring


def test_class_probs_sums_label_variants():
    # "Yes" and " Yes" each carry e^0, "No" carries e^0: P(yes) = 2/3.
    p = scoring.class_probs([[0.0, 0.0], [0.0]])
    assert p == pytest.approx([2 / 3, 1 / 3])


def test_class_probs_is_shift_invariant_and_handles_huge_logits():
    p = scoring.class_probs([[1000.0], [999.0]])
    assert p[0] == pytest.approx(1 / (1 + math.exp(-1)))


def test_class_probs_missing_class_gets_zero_and_all_missing_raises():
    assert scoring.class_probs([[-math.inf], [0.0]]).tolist() == [0.0, 1.0]
    with pytest.raises(ValueError):
        scoring.class_probs([[-math.inf], []])


def test_variants_cover_case_and_leading_space():
    assert {"Yes", " Yes", "yes", " yes"} <= set(scoring.variants("Yes"))
    assert {"A", " A"} <= set(scoring.variants("A"))
    assert scoring.variants("3") == ("3", " 3")


def test_rubric_reward_weighted_mean_and_gates():
    crit = {"a": 0.8, "b": 0.2, "safe": 0.5}
    w = {"a": 3.0, "b": 1.0, "safe": 1.0}
    assert scoring.rubric_reward(crit, w, set()) == pytest.approx((0.8 * 3 + 0.2 + 0.5) / 5)
    assert scoring.rubric_reward(crit, w, {"safe"}) == pytest.approx((0.8 * 3 + 0.2) / 4 * 0.5)
    assert scoring.rubric_reward({"g": 0.3, "h": 0.5}, {"g": 1, "h": 1}, {"g", "h"}) == pytest.approx(0.15)
    assert scoring.rubric_reward({"a": 0.4, "b": 0.6}, {"a": 0, "b": 0}, set()) == pytest.approx(0.5)


def test_expected_scale_maps_to_unit_interval():
    assert scoring.expected_scale(np.array([1.0, 0, 0, 0, 0]), 1, 5) == 0.0
    assert scoring.expected_scale(np.array([0, 0, 0, 0, 1.0]), 1, 5) == 1.0
    assert scoring.expected_scale(np.array([0.5, 0, 0, 0, 0.5]), 1, 5) == pytest.approx(0.5)


def test_calibration_pulls_the_empty_response_level_to_one_half():
    assert scoring.content_free(0.9, 0.9) == pytest.approx(0.5)
    assert scoring.content_free(0.95, 0.9) > 0.5 > scoring.content_free(0.8, 0.9)
    assert scoring.content_free(0.3, 0.5) == pytest.approx(0.3)


def test_swap_average_is_antisymmetric():
    p_ab = scoring.swap_average(0.9, 0.7)  # A first: 0.9 for A; B first: 0.7 for B
    p_ba = scoring.swap_average(0.7, 0.9)
    assert p_ab + p_ba == pytest.approx(1.0)
    assert p_ab == pytest.approx(0.6)
    # A judge that always prefers the first position gives exactly 0.5.
    assert scoring.swap_average(0.8, 0.8) == pytest.approx(0.5)


def test_choose_pairs_all_for_small_groups_sampled_for_large():
    assert scoring.choose_pairs(4, 16) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    pairs = scoring.choose_pairs(12, 16, seed=3)
    assert len(pairs) == 16 and len(set(pairs)) == 16
    assert all(i < j for i, j in pairs)
    covered = {i for p in pairs for i in p}
    assert covered == set(range(12))  # the ring touches everyone
    assert pairs == scoring.choose_pairs(12, 16, seed=3)


def test_win_rates():
    rates = scoring.win_rates(3, [(0, 1), (0, 2), (1, 2)], [0.75, 0.5, 0.25])
    assert rates == pytest.approx([0.625, 0.25, 0.625])  # 0 beats 1 (0.75), ties 2; 1 loses to 2 (0.25)
    assert sum(rates) / 3 == pytest.approx(0.5)
    assert scoring.win_rates(3, [(0, 1)], [0.5])[2] is None
