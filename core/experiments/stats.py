"""Experiment statistics computed from sufficient statistics (n, sums, sums of squares), never raw events.

Every quantity here can be computed from the rollup counters the service keeps per experiment,
variant and day, so an analysis costs the same for a thousand events as for ten million.

Conventions: the *difference* is treatment minus control; *lift* is ``treatment/control - 1``.
Low-level functions accept numpy arrays (so A/A simulations run vectorised) as well as floats.

Methods and references
- Welch's t test for means (scipy ``ttest_ind_from_stats``), two-proportion z test for rates
  (pooled variance for the test, unpooled Wald interval for the difference), Wilson interval for
  one rate, t interval for one mean.
- Relative lift interval by the delta method (Deng, Knoblich, Lu 2018, "Applying the delta method
  in metric analytics").
- Always-valid inference: the mixture sequential probability ratio test (mSPRT) with a normal
  mixing distribution N(0, tau^2) on the difference (Johari, Pekelis, Walsh 2017; the same two-sided
  normal-mixture boundary as Howard et al. 2021). Peeking at any time, as often as wanted, keeps the
  false-positive rate at or below alpha. tau^2 is tuned so the boundary is tightest at a planned
  sample size fixed before the data (Waudby-Smith et al. 2021).
- Bayesian chance to beat control and expected loss: Beta(1, 1) priors on rates (Monte Carlo with a
  fixed seed so a page reload shows the same number), a normal approximation for means.
- Sample ratio mismatch: chi-square goodness of fit (scipy ``chisquare``); flagged when p < 0.001.
- CUPED (Deng, Xu, Kohavi, Walker 2013): y - theta * (x - mean(x)) with theta pooled over variants,
  from the covariate sums kept in the rollups.
- Multiple comparisons: Holm (family-wise) or Benjamini-Hochberg (false discovery rate) through
  statsmodels ``multipletests``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats as sps

from core.errors import Invalid

SRM_ALPHA = 0.001
BAYES_DRAWS = 200_000
Correction = Literal["holm", "bh", "none"]


# --------------------------------------------------------------------------------------------------
# sufficient statistics
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricStats:
    """Sufficient statistics of one metric over a set of units.

    ``n`` units with a value y; ``total`` = sum y, ``sumsq`` = sum y^2. For CUPED, x is the unit's
    pre-period covariate (0 when unknown): ``sx`` = sum x, ``sxx`` = sum x^2, ``sxy`` = sum x*y.
    """

    n: float = 0.0
    total: float = 0.0
    sumsq: float = 0.0
    sx: float = 0.0
    sxx: float = 0.0
    sxy: float = 0.0

    def __add__(self, other: MetricStats) -> MetricStats:
        return MetricStats(
            self.n + other.n,
            self.total + other.total,
            self.sumsq + other.sumsq,
            self.sx + other.sx,
            self.sxx + other.sxx,
            self.sxy + other.sxy,
        )

    @classmethod
    def from_values(cls, y: Any, x: Any = None) -> MetricStats:
        ya = np.asarray(y, dtype=float)
        xa = np.zeros_like(ya) if x is None else np.asarray(x, dtype=float)
        return cls(
            float(ya.size),
            float(ya.sum()),
            float((ya * ya).sum()),
            float(xa.sum()),
            float((xa * xa).sum()),
            float((xa * ya).sum()),
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MetricStats:
        return cls(*(float(d.get(k) or 0.0) for k in ("n", "s", "ss", "sx", "sxx", "sxy")))

    def to_dict(self) -> dict[str, float]:
        return {"n": self.n, "s": self.total, "ss": self.sumsq, "sx": self.sx, "sxx": self.sxx, "sxy": self.sxy}

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else float("nan")

    @property
    def variance(self) -> float:
        """Sample variance (ddof=1) of y."""
        return float(variance(self.n, self.total, self.sumsq))

    @property
    def x_mean(self) -> float:
        return self.sx / self.n if self.n else float("nan")

    @property
    def x_variance(self) -> float:
        return float(variance(self.n, self.sx, self.sxx))

    @property
    def xy_covariance(self) -> float:
        if self.n < 2:
            return float("nan")
        return (self.sxy - self.sx * self.total / self.n) / (self.n - 1)


def variance(n: Any, total: Any, sumsq: Any) -> Any:
    """Sample variance (ddof=1) from n, sum and sum of squares; clipped at 0 against rounding."""
    n = np.asarray(n, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = (np.asarray(sumsq, dtype=float) - np.asarray(total, dtype=float) ** 2 / n) / (n - 1)
    v = np.where(n > 1, np.maximum(v, 0.0), np.nan)
    return v if v.ndim else float(v)


# --------------------------------------------------------------------------------------------------
# per-variant intervals
# --------------------------------------------------------------------------------------------------
def mean_interval(n: Any, mean: Any, var: Any, alpha: float = 0.05) -> tuple[Any, Any]:
    """Student t interval for one mean (what ``scipy.stats.ttest_1samp(...).confidence_interval`` gives)."""
    n, mean, var = (np.asarray(a, dtype=float) for a in (n, mean, var))
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.sqrt(var / n)
        q = sps.t.ppf(1 - alpha / 2, n - 1)
        lo = np.where(n >= 2, mean - q * se, np.nan)
        hi = np.where(n >= 2, mean + q * se, np.nan)
    return _out(lo), _out(hi)


def wilson_interval(successes: Any, n: Any, alpha: float = 0.05) -> tuple[Any, Any]:
    """Wilson score interval for one rate (scipy ``binomtest(...).proportion_ci(method="wilson")``)."""
    x, n = np.asarray(successes, dtype=float), np.asarray(n, dtype=float)
    z = float(sps.norm.ppf(1 - alpha / 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = x / n
        denom = 2 * (n + z * z)
        center = (2 * n * p + z * z) / denom
        half = z * np.sqrt(z * z + 4 * n * p * (1 - p)) / denom
        lo = np.where(n > 0, np.maximum(0.0, center - half), np.nan)
        hi = np.where(n > 0, np.minimum(1.0, center + half), np.nan)
    return _out(lo), _out(hi)


# --------------------------------------------------------------------------------------------------
# two-sample tests (vectorised)
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TestResult:
    """Difference treatment - control with its standard error, test statistic, p-value and interval."""

    diff: Any
    se: Any
    statistic: Any
    p_value: Any
    ci_low: Any
    ci_high: Any
    df: Any = None


def welch_test(n_c: Any, mean_c: Any, var_c: Any, n_t: Any, mean_t: Any, var_t: Any, alpha: float = 0.05) -> TestResult:
    """Welch's unequal-variance t test and interval for mean_t - mean_c."""
    n_c, n_t = np.asarray(n_c, dtype=float), np.asarray(n_t, dtype=float)
    var_c, var_t = np.asarray(var_c, dtype=float), np.asarray(var_t, dtype=float)
    mean_c, mean_t = np.asarray(mean_c, dtype=float), np.asarray(mean_t, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        a, b = var_c / n_c, var_t / n_t
        se = np.sqrt(a + b)
        df = (a + b) ** 2 / (a * a / (n_c - 1) + b * b / (n_t - 1))
        res = sps.ttest_ind_from_stats(mean_t, np.sqrt(var_t), n_t, mean_c, np.sqrt(var_c), n_c, equal_var=False)
        q = sps.t.ppf(1 - alpha / 2, df)
    diff = mean_t - mean_c
    return TestResult(
        _out(diff), _out(se), _out(res.statistic), _out(res.pvalue), _out(diff - q * se), _out(diff + q * se), _out(df)
    )


def two_proportion_test(x_c: Any, n_c: Any, x_t: Any, n_t: Any, alpha: float = 0.05) -> TestResult:
    """Two-proportion z test (pooled variance) and Wald interval (unpooled) for rate_t - rate_c.

    The p-value equals scipy's ``chi2_contingency(..., correction=False)`` on the 2x2 table; the
    interval equals statsmodels ``confint_proportions_2indep(method="wald")``.
    """
    x_c, n_c = np.asarray(x_c, dtype=float), np.asarray(n_c, dtype=float)
    x_t, n_t = np.asarray(x_t, dtype=float), np.asarray(n_t, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        p_c, p_t = x_c / n_c, x_t / n_t
        pooled = (x_c + x_t) / (n_c + n_t)
        se0 = np.sqrt(pooled * (1 - pooled) * (1 / n_c + 1 / n_t))
        z = (p_t - p_c) / se0
        p = 2 * sps.norm.sf(np.abs(z))
        se = np.sqrt(p_c * (1 - p_c) / n_c + p_t * (1 - p_t) / n_t)
    q = float(sps.norm.ppf(1 - alpha / 2))
    diff = p_t - p_c
    return TestResult(_out(diff), _out(se), _out(z), _out(p), _out(diff - q * se), _out(diff + q * se))


def relative_lift(
    n_c: Any, mean_c: Any, var_c: Any, n_t: Any, mean_t: Any, var_t: Any, alpha: float = 0.05
) -> tuple[Any, Any, Any, Any]:
    """Lift mean_t/mean_c - 1 with a delta-method standard error and normal interval: (lift, se, lo, hi).

    Var(mt/mc) ~ var_t/(n_t mc^2) + mt^2 var_c/(n_c mc^4) for independent groups.
    """
    n_c, n_t = np.asarray(n_c, dtype=float), np.asarray(n_t, dtype=float)
    mean_c, mean_t = np.asarray(mean_c, dtype=float), np.asarray(mean_t, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        lift = mean_t / mean_c - 1
        se = np.sqrt(var_t / (n_t * mean_c**2) + mean_t**2 * var_c / (n_c * mean_c**4))
    q = float(sps.norm.ppf(1 - alpha / 2))
    return _out(lift), _out(se), _out(lift - q * se), _out(lift + q * se)


# --------------------------------------------------------------------------------------------------
# always-valid inference (mSPRT / normal-mixture confidence sequences)
# --------------------------------------------------------------------------------------------------
def mixture_tau2(planned_var: Any, alpha: float = 0.05) -> Any:
    """Mixing variance that makes the boundary tightest when Var(diff) reaches ``planned_var``.

    With V* the variance of the difference at the planned sample size, tau^2 = c V* where
    c = 2 log(1/alpha) + log(1 + 2 log(1/alpha)) (Waudby-Smith et al. 2021, eq. for rho).
    """
    c = 2 * math.log(1 / alpha) + math.log(1 + 2 * math.log(1 / alpha))
    return np.asarray(planned_var, dtype=float) * c


def confidence_sequence_halfwidth(var_diff: Any, tau2: Any, alpha: float = 0.05) -> Any:
    """Half-width of the always-valid (1 - alpha) interval for the difference at current Var(diff) = V.

    diff +- sqrt( V (V + tau^2) / tau^2 * (2 log(1/alpha) + log((V + tau^2) / V)) ).
    """
    v = np.asarray(var_diff, dtype=float)
    tau2 = np.asarray(tau2, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.sqrt(v * (v + tau2) / tau2 * (2 * math.log(1 / alpha) + np.log((v + tau2) / v)))
    return _out(h)


def msprt_p_value(diff: Any, var_diff: Any, tau2: Any) -> Any:
    """Always-valid p-value at one look: min(1, 1/Lambda) with the normal-mixture likelihood ratio.

    Lambda = sqrt(V / (V + tau^2)) exp(tau^2 diff^2 / (2 V (V + tau^2))). Take the running minimum
    over looks (see :func:`sequential_path`).
    """
    d, v, t2 = (np.asarray(a, dtype=float) for a in (diff, var_diff, tau2))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_lambda = 0.5 * np.log(v / (v + t2)) + t2 * d * d / (2 * v * (v + t2))
        p = np.exp(-np.maximum(log_lambda, 0.0))
    return _out(np.minimum(p, 1.0))


@dataclass(frozen=True)
class SequentialResult:
    ci_low: float
    ci_high: float
    p_value: float
    rejected_at: int | None  # index of the first look whose interval excluded 0


def sequential_path(
    diffs: Sequence[float], var_diffs: Sequence[float], tau2: float, alpha: float = 0.05
) -> SequentialResult:
    """Combine looks: the running intersection of the intervals and the running minimum p-value.

    Both remain valid at every look because the underlying interval sequence is time-uniform.
    """
    lo, hi, p_min, first = -math.inf, math.inf, 1.0, None
    for i, (d, v) in enumerate(zip(diffs, var_diffs, strict=True)):
        if not (v > 0 and math.isfinite(v) and math.isfinite(d)):
            continue
        h = float(confidence_sequence_halfwidth(v, tau2, alpha))
        lo, hi = max(lo, d - h), min(hi, d + h)
        p_min = min(p_min, float(msprt_p_value(d, v, tau2)))
        if first is None and (lo > 0 or hi < 0):
            first = i
    return SequentialResult(lo, hi, p_min, first)


# --------------------------------------------------------------------------------------------------
# Bayesian summaries
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BayesResult:
    prob_beat_control: float
    expected_loss: float  # expected shortfall (in metric units) if the treatment is shipped and is worse


def bayes_rates(
    x_c: float,
    n_c: float,
    x_t: float,
    n_t: float,
    higher_is_better: bool = True,
    draws: int = BAYES_DRAWS,
    seed: int = 20240601,
) -> BayesResult:
    """Beta(1 + successes, 1 + failures) posteriors per arm; Monte Carlo with a fixed seed."""
    rng = np.random.default_rng(seed)
    pc = rng.beta(1 + x_c, 1 + n_c - x_c, size=draws)
    pt = rng.beta(1 + x_t, 1 + n_t - x_t, size=draws)
    gain = (pt - pc) if higher_is_better else (pc - pt)
    return BayesResult(float((gain > 0).mean()), float(np.maximum(-gain, 0.0).mean()))


def bayes_means(diff: float, se: float, higher_is_better: bool = True) -> BayesResult:
    """Normal approximation: the difference ~ N(diff, se^2) under a flat prior."""
    gain = diff if higher_is_better else -diff
    if not (se > 0):
        return BayesResult(float(gain > 0), float(max(-gain, 0.0)))
    z = gain / se
    # E[max(-G, 0)] for G ~ N(gain, se^2) = se * phi(z) - gain * Phi(-z)
    loss = se * float(sps.norm.pdf(z)) - gain * float(sps.norm.cdf(-z))
    return BayesResult(float(sps.norm.cdf(z)), max(loss, 0.0))


# --------------------------------------------------------------------------------------------------
# health checks
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SrmResult:
    observed: list[float]
    expected: list[float]
    statistic: float
    p_value: float
    flagged: bool


def srm_check(observed: Sequence[float], expected_shares: Sequence[float], alpha: float = SRM_ALPHA) -> SrmResult:
    """Chi-square test of the observed unit split against the configured weights; flag when p < alpha."""
    obs = np.asarray(observed, dtype=float)
    shares = np.asarray(expected_shares, dtype=float)
    if obs.shape != shares.shape:
        raise Invalid("SRM check needs one expected share per observed count")
    keep = shares > 0
    if (obs[~keep] > 0).any():
        # units in a variant with zero weight cannot happen with correct assignment
        return SrmResult(obs.tolist(), (shares * obs.sum()).tolist(), math.inf, 0.0, True)
    total = obs.sum()
    if total == 0 or keep.sum() < 2:
        return SrmResult(obs.tolist(), (shares * total).tolist(), 0.0, 1.0, False)
    exp = shares[keep] / shares[keep].sum() * total
    res = sps.chisquare(obs[keep], exp)
    p = float(res.pvalue)
    full_exp = np.zeros_like(obs)
    full_exp[keep] = exp
    return SrmResult(obs.tolist(), full_exp.tolist(), float(res.statistic), p, p < alpha)


def minimum_detectable_effect(
    var_c: float, n_c: float, var_t: float, n_t: float, alpha: float = 0.05, power: float = 0.8
) -> float:
    """Smallest absolute difference a two-sided test at ``alpha`` detects with ``power`` at this sample."""
    if n_c <= 0 or n_t <= 0:
        return float("inf")
    z = float(sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power))
    return z * math.sqrt(var_c / n_c + var_t / n_t)


def units_per_arm_for(effect: float, var_c: float, var_t: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Units per arm for a two-sided test to detect an absolute ``effect`` with ``power``."""
    if effect == 0:
        return float("inf")
    z = float(sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power))
    return z * z * (var_c + var_t) / (effect * effect)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values (same numbers as statsmodels ``multipletests(method="holm")``).

    Written out because the statsmodels version runs ``gc.collect()`` on every call, which costs a
    quarter of a second in a large process such as the web app.
    """
    p = np.asarray(p_values, dtype=float)
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(np.maximum.accumulate(p[order] * np.arange(m, 0, -1)), 1.0)
    out = np.empty(m)
    out[order] = adjusted
    return out


def adjust_p_values(p_values: Sequence[float], method: Correction = "holm") -> list[float]:
    """Holm (family-wise error) or Benjamini-Hochberg (false discovery rate) adjusted p-values; NaNs stay NaN."""
    if method == "none" or not len(p_values):
        return list(p_values)
    arr = np.asarray(p_values, dtype=float)
    ok = ~np.isnan(arr)
    out = np.full_like(arr, np.nan)
    if ok.any():
        if method == "holm":
            out[ok] = holm(arr[ok])
        elif method == "bh":
            out[ok] = sps.false_discovery_control(arr[ok], method="bh")
        else:
            raise Invalid(f"unknown correction {method!r}; use holm, bh or none")
    return out.tolist()


# --------------------------------------------------------------------------------------------------
# CUPED
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CupedAdjusted:
    """A variant's mean and per-unit variance of y - theta * (x - pooled mean of x)."""

    n: float
    mean: float
    variance: float


def cuped_theta(pooled: MetricStats) -> float:
    """theta = Cov(x, y) / Var(x) over all variants pooled (so it does not depend on assignment)."""
    vx = pooled.x_variance
    if not (vx > 0):
        return 0.0
    return pooled.xy_covariance / vx


def cuped_adjust(s: MetricStats, theta: float, pooled_x_mean: float) -> CupedAdjusted:
    mean = s.mean - theta * (s.x_mean - pooled_x_mean)
    var = s.variance + theta * theta * s.x_variance - 2 * theta * s.xy_covariance
    return CupedAdjusted(s.n, mean, max(var, 0.0))


# --------------------------------------------------------------------------------------------------
# one comparison, assembled
# --------------------------------------------------------------------------------------------------
@dataclass
class Comparison:
    """Treatment against control on one metric: every number the results page and decision panel need."""

    variant: str
    control: str
    test: str
    diff: float
    diff_ci: tuple[float, float]
    lift: float
    lift_ci: tuple[float, float]
    statistic: float
    p_value: float
    p_adjusted: float
    significant: bool
    seq_ci: tuple[float, float] | None
    seq_p_value: float | None
    prob_beat_control: float
    expected_loss: float
    mde_abs: float
    mde_rel: float
    var_diff: float
    cuped: bool = False
    df: float | None = None

    @property
    def favourable(self) -> bool:
        return self.prob_beat_control > 0.5


def compare(
    control: MetricStats,
    treatment: MetricStats,
    *,
    binary: bool,
    higher_is_better: bool = True,
    alpha: float = 0.05,
    variant: str = "treatment",
    control_name: str = "control",
    cuped: tuple[float, float] | None = None,
    power: float = 0.8,
) -> Comparison:
    """Frequentist test, lift, Bayesian summary and MDE for one treatment against control.

    ``cuped`` = (theta, pooled mean of x) switches to the CUPED-adjusted means and variances
    (Welch t on the adjusted values); without it rates use the two-proportion z test and means Welch t.
    """
    if cuped is not None:
        theta, xbar = cuped
        ac, at = cuped_adjust(control, theta, xbar), cuped_adjust(treatment, theta, xbar)
        n_c, m_c, v_c, n_t, m_t, v_t = ac.n, ac.mean, ac.variance, at.n, at.mean, at.variance
    else:
        n_c, m_c, v_c = control.n, control.mean, control.variance
        n_t, m_t, v_t = treatment.n, treatment.mean, treatment.variance
    if binary and cuped is None:
        res = two_proportion_test(control.total, control.n, treatment.total, treatment.n, alpha)
        test = "two-proportion z"
        # rates: the per-unit variance p(1-p) is what the z test and the Bayesian summary use
        v_c = m_c * (1 - m_c)
        v_t = m_t * (1 - m_t)
    else:
        res = welch_test(n_c, m_c, v_c, n_t, m_t, v_t, alpha)
        test = "Welch t (CUPED)" if cuped is not None else "Welch t"
    lift, _, lift_lo, lift_hi = relative_lift(n_c, m_c, v_c, n_t, m_t, v_t, alpha)
    var_diff = v_c / n_c + v_t / n_t if n_c > 0 and n_t > 0 else float("nan")
    if binary and cuped is None:
        bayes = bayes_rates(control.total, control.n, treatment.total, treatment.n, higher_is_better)
    else:
        bayes = bayes_means(
            float(res.diff), math.sqrt(var_diff) if var_diff == var_diff else float("nan"), higher_is_better
        )
    mde = minimum_detectable_effect(v_c, n_c, v_t, n_t, alpha, power)
    p = float(res.p_value)
    return Comparison(
        variant=variant,
        control=control_name,
        test=test,
        diff=float(res.diff),
        diff_ci=(float(res.ci_low), float(res.ci_high)),
        lift=float(lift),
        lift_ci=(float(lift_lo), float(lift_hi)),
        statistic=float(res.statistic),
        p_value=p,
        p_adjusted=p,
        significant=bool(p < alpha),
        seq_ci=None,
        seq_p_value=None,
        prob_beat_control=bayes.prob_beat_control,
        expected_loss=bayes.expected_loss,
        mde_abs=mde,
        mde_rel=mde / abs(m_c) if m_c else float("inf"),
        var_diff=var_diff,
        cuped=cuped is not None,
        df=None if res.df is None else float(res.df),
    )


def _out(a: Any) -> Any:
    """Scalars come back as floats, arrays as arrays."""
    arr = np.asarray(a)
    return float(arr) if arr.ndim == 0 else arr
