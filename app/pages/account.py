"""My account: change password and set up two-step verification."""

from __future__ import annotations

import streamlit as st

from app import state
from app.auth_ui import qr_png
from app.components.errors import handled
from app.components.guard import page_context
from core.services.access import ROLE_LABELS

ctx = page_context("account")
st.title("My account")
p = ctx.principal
st.write(f"**{p.email}** · {ROLE_LABELS.get(p.role, p.role)} · tenant: {p.tenant_id or 'all tenants'}")

st.subheader("Password")
with st.form("password_form", clear_on_submit=True):
    current = st.text_input("Current password", type="password", key="pw_current")
    new = st.text_input("New password (10+ characters)", type="password", key="pw_new")
    again = st.text_input("New password again", type="password", key="pw_again")
    if st.form_submit_button("Change password"):
        if new != again:
            st.error("The two new passwords differ.")
        else:
            with handled():
                ctx.services.users.change_password(p, current, new)
                st.success("Password changed.")

st.subheader("Two-step verification")
if st.button("Set up an authenticator app", key="mfa_start"):
    with handled():
        st.session_state[state.ENROL_URI] = ctx.services.users.begin_enrolment(p.user_id)
if state.ENROL_URI in st.session_state:
    secret, uri = st.session_state[state.ENROL_URI]
    st.image(qr_png(uri), width=220, caption="Scan with your authenticator app")
    st.caption(f"Key: `{secret}`")
    with st.form("mfa_confirm"):
        code = st.text_input("6-digit code", key="mfa_code", max_chars=6)
        if st.form_submit_button("Confirm"):
            with handled():
                ctx.services.users.confirm_enrolment(p.user_id, code)
                st.session_state.pop(state.ENROL_URI, None)
                st.success("Two-step verification is on.")
