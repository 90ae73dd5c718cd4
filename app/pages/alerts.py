"""Alerts: what is open now (acknowledge, silence), the rules per tenant, notification channels, history."""

from __future__ import annotations

from datetime import timedelta

import streamlit as st

from app.components.errors import handled
from app.components.guard import page_context
from app.components.overview_view import alerts_frame
from app.components.tables import table_with_csv
from core import clock
from core.adapters.store import PLATFORM
from core.observability.alerts import RULES, SEVERITIES
from core.observability.notify import CHANNEL_KINDS, parse_target
from core.observability.telemetry import timed
from core.services.access import ADMIN
from core.services.alerting import AlertingService, parse_channel_list

ctx = page_context("alerts")
svc: AlertingService = ctx.services.alerting
INHERIT = "(inherit)"
FLASH = "alerts_flash"
scope_label = ctx.tenant_id or "the platform (defaults for every tenant)"
can_edit_scope = ctx.tenant_id is not None or ctx.principal.role == ADMIN



def done(message: str) -> None:
    """Remember the outcome and rerun, so every table on the page shows the change."""
    st.session_state[FLASH] = message
    st.rerun()


st.title("Alerts")
st.caption(f"Rules and alerts for {scope_label}. Changes need a reason and are audited.")
if FLASH in st.session_state:
    st.success(st.session_state.pop(FLASH), icon=":material/check:")

with timed("page.alerts", ctx.tenant_id, kind="page"):
    active_tab, rules_tab, channels_tab, history_tab = st.tabs(["Open", "Rules", "Channels", "History"])

    # open alerts ------------------------------------------------------------------------------
    with active_tab, handled():
        active = svc.active(ctx.principal, ctx.tenant_id)
        if not active:
            st.success("No open alerts.", icon=":material/check_circle:")
        else:
            c1, c2, c3 = st.columns(3)
            c1.metric("Open", sum(1 for a in active if a["status"] == "open"))
            c2.metric("Acknowledged", sum(1 for a in active if a["status"] == "acknowledged"))
            c3.metric("Notification failed", sum(1 for a in active if a.get("notifyStatus") == "failed"))
            table_with_csv(alerts_frame(active), key="alerts_open", file_name="open-alerts.csv")
            ids = [a["id"] + "@" + a["tenantId"] for a in active]
            asked = st.query_params.get("alert")
            default = next((i for i, x in enumerate(ids) if asked and x.startswith(asked + "@")), 0)
            by_key = {a["id"] + "@" + a["tenantId"]: a for a in active}
            with st.form("alerts_action_form"):
                pick = st.selectbox(
                    "Alert", ids, index=default, key="alerts_pick",
                    format_func=lambda k: f"{by_key[k]['title']} · {by_key[k]['tenantId']} · "
                                          f"{by_key[k].get('subjectLabel') or by_key[k].get('subject') or 'tenant'}",
                )
                action = st.radio("Action", ["Acknowledge", "Silence", "Unsilence"], horizontal=True,
                                  key="alerts_action")
                hours = st.number_input("Silence for (hours)", min_value=0.25, max_value=720.0, value=4.0,
                                        step=0.25, key="alerts_hours")
                reason = st.text_input("Reason", key="alerts_reason", placeholder="what you are doing about it")
                if st.form_submit_button("Apply"):
                    alert = by_key[pick]
                    with handled():
                        if action == "Acknowledge":
                            svc.acknowledge(ctx.principal, alert["tenantId"], alert["id"], reason)
                        elif action == "Silence":
                            svc.silence(ctx.principal, alert["tenantId"], alert["id"], hours, reason)
                        else:
                            svc.unsilence(ctx.principal, alert["tenantId"], alert["id"], reason)
                        done(f"{action} done: {alert['title']}.")
            chosen = by_key[pick]
            with st.expander("History and notifications of the selected alert"):
                st.dataframe([{k: e.get(k) for k in ("at", "event", "by", "reason", "value", "error", "until")}
                              for e in reversed(chosen.get("events") or [])], hide_index=True, width="stretch",
                             key="alerts_events")
                notes = svc.notifications(ctx.principal, chosen["tenantId"], chosen["id"])
                st.dataframe([{k: n.get(k) for k in ("at", "event", "kind", "target", "status", "attempts", "error")}
                              for n in notes], hide_index=True, width="stretch", key="alerts_notes")

    # rules ------------------------------------------------------------------------------------
    with rules_tab, handled():
        rules = svc.rules(ctx.principal, ctx.tenant_id)
        st.dataframe(
            [{"rule": r.key, "title": r.title, "fires when": f"{r.comparator} {r.threshold_text}",
              "default": r.default_threshold_text, "severity": r.severity, "enabled": r.enabled,
              "channels": ", ".join(r.channels) or "none configured", "changed here": ", ".join(r.overridden),
              "what it watches": r.description} for r in rules],
            hide_index=True, width="stretch", key="alerts_rules",
        )
        if not can_edit_scope:
            st.info("Pick a tenant in the sidebar to change its rules; platform-wide rules are for admins.")
        else:
            by_rule = {r.key: r for r in rules}
            with st.form("alerts_rule_form"):
                rule_key = st.selectbox("Rule", list(RULES), format_func=lambda k: RULES[k].title, key="rule_pick")
                threshold = st.text_input("Threshold", key="rule_threshold",
                                          placeholder="leave empty to keep; e.g. 0.05 or 5% for rates, 750 for ms")
                c1, c2 = st.columns(2)
                severity = c1.selectbox("Severity", [INHERIT, *SEVERITIES], key="rule_severity")
                enabled = c2.selectbox("Enabled", [INHERIT, "enabled", "disabled"], key="rule_enabled")
                channels = st.text_input("Channels for this rule only", key="rule_channels",
                                         placeholder="email:ops@example.com slack:https://hooks.slack.com/... "
                                                     "(empty: the default channels)")
                reason = st.text_input("Reason", key="rule_reason")
                if st.form_submit_button("Save rule"):
                    with handled():
                        svc.set_override(
                            ctx.principal, ctx.tenant_id, rule_key, reason,
                            threshold=threshold.strip() or None,
                            severity=None if severity == INHERIT else severity,
                            enabled=None if enabled == INHERIT else enabled == "enabled",
                            channels=parse_channel_list(channels) if channels.strip() else None,
                        )
                        done(f"Saved '{RULES[rule_key].title}' for {scope_label}.")
            with st.form("alerts_rule_reset_form"):
                changed = [k for k, r in by_rule.items() if r.overridden]
                reset_key = st.selectbox("Rule to reset to its defaults", changed or ["(none changed here)"],
                                         format_func=lambda k: RULES[k].title if k in RULES else k, key="reset_pick")
                reset_reason = st.text_input("Reason", key="reset_reason")
                if st.form_submit_button("Reset rule", disabled=not changed):
                    with handled():
                        svc.reset_override(ctx.principal, ctx.tenant_id, reset_key, reset_reason)
                        done(f"'{RULES[reset_key].title}' is back to its defaults.")

    # channels ---------------------------------------------------------------------------------
    with channels_tab, handled():
        current = svc.default_channels(ctx.principal, ctx.tenant_id)
        st.markdown(f"**Default channels for {scope_label}:** "
                    + (", ".join(t.label for t in current) if current else "none set here (inherited)"))
        if can_edit_scope:
            with st.form("alerts_channel_form"):
                c1, c2 = st.columns([1, 3])
                kind = c1.selectbox("Channel", CHANNEL_KINDS, key="channel_kind")
                address = c2.text_input("Email address or incoming-webhook URL", key="channel_address")
                op = st.radio("Do", ["Add", "Remove", "Send a test"], horizontal=True, key="channel_op")
                reason = st.text_input("Reason", key="channel_reason")
                if st.form_submit_button("Apply"):
                    with handled():
                        target = parse_target(kind, address)
                        if op == "Add":
                            svc.set_default_channels(ctx.principal, ctx.tenant_id, [*current, target], reason)
                            done(f"Added {target.label}.")
                        elif op == "Remove":
                            svc.set_default_channels(ctx.principal, ctx.tenant_id,
                                                     [t for t in current if t != target], reason)
                            done(f"Removed {target.label}.")
                        else:
                            d = svc.send_test(ctx.principal, ctx.tenant_id, target, reason)
                            if d.status == "sent":
                                st.success(f"Test sent to {d.target} ({d.attempts} attempt(s)).")
                            else:
                                st.error(f"Test to {d.target} failed after {d.attempts} attempt(s): {d.error}")

    # history ----------------------------------------------------------------------------------
    with history_tab, handled():
        c1, c2, c3 = st.columns(3)
        rule = c1.selectbox("Rule", ["All", *RULES, "store_unreachable"], key="history_rule")
        status = c2.selectbox("Status", ["All", "open", "acknowledged", "resolved"], key="history_status")
        days = c3.number_input("Days back", min_value=1, max_value=365, value=30, key="history_days")
        rows = svc.history(ctx.principal, ctx.tenant_id, since=clock.now() - timedelta(days=int(days)),
                           rule=None if rule == "All" else rule, status=None if status == "All" else status)
        if ctx.tenant_id is None and ctx.principal.role != ADMIN:
            rows = [r for r in rows if r["tenantId"] != PLATFORM]
        table_with_csv(alerts_frame(rows), key="alerts_history", file_name="alert-history.csv",
                       empty="No alerts in this period.")
