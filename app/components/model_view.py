"""Render helpers for the Models screen: tables and charts from the model service's plain data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import altair as alt
import pandas as pd

PRIMARY_FORMATS = {"r2": "R²", "mae": "MAE", "auc": "AUC", "brier": "Brier", "ece": "ECE", "mape": "MAPE",
                   "bias": "bias", "log_loss": "log loss", "rmse": "RMSE"}
HEADLINE_METRICS = {"risk": ("r2", "mae"), "win": ("auc", "brier", "ece"), "forecast": ("mape", "bias")}
TARGETS = {"risk": "R² > 0.85", "win": "ECE < 0.05", "forecast": "MAPE < 10%"}


def fmt_metric(name: str, value: float | None) -> str:
    if value is None:
        return "—"
    if name in ("mape", "bias", "max_ape", "flip_rate"):
        return f"{value:.1%}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4f}"


def when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M") if epoch else ""


def versions_frame(kind: str, versions: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    rows = []
    for v in versions:
        gate = v.get("gate") or {}
        row: dict[str, Any] = {
            "version": int(v["version"]),
            "aliases": ", ".join(v.get("aliases") or []),
            "trained": when(v.get("created_at", 0)),
            "trained by": v.get("trained_by", ""),
            "data window": " .. ".join(v.get("data_window") or ()),
            "rows": v.get("n_rows"),
        }
        for m in HEADLINE_METRICS[kind]:
            row[PRIMARY_FORMATS.get(m, m)] = v.get("metrics", {}).get(m)
        row["gate"] = "passed" if gate.get("passed") else ("blocked" if gate else "—")
        row["gate reasons"] = "; ".join(gate.get("reasons") or [])
        row["source"] = v.get("source", "")
        rows.append(row)
    return pd.DataFrame(rows)


def compare_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(list(rows))
    if df.empty:
        return df
    df["metric"] = [("★ " if p else "") + PRIMARY_FORMATS.get(m, m) for m, p in zip(df["metric"], df["primary"],
                                                                                   strict=True)]
    return df.drop(columns=["primary"])


def trend_chart(rows: Sequence[Mapping[str, Any]], metric: str) -> alt.Chart | None:
    df = pd.DataFrame([r for r in rows if r["metric"] == metric])
    if df.empty:
        return None
    return (
        alt.Chart(df)
        .mark_line(point=True)
        .encode(x=alt.X("version:O", title="version"), y=alt.Y("value:Q", title=PRIMARY_FORMATS.get(metric, metric),
                                                                 scale=alt.Scale(zero=False)),
                tooltip=["version", "value"])
        .properties(height=220)
    )


def reliability_chart(bins_by_version: Mapping[str, Sequence[Mapping[str, Any]]]) -> alt.Chart:
    rows = [{"version": f"v{v}", "predicted": b["mean_predicted"], "observed": b["observed_rate"],
             "count": b["count"]} for v, bins in bins_by_version.items() for b in bins if b.get("count")]
    df = pd.DataFrame(rows)
    diagonal = alt.Chart(pd.DataFrame({"x": [0, 1], "y": [0, 1]})).mark_line(strokeDash=[4, 4], color="#999").encode(
        x="x:Q", y="y:Q")
    points = alt.Chart(df).mark_line(point=True).encode(
        x=alt.X("predicted:Q", title="mean predicted probability", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("observed:Q", title="observed win rate", scale=alt.Scale(domain=[0, 1])),
        color="version:N", tooltip=["version", "predicted", "observed", "count"])
    return (diagonal + points).properties(height=300)


def drift_heatmap(rows: Sequence[Mapping[str, Any]]) -> alt.Chart | None:
    df = pd.DataFrame(list(rows))
    if df.empty:
        return None
    df["verdict"] = df["drifted"].map({True: "drifted", False: "stable"})
    base = alt.Chart(df).encode(x=alt.X("window:O", title="window"), y=alt.Y("feature:N", title=None))
    cells = base.mark_rect().encode(
        color=alt.Color("verdict:N", scale=alt.Scale(domain=["stable", "drifted"], range=["#d3f9d8", "#e03131"])),
        tooltip=["window", "feature", "method", "score", "verdict"])
    return (cells + base.mark_text(fontSize=9).encode(text=alt.Text("score:Q", format=".2f"))).properties(
        height=max(200, 18 * df["feature"].nunique()))


def prediction_drift_frame(checks: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    rows = []
    for c in checks:
        p = c.get("prediction") or {}
        rows.append({"window": c.get("window"), "prediction drift score": p.get("score"),
                     "method": p.get("method"), "prediction drifted": p.get("drifted"),
                     "share of features drifted": c.get("shareDrifted"), "alert": c.get("alert"),
                     "rows": c.get("currentRows"), "rows checked": c.get("sampledRows"), "version": c.get("version"),
                     "check": c.get("id")})
    return pd.DataFrame(rows)


def shadow_scatter(points: Sequence[Mapping[str, Any]], threshold: float | None) -> alt.Chart | None:
    df = pd.DataFrame([{"champion": p["output"], "challenger": p["shadowOutput"]} for p in points
                       if p.get("shadowOutput") is not None])
    if df.empty:
        return None
    chart = alt.Chart(df).mark_circle(size=14, opacity=0.4).encode(x="champion:Q", y="challenger:Q")
    if threshold is not None:
        rule = pd.DataFrame({"t": [threshold]})
        chart = chart + alt.Chart(rule).mark_rule(color="#e03131").encode(x="t:Q") + \
            alt.Chart(rule).mark_rule(color="#e03131").encode(y="t:Q")
    return chart.properties(height=300)


def history_frame(moves: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([{
        "at": m.get("at"), "action": m.get("action"), "alias": m.get("alias"), "version": m.get("version"),
        "previous": m.get("previous"), "by": m.get("actor"), "reason": m.get("reason"),
        "gate": {True: "passed", False: "blocked", None: "—"}[m.get("gatePassed")],
        "override": m.get("override"),
    } for m in moves])
