"""Embedding jobs: backlog, rate, failures and coverage per tenant and source; actions; retrieval playground."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app.components.embedding_charts import backlog_chart, bar_minutes, outcome_chart, outcome_columns, timeline_columns
from app.components.embedding_tiles import human_seconds, kpi_tiles
from app.components.errors import handled
from app.components.guard import page_context
from app.components.tables import table_with_csv
from core.services.embeddings import Kpis

# Tabs render lazily (only the open one runs), so each tab costs only when someone looks at it. Labels are
# also the deep-link values: ?emb_tab=Failed+items opens that tab.
TAB_TRENDS, TAB_FAILED, TAB_JOBS, TAB_ACTIONS, TAB_PLAYGROUND = (
    "Sources and trends", "Failed items", "Jobs", "Actions", "Retrieval playground")
JOB_STATUSES = ["all", "queued", "running", "succeeded", "failed", "dead", "cancelled"]
ALL_SOURCES, CURRENT_MODEL, ALL_PROJECTS = "All sources", "(current)", "All projects"
def source_rows(stats: list[Any]) -> list[dict[str, Any]]:
    return [{"source": s.source, "documents": s.docs_total, "embedded": s.docs_embedded,
             "coverage %": None if s.coverage is None else round(s.coverage * 100, 1), "chunks": s.chunks,
             "backlog": s.backlog, "failed": s.docs_failed, "dead-lettered": s.docs_dead,
             "failure rate %": round(s.failure_rate * 100, 2), "empty": s.docs_empty,
             "models": ", ".join(s.model_mix), "last processed": s.last_processed_at} for s in stats]


def sources_and_trends(tenant_id: str, stats: list[Any]) -> None:
    if stats:
        st.dataframe(source_rows(stats), hide_index=True, width="stretch", key="emb_sources")
    hours = st.segmented_control("Window", [6, 24, 72], default=24, key="emb_window",
                                 format_func=lambda h: f"{h} h") or 24
    timeline = svc.timeline(ctx.principal, tenant_id, hours=float(hours))
    if not timeline:
        st.info("No pipeline activity in this window.", icon=":material/timeline:")
        return
    c1, c2 = st.columns(2)
    step = bar_minutes(hours)
    c1.markdown(f"**Documents processed and failed** (per {'hour' if step == 60 else f'{step} minutes'})")
    c1.vega_lite_chart(outcome_columns(timeline, hours), outcome_chart(hours), width="stretch")
    c2.markdown("**Backlog** (changes waiting)")
    c2.vega_lite_chart(timeline_columns(timeline), backlog_chart(hours), width="stretch")


def failed_items(tenant_id: str) -> None:
    failed = svc.failed_items(ctx.principal, tenant_id)
    if not failed:
        st.success("No failed items.", icon=":material/check_circle:")
        return
    table_with_csv(failed, key="emb_failed", file_name="embedding-failures.csv")
    with st.form("emb_retry_form"):
        reason = st.text_input("Reason", key="emb_retry_reason", placeholder="e.g. provider back up")
        if st.form_submit_button("Retry failed items", icon=":material/replay:"):
            n = svc.retry_failed(ctx.principal, tenant_id, reason)
            st.success(f"{n} items queued for retry.")


def jobs_table(tenant_id: str) -> None:
    status = st.selectbox("Status", JOB_STATUSES, key="emb_jobs_status", width=240)
    jobs = svc.jobs(ctx.principal, tenant_id, None if status == "all" else status)
    table_with_csv([{k: j.get(k) for k in ("id", "kind", "status", "createdAt", "attempts", "progressMessage",
                                            "lastError", "reason")} for j in jobs],
                   key="emb_jobs", file_name="embedding-jobs.csv", empty="No embedding jobs with this status.")


def actions(tenant_id: str, kpis: Kpis, stats: list[Any]) -> None:
    a1, a2 = st.columns(2)
    with a1.form("emb_pause_form"):
        st.markdown("**Pause or resume the pipeline**")
        reason = st.text_input("Reason", key="emb_pause_reason", placeholder="e.g. embedding provider outage")
        label = "Resume pipeline" if kpis.paused else "Pause pipeline"
        if st.form_submit_button(label, icon=":material/play_arrow:" if kpis.paused else ":material/pause:"):
            svc.set_paused(ctx.principal, tenant_id, not kpis.paused, reason)
            st.success("Pipeline resumed." if kpis.paused else "Pipeline paused.")
            st.rerun()
    with a2.form("emb_reembed_form"):
        st.markdown("**Re-embed** (estimate first; nothing is queued until you confirm)")
        source = st.selectbox("Re-embed source", [ALL_SOURCES] + [s.source for s in stats], key="emb_reembed_source")
        model = st.selectbox("With model", [CURRENT_MODEL, *svc.model_names()], key="emb_reembed_model")
        reason = st.text_input("Reason", key="emb_reembed_reason", placeholder="e.g. new chunking settings")
        if st.form_submit_button("Estimate re-embed", icon=":material/calculate:"):
            est = svc.estimate_reembed(ctx.principal, tenant_id, None if source == ALL_SOURCES else source,
                                       None if model == CURRENT_MODEL else model)
            st.session_state["emb_estimate"] = {"source": source, "model": model, "reason": reason,
                                                "est": est.__dict__}
    pending = st.session_state.get("emb_estimate")
    if not pending:
        return
    e = pending["est"]
    st.info(f"Re-embedding **{pending['source']}** with **{e['model']}**: {e['documents']:,} documents, "
            f"about {e['chunks']:,} chunks ({e['tokens']:,} tokens), roughly {human_seconds(e['seconds'])} "
            f"at {e['rate_chunks_per_second']:,.0f} chunks/s ({e['rate_basis']}), embedding cost "
            f"${e['cost_usd']:,.4f}. "
            "Search keeps serving the current vectors until the new ones are complete.", icon=":material/info:")
    b1, b2, _ = st.columns([1, 1, 4])
    if b1.button("Confirm re-embed", key="emb_reembed_confirm", type="primary"):
        job = svc.request_reembed(ctx.principal, tenant_id, pending["reason"],
                                  None if pending["source"] == ALL_SOURCES else pending["source"],
                                  None if pending["model"] == CURRENT_MODEL else pending["model"])
        st.session_state.pop("emb_estimate", None)
        st.success(f"Re-embed queued as job {job['id']}.")
    if b2.button("Cancel", key="emb_reembed_cancel"):
        st.session_state.pop("emb_estimate", None)
        st.rerun()


@st.fragment
def playground(tenant_id: str) -> None:
    """A fragment: a search reruns only the playground, not the tiles and tables above it."""
    latency = st.container()  # filled last, so it includes a search made in this run
    with handled():
        projects = svc.projects(ctx.principal, tenant_id)
        with st.form("emb_search_form"):
            c1, c2, c3 = st.columns([2, 4, 1])
            project = c1.selectbox("Project", [ALL_PROJECTS, *projects], key="emb_project")
            question = c2.text_input("Question", key="emb_question", placeholder="e.g. what did legal ask for?")
            k = c3.number_input("Top k", 1, 50, 8, key="emb_k")
            typed = st.text_input("…or another project name", key="emb_project_typed",
                                  help="Search a project that is not in the list (shows what an empty filter does).")
            submitted = st.form_submit_button("Search", icon=":material/search:")
        if submitted:
            search(tenant_id, typed.strip() or (None if project == ALL_PROJECTS else project), question, int(k))
    with latency, handled():
        p50, p95, n = svc.search_latency(tenant_id)
        m1, m2, m3 = st.columns(3)
        m1.metric("Search p50", "—" if p50 is None else f"{p50:,.1f} ms", border=True)
        m2.metric("Search p95", "—" if p95 is None else f"{p95:,.1f} ms", border=True)
        m3.metric("Searches sampled", n, border=True)


def search(tenant_id: str, project: str | None, question: str, k: int) -> None:
    res = svc.search(ctx.principal, tenant_id, project, question, k=k)
    st.caption(f"{len(res.hits)} results in {res.latency_ms:,.1f} ms over {res.searched_chunks:,} chunks "
               f"(model {res.model})")
    if not res.hits:
        st.info(res.empty_reason or "Nothing matched.", icon=":material/search_off:")
        return
    st.dataframe([{"score": round(h.score, 4), "title": h.title, "project": h.project, "source": h.source,
                   "chunk": h.ord, "text": h.text[:400]} for h in res.hits], hide_index=True, width="stretch",
                 key="emb_results")


ctx = page_context("embedding_jobs")
svc = ctx.services.embeddings
st.title("Embedding jobs")
st.caption("Documents from the connected sources become chunks and vectors here. Figures come from rollups "
           "kept by the pipeline, so this screen costs the same at two thousand chunks or two million.")

tenant_id = ctx.one_tenant(key="emb_tenant")

with handled():
    kpis = svc.kpis(ctx.principal, tenant_id)
    stats = svc.source_stats(ctx.principal, tenant_id)

    if kpis.paused:
        st.warning(f"The pipeline is paused for this tenant: changes are queued but not embedded. Resume it on "
                   f"the {TAB_ACTIONS} tab.", icon=":material/pause_circle:")
    kpi_tiles(kpis)
    mix = ", ".join(f"{m} ({n:,} chunks)" for m, n in kpis.model_mix.items()) or "none yet"
    target = f" · moving to **{kpis.target_model}** in the background" if kpis.target_model else ""
    st.caption(f"Serving model **{kpis.active_model}**{target} · model mix: {mix} · "
               f"estimated drain time {human_seconds(kpis.drain_seconds)}")

    if not stats:
        st.info("No documents have reached the pipeline for this tenant yet. Connect a source on the "
                "Integrations screen; synced documents are embedded on the next worker cycle.",
                icon=":material/hourglass_empty:")

    tab_trends, tab_failed, tab_jobs, tab_actions, tab_play = st.tabs(
        [TAB_TRENDS, TAB_FAILED, TAB_JOBS, TAB_ACTIONS, TAB_PLAYGROUND], key="emb_tab", on_change="rerun",
        bind="query-params")
    if tab_trends.open:
        with tab_trends:
            sources_and_trends(tenant_id, stats)
    if tab_failed.open:
        with tab_failed:
            failed_items(tenant_id)
    if tab_jobs.open:
        with tab_jobs:
            jobs_table(tenant_id)
    if tab_actions.open:
        with tab_actions:
            actions(tenant_id, kpis, stats)
    if tab_play.open:
        with tab_play:
            playground(tenant_id)
