"""Metrics: our ECE and reliability bins against a hand-computed case; sklearn-backed metrics; refusals."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import Invalid
from ml import metrics as M


def test_ece_matches_hand_computed_case() -> None:
    # Bins are 1/15 wide. 0.05 -> bin 0, 0.10 -> bin 1 ([0.0667, 0.1333)), 0.50 -> bin 7, 0.95 and 1.0 -> bin 14.
    p = [0.05, 0.05, 0.10, 0.50, 0.50, 0.50, 0.50, 0.95, 1.00, 0.95]
    y = [0, 1, 0, 1, 1, 1, 0, 1, 1, 0]
    # bin 0: n=2, conf 0.05, acc 0.5 -> |0.45| * 2/10 = 0.09
    # bin 1: n=1, conf 0.10, acc 0.0 -> 0.10 * 1/10 = 0.01
    # bin 7: n=4, conf 0.50, acc 0.75 -> 0.25 * 4/10 = 0.10
    # bin 14: n=3, conf (0.95+1+0.95)/3 = 0.966667, acc 2/3 -> 0.3 * 3/10 = 0.09
    assert M.expected_calibration_error(y, p) == pytest.approx(0.29, abs=1e-12)


def test_bin_edges_are_left_closed_and_one_goes_to_last_bin() -> None:
    assert M.bin_index(np.asarray([0.0, 1 / 15, 2 / 15 - 1e-12, 0.999999, 1.0])).tolist() == [0, 1, 1, 14, 14]


def test_reliability_bins_count_and_means() -> None:
    bins = M.reliability_bins([0, 1, 1], [0.2, 0.21, 0.9])
    assert len(bins) == 15 and sum(b.count for b in bins) == 3
    b3 = bins[3]  # 0.2 and 0.21 fall in [0.2, 0.2667)
    assert b3.count == 2 and b3.mean_predicted == pytest.approx(0.205) and b3.observed_rate == pytest.approx(0.5)
    assert bins[0].mean_predicted is None and bins[0].observed_rate is None


def test_perfectly_calibrated_large_sample_has_small_ece() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(200_000)
    y = (rng.random(200_000) < p).astype(float)
    assert M.expected_calibration_error(y, p) < 0.01
    assert M.expected_calibration_error(y, np.clip(p + 0.1, 0, 1)) > 0.08


def test_classification_metrics_and_refusals() -> None:
    m = M.classification_metrics([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert m["auc"] == pytest.approx(0.75)
    assert m["brier"] == pytest.approx((0.01 + 0.16 + 0.4225 + 0.04) / 4)
    with pytest.raises(Invalid, match="only one class"):
        M.classification_metrics([1, 1], [0.2, 0.3])
    with pytest.raises(Invalid, match=r"\[0, 1\]"):
        M.expected_calibration_error([1, 0], [1.2, 0.3])
    with pytest.raises(Invalid, match="NaN"):
        M.expected_calibration_error([1, 0], [np.nan, 0.3])
    with pytest.raises(Invalid, match="differ in length"):
        M.expected_calibration_error([1, 0, 1], [0.1, 0.3])


def test_regression_and_forecast_metrics() -> None:
    r = M.regression_metrics([1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
    assert r["mae"] == pytest.approx(1 / 3) and r["r2"] == pytest.approx(0.5)
    f = M.forecast_metrics([100.0, 200.0], [110.0, 180.0])
    assert f["mape"] == pytest.approx(0.1) and f["bias"] == pytest.approx(-10 / 300)
    with pytest.raises(Invalid, match="zero or negative"):
        M.forecast_metrics([0.0, 1.0], [1.0, 1.0])
