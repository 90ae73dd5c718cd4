"""Charts of an experiment's results (Altair): metric over time with intervals, and interval plots per variant."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import altair as alt
import pandas as pd

from app.components.time_axes import utc_times, utc_tooltip, utc_x
from core.experiments.analysis import MetricResult

DAY_TITLE = "cumulative to exposure day"


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def metric_over_time(timeline: Sequence[dict[str, Any]], metric: str, label: str) -> alt.Chart | None:
    """Cumulative value per variant by exposure day, with its 95% interval as a band."""
    rows = [
        {"day": r["day"], "variant": r["variant"], "value": _finite(r["mean"]), "low": _finite(r["ci_low"]),
         "high": _finite(r["ci_high"]), "units": r["units"]}
        for r in timeline if r["metric"] == metric
    ]
    df = pd.DataFrame([r for r in rows if r["value"] is not None])
    if df.empty:
        return None
    df["day"] = utc_times(df["day"])
    base = alt.Chart(df).encode(x=utc_x("day", DAY_TITLE, days=True),
                                color=alt.Color("variant:N", title="variant"))
    band = base.mark_area(opacity=0.18).encode(y=alt.Y("low:Q", title=label, scale=alt.Scale(zero=False)),
                                               y2="high:Q")
    line = base.mark_line(point=True).encode(
        y="value:Q", tooltip=[utc_tooltip("day", "day", days=True), "variant:N", alt.Tooltip("value:Q", format=".4g"),
                              alt.Tooltip("low:Q", format=".4g"), alt.Tooltip("high:Q", format=".4g"), "units:Q"])
    return (band + line).properties(height=260, title=f"{label} over time")


def difference_over_time(timeline: Sequence[dict[str, Any]], metric: str, label: str) -> alt.Chart | None:
    """Treatment minus control by day: fixed-horizon interval and the always-valid (sequential) interval."""
    rows = []
    for r in timeline:
        if r["metric"] != metric or "diff" not in r:
            continue
        rows.append({"day": r["day"], "variant": r["variant"], "difference": _finite(r["diff"]),
                     "interval": "fixed horizon", "low": _finite(r["diff_low"]), "high": _finite(r["diff_high"])})
        if "seq_low" in r:
            rows.append({"day": r["day"], "variant": r["variant"], "difference": _finite(r["diff"]),
                         "interval": "always valid", "low": _finite(r["seq_low"]), "high": _finite(r["seq_high"])})
    df = pd.DataFrame([r for r in rows if r["low"] is not None and r["high"] is not None])
    if df.empty:
        return None
    df["day"] = utc_times(df["day"])
    base = alt.Chart(df).encode(x=utc_x("day", DAY_TITLE, days=True))
    band = base.mark_area(opacity=0.2).encode(
        y=alt.Y("low:Q", title=f"difference in {label}"), y2="high:Q",
        color=alt.Color("interval:N", title="interval"), detail="variant:N")
    line = base.mark_line().encode(y="difference:Q", detail="variant:N",
                                   tooltip=[utc_tooltip("day", "day", days=True), "variant:N",
                                            alt.Tooltip("difference:Q", format=".4g")])
    zero = alt.Chart(pd.DataFrame({"y": [0.0]})).mark_rule(strokeDash=[4, 4]).encode(y="y:Q")
    return (band + line + zero).properties(height=220, title="Difference vs control, with intervals")


def interval_plot(result: MetricResult) -> alt.Chart | None:
    """Each variant's estimate with its 95% interval."""
    df = pd.DataFrame([
        {"variant": s.name, "estimate": _finite(s.mean), "low": _finite(s.ci_low), "high": _finite(s.ci_high),
         "units": s.n}
        for s in result.variants
    ]).dropna()
    if df.empty:
        return None
    base = alt.Chart(df).encode(y=alt.Y("variant:N", title=None))
    bars = base.mark_rule(strokeWidth=3).encode(
        x=alt.X("low:Q", title=result.metric.label, scale=alt.Scale(zero=False)), x2="high:Q")
    points = base.mark_point(filled=True, size=90).encode(
        x="estimate:Q", color=alt.Color("variant:N", legend=None),
        tooltip=["variant:N", alt.Tooltip("estimate:Q", format=".4g"), alt.Tooltip("low:Q", format=".4g"),
                 alt.Tooltip("high:Q", format=".4g"), "units:Q"])
    # A height per row: Streamlit fits a fixed total height into its own, which stacked the rows on one line.
    return (bars + points).properties(height=alt.Step(40), title=f"{result.metric.label}: 95% intervals")


def lift_plot(results: Sequence[MetricResult]) -> alt.Chart | None:
    """Relative lift with its delta-method interval, per metric and treatment."""
    rows = []
    for r in results:
        for c in r.comparisons:
            rows.append({"metric": r.metric.label, "variant": c.variant, "lift": _finite(c.lift),
                         "low": _finite(c.lift_ci[0]), "high": _finite(c.lift_ci[1]),
                         "better when": "higher" if r.metric.higher_is_better else "lower"})
    df = pd.DataFrame(rows).dropna()
    if df.empty:
        return None
    base = alt.Chart(df).encode(y=alt.Y("metric:N", title=None), yOffset="variant:N")
    bars = base.mark_rule(strokeWidth=3).encode(x=alt.X("low:Q", title="relative lift vs control",
                                                        axis=alt.Axis(format="%")), x2="high:Q",
                                                color="variant:N")
    points = base.mark_point(filled=True, size=80).encode(
        x="lift:Q", color="variant:N",
        tooltip=["metric:N", "variant:N", alt.Tooltip("lift:Q", format="+.1%"), alt.Tooltip("low:Q", format="+.1%"),
                 alt.Tooltip("high:Q", format="+.1%"), "better when:N"])
    zero = alt.Chart(pd.DataFrame({"x": [0.0]})).mark_rule(strokeDash=[4, 4]).encode(x="x:Q")
    return (bars + points + zero).properties(height=60 + 45 * len(df), title="Lift with 95% intervals")
