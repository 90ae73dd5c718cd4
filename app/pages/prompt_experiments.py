"""Prompt experiments: prompt catalog, offline evaluations, A/B experiments with honest results, promote, roll back."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from app.components import experiment_charts as charts
from app.components import experiment_tables as tables
from app.components.errors import handled
from app.components.flash import flash, show_flash
from app.components.guard import page_context
from app.components.tables import table_with_csv
from core.adapters.llm_openai import HOW_TO_CONFIGURE
from core.experiments.metrics import METRICS
from core.services.access import ADMIN, Principal

ctx = page_context("prompt_experiments")
services = ctx.services
principal = ctx.principal
STORE_KEY = f"{services.store.backend}:{services.settings.data_dir}"
DIALOG = "pex_dialog"  # the open confirmation dialog: {"kind": ..., "experiment": id}
FLASH = "pex_flash"
ACTION_COLOURS = {"ship": st.success, "roll_back": st.error, "keep_running": st.info}


# --------------------------------------------------------------------------------------------------
# cached reads (primitive arguments, short ttl)
# --------------------------------------------------------------------------------------------------
@st.cache_data(ttl=20, show_spinner=False)
def load_experiments(store_key: str, who: Principal) -> list[dict[str, Any]]:
    return services.experiments.list(who)


@st.cache_data(ttl=20, show_spinner="Analysing from rollups...")
def load_results(store_key: str, who: Principal, experiment_id: str, tenant_id: str | None) -> tuple[Any, Any]:
    return services.experiments.decision(who, experiment_id, tenant_id)


def refresh() -> None:
    load_experiments.clear()
    load_results.clear()




def close_dialog() -> None:
    st.session_state.pop(DIALOG, None)


def reason_box(key: str, label: str = "Reason (required, kept in the audit log)") -> str:
    return st.text_area(label, key=key, max_chars=500, height=80)


def open_experiment(experiment_id: str | None) -> None:
    close_dialog()
    if experiment_id:
        st.query_params["experiment"] = experiment_id
    elif "experiment" in st.query_params:
        del st.query_params["experiment"]


def llm_notice() -> bool:
    """True when an LLM is configured; otherwise say so and how to configure one."""
    if services.chat_llm is None:
        st.warning(HOW_TO_CONFIGURE, icon=":material/key_off:")
        return False
    st.caption(f"LLM: {services.chat_llm.describe()}")
    return True


# --------------------------------------------------------------------------------------------------
# dialogs (confirm with a reason)
# --------------------------------------------------------------------------------------------------
def _done(text: str) -> None:
    close_dialog()
    refresh()
    flash(FLASH, "ok", text)
    st.rerun()


@st.dialog("Promote the winner", on_dismiss=close_dialog)
def promote_dialog(exp: dict[str, Any], winner: str | None, srm_flagged: bool) -> None:
    names = [v["name"] for v in exp["variants"]]
    default = names.index(winner) if winner in names else len(names) - 1
    variant = st.selectbox("Variant to promote", names, index=default, key="pex_dlg_promote_variant")
    version = next(v["version"] for v in exp["variants"] if v["name"] == variant)
    st.write(f"Moves the **production** label of `{exp['slot']}` to **v{version}** and concludes the experiment.")
    reason = reason_box("pex_dlg_promote_reason")
    override = ""
    if srm_flagged:
        st.error("Sample ratio mismatch: promotion is blocked. Only an admin may override, with a reason.")
        if principal.role == ADMIN:
            override = reason_box("pex_dlg_promote_override", "Why the mismatch does not invalidate the result")
    if st.button("Promote", key="pex_dlg_promote_go", type="primary"):
        if not reason.strip():
            st.error("A reason is required to promote.")
            return
        with handled():
            services.experiments.promote(principal, exp["id"], reason, variant=variant,
                                         override_srm_reason=override or None)
            _done(f"Promoted {variant}: production of {exp['slot']} now serves v{version}.")


@st.dialog("Roll back", on_dismiss=close_dialog)
def rollback_dialog(exp: dict[str, Any]) -> None:
    outcome = exp.get("outcome") or {}
    if outcome.get("action") == "promoted":
        st.write(f"Restores the **production** label of `{exp['slot']}` to v{outcome.get('previousVersion')} "
                 f"(it was moved to v{outcome.get('version')} by the promotion).")
    else:
        st.write("Concludes the experiment and keeps the current production prompt (the control keeps serving).")
    reason = reason_box("pex_dlg_rollback_reason")
    if st.button("Roll back", key="pex_dlg_rollback_go", type="primary"):
        if not reason.strip():
            st.error("A reason is required to roll back.")
            return
        with handled():
            services.experiments.roll_back(principal, exp["id"], reason)
            _done("Rolled back.")


@st.dialog("Change status", on_dismiss=close_dialog)
def status_dialog(exp: dict[str, Any], action: str) -> None:
    texts = {
        "start": "Starts serving the variants by their weights to the targeted tenants.",
        "stop": "Stops the experiment: everyone gets the control; late outcomes of enrolled units still count.",
        "resume": "Resumes the experiment; units keep the variant they had.",
        "conclude": "Ends the experiment without moving any label.",
    }
    st.write(texts[action])
    reason = reason_box("pex_dlg_status_reason")
    if st.button(action.capitalize(), key="pex_dlg_status_go", type="primary"):
        with handled():
            svc = services.experiments
            {"start": svc.start, "resume": svc.start, "stop": svc.stop, "conclude": svc.conclude}[action](
                principal, exp["id"], reason)
            _done(f"Experiment {action} done.")


@st.dialog("Change weights", on_dismiss=close_dialog)
def reweight_dialog(exp: dict[str, Any]) -> None:
    st.write("Units already assigned keep their variant; only new units follow the new weights. Comparing "
             "periods with different weights mixes time into the result, so prefer a fresh experiment for big "
             "changes.")
    weights = [st.number_input(f"{v['name']} (%)", 0.0, 100.0, float(v["weight"]), step=5.0,
                               key=f"pex_dlg_w_{v['name']}") for v in exp["variants"]]
    reason = reason_box("pex_dlg_reweight_reason")
    if st.button("Apply weights", key="pex_dlg_reweight_go", type="primary"):
        with handled():
            services.experiments.reweight(principal, exp["id"], weights, reason)
            _done("Weights changed.")


@st.dialog("Move a label", on_dismiss=close_dialog)
def label_dialog(slot: str, label: str, version: int) -> None:
    st.write(f"Points **{label}** of `{slot}` at **v{version}**. The move is kept in the label history.")
    reason = reason_box("pex_dlg_label_reason")
    if st.button("Move label", key="pex_dlg_label_go", type="primary"):
        with handled():
            services.prompts.move_label(principal, slot, label, version, reason)
            _done(f"{label} of {slot} now points at v{version}.")


@st.dialog("Roll back a label", on_dismiss=close_dialog)
def label_rollback_dialog(slot: str, label: str) -> None:
    with handled():
        target = services.prompts.previous_version(principal, slot, label)
        if target is None:
            st.info(f"{label} of {slot} has no earlier version.")
            return
        st.write(f"Moves **{label}** of `{slot}` back to **v{target}** (one step back in its history).")
        reason = reason_box("pex_dlg_lrb_reason")
        if st.button("Roll back label", key="pex_dlg_lrb_go", type="primary"):
            services.prompts.roll_back_label(principal, slot, label, reason)
            _done(f"{label} of {slot} rolled back to v{target}.")


# --------------------------------------------------------------------------------------------------
# results of one experiment (deep link ?experiment=<id>)
# --------------------------------------------------------------------------------------------------
def results_view(experiment_id: str) -> None:
    if st.button("All experiments", key="pex_back", icon=":material/arrow_back:"):
        open_experiment(None)
        st.rerun()
    try:
        exp = services.experiments.get(principal, experiment_id)
    except Exception as e:  # NotFound or Forbidden: say so, show nothing else
        from app.components.errors import show_error

        show_error(e)
        return
    st.title(exp["name"])
    targets = ", ".join(exp.get("targetTenants") or []) or "all tenants"
    st.caption(f"{exp['status']} · slot `{exp['slot']}` · {targets} · id {exp['id']} · started "
               f"{(exp.get('startedAt') or 'not yet')[:10]}")
    st.markdown(f"**Hypothesis.** {exp['hypothesis']}")
    show_flash(FLASH)
    result, decision = load_results(STORE_KEY, principal, experiment_id, ctx.tenant_id)
    health = services.experiments.health(result, exp)
    versions = {v["name"]: v["version"] for v in exp["variants"]}

    st.subheader("Health checks")
    h = st.columns(4)
    h[0].metric("Sample ratio", "mismatch" if health.srm_flagged else "ok", f"p = {health.srm_p_value:.3g}",
                delta_color="off", border=True)
    fails = health.guardrails_failing
    warns = [f"{g.metric} ({g.variant})" for g in result.guardrails if g.status == "warn"]
    h[1].metric("Guardrails", "failing" if fails else ("watch" if warns else "ok"),
                ", ".join(fails or warns) or f"{len(result.guardrails)} checked", delta_color="off", border=True)
    h[2].metric("Data freshness", "stale" if health.stale else "fresh",
                f"last update {(health.last_update or 'never')[:16].replace('T', ' ')}", delta_color="off",
                border=True)
    h[3].metric("Units", f"{int(sum(result.units.values())):,}",
                " / ".join(f"{k} {int(v):,}" for k, v in result.units.items()), delta_color="off", border=True)
    if health.srm_flagged:
        st.error(f"Sample ratio mismatch (chi-square p = {health.srm_p_value:.2g} < 0.001): observed units "
                 f"{', '.join(f'{k} {int(v):,}' for k, v in result.units.items())} do not match the weights. "
                 "Assignment or logging is broken; results are not trustworthy and promotion is blocked.")
    if health.weights_changed:
        st.info("Weights changed during the experiment: the SRM check uses the weights in force each day.")

    st.subheader("Decision")
    ACTION_COLOURS[decision.action](f"**{decision.headline}**")
    for reason in decision.reasons:
        st.markdown(f"- {reason}")
    d = st.columns(3)
    d[0].metric("Days run", f"{decision.days_run:.1f}", f"minimum {decision.min_runtime_days}", delta_color="off")
    d[1].metric("Detectable now (80% power)", "n/a" if decision.mde_rel is None else f"{decision.mde_rel:.1%}")
    needed = decision.units_needed_per_arm
    d[2].metric("Units per arm for the observed effect",
                "n/a" if needed is None or needed == float("inf") else f"{needed:,.0f}")

    st.subheader("Results")
    metric_names = list(result.metrics)
    roles = {m: ("primary" if m == exp["primaryMetric"] else "other") for m in metric_names}
    metric = st.selectbox("Metric", metric_names, key="pex_metric",
                          format_func=lambda m: f"{METRICS[m].label} ({roles[m]})")
    table_with_csv(tables.variants_frame(result, metric, versions), key="pex_variants",
                   file_name=f"{experiment_id}-{metric}.csv", empty="No units yet.")
    left, right = st.columns(2)
    with left:
        chart = charts.interval_plot(result.metrics[metric])
        if chart is not None:
            st.altair_chart(chart, width="stretch", key="pex_interval_chart")
    with right:
        chart = charts.lift_plot(list(result.metrics.values()))
        if chart is not None:
            st.altair_chart(chart, width="stretch", key="pex_lift_chart")
    chart = charts.metric_over_time(result.timeline, metric, METRICS[metric].label)
    if chart is None:
        st.info("No data over time yet.")
    else:
        st.altair_chart(chart, width="stretch", key="pex_time_chart")
    chart = charts.difference_over_time(result.timeline, metric, METRICS[metric].label)
    if chart is not None:
        st.altair_chart(chart, width="stretch", key="pex_diff_chart")
    st.caption("Always-valid intervals stay valid however often you look; the fixed-horizon interval is only "
               "valid at a sample size chosen in advance.")
    table_with_csv(tables.comparisons_frame(result), key="pex_comparisons", file_name=f"{experiment_id}-tests.csv",
                   empty="Not enough data to compare variants yet.")
    if result.guardrails:
        st.markdown("**Guardrails**")
        st.dataframe(tables.guardrails_frame(result), hide_index=True, width="stretch", key="pex_guardrails")

    st.subheader("Actions")
    status = exp["status"]
    promoted = (exp.get("outcome") or {}).get("action") == "promoted"
    a = st.columns(5)
    clicked = None
    if status in ("draft", "stopped") and a[0].button("Start" if status == "draft" else "Resume", key="pex_act_start",
                                                      icon=":material/play_arrow:", width="stretch"):
        clicked = "start" if status == "draft" else "resume"
    if status == "running" and a[0].button("Stop", key="pex_act_stop", icon=":material/stop:", width="stretch"):
        clicked = "stop"
    if a[1].button("Promote winner", key="pex_act_promote", icon=":material/rocket_launch:", width="stretch",
                   disabled=status not in ("running", "stopped")):
        clicked = "promote"
    if a[2].button("Roll back", key="pex_act_rollback", icon=":material/undo:", width="stretch",
                   disabled=status == "draft" or (status == "concluded" and not promoted)):
        clicked = "rollback"
    if a[3].button("Change weights", key="pex_act_reweight", icon=":material/tune:", width="stretch",
                   disabled=status == "concluded"):
        clicked = "reweight"
    if a[4].button("Conclude", key="pex_act_conclude", icon=":material/flag:", width="stretch",
                   disabled=status == "concluded"):
        clicked = "conclude"
    if clicked:
        st.session_state[DIALOG] = {"kind": clicked, "experiment": experiment_id}
    dialog = st.session_state.get(DIALOG)
    if dialog and dialog.get("experiment") == experiment_id:
        kind = dialog["kind"]
        if kind == "promote":
            promote_dialog(exp, decision.variant, health.srm_flagged)
        elif kind == "rollback":
            rollback_dialog(exp)
        elif kind == "reweight":
            reweight_dialog(exp)
        elif kind in ("start", "resume", "stop", "conclude"):
            status_dialog(exp, kind)
    if exp.get("outcome"):
        st.json(exp["outcome"], expanded=False)

    with st.expander("Import events (CSV or JSONL)", icon=":material/upload_file:"):
        tenant = ctx.tenant_or_home()
        st.caption("CSV columns: event_id, type (exposure or outcome), unit_id, variant, metric, value, at, and "
                   "optionally covariate_<metric>. JSONL: one event object per line. Bad rows are reported by line "
                   "number; the rest are imported; repeated event ids count once.")
        if tenant is None:
            st.info("Pick a tenant in the sidebar: imported events belong to one tenant.")
        else:
            upload = st.file_uploader("Events file", type=["csv", "jsonl", "ndjson"], key="pex_import_file")
            if upload is not None and st.button(f"Import into {tenant}", key="pex_import_go"):
                with handled():
                    report = services.experiments.import_events(principal, tenant, experiment_id, upload.getvalue(),
                                                                upload.name)
                    refresh()
                    st.success(f"Imported {report.accepted:,} events; {report.duplicates:,} duplicates counted "
                               f"once; {len(report.rejected):,} rows rejected.")
                    if report.rejected:
                        st.dataframe(pd.DataFrame(report.rejected, columns=["row", "reason"]), hide_index=True,
                                     key="pex_import_rejected", width="stretch")


# --------------------------------------------------------------------------------------------------
# list, catalog, evaluations, creation
# --------------------------------------------------------------------------------------------------
def experiments_tab() -> None:
    rows = load_experiments(STORE_KEY, principal)
    if not rows:
        st.info("No experiments yet. Create one in the New experiment tab.")
        return
    table_with_csv(tables.experiments_frame(rows), key="pex_list", file_name="experiments.csv")
    options = {r["id"]: f"{r['name']} ({r['status']})" for r in rows}
    c1, c2 = st.columns([4, 1])
    chosen = c1.selectbox("Experiment", list(options), format_func=options.get, key="pex_pick")
    c2.write("")
    if c2.button("Open results", key="pex_open", type="primary", width="stretch"):
        open_experiment(chosen)
        st.rerun()


def catalog_tab() -> None:
    slots = services.prompts.slots(principal)
    if not slots:
        st.info("The catalog is empty. Seed it with `python -m core seed-prompts`.")
        return
    names = [s["slot"] for s in slots]
    titles = {s["slot"]: s["title"] for s in slots}
    first = names.index("intent_classification") if "intent_classification" in names else 0  # the slot in use
    slot = st.selectbox("Slot", names, index=first, key="pex_slot", format_func=titles.get)
    doc = next(s for s in slots if s["slot"] == slot)
    st.caption(doc.get("description", ""))
    labels = doc.get("labels") or {}
    versions = services.prompts.versions(principal, slot)
    by_version: dict[int, list[str]] = {}
    for label, v in labels.items():
        by_version.setdefault(int(v), []).append(label)
    st.dataframe(pd.DataFrame([{
        "version": f"v{v['version']}", "labels": ", ".join(sorted(by_version.get(int(v["version"]), []))),
        "notes": v.get("notes", ""), "variables": ", ".join(x["name"] for x in v.get("variables") or []),
        "created": (v.get("createdAt") or "")[:10], "by": v.get("createdBy", ""),
    } for v in versions]), hide_index=True, width="stretch", key="pex_versions")
    numbers = [int(v["version"]) for v in versions]
    c1, c2 = st.columns(2)
    shown = c1.selectbox("Show version", numbers, index=len(numbers) - 1, key="pex_show_version",
                         format_func=lambda n: f"v{n}")
    version = next(v for v in versions if int(v["version"]) == shown)
    c1.code(version["template"], language=None, wrap_lines=True)
    for var in version.get("variables") or []:
        c1.markdown(f"- `{var['name']}`{'' if var.get('required', True) else ' (optional)'}: {var['description']}")
    with c2:
        st.markdown("**Labels**")
        label = st.selectbox("Label", sorted({"production", "staging", *labels}) + ["(new custom label)"],
                             key="pex_label_pick")
        if label == "(new custom label)":
            label = st.text_input("Custom label name", key="pex_label_custom", placeholder="e.g. canary-eu").strip()
        target = st.selectbox("Point it at", numbers, index=numbers.index(shown), key="pex_label_version",
                              format_func=lambda n: f"v{n}")
        b1, b2 = st.columns(2)
        if b1.button("Move label", key="pex_label_move", disabled=not label):
            st.session_state[DIALOG] = {"kind": "label", "slot": slot, "label": label, "version": target}
        if b2.button("Roll back label", key="pex_label_rollback", disabled=not label or label not in labels):
            st.session_state[DIALOG] = {"kind": "label_rollback", "slot": slot, "label": label}
    dialog = st.session_state.get(DIALOG)
    if dialog and dialog.get("slot") == slot:
        if dialog["kind"] == "label":
            label_dialog(slot, dialog["label"], int(dialog["version"]))
        elif dialog["kind"] == "label_rollback":
            label_rollback_dialog(slot, dialog["label"])

    st.markdown("**Diff**")
    d1, d2 = st.columns(2)
    old = d1.selectbox("From", numbers, index=max(0, len(numbers) - 2), key="pex_diff_old",
                       format_func=lambda n: f"v{n}")
    new = d2.selectbox("To", numbers, index=len(numbers) - 1, key="pex_diff_new", format_func=lambda n: f"v{n}")
    diff = services.prompts.diff(principal, slot, old, new)
    st.code(diff or "(no differences)", language="diff")

    st.markdown("**Label history**")
    history = services.prompts.label_history(principal, slot)
    table_with_csv([{"at": h["at"][:19], "label": h["label"], "from": h.get("fromVersion"), "to": h["toVersion"],
                     "action": h.get("action", "move"), "by": h["actor"], "reason": h["reason"],
                     "experiment": h.get("experimentId") or ""} for h in history],
                   key="pex_label_history", file_name=f"{slot}-labels.csv", empty="No label moves yet.")


def evaluations_tab() -> None:
    st.caption("Offline evaluation of intent classification prompt versions on the labelled set "
               "(data/eval/intents.jsonl): accuracy, per-intent precision and recall, latency, tokens, cost.")
    configured = llm_notice()
    versions = [int(v["version"]) for v in services.prompts.versions(principal, "intent_classification")]
    if versions:
        c1, c2 = st.columns([3, 1])
        pick = c1.selectbox("Version to evaluate", versions, key="pex_eval_version", format_func=lambda n: f"v{n}")
        c2.write("")
        if c2.button("Queue evaluation", key="pex_eval_go", disabled=not configured, width="stretch"):
            with handled():
                job = services.eval_runs.request(principal, services.queue, pick)
                st.success(f"Evaluation of v{pick} queued (job {job['id']}); the worker runs it.")
    runs = services.eval_runs.list(principal)
    if not runs:
        st.info("No evaluation runs yet.")
        return
    table_with_csv(tables.eval_runs_frame(runs), key="pex_eval_runs", file_name="evaluation-runs.csv")
    ids = [r["id"] for r in runs]
    labels = {r["id"]: f"v{r['version']} · {r['finishedAt'][:16]} · {r['accuracy']:.1%}" for r in runs}
    c1, c2 = st.columns(2)
    a = c1.selectbox("Compare", ids, index=min(1, len(ids) - 1), key="pex_eval_a", format_func=labels.get)
    b = c2.selectbox("with", ids, index=0, key="pex_eval_b", format_func=labels.get)
    run_a, run_b = next(r for r in runs if r["id"] == a), next(r for r in runs if r["id"] == b)
    m = st.columns(4)
    m[0].metric("Accuracy", f"{run_b['accuracy']:.1%}", f"{run_b['accuracy'] - run_a['accuracy']:+.1%}")
    m[1].metric("Latency p95", f"{run_b['latency_p95_ms']:.0f} ms",
                f"{run_b['latency_p95_ms'] - run_a['latency_p95_ms']:+.0f} ms", delta_color="inverse")
    tok_a = run_a["prompt_tokens"] + run_a["completion_tokens"]
    tok_b = run_b["prompt_tokens"] + run_b["completion_tokens"]
    m[2].metric("Tokens", f"{tok_b:,}", f"{tok_b - tok_a:+,}", delta_color="inverse")
    m[3].metric("Cost", f"${run_b['cost_usd']:.4f}", f"{run_b['cost_usd'] - run_a['cost_usd']:+.4f}",
                delta_color="inverse")
    st.dataframe(tables.eval_comparison_frame(run_a, run_b), hide_index=True, width="stretch", key="pex_eval_cmp")
    with st.expander(f"Confusion matrix and mistakes of v{run_b['version']}"):
        st.dataframe(tables.confusion_frame(run_b), hide_index=True, width="stretch", key="pex_eval_confusion")
        st.dataframe(pd.DataFrame(run_b.get("mistakes") or []), hide_index=True, width="stretch",
                     key="pex_eval_mistakes")


def create_tab() -> None:
    slots = [s["slot"] for s in services.prompts.slots(principal)]
    if not slots:
        st.info("Seed the prompt catalog first (`python -m core seed-prompts`).")
        return
    slot = st.selectbox("Prompt slot", slots, key="pex_new_slot",
                        index=slots.index("intent_classification") if "intent_classification" in slots else 0)
    versions = [int(v["version"]) for v in services.prompts.versions(principal, slot)]
    tenants = [t["id"] for t in services.tenants.list(principal)]
    with st.form("pex_new_form"):
        name = st.text_input("Name", key="pex_new_name")
        hypothesis = st.text_area("Hypothesis", key="pex_new_hypothesis", height=80,
                                  placeholder="What should change, by how much, and why")
        st.markdown("**Variants** (the first is the control; weights must sum to 100)")
        variants = []
        for i in range(3):
            c1, c2, c3 = st.columns(3)
            vname = c1.text_input(f"Variant {i + 1} name", value=["control", "treatment", ""][i],
                                  key=f"pex_new_v{i}_name")
            version = c2.selectbox(f"Variant {i + 1} prompt version", versions, key=f"pex_new_v{i}_version",
                                   index=min(i, len(versions) - 1), format_func=lambda n: f"v{n}")
            weight = c3.number_input(f"Variant {i + 1} weight (%)", 0.0, 100.0, [50.0, 50.0, 0.0][i], step=5.0,
                                     key=f"pex_new_v{i}_weight")
            if vname.strip():
                variants.append({"name": vname, "version": version, "weight": weight})
        metrics = list(METRICS)
        primary = st.selectbox("Primary metric", metrics, key="pex_new_primary",
                               format_func=lambda m: METRICS[m].label)
        secondary = st.multiselect("Secondary metrics", metrics, key="pex_new_secondary",
                                   format_func=lambda m: METRICS[m].label)
        guard = st.multiselect("Guardrail metrics", metrics, default=["latency_ms"], key="pex_new_guardrails",
                               format_func=lambda m: METRICS[m].label)
        tolerance = st.number_input("Guardrail tolerance (largest acceptable degradation, %)", 0.0, 100.0, 10.0,
                                    key="pex_new_tolerance")
        targets = st.multiselect("Targeted tenants (none = all)", tenants, key="pex_new_targets")
        c1, c2, c3 = st.columns(3)
        min_days = c1.number_input("Minimum runtime (days)", 0, 90, 14, key="pex_new_min_days")
        planned = c2.number_input("Planned units per arm", 100, 10_000_000, 10_000, step=1000, key="pex_new_planned")
        correction = c3.selectbox("Multiple-comparison correction", ["holm", "bh", "none"], key="pex_new_correction")
        sequential = st.checkbox("Sequential testing (safe to look every day)", value=True, key="pex_new_sequential")
        reason = st.text_input("Reason (kept in the audit log)", key="pex_new_reason")
        submitted = st.form_submit_button("Create draft", type="primary")
    if submitted:
        with handled():
            exp = services.experiments.create(
                principal, name=name, hypothesis=hypothesis, slot=slot, variants=variants, primary_metric=primary,
                secondary_metrics=secondary, guardrails=[{"metric": g, "tolerance": tolerance / 100} for g in guard],
                target_tenants=targets, min_runtime_days=int(min_days), planned_units_per_arm=int(planned),
                correction=correction, sequential=sequential, reason=reason,
            )
            refresh()
            flash(FLASH, "ok", f"Created draft experiment {exp['name']}; start it from its page.")
            open_experiment(exp["id"])
            st.rerun()


# --------------------------------------------------------------------------------------------------
selected = st.query_params.get("experiment")
with handled():
    if selected:
        results_view(selected)
    else:
        st.title("Prompt experiments")
        st.caption("Versioned system prompts, offline evaluations, and A/B experiments with statistics you can "
                   "trust: deterministic sticky assignment, always-valid intervals, SRM and guardrail checks.")
        show_flash(FLASH)
        tab_list, tab_catalog, tab_eval, tab_new = st.tabs(["Experiments", "Catalog", "Evaluations",
                                                            "New experiment"])
        with tab_list:
            experiments_tab()
        with tab_catalog:
            catalog_tab()
        with tab_eval:
            evaluations_tab()
        with tab_new:
            create_tab()
