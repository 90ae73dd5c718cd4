"""Telemetry and cost: p50/p95/p99 per operation over time, slowest calls, error rates, cost per tenant."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from app.components.errors import handled
from app.components.guard import page_context
from app.components.tables import table_with_csv
from app.components.time_axes import utc_times, utc_tooltip, utc_x
from core.observability.telemetry import KINDS, timed
from core.services.overview import WINDOWS, TelemetryService

ctx = page_context("telemetry")
svc: TelemetryService = ctx.services.telemetry_views
VIEWS = {"latency": "Latency", "slowest": "Slowest calls", "errors": "Errors", "cost": "Cost"}
ALL = "all"

st.title("Telemetry and cost")
st.caption("From per-minute, per-hour and per-day rollups of every recorded call; percentiles come from "
           "log-scale histograms (about 9% resolution).")



def follow_link(param: str, key: str, allowed: list[str] | dict[str, str]) -> None:
    """A deep link (``?view=cost``) sets the widget once; after that the widget is the user's."""
    asked = st.query_params.get(param)
    if asked and asked in allowed and st.session_state.get(f"{key}_linked") != asked:
        st.session_state[key] = asked
        st.session_state[f"{key}_linked"] = asked


follow_link("view", "tel_view", VIEWS)
follow_link("kind", "tel_kind", [ALL, *KINDS])
# Widget values live in session state (set once here or by a deep link), so no widget also gets a default.
st.session_state.setdefault("tel_view", "latency")
st.session_state.setdefault("tel_window", "24h")
st.session_state.setdefault("tel_kind", ALL)
c1, c2, c3 = st.columns([3, 1, 1])
view = c1.segmented_control("View", list(VIEWS), format_func=VIEWS.get, key="tel_view", required=True)
window = c2.selectbox("Window", list(WINDOWS), key="tel_window")
kind = c3.selectbox("Kind", [ALL, *KINDS], key="tel_kind")
kind_arg = None if kind == ALL else kind


def percentile_chart(rows: list[dict]) -> alt.Chart:
    df = pd.DataFrame(rows)
    df["time"] = utc_times(df["bucket"])
    long = df.melt(id_vars=["time"], value_vars=["p50_ms", "p95_ms", "p99_ms"], var_name="percentile",
                   value_name="ms").dropna()
    return alt.Chart(long).mark_line(point=len(df) < 60).encode(
        x=utc_x("time"), y=alt.Y("ms:Q", title="latency (ms)", scale=alt.Scale(type="log")),
        color=alt.Color("percentile:N", sort=["p50_ms", "p95_ms", "p99_ms"]),
        tooltip=[utc_tooltip("time"), "percentile:N", alt.Tooltip("ms:Q", format=".0f")],
    ).properties(height=280)


with timed("page.telemetry", ctx.tenant_id, kind="page"), handled():
    if view == "latency":
        ops = svc.operations(ctx.principal, ctx.tenant_id, window, kind_arg)
        names = [ALL, *sorted({r.operation for r in ops})]
        follow_link("operation", "tel_operation", names)
        if st.session_state.get("tel_operation") not in names:
            st.session_state["tel_operation"] = ALL
        op = st.selectbox("Operation", names, key="tel_operation")
        rows = svc.series(ctx.principal, ctx.tenant_id, window, kind_arg, None if op == ALL else op)
        if rows:
            st.altair_chart(percentile_chart(rows), width="stretch")
        else:
            st.info("No calls recorded in this window.")
        table_with_csv(
            [{"kind": r.kind, "operation": r.operation, "calls": r.count, "error rate": r.error_rate,
              "p50 ms": r.p50_ms, "p95 ms": r.p95_ms, "p99 ms": r.p99_ms, "mean ms": r.mean_ms, "max ms": r.max_ms,
              "RU": r.ru or None} for r in ops],
            key="tel_ops", file_name="operations.csv", empty="No operations recorded in this window.",
            column_config={"error rate": st.column_config.NumberColumn(format="percent"),
                           **{c: st.column_config.NumberColumn(format="%.0f") for c in
                              ("p50 ms", "p95 ms", "p99 ms", "mean ms", "max ms")}},
        )
    elif view == "slowest":
        st.caption("The slowest calls kept per rollup, with what they did (store queries show their conditions, "
                   "never values) and the correlation id to find them in the logs.")
        slow = svc.slowest(ctx.principal, ctx.tenant_id, window, kind_arg or "store")
        table_with_csv(
            [{"ms": s["ms"], "at": s.get("at"), "tenant": s.get("tenantId"), "operation": s.get("operation"),
              "what": s.get("detail"), "outcome": s.get("outcome"), "correlation id": s.get("correlationId")}
             for s in slow],
            key="tel_slowest", file_name="slowest.csv", empty="No calls recorded in this window.",
        )
    elif view == "errors":
        rows = svc.series(ctx.principal, ctx.tenant_id, window, kind_arg)
        if rows:
            df = pd.DataFrame(rows)
            df["time"] = utc_times(df["bucket"])
            st.altair_chart(
                alt.Chart(df).mark_area(opacity=0.6).encode(
                    x=utc_x("time"), y=alt.Y("error_rate:Q", title="error rate", axis=alt.Axis(format="%")),
                    tooltip=[utc_tooltip("time"), alt.Tooltip("error_rate:Q", format=".2%"), "count:Q"],
                ).properties(height=220), width="stretch",
            )
        table_with_csv(svc.error_kinds(ctx.principal, ctx.tenant_id, window), key="tel_errors",
                       file_name="errors.csv", empty="No errors in this window.",
                       column_config={"share of calls": st.column_config.NumberColumn(format="percent")})
    else:
        months = st.slider("Months", 1, 12, 6, key="tel_months")
        monthly = svc.cost_monthly(ctx.principal, ctx.tenant_id, months)
        if not monthly:
            st.info("No LLM or embedding calls recorded yet, so no cost.")
        else:
            df = pd.DataFrame([m.__dict__ for m in monthly])
            st.altair_chart(
                alt.Chart(df).mark_bar().encode(
                    x=alt.X("period:N", title="month"), y=alt.Y("sum(cost):Q", title="cost (USD)"),
                    color=alt.Color("model:N"), tooltip=["tenant_id", "model", alt.Tooltip("cost:Q", format="$.2f")],
                ).properties(height=240), width="stretch",
            )
            unpriced = sorted({m.model for m in monthly if not m.priced})
            if unpriced:
                st.warning(f"No price for {', '.join(unpriced)}: counted at $0. Add them to data/prices.json.")
            table_with_csv(df.rename(columns={"tenant_id": "tenant", "period": "month"}), key="tel_cost",
                           file_name="cost-by-month.csv",
                           column_config={"cost": st.column_config.NumberColumn(format="dollar")})
            st.subheader("This month")
            trend = svc.cost_trend(ctx.principal, ctx.tenant_id)
            st.dataframe(
                [{"tenant": t.tenant_id, "month to date": t.month_to_date, "projected": t.projected,
                  "last month": t.previous_month, "change": t.change} for t in trend],
                hide_index=True, width="stretch", key="tel_trend",
                column_config={c: st.column_config.NumberColumn(format="dollar")
                               for c in ("month to date", "projected", "last month")}
                | {"change": st.column_config.NumberColumn(format="percent")},
            )
            daily = pd.DataFrame([{"tenant": t.tenant_id, "day": d, "cost": c} for t in trend for d, c in t.daily])
            if not daily.empty:
                daily["day"] = utc_times(daily["day"])
                st.altair_chart(alt.Chart(daily).mark_line(point=True).encode(
                    x=utc_x("day", days=True), y=alt.Y("cost:Q", title="cost per day (USD)"), color="tenant:N",
                    tooltip=[utc_tooltip("day", days=True), "tenant:N", alt.Tooltip("cost:Q", format="$.4f")],
                ).properties(height=220), width="stretch")
