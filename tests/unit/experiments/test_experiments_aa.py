"""A/A simulations (vectorised with numpy): fixed-horizon false positives near alpha; daily peeks stay under alpha."""

from __future__ import annotations

import numpy as np

from core.experiments import stats

ALPHA = 0.05
EXPERIMENTS = 1_000
DAYS = 14


def _sequential_rejections(
    diff: np.ndarray, var_diff: np.ndarray, pooled_var: np.ndarray, planned_n: int
) -> np.ndarray:
    """Per experiment: did any daily look's always-valid interval exclude 0? (what the analysis computes)."""
    tau2 = stats.mixture_tau2(2 * pooled_var / planned_n, ALPHA)
    half = stats.confidence_sequence_halfwidth(var_diff, tau2, ALPHA)
    p = stats.msprt_p_value(diff, var_diff, tau2)
    by_interval = (np.abs(diff) > half).any(axis=1)
    by_p_value = (np.minimum.accumulate(p, axis=1)[:, -1] < ALPHA)
    assert (by_interval == by_p_value).all()  # the interval and the p-value are the same test
    return by_interval


def test_aa_rates_fixed_horizon_near_alpha_and_daily_sequential_under_alpha() -> None:
    rng = np.random.default_rng(2024)
    per_day = 500
    x = rng.binomial(per_day, 0.20, size=(EXPERIMENTS, DAYS, 2)).cumsum(axis=1).astype(float)
    n = per_day * np.arange(1, DAYS + 1, dtype=float)[None, :]
    xc, xt = x[..., 0], x[..., 1]
    nn = np.broadcast_to(n, xc.shape)

    final = stats.two_proportion_test(xc[:, -1], nn[:, -1], xt[:, -1], nn[:, -1], ALPHA)
    fpr_fixed = float((final.p_value < ALPHA).mean())
    assert 0.03 <= fpr_fixed <= 0.07, fpr_fixed

    # peeking daily with the fixed-horizon test inflates false positives: the reason sequential tests exist
    daily = stats.two_proportion_test(xc, nn, xt, nn, ALPHA)
    fpr_peeking = float((daily.p_value < ALPHA).any(axis=1).mean())
    assert fpr_peeking > 0.10

    pc, pt = xc / nn, xt / nn
    var_diff = pc * (1 - pc) / nn + pt * (1 - pt) / nn
    pooled = (pc * (1 - pc) + pt * (1 - pt)) / 2
    fpr_seq = float(_sequential_rejections(pt - pc, var_diff, pooled, planned_n=per_day * DAYS).mean())
    assert fpr_seq <= ALPHA, fpr_seq


def test_aa_means_fixed_horizon_near_alpha_and_daily_sequential_under_alpha() -> None:
    rng = np.random.default_rng(7)
    per_day = 60
    # skewed, latency-like values; sufficient statistics per day, as the rollups keep them
    y = rng.lognormal(6.7, 0.5, size=(EXPERIMENTS, DAYS, 2, per_day))
    s = y.sum(axis=3).cumsum(axis=1)
    ss = (y * y).sum(axis=3).cumsum(axis=1)
    n = np.broadcast_to(per_day * np.arange(1, DAYS + 1, dtype=float)[None, :], s[..., 0].shape)
    mean_c, mean_t = s[..., 0] / n, s[..., 1] / n
    var_c, var_t = stats.variance(n, s[..., 0], ss[..., 0]), stats.variance(n, s[..., 1], ss[..., 1])

    final = stats.welch_test(n[:, -1], mean_c[:, -1], var_c[:, -1], n[:, -1], mean_t[:, -1], var_t[:, -1], ALPHA)
    fpr_fixed = float((final.p_value < ALPHA).mean())
    assert 0.03 <= fpr_fixed <= 0.07, fpr_fixed
    # the interval and the test agree
    assert ((final.ci_low > 0) | (final.ci_high < 0) == (final.p_value < ALPHA)).all()

    var_diff = var_c / n + var_t / n
    fpr_seq = float(_sequential_rejections(mean_t - mean_c, var_diff, (var_c + var_t) / 2, per_day * DAYS).mean())
    assert fpr_seq <= ALPHA, fpr_seq


def test_sequential_test_still_has_power_against_a_real_effect() -> None:
    rng = np.random.default_rng(5)
    per_day = 1_500
    xc = rng.binomial(per_day, 0.20, size=(200, DAYS)).cumsum(axis=1).astype(float)
    xt = rng.binomial(per_day, 0.22, size=(200, DAYS)).cumsum(axis=1).astype(float)
    n = np.broadcast_to(per_day * np.arange(1, DAYS + 1, dtype=float)[None, :], xc.shape)
    pc, pt = xc / n, xt / n
    var_diff = pc * (1 - pc) / n + pt * (1 - pt) / n
    pooled = (pc * (1 - pc) + pt * (1 - pt)) / 2
    power = float(_sequential_rejections(pt - pc, var_diff, pooled, planned_n=per_day * DAYS).mean())
    assert power > 0.9, power
