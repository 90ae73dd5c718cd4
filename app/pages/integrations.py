"""Integrations: connection health across tenants, sync history and errors, and the support actions on them."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import streamlit as st

from app.components.errors import handled, show_error
from app.components.flash import flash, show_flash
from app.components.guard import page_context
from app.components.integrations_view import (
    STATUS_ICONS,
    STATUS_LABELS,
    attempts_frame,
    connections_frame,
    run_history_chart,
    runs_frame,
    skipped_frame,
    streams_frame,
    token_lines,
)
from app.components.tables import table_with_csv
from core import clock
from core.errors import CastielError
from core.services.access import ADMIN, OPS, Principal
from core.services.integration_health import STATUSES, human_duration
from core.services.integrations import ConnectionDetail, ConnectionList, IntegrationsService

ctx = page_context("integrations")
svc: IntegrationsService = ctx.services.integrations
PENDING = "integ_pending"  # the action this session is watching: {tenant, connection, run_id, job_id, label}
FLASH = "integ_flash"
DIALOG = "integ_dialog"  # the open confirmation dialog: {kind, connection, run_id}; kept until done or dismissed
CONSENT = "integ_consent"  # a consent this session started: {connection, url}
CONSENT_NOTICE = "integ_consent_notice"  # how the vendor's answer ended: {ok, text | error, connection, until}
NOTICE_SECONDS = 60.0
# What a vendor may add to its redirect back to this page after a consent (RFC 6749 4.1.2, msal, RFC 9207).
CONSENT_PARAMS = ("code", "state", "error", "error_description", "error_uri", "scope", "session_state",
                  "client_info", "iss")
DEFAULT_CONSOLE_URL = "http://localhost:8501"
ALL = "All"
STORE_KEY = f"{ctx.services.store.backend}:{ctx.services.settings.data_dir}"


@st.cache_data(ttl=15, show_spinner=False)
def load_connections(store_key: str, principal: Principal, tenant_id: str | None, provider: str | None,
                     status: str | None) -> ConnectionList:
    return svc.list_connections(principal, tenant_id, provider=provider, status=status)


def refresh_lists() -> None:
    load_connections.clear()


def open_connection(connection_id: str | None) -> None:
    if connection_id:
        st.query_params["connection"] = connection_id
    elif "connection" in st.query_params:
        del st.query_params["connection"]



# list view ---------------------------------------------------------------------------------------
def list_view() -> None:
    st.title("Integrations")
    st.caption("Health of every connection you may see, worst first. Open one to see its runs, errors and cursors.")
    show_flash(FLASH)
    show_consent_notice(None)
    everything = load_connections(STORE_KEY, ctx.principal, ctx.tenant_id, None, None)
    c1, c2, c3 = st.columns(3)
    tenant_options = [ALL, *everything.tenants]
    if ctx.tenant_id is None:
        tenant = c1.selectbox("Tenant", tenant_options, key="integ_f_tenant")
    else:
        tenant = ctx.tenant_id
        c1.text_input("Tenant", value=ctx.tenant_id, disabled=True, key="integ_f_tenant_fixed")
    provider = c2.selectbox("Provider", [ALL, *everything.providers], key="integ_f_provider",
                            format_func=lambda p: p if p == ALL else svc.provider_labels.get(p, p))
    status = c3.selectbox("Status", [ALL, *STATUSES], key="integ_f_status",
                          format_func=lambda s: s if s == ALL else STATUS_LABELS[s])
    with handled():
        data = load_connections(
            STORE_KEY, ctx.principal, None if tenant == ALL else tenant, None if provider == ALL else provider,
            None if status == ALL else status,
        )
        cols = st.columns(len(STATUSES))
        for col, s in zip(cols, STATUSES, strict=True):
            col.metric(f"{STATUS_LABELS[s]}", data.counts.get(s, 0), border=True)
        frame = connections_frame(data.rows)
        table_with_csv(
            frame, key="integ_connections", file_name="integrations.csv",
            empty="No connections match these filters." if data.total else "No connections yet.",
            column_config={
                "7-day success": st.column_config.ProgressColumn("7-day success", min_value=0.0, max_value=1.0,
                                                                 format="percent"),
                "lag seconds": None,
                "id": None,
            },
        )
        if data.rows:
            labels = {r.id: f"{r.tenant_id} · {r.name} · {STATUS_LABELS[r.status]}" for r in data.rows}
            choice = st.selectbox("Open a connection", list(labels), index=None, key="integ_open",
                                  format_func=lambda i: labels[i], placeholder="Pick a connection to see its detail")
            if choice:
                open_connection(choice)
                st.rerun()
    if ctx.principal.role == ADMIN:
        add_connection_form()


def add_connection_form() -> None:
    with st.expander("Add a connection", icon=":material/add_link:"):
        tenants = [t["id"] for t in ctx.services.tenants.list(ctx.principal)]
        provider = st.selectbox("Provider", sorted(svc.provider_labels), index=None, key="integ_new_provider",
                                format_func=lambda p: svc.provider_labels[p], placeholder="Choose a provider")
        if provider is None:
            return
        with handled():
            info = svc.provider(provider)
            with st.form("integ_new_form"):
                tenant = st.selectbox("Tenant", tenants, key="integ_new_tenant")
                name = st.text_input("Name", key="integ_new_name")
                minutes = st.number_input("Sync every (minutes)", min_value=1, max_value=7 * 24 * 60, value=60,
                                          key="integ_new_interval")
                config: dict[str, Any] = {}
                creds: dict[str, Any] = {}
                for f in info.config_fields:
                    value = st.text_input(
                        f.label + ("" if f.required else " (optional)"), key=f"integ_new_cfg_{f.name}",
                        type="password" if f.secret else "default", help=f.help or None,
                        value="" if f.secret or f.default is None else str(f.default),
                    )
                    if value:
                        (creds if f.secret else config)[f.name] = value
                for f in info.credential_fields:
                    value = st.text_input(f.label + ("" if f.required else " (optional)"), type="password",
                                          key=f"integ_new_cred_{f.name}", help=f.help or None)
                    if value:
                        creds[f.name] = value
                reason = st.text_input("Reason (required)", key="integ_new_reason")
                if st.form_submit_button("Add connection"):
                    created = svc.create_connection(ctx.principal, tenant, provider, name, config, creds,
                                                    interval_seconds=float(minutes) * 60, reason=reason)
                    refresh_lists()
                    flash(FLASH, "ok", f"Connection {created['name']} added.")
                    open_connection(created["id"])
                    st.rerun()


# detail view -------------------------------------------------------------------------------------
def find_tenant(connection_id: str) -> str | None:
    if ctx.tenant_id is not None:
        return ctx.tenant_id
    rows = load_connections(STORE_KEY, ctx.principal, None, None, None).rows
    match = next((r for r in rows if r.id == connection_id), None)
    if match is None:
        # Maybe created a moment ago: read past the cache once.
        refresh_lists()
        rows = load_connections(STORE_KEY, ctx.principal, None, None, None).rows
        match = next((r for r in rows if r.id == connection_id), None)
    return match.tenant_id if match else None


def close_dialog() -> None:
    st.session_state.pop(DIALOG, None)


def start_action(label: str, tenant_id: str, connection_id: str, result: Any) -> None:
    close_dialog()
    st.session_state[PENDING] = {"tenant": tenant_id, "connection": connection_id, "label": label,
                                 "run_id": getattr(result, "run_id", None), "job_id": getattr(result, "job_id", None)}
    refresh_lists()
    st.rerun()


def reason_box(key: str) -> str:
    return st.text_area("Reason (required, kept in the audit log)", key=key, max_chars=500, height=80)


@st.dialog("Resync", on_dismiss=close_dialog)
def resync_dialog(tenant_id: str, connection_id: str) -> None:
    st.write("Reads what changed since each stream's stored cursor.")
    reason = reason_box("integ_dlg_resync_reason")
    if st.button("Start resync", key="integ_dlg_resync_go", type="primary"):
        with handled():
            result = svc.resync(ctx.principal, tenant_id, connection_id, reason)
            start_action("Resync", tenant_id, connection_id, result)


@st.dialog("Full resync", on_dismiss=close_dialog)
def full_resync_dialog(tenant_id: str, connection_id: str, streams: list[str]) -> None:
    st.write("Re-reads every record from the start, ignoring the stored cursors. Records are upserted, so "
             "nothing is duplicated, but it takes longer and uses the vendor's API quota.")
    stream = st.selectbox("What to resync", [ALL, *streams], key="integ_dlg_full_stream",
                          format_func=lambda s: "All streams" if s == ALL else s)
    reason = reason_box("integ_dlg_full_reason")
    sure = st.checkbox("I understand this re-reads everything", key="integ_dlg_full_sure")
    if st.button("Start full resync", key="integ_dlg_full_go", type="primary", disabled=not sure):
        with handled():
            result = svc.resync(ctx.principal, tenant_id, connection_id, reason, full=True,
                                stream=None if stream == ALL else stream)
            start_action("Full resync" + ("" if stream == ALL else f" of {stream}"), tenant_id, connection_id, result)


@st.dialog("Retry failed run", on_dismiss=close_dialog)
def retry_dialog(tenant_id: str, connection_id: str, run_id: str) -> None:
    st.write(f"Runs `{run_id}` again as a new run, from the stored cursors.")
    reason = reason_box("integ_dlg_retry_reason")
    if st.button("Retry run", key="integ_dlg_retry_go", type="primary"):
        with handled():
            start_action("Retry", tenant_id, connection_id, svc.retry_run(ctx.principal, tenant_id, run_id, reason))


@st.dialog("Pause or resume", on_dismiss=close_dialog)
def pause_dialog(tenant_id: str, connection_id: str, paused: bool) -> None:
    st.write("Resuming starts the failure count over and syncs at the next schedule tick." if paused
             else "A paused connection does not sync on schedule or on webhooks until someone resumes it.")
    reason = reason_box("integ_dlg_pause_reason")
    if st.button("Resume" if paused else "Pause", key="integ_dlg_pause_go", type="primary"):
        with handled():
            if paused:
                svc.resume(ctx.principal, tenant_id, connection_id, reason)
            else:
                svc.pause(ctx.principal, tenant_id, connection_id, reason)
            refresh_lists()
            close_dialog()
            flash(FLASH, "ok", "Connection resumed." if paused else "Connection paused.")
            st.rerun()


@st.dialog("Test connection", on_dismiss=close_dialog)
def test_dialog(tenant_id: str, connection_id: str) -> None:
    st.write("Makes one cheap authenticated call to the vendor with the stored credentials.")
    reason = reason_box("integ_dlg_test_reason")
    if st.button("Run test", key="integ_dlg_test_go", type="primary"):
        with handled():
            start_action("Test", tenant_id, connection_id,
                         svc.test_connection(ctx.principal, tenant_id, connection_id, reason))


# consent (Connect with <vendor>) ---------------------------------------------------------------
def consent_redirect_uri() -> str:
    """This page's public address: the redirect URI to register with each vendor's OAuth app."""
    base = ctx.services.settings.console_url or DEFAULT_CONSOLE_URL
    return f"{base.rstrip('/')}/integrations"


def handle_consent_callback() -> None:
    """The vendor sent the browser back with ``?code=&state=`` (or ``?error=&state=``): finish the consent."""
    params = st.query_params
    if "state" not in params or ("code" not in params and "error" not in params):
        return
    answer = {k: params[k] for k in CONSENT_PARAMS if k in params}
    for k in answer:
        del params[k]  # a reload must not replay the answer (it would be refused as already used anyway)
    st.session_state.pop(CONSENT, None)
    close_dialog()
    # Kept for a while rather than flashed once: the first runs of the session the vendor sends back
    # to are rerun by the sign-in cookie component, which would swallow a one-shot message.
    until = time.time() + NOTICE_SECONDS
    try:
        outcome = svc.complete_consent(ctx.principal, answer.get("state"), code=answer.get("code"),
                                       error=answer.get("error"), error_description=answer.get("error_description"),
                                       params=answer)
    except CastielError as e:
        st.session_state[CONSENT_NOTICE] = {"error": e, "connection": None, "until": until}
        return
    refresh_lists()
    st.session_state[CONSENT_NOTICE] = {"ok": outcome.ok, "text": outcome.message,
                                        "connection": outcome.connection_id, "until": until}
    open_connection(outcome.connection_id)


def show_consent_notice(connection_id: str | None) -> None:
    notice = st.session_state.get(CONSENT_NOTICE)
    if not notice:
        return
    if notice["until"] < time.time():
        st.session_state.pop(CONSENT_NOTICE, None)
        return
    if notice["connection"] != connection_id:
        return
    if "error" in notice:
        show_error(notice["error"])
    elif notice["ok"]:
        st.success(notice["text"], icon=":material/link:")
    else:
        st.warning(notice["text"], icon=":material/link_off:")


@st.dialog("Connect account", on_dismiss=close_dialog)
def consent_dialog(tenant_id: str, connection_id: str, label: str) -> None:
    started = st.session_state.get(CONSENT)
    if started and started["connection"] == connection_id:
        st.write(f"Taking you to {label}. Sign in there and approve access; you come back to this page when done. "
                 "The link works once, within 10 minutes.")
        st.link_button(f"Continue to {label}", started["url"], type="primary", icon=":material/open_in_new:")
        # Same-tab navigation (the link button opens a new tab); '<' escaped so the URL cannot end the script.
        target = json.dumps(started["url"]).replace("<", "\\u003c")
        st.html(f"<script>window.top.location.assign({target});</script>", unsafe_allow_javascript=True)
        return
    st.write(f"Sign in at {label} and approve access for this connection. Its refresh token is then stored "
             "encrypted, replacing the stored one; the manual fields in Credentials stay available.")
    st.caption(f"Return address (register it in the vendor's app): {consent_redirect_uri()}")
    reason = reason_box("integ_dlg_consent_reason")
    if st.button(f"Continue to {label}", key="integ_dlg_consent_go", type="primary"):
        with handled():
            url = svc.begin_consent(ctx.principal, tenant_id, connection_id, consent_redirect_uri(), reason)
            st.session_state[CONSENT] = {"connection": connection_id, "url": url}
            st.rerun()


def consent_area(detail: ConnectionDetail) -> None:
    info = detail.provider
    if info is None or not info.consent:
        return
    conn = detail.connection
    st.markdown(f"**Connect with {info.label}** instead of pasting a token: sign in at {info.label} "
                "and approve access.")
    last = conn.get("lastConsent")
    if last:
        st.caption(f"Last consent {last['at']} by {last['by']}: {'connected' if last['ok'] else last['message']}")
    if st.button(f"Connect with {info.label}", key="integ_consent_open", icon=":material/login:"):
        st.session_state.pop(CONSENT, None)
        st.session_state[DIALOG] = {"kind": "consent", "connection": conn["id"], "run_id": None}
        st.rerun()


@st.fragment(run_every=2)
def progress_panel(tenant_id: str, connection_id: str, active_run: str | None) -> None:
    pending = st.session_state.get(PENDING)
    mine = pending if pending and pending["connection"] == connection_id else None
    run_id = (mine or {}).get("run_id") or active_run
    with handled():
        if run_id:
            run = svc.get_run(ctx.principal, tenant_id, run_id)
            label = (mine or {}).get("label") or "Sync run"
            status = run["status"]
            if status in ("queued", "running"):
                st.progress(float(run.get("progressFraction") or 0.0),
                            text=f"{label}: {status} · {run.get('progress') or ''} · {run.get('read', 0)} read, "
                                 f"{run.get('written', 0)} written")
                return
            if mine:
                st.session_state.pop(PENDING, None)
                text = (f"{label} finished: {status} · {run.get('read', 0)} read, {run.get('written', 0)} written, "
                        f"{run.get('skipped', 0)} skipped" + (f" · {run['error']}" if run.get("error") else ""))
                flash(FLASH, "ok" if status in ("succeeded", "partial") else "warn", text)
                refresh_lists()
                st.rerun()
        elif mine and mine.get("job_id"):
            job = svc.job_status(ctx.principal, tenant_id, mine["job_id"])
            if job["status"] in ("queued", "running"):
                st.progress(float(job.get("progress") or 0.0), text=f"{mine['label']}: {job['status']}")
                return
            st.session_state.pop(PENDING, None)
            result = job.get("result") or {}
            ok = job["status"] == "succeeded" and result.get("ok", True)
            message = result.get("message") or job.get("error") or job["status"]
            flash(FLASH, "ok" if ok else "warn", f"{mine['label']}: {message}")
            st.rerun()


def health_box(detail: ConnectionDetail) -> None:
    h = detail.health
    icon = STATUS_ICONS.get(h.status)
    box = {"healthy": st.success, "late": st.warning, "failing": st.error, "needs_reauth": st.error,
           "paused": st.info}[h.status]
    label = STATUS_LABELS[h.status]
    text = h.explanation if h.explanation.startswith(label) else f"**{label}.** {h.explanation}"
    box(text, icon=icon)


def detail_view(connection_id: str) -> None:
    if st.button("All connections", key="integ_back", icon=":material/arrow_back:"):
        close_dialog()
        st.session_state.pop("integ_open", None)  # or the picker would open this connection again
        open_connection(None)
        st.rerun()
    tenant_id = find_tenant(connection_id)
    if tenant_id is None:
        st.warning(f"Connection {connection_id} does not exist or is not in a tenant you may see.")
        return
    detail = svc.connection_detail(ctx.principal, tenant_id, connection_id)
    conn = detail.connection
    st.title(conn.get("name") or connection_id)
    interval = (conn.get("schedule") or {}).get("intervalSeconds") or 3600
    st.caption(f"{svc.provider_labels.get(conn['provider'], conn['provider'])} · tenant {tenant_id} · "
               f"every {human_duration(interval)} · id {connection_id}")
    show_flash(FLASH)
    show_consent_notice(connection_id)
    health_box(detail)

    since = clock.iso(clock.now() - timedelta(days=6))[:10]
    week = [d for d in detail.daily if d["bucket"] >= since]
    runs7 = sum(int(d.get("runs") or 0) - int(d.get("cancelled") or 0) for d in week)
    ok7 = sum(int(d.get("succeeded") or 0) + int(d.get("partial") or 0) for d in week)
    lag = detail.health.freshness_lag_seconds
    m = st.columns(5)
    m[0].metric("Since last success", human_duration(lag, compact=True), border=True, help=human_duration(lag))
    m[1].metric("Runs, 7 days", runs7, border=True)
    m[2].metric("7-day success", f"{ok7 / runs7:.0%}" if runs7 else "no runs", border=True)
    m[3].metric("Records synced", f"{int(conn.get('recordsSynced') or 0):,}", border=True)
    m[4].metric("Failures in a row", int(conn.get("consecutiveFailures") or 0), border=True)

    paused = conn.get("status") == "paused"
    failed = next((r for r in detail.runs if r["status"] in ("failed", "partial", "cancelled")), None)
    a = st.columns(5)
    clicked = None
    if a[0].button("Resync", key="integ_act_resync", icon=":material/sync:", disabled=paused, width="stretch"):
        clicked = "resync"
    if a[1].button("Full resync", key="integ_act_full", icon=":material/restart_alt:", disabled=paused,
                   width="stretch"):
        clicked = "full"
    if a[2].button("Retry failed run", key="integ_act_retry", icon=":material/replay:",
                   disabled=failed is None or paused, width="stretch"):
        clicked = "retry"
    if a[3].button("Resume" if paused else "Pause", key="integ_act_pause",
                   icon=":material/play_arrow:" if paused else ":material/pause:", width="stretch"):
        clicked = "pause"
    if a[4].button("Test connection", key="integ_act_test", icon=":material/network_check:", width="stretch"):
        clicked = "test"
    if clicked:
        st.session_state[DIALOG] = {"kind": clicked, "connection": connection_id,
                                    "run_id": failed["id"] if failed else None}
    dialog = st.session_state.get(DIALOG)
    if dialog and dialog["connection"] == connection_id:
        kind = dialog["kind"]
        if kind == "resync":
            resync_dialog(tenant_id, connection_id)
        elif kind == "full":
            full_resync_dialog(tenant_id, connection_id, [s.name for s in detail.streams if s.enabled])
        elif kind == "retry" and dialog.get("run_id"):
            retry_dialog(tenant_id, connection_id, dialog["run_id"])
        elif kind == "pause":
            pause_dialog(tenant_id, connection_id, paused)
        elif kind == "test":
            test_dialog(tenant_id, connection_id)
        elif kind == "consent" and detail.provider is not None:
            consent_dialog(tenant_id, connection_id, detail.provider.label)
    progress_panel(tenant_id, connection_id, conn.get("activeRunId"))

    left, right = st.columns([3, 2])
    with left:
        st.subheader("Run history")
        chart = run_history_chart(detail.runs)
        if chart is None:
            st.info("No runs yet.")
        else:
            st.vega_lite_chart(chart, width="stretch", key="integ_history_chart")
    with right:
        st.subheader("Token and webhook")
        for line in token_lines(conn, detail.health.token.text if detail.health.token else None,
                                detail.health.webhook.text if detail.health.webhook else None):
            st.markdown(line)
        test = conn.get("lastTest")
        if test:
            st.markdown(f"**Last test** ({test['at']}): {'passed' if test['ok'] else 'failed'} · {test['message']}")

    st.subheader("Runs")
    runs_table = runs_frame(detail.runs)
    if not runs_table.empty:
        # Records a run removed: vendor delete events, plus what a full resync found gone at the vendor.
        runs_table.insert(int(runs_table.columns.get_loc("skipped")) + 1, "deleted",
                          [int(r.get("deleted") or 0) for r in detail.runs])
    table_with_csv(runs_table, key="integ_runs", file_name=f"{connection_id}-runs.csv", empty="No runs yet.")
    with st.expander("Attempts and their errors", icon=":material/bug_report:"):
        table_with_csv(attempts_frame(detail.runs), key="integ_attempts", file_name=f"{connection_id}-attempts.csv",
                       empty="No attempts yet.")
        skipped = skipped_frame(detail.runs)
        if not skipped.empty:
            st.caption("Malformed records that were skipped (samples)")
            st.dataframe(skipped, hide_index=True, key="integ_skipped", width="stretch")

    st.subheader("Streams and cursors")
    table_with_csv(streams_frame(detail.streams), key="integ_streams", file_name=f"{connection_id}-streams.csv",
                   empty="This connector declares no streams.")

    if ctx.principal.role in (ADMIN, OPS):
        settings_form(tenant_id, detail)
    if ctx.principal.role == ADMIN:
        credentials_form(tenant_id, detail)


def settings_form(tenant_id: str, detail: ConnectionDetail) -> None:
    conn = detail.connection
    with st.expander("Schedule and streams", icon=":material/tune:"), st.form("integ_settings_form"):
        minutes = st.number_input("Sync every (minutes)", min_value=1, max_value=7 * 24 * 60,
                                  value=int(((conn.get("schedule") or {}).get("intervalSeconds") or 3600) // 60),
                                  key="integ_set_interval")
        names = [s.name for s in detail.streams]
        chosen = st.multiselect("Streams to sync", names, default=[s.name for s in detail.streams if s.enabled],
                                key="integ_set_streams")
        url = None
        if detail.provider is not None and detail.provider.webhooks:
            url = st.text_input("Webhook notification URL (https, reachable by the vendor)",
                                value=(conn.get("webhook") or {}).get("notificationUrl") or "", key="integ_set_url")
        reason = st.text_input("Reason (required)", key="integ_set_reason")
        if st.form_submit_button("Save settings"):
            with handled():
                svc.update_settings(ctx.principal, tenant_id, conn["id"], reason, interval_seconds=float(minutes) * 60,
                                    enabled_streams=chosen, notification_url=url)
                refresh_lists()
                flash(FLASH, "ok", "Settings saved.")
                st.rerun()


def credentials_form(tenant_id: str, detail: ConnectionDetail) -> None:
    conn = detail.connection
    info = detail.provider
    fields = [] if info is None else [*info.credential_fields, *(f for f in info.config_fields if f.secret)]
    with st.expander("Credentials", icon=":material/key:", expanded=bool(info and info.consent
                                                                          and detail.health.status == "needs_reauth")):
        consent_area(detail)
        st.caption("Stored encrypted; never shown back. Leave a field blank to keep its stored value.")
        if not fields:
            st.info("This provider needs no credentials.")
            return
        with st.form("integ_creds_form"):
            values = {}
            for f in fields:
                is_set = f.name in detail.credential_fields_set
                values[f.name] = st.text_input(
                    f"{f.label} ({'set' if is_set else 'not set'})", type="password", key=f"integ_cred_{f.name}",
                    placeholder="leave blank to keep" if is_set else "", help=f.help or None,
                )
            reason = st.text_input("Reason (required)", key="integ_cred_reason")
            if st.form_submit_button("Save credentials"):
                with handled():
                    svc.update_credentials(ctx.principal, tenant_id, conn["id"], values, reason)
                    refresh_lists()
                    flash(FLASH, "ok", "Credentials saved (encrypted).")
                    st.rerun()


handle_consent_callback()  # the service refuses anyone but the admin who started the consent
selected = st.query_params.get("connection")
with handled():
    if selected:
        detail_view(selected)
    else:
        list_view()
