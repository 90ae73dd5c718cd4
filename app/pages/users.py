"""Users: invite, set role, reset MFA, deactivate or reactivate; admins only."""

from __future__ import annotations

import streamlit as st

from app.components.errors import handled
from app.components.guard import page_context
from app.components.tables import table_with_csv
from core.services.access import ADMIN, ROLE_LABELS, ROLES

ctx = page_context("users")
svc = ctx.services
st.title("Users")

tenants = {t["id"]: t["name"] for t in svc.tenants.list(ctx.principal)}
tenant_options = [None, *tenants]


def _tenant_label(t: str | None) -> str:
    return "All tenants (platform-wide)" if t is None else tenants.get(t, t)


with handled():
    users = svc.users.list(ctx.principal, ctx.tenant_id)
    rows = [
        {
            "email": u["email"],
            "name": u.get("name"),
            "role": ROLE_LABELS.get(u["role"], u["role"]),
            "tenant": _tenant_label(u.get("homeTenant")),
            "source": u.get("source"),
            "active": u.get("active"),
            "mfa": u.get("mfaEnrolled"),
            "locked until": u.get("lockedUntil"),
            "last login": u.get("lastLoginAt"),
        }
        for u in users
    ]
    table_with_csv(rows, key="users", file_name="users.csv", empty="No users in this tenant yet.")

tab_invite, tab_manage = st.tabs(["Invite", "Manage a user"])
with tab_invite:
    with st.form("invite_form", clear_on_submit=True):
        email = st.text_input("Email", key="invite_email")
        name = st.text_input("Name", key="invite_name")
        role = st.selectbox("Role", ROLES, format_func=lambda r: ROLE_LABELS[r], key="invite_role")
        tenant = st.selectbox(
            "Tenant",
            tenant_options,
            format_func=_tenant_label,
            key="invite_tenant",
            index=tenant_options.index(ctx.tenant_id) if ctx.tenant_id in tenant_options else 0,
        )
        reason = st.text_input("Reason", key="invite_reason")
        if st.form_submit_button("Invite", type="primary"):
            with handled():
                user, one_time = svc.users.create(
                    ctx.principal, email, role, None if role == ADMIN else tenant, name=name, reason=reason
                )
                st.success(f"Invited {user['email']}. Give them this one-time password (shown once): `{one_time}`")

with tab_manage:
    if not users:
        st.info("No users to manage.")
    else:
        by_email = {u["email"]: u for u in users}
        chosen = st.selectbox("User", list(by_email), key="manage_user")
        user = by_email[chosen]
        st.caption(
            f"Role: {ROLE_LABELS.get(user['role'])} · tenant: {_tenant_label(user.get('homeTenant'))} · "
            f"MFA: {'enrolled' if user.get('mfaEnrolled') else 'not enrolled'} · "
            f"{'active' if user.get('active') else 'deactivated'}"
        )
        with st.form("role_form"):
            new_role = st.selectbox(
                "New role", ROLES, index=ROLES.index(user["role"]), format_func=lambda r: ROLE_LABELS[r], key="role_new"
            )
            home = user.get("homeTenant")
            new_tenant = st.selectbox(
                "Tenant",
                tenant_options,
                format_func=_tenant_label,
                key="role_tenant",
                index=tenant_options.index(home) if home in tenant_options else 0,
            )
            reason = st.text_input("Reason", key="role_reason")
            if st.form_submit_button("Set role"):
                with handled():
                    svc.users.set_role(ctx.principal, user["id"], new_role, new_tenant, reason)
                    st.success(f"{chosen} is now {ROLE_LABELS[new_role]}; their sessions were signed out.")

        @st.dialog("Confirm")
        def confirm(action: str) -> None:
            st.write(f"{action} for **{chosen}**? They will be signed out everywhere.")
            why = st.text_input("Reason (required)", key="confirm_reason")
            if st.button(action, type="primary", key="confirm_go"):
                with handled():
                    if action == "Reset MFA":
                        svc.users.reset_mfa(ctx.principal, user["id"], why)
                    else:
                        svc.users.set_active(ctx.principal, user["id"], action == "Reactivate", why)
                    st.rerun()

        c1, c2 = st.columns(2)
        if c1.button("Reset MFA", key="reset_mfa", disabled=not user.get("mfaEnrolled")):
            confirm("Reset MFA")
        toggle = "Deactivate" if user.get("active") else "Reactivate"
        if c2.button(toggle, key="toggle_active"):
            confirm(toggle)
