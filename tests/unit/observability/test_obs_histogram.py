"""Percentiles from the log-scale histogram agree with numpy on the same samples, within a bucket."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.observability import histogram

QS = (50, 90, 95, 99, 99.9)


def _within_bucket(estimate: float, truth: float) -> bool:
    # The estimate lies in the same bucket as the true sample, so their ratio is under one bucket's width.
    ratio = estimate / truth
    return 1 / histogram.GROWTH - 1e-9 <= ratio <= histogram.GROWTH + 1e-9


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_percentiles_match_numpy_on_lognormal_latencies(seed: int) -> None:
    rng = np.random.default_rng(seed)
    samples = rng.lognormal(mean=np.log(120), sigma=1.1, size=20_000)
    hist = histogram.from_samples(samples)
    for q in QS:
        est = histogram.percentile(hist, q, float(samples.min()), float(samples.max()))
        truth = float(np.percentile(samples, q, method="inverted_cdf"))
        assert est is not None and _within_bucket(est, truth), (q, est, truth)
        # and against numpy's default (linear interpolation) within two buckets
        linear = float(np.percentile(samples, q))
        assert abs(np.log(est / linear)) <= 2 * np.log(histogram.GROWTH)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.floats(min_value=0.01, max_value=3_600_000, allow_nan=False), min_size=1, max_size=400),
    st.sampled_from(QS),
)
def test_percentile_lands_in_the_true_samples_bucket(samples: list[float], q: float) -> None:
    arr = np.array(samples)
    hist = histogram.from_samples(samples)
    est = histogram.percentile(hist, q, float(arr.min()), float(arr.max()))
    truth = float(np.percentile(arr, q, method="inverted_cdf"))
    assert est is not None and _within_bucket(est, truth)


def test_merging_histograms_equals_histogram_of_all_samples() -> None:
    rng = np.random.default_rng(7)
    a, b = rng.exponential(50, 3000), rng.exponential(900, 1000)
    merged = histogram.merge(histogram.from_samples(a), histogram.from_samples(b))
    assert merged == histogram.from_samples(np.concatenate([a, b]))
    assert histogram.total(merged) == 4000
    p99 = histogram.percentile(merged, 99)
    truth = float(np.percentile(np.concatenate([a, b]), 99, method="inverted_cdf"))
    assert p99 is not None and _within_bucket(p99, truth)


def test_bucket_bounds_contain_the_value_and_extremes_clamp() -> None:
    for v in (0.013, 0.5, 1.0, 1.09, 17.3, 499.9, 500.0, 2000.0, 123456.0):
        lo, hi = histogram.bucket_bounds(histogram.bucket_index(v))
        assert lo < v <= hi * (1 + 1e-12)
    assert histogram.bucket_index(0) == histogram.MIN_INDEX
    assert histogram.bucket_index(1e12) == histogram.MAX_INDEX
    assert histogram.percentile({}, 95) is None
    with pytest.raises(ValueError):
        histogram.percentile({"1": 1}, 101)


def test_a_single_sample_is_returned_exactly_with_min_max_clamp() -> None:
    hist = histogram.from_samples([612.0])
    assert histogram.percentile(hist, 50, 612.0, 612.0) == 612.0
