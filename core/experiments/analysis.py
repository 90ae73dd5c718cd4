"""Assemble an experiment's analysis from its daily rollups: per-variant results, comparisons, health checks.

Input is the list of rollup records (one per variant and exposure day, see ``metrics.py``) and an
:class:`ExperimentSpec`; output is an :class:`ExperimentAnalysis` the results page renders and the
decision rules (``decision.py``) read. Nothing here reads raw events or touches the store.

Choices, and why
- Multiple comparisons: the primary metric's treatments form one family, the secondary metrics x
  treatments another; each is corrected (Holm by default, Benjamini-Hochberg on request).
  Guardrails are deliberately not corrected: they exist to catch harm, so they err towards alarms.
- Sequential mode (on by default): the primary metric's decision uses the always-valid p-value and
  confidence sequence over the daily looks, so watching the dashboard every day does not inflate
  false positives. The fixed-horizon numbers are shown too, labelled as such.
- CUPED is applied to a metric when at least half of its units carry a pre-period covariate and
  it reduces variance; otherwise the plain estimate is used.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from core.experiments import stats
from core.experiments.metrics import METRICS, MetricDef, hist_quantile_interval
from core.experiments.stats import Comparison, MetricStats, SrmResult

GUARDRAIL_STATUS_ORDER = {"pass": 0, "warn": 1, "fail": 2}


@dataclass(frozen=True)
class Guardrail:
    metric: str
    tolerance: float = 0.0  # largest relative degradation accepted, e.g. 0.10 = 10% worse


@dataclass
class ExperimentSpec:
    """The parts of an experiment record the analysis needs."""

    variants: list[str]
    control: str
    weights: list[float]
    primary: str
    secondary: list[str] = field(default_factory=list)
    guardrails: list[Guardrail] = field(default_factory=list)
    alpha: float = 0.05
    power: float = 0.8
    correction: stats.Correction = "holm"
    sequential: bool = True
    planned_units_per_arm: int = 10_000
    min_runtime_days: int = 7
    max_runtime_days: int = 28
    started_at: datetime | None = None
    stopped_at: datetime | None = None
    use_cuped: bool = True

    @classmethod
    def from_record(cls, exp: Mapping[str, Any]) -> ExperimentSpec:
        from core.clock import parse

        variants = exp["variants"]
        return cls(
            variants=[v["name"] for v in variants],
            control=exp.get("control") or variants[0]["name"],
            weights=[float(v["weight"]) for v in variants],
            primary=exp["primaryMetric"],
            secondary=list(exp.get("secondaryMetrics") or []),
            guardrails=[Guardrail(g["metric"], float(g.get("tolerance", 0.0))) for g in exp.get("guardrails") or []],
            alpha=float(exp.get("alpha", 0.05)),
            correction=exp.get("correction", "holm"),
            sequential=bool(exp.get("sequential", True)),
            planned_units_per_arm=int(exp.get("plannedUnitsPerArm") or 10_000),
            min_runtime_days=int(exp.get("minRuntimeDays") or 0),
            max_runtime_days=int(exp.get("maxRuntimeDays") or 28),
            started_at=parse(exp["startedAt"]) if exp.get("startedAt") else None,
            stopped_at=parse(exp["stoppedAt"]) if exp.get("stoppedAt") else None,
        )

    @property
    def treatments(self) -> list[str]:
        return [v for v in self.variants if v != self.control]

    def metric_defs(self) -> list[MetricDef]:
        names = [self.primary, *self.secondary, *(g.metric for g in self.guardrails)]
        seen: dict[str, MetricDef] = {}
        for n in names:
            if n not in seen:
                seen[n] = METRICS[n]
        return list(seen.values())


@dataclass
class VariantSummary:
    name: str
    n: float
    mean: float
    ci_low: float
    ci_high: float
    p95: tuple[float, float, float] | None = None  # estimate, low, high for quantile metrics


@dataclass
class MetricResult:
    metric: MetricDef
    variants: list[VariantSummary]
    comparisons: list[Comparison]
    cuped: bool = False
    cuped_theta: float = 0.0
    variance_reduction: float = 0.0  # 1 - Var(adjusted)/Var(raw), pooled

    def comparison(self, variant: str) -> Comparison | None:
        return next((c for c in self.comparisons if c.variant == variant), None)


@dataclass
class GuardrailResult:
    metric: str
    variant: str
    status: str  # pass | warn | fail
    detail: str


@dataclass
class ExperimentAnalysis:
    spec: ExperimentSpec
    units: dict[str, float]
    srm: SrmResult
    metrics: dict[str, MetricResult]
    guardrails: list[GuardrailResult]
    timeline: list[dict[str, Any]]
    days: list[str]
    last_update: str | None

    @property
    def primary(self) -> MetricResult:
        return self.metrics[self.spec.primary]

    def guardrail_status(self, variant: str) -> str:
        worst = "pass"
        for g in self.guardrails:
            if g.variant == variant and GUARDRAIL_STATUS_ORDER[g.status] > GUARDRAIL_STATUS_ORDER[worst]:
                worst = g.status
        return worst


# --------------------------------------------------------------------------------------------------
# rollups -> sufficient statistics
# --------------------------------------------------------------------------------------------------
def stats_from_rollups(
    rollups: Sequence[Mapping[str, Any]], metric_names: Sequence[str], up_to_day: str | None = None
) -> tuple[dict[str, float], dict[str, dict[str, MetricStats]], dict[str, dict[str, dict[str, float]]]]:
    """Sum rollups (optionally up to a day) into units per variant, stats per (metric, variant), histograms."""
    units: dict[str, float] = defaultdict(float)
    per: dict[str, dict[str, MetricStats]] = {m: defaultdict(MetricStats) for m in metric_names}
    hists: dict[str, dict[str, dict[str, float]]] = {m: defaultdict(dict) for m in metric_names}
    for r in rollups:
        if up_to_day is not None and r["day"] > up_to_day:
            continue
        v = r["variant"]
        units[v] += float(r.get("units") or 0)
        for m in metric_names:
            md = (r.get("metrics") or {}).get(m)
            if not md:
                continue
            per[m][v] = per[m][v] + MetricStats.from_dict(md)
            for k, c in (md.get("hist") or {}).items():
                hists[m][v][k] = hists[m][v].get(k, 0.0) + c
    return dict(units), {m: dict(d) for m, d in per.items()}, {m: dict(d) for m, d in hists.items()}


def covariate_share(rollups: Sequence[Mapping[str, Any]], metric_name: str) -> float:
    n = cov = 0.0
    for r in rollups:
        md = (r.get("metrics") or {}).get(metric_name) or {}
        n += float(md.get("n") or 0)
        cov += float(md.get("cov") or 0)
    return cov / n if n else 0.0


# --------------------------------------------------------------------------------------------------
# the analysis
# --------------------------------------------------------------------------------------------------
def analyze(
    spec: ExperimentSpec,
    rollups: Sequence[Mapping[str, Any]],
    expected_shares: Sequence[float] | None = None,
) -> ExperimentAnalysis:
    metric_defs = spec.metric_defs()
    names = [m.name for m in metric_defs]
    units, per, hists = stats_from_rollups(rollups, names)
    for v in spec.variants:
        units.setdefault(v, 0.0)
    shares = list(expected_shares) if expected_shares is not None else [w / 100.0 for w in spec.weights]
    srm = stats.srm_check([units[v] for v in spec.variants], shares)

    results: dict[str, MetricResult] = {}
    for m in metric_defs:
        results[m.name] = _metric_result(spec, m, per[m.name], hists[m.name], covariate_share(rollups, m.name))

    _correct(spec, results)
    days = sorted({str(r["day"]) for r in rollups})
    timeline = _timeline(spec, rollups, days, results)
    if spec.sequential:
        _apply_sequential(spec, results[spec.primary], timeline)
    guardrails = _guardrails(spec, results)
    last = max((str(r.get("updatedAt")) for r in rollups if r.get("updatedAt")), default=None)
    return ExperimentAnalysis(spec, units, srm, results, guardrails, timeline, days, last)


def _metric_result(
    spec: ExperimentSpec,
    m: MetricDef,
    per: Mapping[str, MetricStats],
    hists: Mapping[str, Mapping[str, float]],
    cov_share: float,
) -> MetricResult:
    binary = m.kind == "binary"
    summaries = []
    for v in spec.variants:
        s = per.get(v, MetricStats())
        if binary:
            lo, hi = stats.wilson_interval(s.total, s.n, spec.alpha)
        else:
            lo, hi = stats.mean_interval(s.n, s.mean, s.variance, spec.alpha)
        p95 = hist_quantile_interval(hists[v], 0.95, spec.alpha) if m.quantiles and hists.get(v) else None
        summaries.append(VariantSummary(v, s.n, s.mean, lo, hi, p95))

    cuped: tuple[float, float] | None = None
    theta, reduction = 0.0, 0.0
    pooled = sum((per.get(v, MetricStats()) for v in spec.variants), MetricStats())
    if spec.use_cuped and cov_share >= 0.5 and pooled.n > 10:
        theta = stats.cuped_theta(pooled)
        adj = stats.cuped_adjust(pooled, theta, pooled.x_mean)
        raw_var = pooled.variance
        if raw_var > 0 and adj.variance < raw_var:
            reduction = 1 - adj.variance / raw_var
            cuped = (theta, pooled.x_mean)

    control = per.get(spec.control, MetricStats())
    comps = []
    for v in spec.treatments:
        t = per.get(v, MetricStats())
        if control.n < 2 or t.n < 2:
            continue
        comps.append(
            stats.compare(
                control,
                t,
                binary=binary,
                higher_is_better=m.higher_is_better,
                alpha=spec.alpha,
                variant=v,
                control_name=spec.control,
                cuped=cuped,
                power=spec.power,
            )
        )
    return MetricResult(m, summaries, comps, cuped is not None, theta, reduction)


def _correct(spec: ExperimentSpec, results: Mapping[str, MetricResult]) -> None:
    families = [[spec.primary], [m for m in spec.secondary if m != spec.primary]]
    for family in families:
        comps = [c for name in family for c in results[name].comparisons]
        adjusted = stats.adjust_p_values([c.p_value for c in comps], spec.correction)
        for c, p in zip(comps, adjusted, strict=True):
            c.p_adjusted = p
            c.significant = bool(p < spec.alpha)


def _timeline(
    spec: ExperimentSpec, rollups: Sequence[Mapping[str, Any]], days: Sequence[str], results: Mapping[str, MetricResult]
) -> list[dict[str, Any]]:
    """Cumulative per-day values per metric and variant, with the fixed-horizon interval for the difference.

    Vectorised over days: one pass over the rollups builds daily arrays, cumulative sums give each look.
    """
    if not days:
        return []
    index = {d: i for i, d in enumerate(days)}
    nd = len(days)
    names = list(results)
    units = {v: np.zeros(nd) for v in spec.variants}
    cols = {(m, v): np.zeros((3, nd)) for m in names for v in spec.variants}
    for r in rollups:
        v, i = r["variant"], index[str(r["day"])]
        if v not in units:
            continue
        units[v][i] += float(r.get("units") or 0)
        for m in names:
            md = (r.get("metrics") or {}).get(m)
            if md:
                arr = cols[(m, v)]
                arr[0, i] += float(md.get("n") or 0)
                arr[1, i] += float(md.get("s") or 0)
                arr[2, i] += float(md.get("ss") or 0)
    cum_units = {v: np.cumsum(a) for v, a in units.items()}
    rows: list[dict[str, Any]] = []
    for m_name in names:
        binary = results[m_name].metric.kind == "binary"
        cum = {v: np.cumsum(cols[(m_name, v)], axis=1) for v in spec.variants}
        derived = {}
        for v in spec.variants:
            n, s, ss = cum[v]
            with np.errstate(divide="ignore", invalid="ignore"):
                mean = s / n
            var = mean * (1 - mean) if binary else np.asarray(stats.variance(n, s, ss), dtype=float)
            lo, hi = (
                stats.wilson_interval(s, n, spec.alpha) if binary else stats.mean_interval(n, mean, var, spec.alpha)
            )
            derived[v] = (n, s, mean, var, np.atleast_1d(lo), np.atleast_1d(hi))
        nc, sc, mc, vc, _, _ = derived[spec.control]
        for v in spec.variants:
            n, s, mean, var, lo, hi = derived[v]
            diff = None
            if v != spec.control:
                res = (
                    stats.two_proportion_test(sc, nc, s, n, spec.alpha)
                    if binary
                    else stats.welch_test(nc, mc, vc, n, mean, var, spec.alpha)
                )
                with np.errstate(divide="ignore", invalid="ignore"):
                    var_diff = vc / nc + var / n
                diff = (
                    np.atleast_1d(res.diff),
                    np.atleast_1d(res.ci_low),
                    np.atleast_1d(res.ci_high),
                    np.atleast_1d(var_diff),
                    (vc + var) / 2,
                )
            for i, day in enumerate(days):
                row: dict[str, Any] = {
                    "day": day,
                    "metric": m_name,
                    "variant": v,
                    "units": float(cum_units[v][i]),
                    "n": float(n[i]),
                    "mean": float(mean[i]),
                    "ci_low": float(lo[i]),
                    "ci_high": float(hi[i]),
                }
                if diff is not None and nc[i] >= 2 and n[i] >= 2:
                    row.update(
                        {
                            "diff": float(diff[0][i]),
                            "diff_low": float(diff[1][i]),
                            "diff_high": float(diff[2][i]),
                            "var_diff": float(diff[3][i]),
                            "pooled_var": float(diff[4][i]),
                        }
                    )
                rows.append(row)
    return rows


def _apply_sequential(spec: ExperimentSpec, result: MetricResult, timeline: Sequence[dict[str, Any]]) -> None:
    """Always-valid interval and p-value for each treatment of the primary metric, over the daily looks."""
    pvals = []
    for c in result.comparisons:
        looks = [r for r in timeline if r["metric"] == result.metric.name and r["variant"] == c.variant and "diff" in r]
        if not looks:
            pvals.append(float("nan"))
            continue
        # tau^2 is tuned to the planned sample, using the pooled per-unit variance (not the effect)
        planned_var = 2 * looks[-1]["pooled_var"] / max(spec.planned_units_per_arm, 1)
        tau2 = float(stats.mixture_tau2(planned_var, spec.alpha))
        path = stats.sequential_path([r["diff"] for r in looks], [r["var_diff"] for r in looks], tau2, spec.alpha)
        c.seq_ci = (path.ci_low, path.ci_high)
        c.seq_p_value = path.p_value
        for r in looks:
            h = float(stats.confidence_sequence_halfwidth(r["var_diff"], tau2, spec.alpha))
            r.update({"seq_low": r["diff"] - h, "seq_high": r["diff"] + h})
        pvals.append(path.p_value)
    adjusted = stats.adjust_p_values(pvals, spec.correction)
    for c, p in zip(result.comparisons, adjusted, strict=True):
        c.seq_p_value = p if not math.isnan(p) else c.seq_p_value
        c.significant = bool(c.seq_p_value is not None and c.seq_p_value < spec.alpha)


def _guardrails(spec: ExperimentSpec, results: Mapping[str, MetricResult]) -> list[GuardrailResult]:
    out: list[GuardrailResult] = []
    for g in spec.guardrails:
        r = results[g.metric]
        m = r.metric
        for c in r.comparisons:
            # harm as a relative change in the bad direction, with its interval
            if m.higher_is_better:
                harm, worst, best = -c.lift, -c.lift_ci[0], -c.lift_ci[1]
            else:
                harm, worst, best = c.lift, c.lift_ci[1], c.lift_ci[0]
            significant_harm = best > 0
            if significant_harm and harm >= g.tolerance:
                status = "fail"
                detail = (
                    f"{m.label} is {harm:+.1%} worse (interval {best:+.1%} to {worst:+.1%}), "
                    f"over the {g.tolerance:.0%} limit"
                )
            elif worst >= g.tolerance:
                status = "warn"
                detail = (
                    f"{m.label}: {harm:+.1%} worse at worst {worst:+.1%}; cannot yet rule out more than "
                    f"{g.tolerance:.0%} harm"
                )
            else:
                status = "pass"
                detail = f"{m.label}: at worst {worst:+.1%} worse, within the {g.tolerance:.0%} limit"
            if m.quantiles:
                status, detail = _p95_guardrail(r, c.variant, spec.control, g, status, detail)
            out.append(GuardrailResult(g.metric, c.variant, status, detail))
    return out


def _p95_guardrail(
    r: MetricResult, variant: str, control: str, g: Guardrail, status: str, detail: str
) -> tuple[str, str]:
    vs = {s.name: s for s in r.variants}
    pc, pt = vs[control].p95, vs[variant].p95
    if not pc or not pt:
        return status, detail
    limit = 1 + g.tolerance
    p95_status = "pass"
    if pt[1] > pc[2] * limit:
        p95_status = "fail"
    elif pt[0] > pc[0] * limit:
        p95_status = "warn"
    note = f"; p95 {pt[0]:,.0f} vs {pc[0]:,.0f} {r.metric.unit}"
    if GUARDRAIL_STATUS_ORDER[p95_status] > GUARDRAIL_STATUS_ORDER[status]:
        return p95_status, detail + note + f" (p95 {p95_status})"
    return status, detail + note
