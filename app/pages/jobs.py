"""Jobs: queue depths, running items with progress, recent failures, scheduled runs; retry or cancel."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.components.errors import handled
from app.components.guard import page_context
from app.components.tables import table_with_csv
from core.adapters.store import PLATFORM
from core.services.access import ADMIN

ctx = page_context("jobs")
svc = ctx.services
st.title("Jobs")


@st.fragment(run_every=5)
def live_panel() -> None:
    with handled():
        depths = svc.queue.depths(ctx.principal, ctx.tenant_id)
        if depths:
            df = pd.DataFrame([d.__dict__ for d in depths])
            c1, c2, c3 = st.columns(3)
            c1.metric("Queued", int(df["queued"].sum()))
            c2.metric("Running", int(df["running"].sum()))
            c3.metric("Dead-lettered", int(df["dead"].sum()))
            st.bar_chart(df.set_index("queue")[["queued", "running", "dead"]], height=220)
        else:
            st.info("No queued, running or dead-lettered work.")
        running = svc.queue.recent(ctx.principal, ctx.tenant_id, status="running", limit=20)
        for item in running:
            st.progress(
                float(item.get("progress") or 0.0),
                text=f"{item['kind']} · {item.get('progressMessage') or 'running'} · attempt {item['attempts']}",
            )


live_panel()

st.subheader("Recent failures")
with handled():
    dead = svc.queue.recent(ctx.principal, ctx.tenant_id, status="dead", limit=50)
    rows = [
        {
            "id": d["id"],
            "tenant": d["tenantId"],
            "queue": d["queue"],
            "kind": d["kind"],
            "attempts": d["attempts"],
            "error": d.get("error"),
            "finished": d.get("finishedAt"),
            "requested by": d.get("requestedBy"),
        }
        for d in dead
    ]
    table_with_csv(rows, key="dead", file_name="dead-letter.csv", empty="No failed jobs.")
    if dead:
        with st.form("retry_form"):
            job_id = st.selectbox("Dead-lettered job", [d["id"] for d in dead], key="retry_job")
            reason = st.text_input("Reason", key="retry_reason")
            if st.form_submit_button("Retry"):
                item = next(d for d in dead if d["id"] == job_id)
                tenant = None if item["tenantId"] == PLATFORM else item["tenantId"]
                with handled():
                    svc.queue.retry_dead(ctx.principal, tenant, job_id, reason)
                    st.success("Queued again.")

st.subheader("Recent jobs")
with handled():
    recent = svc.queue.recent(ctx.principal, ctx.tenant_id, limit=100)
    table_with_csv(
        [
            {
                "created": r["createdAt"],
                "tenant": r["tenantId"],
                "queue": r["queue"],
                "kind": r["kind"],
                "status": r["status"],
                "attempts": r["attempts"],
                "progress": r.get("progress"),
                "reason": r.get("reason"),
                "requested by": r.get("requestedBy"),
            }
            for r in recent
        ],
        key="recent",
        file_name="jobs.csv",
        empty="No jobs yet.",
    )

if ctx.principal.role == ADMIN:
    st.subheader("Scheduled runs")
    with handled():
        runs = svc.queue.scheduled_runs(ctx.principal)
        table_with_csv(
            [{k: r.get(k) for k in ("job", "startedAt", "endedAt", "status", "error", "worker")} for r in runs],
            key="runs",
            file_name="scheduled-runs.csv",
            empty="The worker has not run any scheduled job yet.",
        )
