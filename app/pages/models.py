"""Models: per model the champion and challenger, versions side by side, drift, shadow, retrain, promote, roll back."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import streamlit as st

from app.components.errors import handled
from app.components.flash import flash, show_flash
from app.components.guard import page_context
from app.components.model_view import (
    HEADLINE_METRICS,
    PRIMARY_FORMATS,
    TARGETS,
    compare_frame,
    drift_heatmap,
    fmt_metric,
    history_frame,
    prediction_drift_frame,
    reliability_chart,
    shadow_scatter,
    trend_chart,
    versions_frame,
)
from app.components.tables import table_with_csv
from core import clock
from core.services.access import ADMIN, Principal
from core.services.models import CHALLENGER, CHAMPION, DRIFT_KINDS, KIND_LABELS, MODEL_KINDS, ModelService

ctx = page_context("models")
svc: ModelService = ctx.services.models
FLASH = "models_flash"
DIALOG = "models_dialog"
STORE_KEY = f"{ctx.services.store.backend}:{ctx.services.settings.data_dir}"


@st.cache_data(ttl=20, show_spinner=False)
def load_versions(store_key: str, principal: Principal, tenant_id: str, kind: str) -> list[dict[str, Any]]:
    return svc.versions(principal, tenant_id, kind)


@st.cache_data(ttl=60, show_spinner=False)
def load_evaluation(store_key: str, principal: Principal, tenant_id: str, kind: str, version: str) -> dict[str, Any]:
    return svc.evaluation(principal, tenant_id, kind, version)


@st.cache_data(ttl=300, show_spinner=False)
def load_plot(store_key: str, principal: Principal, tenant_id: str, kind: str, version: str, name: str) -> bytes:
    return svc.plot(principal, tenant_id, kind, version, name)


@st.cache_data(ttl=20, show_spinner=False)
def load_checks(store_key: str, principal: Principal, tenant_id: str, kind: str) -> list[dict[str, Any]]:
    return svc.drift_checks(principal, tenant_id, kind)


def refresh() -> None:
    load_versions.clear()
    load_checks.clear()




def pick_model() -> str:
    """The model picker, kept in step with ``?model=<name>`` so links open the right model."""
    wanted = st.query_params.get("model")
    if wanted in MODEL_KINDS and wanted != st.session_state.get("models_model_link"):
        st.session_state["models_model"] = wanted  # a deep link just arrived: it wins over the last choice
    st.session_state["models_model_link"] = wanted
    if st.session_state.get("models_model") not in MODEL_KINDS:
        st.session_state["models_model"] = MODEL_KINDS[0]
    kind = st.segmented_control("Model", MODEL_KINDS, key="models_model", format_func=lambda k: KIND_LABELS[k])
    kind = kind or MODEL_KINDS[0]
    if wanted != kind:
        st.query_params["model"] = kind
        st.session_state["models_model_link"] = kind
    return kind


# ---- header -------------------------------------------------------------------------------------------------------
def header(tenant: str, kind: str, versions: list[dict[str, Any]]) -> tuple[str | None, str | None]:
    by_alias = {a: v for v in versions for a in v.get("aliases") or []}
    champ, chall = by_alias.get(CHAMPION), by_alias.get(CHALLENGER)
    st.caption(f"Registered model `{svc.backend.model_name(tenant, kind)}` · platform target {TARGETS[kind]}")
    with handled():
        status = svc.serving_status(ctx.principal, tenant, kind)
        if status.get("fallback"):
            st.error(f"Serving a fallback: {status['reason']}", icon=":material/warning:")
    c1, c2 = st.columns(2)
    for col, label, v in ((c1, "Champion (serving)", champ), (c2, "Challenger", chall)):
        with col.container(border=True):
            if v is None:
                st.markdown(f"**{label}:** none")
                continue
            st.markdown(f"**{label}: v{v['version']}** · trained by {v.get('trained_by')} · data "
                        f"{' .. '.join(v.get('data_window') or ())}")
            cols = st.columns(len(HEADLINE_METRICS[kind]))
            for c, m in zip(cols, HEADLINE_METRICS[kind], strict=True):
                delta = None
                if label == "Challenger" and champ is not None:
                    a, b = champ["metrics"].get(m), v["metrics"].get(m)
                    delta = None if a is None or b is None else f"{b - a:+.4f}"
                c.metric(PRIMARY_FORMATS.get(m, m), fmt_metric(m, v["metrics"].get(m)), delta,
                         delta_color="off")
    return (champ or {}).get("version"), (chall or {}).get("version")


# ---- versions and comparison ------------------------------------------------------------------------------------
def versions_tab(tenant: str, kind: str, versions: list[dict[str, Any]]) -> None:
    table_with_csv(versions_frame(kind, versions), key=f"models_versions_{kind}", file_name=f"{kind}-versions.csv",
                   empty="No versions yet: retrain to create the first.")
    with handled():
        hist = svc.alias_history(ctx.principal, tenant, kind)
        st.subheader("Alias history")
        table_with_csv(history_frame(hist), key=f"models_history_{kind}", file_name=f"{kind}-alias-history.csv",
                       empty="No alias has moved yet.")


def compare_tab(tenant: str, kind: str, versions: list[dict[str, Any]], champ: str | None,
                chall: str | None) -> None:
    if not versions:
        st.info("Nothing to compare yet.")
        return
    names = [v["version"] for v in versions]
    c1, c2 = st.columns(2)
    a = c1.selectbox("Version A", names, index=names.index(champ) if champ in names else min(1, len(names) - 1),
                     key=f"models_cmp_a_{kind}", format_func=lambda x: f"v{x}")
    b = c2.selectbox("Version B", names, index=names.index(chall) if chall in names else 0,
                     key=f"models_cmp_b_{kind}", format_func=lambda x: f"v{x}")
    with handled():
        st.dataframe(compare_frame(svc.compare(ctx.principal, tenant, kind, a, b)), hide_index=True,
                     key=f"models_cmp_table_{kind}", width="stretch")
        trend = svc.metric_trend(ctx.principal, tenant, kind)
        metric = st.selectbox("Metric trend across all versions", HEADLINE_METRICS[kind], key=f"models_trend_{kind}",
                              format_func=lambda m: PRIMARY_FORMATS.get(m, m))
        chart = trend_chart(trend, metric)
        if chart is not None:
            st.altair_chart(chart, width="stretch")
        if kind == "win":
            bins = {v: load_evaluation(STORE_KEY, ctx.principal, tenant, kind, v).get("reliability", [])
                    for v in dict.fromkeys([a, b])}
            st.markdown("**Reliability diagrams** (15 equal-width bins)")
            st.altair_chart(reliability_chart(bins), width="stretch")
            ev = load_evaluation(STORE_KEY, ctx.principal, tenant, kind, b)
            if ev.get("selection"):
                st.markdown(f"**How v{b} handled imbalance and calibration** (measured on the calibration split; "
                            f"kept: {ev['chosen']['imbalance']} + {ev['chosen']['calibration']})")
                st.dataframe(ev["selection"], hide_index=True, key=f"models_sel_{kind}")
        cols = st.columns(2)
        for col, v in zip(cols, (a, b), strict=True):
            with col:
                st.markdown(f"**v{v}**")
                for name in svc.plot_names(ctx.principal, tenant, kind, v):
                    st.image(load_plot(STORE_KEY, ctx.principal, tenant, kind, v, name),
                             caption=name.removesuffix(".png").replace("_", " "))


# ---- drift -------------------------------------------------------------------------------------------------------
def drift_tab(tenant: str, kind: str) -> None:
    if kind not in DRIFT_KINDS:
        st.info("The revenue forecast scores one monthly series, not requests; its health is the backtest error "
                "shown with each version.")
        return
    checks = load_checks(STORE_KEY, ctx.principal, tenant, kind)
    if checks and checks[0].get("alert"):
        latest = checks[0]
        drifted = [f["feature"] for f in latest["features"] if f.get("drifted")]
        pred = (latest.get("prediction") or {}).get("drifted")
        st.error(f"Drift alert in window {latest['window']}: {len(drifted)} of {len(latest['features'])} features "
                 f"drifted ({', '.join(drifted) or 'none'})" + ("; the predictions drifted too" if pred else ""),
                 icon=":material/troubleshoot:")

    rows = [{"window": c["window"], "feature": f["feature"], "method": f.get("method"), "score": f.get("score"),
             "drifted": bool(f.get("drifted"))} for c in reversed(checks) for f in c.get("features", [])]
    chart = drift_heatmap(rows)
    if chart is None:
        st.info("No drift checks yet. They run every hour over the logged requests, or run one below.")
    else:
        st.markdown("**Per-feature drift over windows** (Evidently's default method and threshold per feature; "
                    "the number is the drift score)")
        st.altair_chart(chart, width="stretch")
        frame = prediction_drift_frame(checks)
        st.markdown("**Prediction drift and check summary**")
        st.dataframe(frame, hide_index=True, key=f"models_pred_drift_{kind}", width="stretch")
        ids = [c["id"] for c in checks]
        labels = {c["id"]: f"{c['window']} (v{c['version']}, {c['sampledRows']:,} of {c['currentRows']:,} rows)"
                  + (" · alert" if c.get("alert") else "") for c in checks}
        chosen = st.selectbox("Evidently report for a stored check", ids, key=f"models_report_pick_{kind}",
                              format_func=lambda i: labels[i])
        if st.button("Show Evidently report", key=f"models_report_{kind}"):
            with handled(), st.spinner("Rendering Evidently's report..."):
                html = svc.drift_report_html(ctx.principal, tenant, kind, chosen)
                # Evidently's page needs its scripts, so it goes in an iframe (st.iframe replaces the deprecated
                # st.components.v1.html); the HTML is rendered here by Evidently from our own stored check.
                st.iframe(html, height=900)
    with st.form(f"models_drift_form_{kind}"):
        st.markdown("**Run a drift check now** over the requests logged in the last hours")
        hours = st.number_input("Window (hours back from now)", min_value=1, max_value=24 * 31, value=24,
                                key=f"models_drift_hours_{kind}")
        if st.form_submit_button("Run drift check"):
            end = clock.now()
            with handled():
                check = svc.run_drift_check(ctx.principal, tenant, kind, clock.iso(end - timedelta(hours=hours)),
                                            clock.iso(end), label=f"last {hours}h")
                refresh()
                flash(FLASH, "ok" if not check["alert"] else "warn",
                      f"Drift check stored: {sum(bool(f.get('drifted')) for f in check['features'])} drifted "
                      f"feature(s), alert {'raised' if check['alert'] else 'not raised'}.")
                st.rerun()


# ---- shadow ------------------------------------------------------------------------------------------------------
def shadow_tab(tenant: str, kind: str) -> None:
    if kind not in DRIFT_KINDS:
        st.info("Shadow scoring applies to per-request models.")
        return
    days = st.slider("Window (days)", 1, 30, 7, key=f"models_shadow_days_{kind}")
    since = (clock.now() - timedelta(days=days)).strftime("%Y-%m-%dT%H:00:00.000000Z")  # hourly: cacheable
    with handled():
        rep = load_agreement(STORE_KEY, ctx.principal, tenant, kind, since)
        if not rep.get("n"):
            st.info("No request was shadow-scored in this window (a challenger scores requests while it exists).")
            return
        c = st.columns(5)
        c[0].metric("Requests", f"{rep['n']:,}")
        c[1].metric("Correlation", "—" if rep["correlation"] is None else f"{rep['correlation']:.3f}")
        c[2].metric("Mean abs. difference", f"{rep['mean_abs_diff']:.4f}")
        c[3].metric(f"Decision flips at {rep['threshold']}", f"{rep['flips']:,}")
        c[4].metric("Flip rate", fmt_metric("flip_rate", rep["flip_rate"]))
        st.caption(f"Champion v{', v'.join(rep['champion_versions'])} vs challenger "
                   f"v{', v'.join(rep['challenger_versions'])}; challengers never answer requests.")
        points = svc.recent_predictions(ctx.principal, tenant, kind, limit=3000)
        chart = shadow_scatter(points, rep["threshold"])
        if chart is not None:
            st.altair_chart(chart, width="stretch")


# ---- actions -----------------------------------------------------------------------------------------------------
def close_dialog() -> None:
    st.session_state.pop(DIALOG, None)


@st.dialog("Roll back the champion", on_dismiss=close_dialog)
def rollback_dialog(tenant: str, kind: str) -> None:
    st.write("Points the champion alias back at the version that served before the current one. Predictions "
             "switch at once; the change is kept in the alias history and the audit log.")
    reason = st.text_area("Reason (required)", key="models_rollback_reason", max_chars=500)
    if st.button("Roll back", key="models_rollback_go", type="primary"):
        with handled():
            move = svc.rollback(ctx.principal, tenant, kind, reason)
            close_dialog()
            refresh()
            flash(FLASH, "ok", f"Rolled back: v{move['version']} is the champion again (was v{move['previous']}).")
            st.rerun()


@st.fragment(run_every=3)
def retrain_progress(tenant: str, kind: str) -> None:
    """Retrain jobs of this model with live progress (the worker heartbeats it into the job record)."""
    with handled():
        jobs = svc.retrain_jobs(ctx.principal, tenant, kind)
        for j in jobs[:3]:
            if j["status"] in ("queued", "running"):
                st.progress(float(j.get("progress") or 0.0),
                            text=f"{j['status']}: {j.get('progressMessage') or 'waiting for a worker'} ({j['id']})")
        if jobs:
            st.dataframe([{"job": j["id"], "status": j["status"], "requested by": j.get("requestedBy"),
                           "at": j.get("createdAt"), "result": (j.get("result") or {}).get("version"),
                           "error": j.get("error")} for j in jobs], hide_index=True, key=f"models_jobs_{kind}")


@st.cache_data(ttl=30, show_spinner=False)
def load_agreement(store_key: str, principal: Principal, tenant_id: str, kind: str, since: str) -> dict[str, Any]:
    return svc.shadow_agreement(principal, tenant_id, kind, since=since)


def actions_tab(tenant: str, kind: str, champ: str | None, chall: str | None) -> None:
    st.markdown("**Retrain**: trains on the tenant's data in the worker; the new version becomes the challenger "
                "and the gate is recorded.")
    with st.form(f"models_retrain_form_{kind}"):
        reason = st.text_input("Reason (required)", key=f"models_retrain_reason_{kind}")
        if st.form_submit_button("Queue retrain"):
            with handled():
                job = svc.request_retrain(ctx.principal, tenant, kind, reason)
                flash(FLASH, "ok", f"Retrain queued (job {job['id']}); progress shows below.")
                st.rerun()
    retrain_progress(tenant, kind)

    st.divider()
    st.markdown("**Promote the challenger**")
    if chall is None:
        st.caption("There is no challenger; retrain to create one.")
    else:
        with handled():
            gate = svc.gate(ctx.principal, tenant, kind)
            if gate.get("passed"):
                st.success(f"Gate passed for v{chall} against the champion v{champ} "
                           f"({gate.get('baseline_source')}).", icon=":material/verified:")
            else:
                st.warning("Gate blocks v" + chall + ":\n\n" + "\n".join(f"- {r}" for r in gate.get("reasons", [])),
                           icon=":material/block:")
            st.dataframe(gate.get("checks", []), hide_index=True, key=f"models_gate_checks_{kind}")
        with st.form(f"models_promote_form_{kind}"):
            reason = st.text_input("Reason (required)", key=f"models_promote_reason_{kind}")
            override = False
            if ctx.principal.role == ADMIN:
                override = st.checkbox("Override a failed gate (admins only; the reason is kept)",
                                       key=f"models_promote_override_{kind}")
            if st.form_submit_button(f"Promote v{chall} to champion"):
                with handled():
                    move = svc.promote(ctx.principal, tenant, kind, reason, override=override)
                    refresh()
                    flash(FLASH, "ok", f"v{move['version']} is the champion now"
                          + (" (gate overridden)" if move.get("override") else "") + ".")
                    st.rerun()

    st.divider()
    st.markdown("**Roll back** to the previous champion")
    if st.button("Roll back…", key=f"models_rollback_{kind}", disabled=champ is None):
        st.session_state[DIALOG] = {"kind": "rollback", "model": kind}
    if (st.session_state.get(DIALOG) or {}).get("model") == kind:
        rollback_dialog(tenant, kind)

    st.divider()
    st.markdown("**Scheduled retraining**")
    with handled():
        current = svc.schedule_settings(ctx.principal, tenant, kind).get("retrainEveryDays")
        with st.form(f"models_schedule_form_{kind}"):
            every = st.number_input("Retrain every N days (0 turns it off)", min_value=0, max_value=365,
                                    value=int(current or 0), key=f"models_schedule_days_{kind}")
            reason = st.text_input("Reason (required)", key=f"models_schedule_reason_{kind}")
            if st.form_submit_button("Save schedule"):
                with handled():
                    svc.set_schedule(ctx.principal, tenant, kind, int(every) or None, reason)
                    flash(FLASH, "ok", "Schedule saved." if every else "Scheduled retraining is off.")
                    st.rerun()


# ---- page ----------------------------------------------------------------------------------------------------------
st.title("Models")
st.caption("Which version serves each model, how versions compare, whether live requests drift from the training "
           "data, and the actions that change what serves. Every action is audited.")
show_flash(FLASH)
tenant_id = ctx.one_tenant(key="models_tenant")
if tenant_id:
    model = pick_model()
    with handled():
        all_versions = load_versions(STORE_KEY, ctx.principal, tenant_id, model)
        champion, challenger = header(tenant_id, model, all_versions)
        tabs = st.tabs(["Versions", "Compare", "Drift", "Shadow", "Actions"])
        with tabs[0]:
            versions_tab(tenant_id, model, all_versions)
        with tabs[1]:
            compare_tab(tenant_id, model, all_versions, champion, challenger)
        with tabs[2]:
            drift_tab(tenant_id, model)
        with tabs[3]:
            shadow_tab(tenant_id, model)
        with tabs[4]:
            actions_tab(tenant_id, model, champion, challenger)
