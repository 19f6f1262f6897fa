"""Metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ml import metrics

Y = [0, 0, 1, 1]
S = [0.1, 0.4, 0.35, 0.8]


def test_auroc_hand_example_and_ties():
    # pairs (pos, neg): (0.35>0.1) (0.35<0.4) (0.8>0.1) (0.8>0.4) -> 3 / 4
    assert metrics.auroc(Y, S) == pytest.approx(0.75)
    assert metrics.auroc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert metrics.auroc([0, 0, 1], [0.2, 0.2, 0.2]) == pytest.approx(0.5)
    assert math.isnan(metrics.auroc([1, 1], [0.2, 0.3]))


def test_auroc_matches_pair_counting_on_random_data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200), 2)  # many ties
    pos, neg = s[y == 1], s[y == 0]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert metrics.auroc(y, s) == pytest.approx(pairs / (len(pos) * len(neg)))


def test_roc_curve_points():
    fpr, tpr, thr = metrics.roc_curve(Y, S)
    assert list(thr[1:]) == [0.8, 0.4, 0.35, 0.1]
    assert list(fpr) == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert list(tpr) == [0.0, 0.5, 0.5, 1.0, 1.0]


def test_average_precision_hand_example():
    # ranks: 0.8 (pos, P=1/1), 0.4 (neg), 0.35 (pos, P=2/3) -> (1 + 2/3) / 2
    assert metrics.average_precision(Y, S) == pytest.approx((1 + 2 / 3) / 2)


def test_confusion_and_rates():
    c = metrics.confusion(Y, S, 0.4)
    assert c == {"tp": 1, "fp": 1, "tn": 1, "fn": 1}
    r = metrics.at_threshold(Y, S, 0.35)
    assert r["sensitivity"] == 1.0
    assert r["specificity"] == 0.5
    assert r["ppv"] == pytest.approx(2 / 3)
    assert r["npv"] == 1.0


def test_operating_points():
    assert metrics.sensitivity_at_specificity(Y, S, 0.5) == 1.0
    assert metrics.sensitivity_at_specificity(Y, S, 1.0) == 0.5
    assert metrics.youden_threshold(Y, S) == 0.8  # J = 0.5 at 0.8 and 0.35: the higher wins
    assert metrics.threshold_for_sensitivity(Y, S, 0.9) == 0.35
    assert metrics.threshold_for_sensitivity(Y, S, 0.5) == 0.8


def test_ece_and_reliability():
    assert metrics.ece([0, 1], [0.25, 0.75], bins=2) == pytest.approx(0.25)
    assert metrics.ece([0, 1, 0, 1], [0.0, 1.0, 0.0, 1.0]) == pytest.approx(0.0)
    rows = metrics.reliability([0, 1, 1], [0.05, 0.95, 0.91], bins=10)
    assert rows[0]["count"] == 1
    assert rows[9]["count"] == 2
    assert rows[9]["confidence"] == pytest.approx(0.93)
    assert rows[9]["accuracy"] == 1.0


def test_fit_temperature_recovers_overconfidence():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 20000)
    y = (rng.random(20000) < 1 / (1 + np.exp(-z))).astype(float)
    assert metrics.fit_temperature(y, 3.0 * z) == pytest.approx(3.0, rel=0.08)
    assert metrics.nll(y, 3.0 * z, 3.0) < metrics.nll(y, 3.0 * z, 1.0)


def test_bootstrap_ci_brackets_the_estimate():
    rng = np.random.default_rng(1)
    y = np.r_[np.zeros(100), np.ones(30)]
    s = np.r_[rng.normal(0, 1, 100), rng.normal(1.5, 1, 30)]
    lo, hi = metrics.bootstrap_ci(y, s, n=300, seed=0)
    point = metrics.auroc(y, s)
    assert lo < point < hi
    assert 0.05 < hi - lo < 0.3


def test_fit_platt_recovers_scale_and_offset():
    rng = np.random.default_rng(2)
    z = rng.normal(0, 2, 20000)
    y = (rng.random(20000) < 1 / (1 + np.exp(-(0.5 * z - 1.0)))).astype(float)
    a, b = metrics.fit_platt(y, z)
    assert a == pytest.approx(0.5, abs=0.05)
    assert b == pytest.approx(-1.0, abs=0.08)
    # a temperature alone cannot fix the offset; Platt can
    platt = 1 / (1 + np.exp(-(a * z + b)))
    temp = 1 / (1 + np.exp(-z / metrics.fit_temperature(y, z)))
    assert metrics.ece(y, platt) < metrics.ece(y, temp)


def test_sigmoid_is_the_one_used_by_serving_and_stable_at_the_extremes():
    from ml.inference import calibrated, sigmoid

    z = np.array([-1000.0, -2.0, 0.0, 2.0, 1000.0])
    p = metrics.sigmoid(z)
    assert p.dtype == np.float64
    np.testing.assert_allclose(p[1:4], 1.0 / (1.0 + np.exp(-z[1:4])), rtol=1e-12)
    assert p[0] == 0.0
    assert p[-1] == 1.0
    assert sigmoid(z).dtype == np.float32
    np.testing.assert_array_equal(sigmoid(z), p.astype(np.float32))
    np.testing.assert_array_equal(calibrated(z, 2.0), metrics.sigmoid(z / 2.0).astype(np.float32))
