"""The console's router: sign-in, the tenant picker, and navigation showing each role its screens."""

from __future__ import annotations

import sys
from pathlib import Path

# Streamlit runs this file as a script; make the repository root importable for `core`, `app`, ...
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402

from app import state  # noqa: E402
from app.auth_ui import login_screen, resume_from_cookie, sign_out, sso_principal, write_cookie_if_due  # noqa: E402
from app.components.errors import show_error  # noqa: E402
from app.registry import BY_KEY, available_pages, landing_for  # noqa: E402
from app.services import get_services  # noqa: E402
from core.errors import CastielError  # noqa: E402
from core.observability.logging import bind, configure_logging  # noqa: E402
from core.observability.telemetry import timed  # noqa: E402
from core.services.access import ROLE_LABELS  # noqa: E402

st.set_page_config(page_title="Castiel Admin Console", page_icon=":material/dashboard:", layout="wide")


def _sign_in(services):  # type: ignore[no-untyped-def]
    principal = st.session_state.get(state.PRINCIPAL)
    if principal is not None:
        # Re-read the user each run: a deactivation or role change takes effect at once.
        fresh = services.users.current(principal.user_id)
        if fresh is None:
            for key in (state.PRINCIPAL, state.TENANT):
                st.session_state.pop(key, None)
            st.warning("Your account was deactivated or removed; you have been signed out.")
            return None
        st.session_state[state.PRINCIPAL] = fresh
        return fresh
    try:
        principal = sso_principal(services) or resume_from_cookie(services)
    except CastielError as e:
        show_error(e)
        return None
    if principal is not None:
        st.session_state[state.PRINCIPAL] = principal
    return principal


def _tenant_picker(services, principal):  # type: ignore[no-untyped-def]
    tenants = services.tenants.list(principal)
    names = {t["id"]: t["name"] + (" · demo" if t.get("demo") else "") for t in tenants}
    asked = st.query_params.get("tenant")
    if asked and asked not in names:
        if principal.platform_wide:
            st.sidebar.warning(f"Tenant {asked!r} does not exist.")
        else:
            st.error("Not authorised. You are not authorised for that tenant.", icon=":material/block:")
            st.stop()
    if principal.platform_wide:
        options = [state.ALL_TENANTS, *names]
        default = asked if asked in names else st.session_state.get(state.TENANT, state.ALL_TENANTS)
        default = default if default in options else state.ALL_TENANTS
        choice = st.sidebar.selectbox(
            "Tenant",
            options,
            index=options.index(default),
            key="tenant_picker",
            format_func=lambda t: "All tenants" if t == state.ALL_TENANTS else names[t],
        )
    else:
        choice = principal.tenant_id
        st.sidebar.markdown(f"**Tenant:** {names.get(choice, choice)}")
    st.session_state[state.TENANT] = choice
    if choice != state.ALL_TENANTS:
        st.query_params["tenant"] = choice
    elif "tenant" in st.query_params:
        del st.query_params["tenant"]
    if choice in names and " · demo" in names[choice]:
        st.sidebar.caption(":material/science: Demo tenant: its data is generated demo data.")


@st.cache_resource(show_spinner=False)
def _logging_configured(level: str) -> bool:
    configure_logging(level, service="web")
    return True


def main() -> None:
    services = get_services()
    _logging_configured(services.settings.log_level)
    principal = _sign_in(services)
    if principal is None:
        login_screen(services)
        return
    specs = available_pages()
    landing = landing_for(principal.role)
    pages = {s.key: st.Page(str(s.path), title=s.title, icon=s.icon, url_path=s.key) for s in specs}

    def home() -> None:
        st.switch_page(pages[landing])

    # Every screen is routable (so a forbidden URL says "not authorised" instead of "not found"),
    # but the menu lists only the screens this role may open. The default page only forwards to the
    # role's landing screen, so every real screen keeps its own URL.
    home_page = st.Page(home, title="Home", url_path="home", default=True)
    current = st.navigation([home_page, *pages.values()], position="hidden")
    with st.sidebar:
        st.markdown("### Castiel Console")
        sections: dict[str, list] = {}
        for s in specs:
            if s.allows(principal.role):
                sections.setdefault(s.section, []).append(s)
        for section, items in sections.items():
            st.caption(section)
            for s in items:
                st.page_link(pages[s.key], label=s.title, icon=s.icon)
        st.divider()
    _tenant_picker(services, principal)
    with st.sidebar:
        st.caption(f"Signed in as **{principal.email}** · {ROLE_LABELS.get(principal.role, principal.role)}")
        if st.button("Sign out", key="sign_out", icon=":material/logout:"):
            sign_out(services)
    if current is home_page:
        current.run()
    key = next((k for k, p in pages.items() if p.url_path == current.url_path), landing)
    spec = BY_KEY[key]
    if not spec.allows(principal.role):
        st.error(f"Not authorised. The {spec.title} screen is not open to your role.", icon=":material/block:")
    else:
        _ = services.telemetry  # installs the recorder that `timed` writes to
        tenant = st.session_state.get(state.TENANT)
        try:
            with timed(f"page.{key}", None if tenant in (None, state.ALL_TENANTS) else tenant, kind="page"):
                current.run()
        except Exception as e:  # st.stop()/st.rerun() are BaseExceptions and pass through
            show_error(e)
    write_cookie_if_due(services)


with bind():  # one correlation id per script run: logs, enqueued jobs and error references share it
    main()
