"""Audit log: who did what, when and why; filters, paging and CSV export."""

from __future__ import annotations

import json
from datetime import datetime, time

import streamlit as st

from app.components.errors import handled
from app.components.guard import page_context
from app.components.tables import table_with_csv
from core import clock

ctx = page_context("audit")
st.title("Audit log")
st.caption("Every change made in the console, newest first. Records are append-only.")

with st.form("audit_filters"):
    c1, c2, c3 = st.columns(3)
    action = c1.text_input("Action", key="audit_action", placeholder="e.g. user.set_role")
    actor = c2.text_input("Actor email", key="audit_actor")
    since = c3.date_input("Since", value=None, key="audit_since")
    st.form_submit_button("Apply filters")

cursor_key = "audit_cursors"
filters = (action, actor, str(since))
if st.session_state.get("audit_filters_seen") != filters:
    st.session_state["audit_filters_seen"] = filters
    st.session_state[cursor_key] = [None]
cursors: list[str | None] = st.session_state.setdefault(cursor_key, [None])

with handled():
    page = ctx.services.audit.search(
        ctx.principal,
        tenant_id=ctx.tenant_id,
        action=action.strip() or None,
        actor=actor.strip().lower() or None,
        since=clock.iso(datetime.combine(since, time.min).astimezone()) if since else None,
        cursor=cursors[-1],
    )
    rows = [
        {
            **{k: r.get(k) for k in ("at", "tenantId", "actor", "actorRole", "action", "target", "reason")},
            # before/after hold any small JSON value: show them as JSON text so the column has one type
            **{k: json.dumps(r.get(k), default=str) if r.get(k) is not None else "" for k in ("before", "after")},
        }
        for r in page.rows
    ]
    table_with_csv(rows, key="audit", file_name="audit.csv", empty="No audit records match these filters.")
    c1, c2, _ = st.columns([1, 1, 6])
    if c1.button("Newer", key="audit_newer", disabled=len(cursors) == 1):
        cursors.pop()
        st.rerun()
    if c2.button("Older", key="audit_older", disabled=page.next_cursor is None):
        cursors.append(page.next_cursor)
        st.rerun()
    st.caption(f"Page {len(cursors)} · 50 records per page")
