"""Every page starts with ``page_context(key)``: signed in, allowed for this page, tenant in scope."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from app import state
from app.registry import BY_KEY
from app.services import get_services
from core.bootstrap import Services
from core.services.access import Principal


@dataclass(frozen=True)
class PageContext:
    services: Services
    principal: Principal
    tenant_id: str | None  # the tenant picked in the sidebar; None means all the user may see

    def tenant_or_home(self) -> str | None:
        return self.tenant_id or self.principal.tenant_id

    def one_tenant(self, key: str) -> str:
        """The tenant a single-tenant screen works on: the sidebar's, or one picked here when it shows all.

        Stops the page with a clear message when there are no tenants to pick.
        """
        tenant = self.tenant_or_home()
        if tenant:
            return tenant
        names = {t["id"]: t["name"] for t in self.services.tenants.list(self.principal)}
        if not names:
            st.info("There are no tenants yet: an admin creates one with `python -m core create-tenant`.")
            st.stop()
        ids = list(names)
        wanted = st.query_params.get("tenant")
        return str(st.selectbox("Tenant", ids, index=ids.index(wanted) if wanted in ids else 0, key=key,
                                format_func=lambda t: names[t]))


def current_principal() -> Principal | None:
    return st.session_state.get(state.PRINCIPAL)


def not_authorised(message: str) -> None:
    st.error(f"Not authorised. {message}", icon=":material/block:")
    st.stop()


def page_context(key: str) -> PageContext:
    """Stops the page with "not authorised" (and shows no data) unless the user may open it."""
    principal = current_principal()
    if principal is None:
        not_authorised("Sign in first.")
        raise AssertionError  # unreachable: st.stop() raises
    spec = BY_KEY[key]
    if not spec.allows(principal.role):
        not_authorised(f"The {spec.title} screen is not open to your role.")
    tenant = st.session_state.get(state.TENANT, state.ALL_TENANTS)
    tenant_id = None if tenant == state.ALL_TENANTS else tenant
    if tenant_id is not None and not principal.can_see_tenant(tenant_id):
        not_authorised("You are not authorised for that tenant.")
    if tenant_id is None and not principal.platform_wide:
        tenant_id = principal.tenant_id
    return PageContext(get_services(), principal, tenant_id)
