"""Statistics from sufficient statistics agree with scipy/statsmodels on raw data, detect planted effects, flag SRM."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import confint_proportions_2indep

from core.experiments import stats
from core.experiments.stats import MetricStats

TOL = 1e-9


@pytest.fixture(scope="module")
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def test_welch_matches_scipy_on_raw_data(rng: np.random.Generator) -> None:
    c = rng.gamma(2.0, 2.5, size=3_000)
    t = rng.gamma(2.1, 2.5, size=2_700)
    sc, st = MetricStats.from_values(c), MetricStats.from_values(t)
    ours = stats.welch_test(sc.n, sc.mean, sc.variance, st.n, st.mean, st.variance, alpha=0.05)
    ref = sps.ttest_ind(t, c, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert abs(ours.p_value - ref.pvalue) < TOL
    assert abs(ours.statistic - ref.statistic) < TOL
    assert abs(ours.ci_low - ci.low) < TOL and abs(ours.ci_high - ci.high) < TOL
    assert abs(ours.df - ref.df) < 1e-6


def test_per_variant_intervals_match_scipy(rng: np.random.Generator) -> None:
    y = rng.normal(5.0, 2.0, size=1_234)
    s = MetricStats.from_values(y)
    lo, hi = stats.mean_interval(s.n, s.mean, s.variance)
    ref = sps.ttest_1samp(y, 0.0).confidence_interval(0.95)
    assert abs(lo - ref.low) < TOL and abs(hi - ref.high) < TOL

    k, n = 431, 2_017
    lo, hi = stats.wilson_interval(k, n)
    ref = sps.binomtest(k, n).proportion_ci(0.95, method="wilson")
    assert abs(lo - ref.low) < TOL and abs(hi - ref.high) < TOL


def test_two_proportion_matches_scipy_chi_square_and_statsmodels_interval(rng: np.random.Generator) -> None:
    c = rng.random(20_000) < 0.20
    t = rng.random(19_000) < 0.21
    sc, st = MetricStats.from_values(c), MetricStats.from_values(t)
    ours = stats.two_proportion_test(sc.total, sc.n, st.total, st.n)
    table = np.array([[st.total, st.n - st.total], [sc.total, sc.n - sc.total]])
    chi2, p, _, _ = sps.chi2_contingency(table, correction=False)
    assert abs(ours.p_value - p) < TOL
    assert abs(ours.statistic**2 - chi2) < 1e-6
    lo, hi = confint_proportions_2indep(st.total, st.n, sc.total, sc.n, method="wald", compare="diff")
    assert abs(ours.ci_low - lo) < TOL and abs(ours.ci_high - hi) < TOL


def test_cuped_equals_a_t_test_on_adjusted_raw_values(rng: np.random.Generator) -> None:
    n = 4_000
    x = rng.normal(10, 3, size=2 * n)
    y = 0.8 * x + rng.normal(0, 2, size=2 * n)
    y[n:] += 0.15
    sc = MetricStats.from_values(y[:n], x[:n])
    st = MetricStats.from_values(y[n:], x[n:])
    pooled = sc + st
    theta = stats.cuped_theta(pooled)
    ref_theta = np.cov(x, y, ddof=1)[0, 1] / np.var(x, ddof=1)
    assert abs(theta - ref_theta) < 1e-9
    comp = stats.compare(sc, st, binary=False, cuped=(theta, pooled.x_mean))
    y_adj = y - theta * (x - x.mean())
    ref = sps.ttest_ind(y_adj[n:], y_adj[:n], equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert abs(comp.p_value - ref.pvalue) < TOL
    assert abs(comp.diff_ci[0] - ci.low) < TOL and abs(comp.diff_ci[1] - ci.high) < TOL
    plain = stats.compare(sc, st, binary=False)
    # the covariate explains ~60% of the variance, so the interval is ~0.64 times as wide
    assert (comp.diff_ci[1] - comp.diff_ci[0]) < 0.7 * (plain.diff_ci[1] - plain.diff_ci[0])


def test_planted_ten_percent_lift_on_twenty_percent_base_is_detected(rng: np.random.Generator) -> None:
    n = 20_000
    c = MetricStats.from_values(rng.random(n) < 0.20)
    t = MetricStats.from_values(rng.random(n) < 0.22)
    comp = stats.compare(c, t, binary=True)
    assert comp.significant and comp.p_value < 0.05
    assert comp.diff_ci[0] > 0
    assert comp.lift_ci[0] < 0.10 < comp.lift_ci[1]
    assert comp.prob_beat_control > 0.99
    assert comp.expected_loss < 1e-4
    # the always-valid interval, tuned for this sample size, also excludes zero
    tau2 = stats.mixture_tau2(2 * 0.21 * 0.79 / n)
    h = stats.confidence_sequence_halfwidth(comp.var_diff, tau2)
    assert comp.diff - h > 0
    assert stats.msprt_p_value(comp.diff, comp.var_diff, tau2) < 0.05


def test_no_effect_is_not_detected_and_bayes_is_near_a_coin_flip(rng: np.random.Generator) -> None:
    c = MetricStats.from_values(rng.random(20_000) < 0.2)
    t = MetricStats.from_values(rng.random(20_000) < 0.2)
    comp = stats.compare(c, t, binary=True)
    assert 0.02 < comp.prob_beat_control < 0.98
    assert comp.diff_ci[0] < 0 < comp.diff_ci[1] or comp.p_value < 0.05


def test_delta_method_lift_interval_covers_truth_at_nominal_rate() -> None:
    rng = np.random.default_rng(99)
    hits = 0
    trials = 400
    for _ in range(trials):
        c = rng.exponential(10.0, size=2_000)
        t = rng.exponential(11.0, size=2_000)
        _, _, lo, hi = stats.relative_lift(2_000, c.mean(), c.var(ddof=1), 2_000, t.mean(), t.var(ddof=1))
        hits += lo < 0.10 < hi
    assert 0.92 < hits / trials < 0.98


def test_srm_48_52_at_20000_units_is_flagged_and_50_50_is_not() -> None:
    flagged = stats.srm_check([9_600, 10_400], [0.5, 0.5])
    assert flagged.flagged and flagged.p_value < 0.001
    ref = sps.chisquare([9_600, 10_400], [10_000, 10_000])
    assert abs(flagged.p_value - ref.pvalue) < TOL
    assert not stats.srm_check([10_050, 9_950], [0.5, 0.5]).flagged
    # 48/52 of 20,000 *per arm* is flagged as well
    assert stats.srm_check([19_200, 20_800], [0.5, 0.5]).flagged
    # a unit in a zero-weight variant is always a mismatch
    assert stats.srm_check([100, 100, 1], [0.5, 0.5, 0.0]).flagged


def test_multiple_comparison_corrections_match_statsmodels() -> None:
    p = [0.001, 0.04, 0.03, 0.2, float("nan"), 0.012]
    arr = np.array([x for x in p if x == x])
    holm = [x for x in stats.adjust_p_values(p, "holm") if x == x]
    bh = [x for x in stats.adjust_p_values(p, "bh") if x == x]
    assert np.allclose(holm, multipletests(arr, method="holm")[1], atol=TOL)
    assert np.allclose(bh, multipletests(arr, method="fdr_bh")[1], atol=TOL)
    assert stats.adjust_p_values(p, "holm")[4] != stats.adjust_p_values(p, "holm")[4]  # NaN stays NaN


def test_mde_agrees_with_statsmodels_power() -> None:
    var = 0.2 * 0.8
    n = 10_000
    mde = stats.minimum_detectable_effect(var, n, var, n, alpha=0.05, power=0.8)
    # the usual two-sided MDE ignores the far tail: statsmodels' one-sided power at alpha/2 is the same formula
    es = NormalIndPower().solve_power(nobs1=n, alpha=0.025, power=0.8, ratio=1.0, alternative="larger")
    assert mde == pytest.approx(es * np.sqrt(var), rel=1e-4)  # statsmodels solves numerically
    assert stats.units_per_arm_for(mde, var, var) == pytest.approx(n, rel=1e-9)


def test_bayes_means_and_rates_are_consistent() -> None:
    good = stats.bayes_means(diff=1.0, se=0.5)
    assert good.prob_beat_control == pytest.approx(sps.norm.cdf(2.0))
    lower_better = stats.bayes_means(diff=1.0, se=0.5, higher_is_better=False)
    assert lower_better.prob_beat_control == pytest.approx(1 - good.prob_beat_control)
    assert lower_better.expected_loss > good.expected_loss
    rates = stats.bayes_rates(200, 1000, 260, 1000)
    assert rates.prob_beat_control > 0.99
    # the same numbers on a reload: fixed seed
    assert stats.bayes_rates(200, 1000, 260, 1000) == rates


def test_sufficient_statistics_add_up() -> None:
    rng = np.random.default_rng(1)
    y, x = rng.normal(size=500), rng.normal(size=500)
    whole = MetricStats.from_values(y, x)
    parts = MetricStats.from_values(y[:200], x[:200]) + MetricStats.from_values(y[200:], x[200:])
    assert whole.variance == pytest.approx(parts.variance, rel=1e-12)
    assert whole.xy_covariance == pytest.approx(np.cov(x, y, ddof=1)[0, 1], rel=1e-9)
    assert MetricStats.from_dict(whole.to_dict()) == whole
