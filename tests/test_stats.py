import math

import numpy as np
import pytest

from minirft.stats import (Platt, accuracy, bootstrap_ci, cohen_kappa, expected_calibration_error,
                                 fit_platt, ranking_auc, reliability_table)


def test_accuracy_and_kappa_against_hand_computed_values():
    t = [1, 1, 1, 1, 0, 0, 0, 0, 1, 0]
    p = [1, 1, 1, 0, 0, 0, 1, 0, 1, 1]
    assert accuracy(t, p) == 0.7
    # p_o = 0.7; rater t: 5 ones, rater p: 6 ones -> p_e = 0.5*0.6 + 0.5*0.4 = 0.5 -> kappa = 0.4
    assert cohen_kappa(t, p) == pytest.approx(0.4)
    assert cohen_kappa(t, t) == 1.0
    assert cohen_kappa([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-1.0)
    assert cohen_kappa([1, 1, 1], [1, 1, 1]) == 1.0


def test_reliability_and_ece_by_hand():
    probs = [0.05, 0.15, 0.95, 0.85, 1.0]
    labels = [0, 1, 1, 1, 0]
    table = reliability_table(probs, labels, n_bins=2)
    assert [b.count for b in table] == [2, 3]
    assert table[0].mean_confidence == pytest.approx(0.10) and table[0].frequency == 0.5
    assert table[1].mean_confidence == pytest.approx(2.8 / 3) and table[1].frequency == pytest.approx(2 / 3)
    expected = 2 / 5 * abs(0.10 - 0.5) + 3 / 5 * abs(2.8 / 3 - 2 / 3)
    assert expected_calibration_error(probs, labels, n_bins=2) == pytest.approx(expected)
    assert expected_calibration_error([1.0, 0.0], [1, 0]) == 0.0


def test_bootstrap_ci_contains_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small = rng.binomial(1, 0.7, size=40)
    big = rng.binomial(1, 0.7, size=4000)
    lo, hi = bootstrap_ci(small, n_resamples=1000)
    assert lo < small.mean() < hi
    blo, bhi = bootstrap_ci(big, n_resamples=300)
    assert (bhi - blo) < (hi - lo) and blo < 0.7 < bhi
    # analytic standard error of a proportion: the 95% width is about 2*1.96*sqrt(p(1-p)/n)
    assert (bhi - blo) == pytest.approx(2 * 1.96 * math.sqrt(0.21 / 4000), rel=0.25)
    assert bootstrap_ci(small, seed=3) == bootstrap_ci(small, seed=3)


def test_platt_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, size=5000)
    true_p = 1 / (1 + np.exp(-z))
    labels = rng.binomial(1, true_p)
    overconfident = 1 / (1 + np.exp(-(3 * z + 1)))  # judge logit = 3z + 1
    fit = fit_platt(overconfident, labels)
    assert fit.a == pytest.approx(1 / 3, rel=0.1) and fit.b == pytest.approx(-1 / 3, abs=0.1)
    calibrated = [fit(p) for p in overconfident]
    assert expected_calibration_error(calibrated, labels) < expected_calibration_error(overconfident, labels)
    assert Platt()(0.3) == pytest.approx(0.3)
    assert fit_platt([0.2, 0.8], [1, 1]) == Platt()  # one class only: identity


def test_ranking_auc_by_hand():
    # positives 0.8, 0.6; negatives 0.7, 0.6 -> pairs: (0.8>0.7) 1, (0.8>0.6) 1, (0.6<0.7) 0, (0.6=0.6) 0.5
    assert ranking_auc([0.8, 0.6, 0.7, 0.6], [1, 1, 0, 0]) == pytest.approx(2.5 / 4)
    assert ranking_auc([0.76, 0.75, 0.74], [1, 0, 0]) == 1.0  # all "yes" at 0.5, yet a perfect ranking
    assert math.isnan(ranking_auc([0.3], [1]))


def test_auc_interval_brackets_the_auc_and_shrinks_with_more_data():
    from minirft.stats import auc_interval

    probs, labels = [0.9, 0.8, 0.3, 0.6, 0.5, 0.2, 0.4, 0.7], [1, 1, 0, 1, 1, 0, 0, 0]
    lo, hi = auc_interval(probs, labels)
    assert lo < ranking_auc(probs, labels) < hi
    lo4, hi4 = auc_interval(probs * 4, labels * 4)
    assert hi4 - lo4 < hi - lo
    assert all(map(math.isnan, auc_interval([0.1, 0.2], [1, 1])))
