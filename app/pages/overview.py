"""Overview: the landing screen for ops and admins: platform KPIs, one row per tenant, the alert feed."""

from __future__ import annotations

import streamlit as st

from app.components.errors import handled
from app.components.guard import page_context
from app.components.overview_view import (
    FILTERS,
    SORTS,
    alert_feed_config,
    alert_feed_frame,
    filter_rows,
    sort_rows,
    tenant_column_config,
    tenant_frame,
)
from core.observability.telemetry import timed
from core.services.access import Principal
from core.services.overview import NOT_SET_UP, Overview

REFRESH_SECONDS = 30
ctx = page_context("overview")
STORE_KEY = f"{ctx.services.store.backend}:{ctx.services.settings.data_dir}"


@st.cache_data(ttl=REFRESH_SECONDS // 2, show_spinner=False)
def load_overview(store_key: str, principal: Principal, tenant_id: str | None) -> Overview:
    return ctx.services.overview.overview(principal, tenant_id)


@st.cache_data(ttl=REFRESH_SECONDS // 2, show_spinner=False)
def load_alerts(store_key: str, principal: Principal, tenant_id: str | None) -> list[dict]:
    return ctx.services.alerting.active(principal, tenant_id)


st.title("Overview")
top = st.columns([6, 1])
top[0].caption("Every tenant at a glance, from the features' rollups. Cells open the screen behind them.")
if top[1].button("Refresh", key="overview_refresh", icon=":material/refresh:"):
    load_overview.clear()
    load_alerts.clear()


@st.fragment(run_every=REFRESH_SECONDS)
def live_overview() -> None:
    with timed("page.overview", ctx.tenant_id, kind="page"), handled():
        ov = load_overview(STORE_KEY, ctx.principal, ctx.tenant_id)
        cols = st.columns(min(6, max(1, len(ov.kpis))))
        for i, k in enumerate(ov.kpis):
            cols[i % len(cols)].metric(k.label, k.value, help=k.help or None, border=True)
        missing = [name for name, state in ov.sections.items() if state == NOT_SET_UP]
        broken = {name: state for name, state in ov.sections.items() if state.startswith("unavailable")}
        if missing:
            st.caption(f"Not set up yet: {', '.join(missing)}.")
        for name, state in broken.items():
            st.warning(f"{name}: {state}", icon=":material/cloud_off:")

        f1, f2, f3, f4 = st.columns([3, 2, 2, 1])
        search = f1.text_input("Find a tenant", key="overview_search", placeholder="name or id")
        show = f2.selectbox("Show", FILTERS, key="overview_show")
        sort = f3.selectbox("Sort by", list(SORTS), format_func=SORTS.get, key="overview_sort")
        descending = f4.toggle("Desc.", value=True, key="overview_desc")
        rows = sort_rows(filter_rows(ov.rows, search, show), sort, descending)
        if not rows:
            st.info("No tenant matches these filters." if ov.rows else "No tenants yet.")
        else:
            st.dataframe(tenant_frame(rows), key="overview_tenants", hide_index=True, width="stretch",
                         column_config=tenant_column_config())
        st.caption(f"{len(rows)} of {len(ov.rows)} tenants · read in {ov.read_ms:.0f} ms · as of "
                   f"{ov.generated_at[:19].replace('T', ' ')} UTC · refreshes every {REFRESH_SECONDS} s")

        st.subheader("Alert feed")
        feed = load_alerts(STORE_KEY, ctx.principal, ctx.tenant_id)
        if not feed:
            st.success("No open alerts.", icon=":material/check_circle:")
        else:
            st.dataframe(alert_feed_frame(feed), key="overview_feed", hide_index=True, width="stretch",
                         column_config=alert_feed_config())
            st.page_link("pages/alerts.py", label=f"All {len(feed)} open alerts", icon=":material/arrow_forward:")


live_overview()
