"""Role x page matrix, sign-in, and tenant deep links, through the real router under AppTest."""

from __future__ import annotations

import pytest

from app.registry import available_pages
from core.services.access import ROLES
from tests.app.apptest_helpers import not_authorised, open_page, texts

PAGES = [p for p in available_pages()]


@pytest.mark.parametrize("role", ROLES)
def test_role_page_matrix(app_env, services, principals, role):
    """Every page, every role: allowed pages render without exception, forbidden ones say so."""
    for spec in PAGES:
        at = open_page(spec.key, principals[role])
        assert not at.exception, f"{spec.key} as {role}: {at.exception}"
        if spec.allows(role):
            assert not not_authorised(at), f"{role} should open {spec.key}: {texts(at)}"
        else:
            assert not_authorised(at), f"{role} must not open {spec.key}"


def test_no_login_shows_sign_in_only(app_env, services):
    at = open_page(None, None)
    assert not at.exception
    assert at.text_input(key="login_email") is not None
    assert "Sign in" in texts(at)


def test_sign_in_with_wrong_password_then_right(app_env, services, principals):
    from tests.conftest import PASSWORD

    at = open_page(None, None)
    at.text_input(key="login_email").input(principals["ops"].email)
    at.text_input(key="login_password").input("not-the-password")
    at.button[0].click().run()
    assert "wrong email or password" in texts(at)
    at.text_input(key="login_password").input(PASSWORD)
    at.button[0].click().run()
    assert not at.exception
    assert "Sign in" not in [t.value for t in at.subheader]


def test_cross_tenant_query_param_refused(app_env, services, principals, two_tenants):
    """A tenant user opening a link to another tenant sees "not authorised" and no data."""
    at = open_page(None, principals["ops"], query={"tenant": two_tenants[1]})
    assert not_authorised(at)
    assert not at.dataframe and not at.metric
    own = open_page(None, principals["ops"], query={"tenant": two_tenants[0]})
    assert not not_authorised(own)


def _cookie_writes(at) -> list[str]:  # type: ignore[no-untyped-def]
    """The session-cookie writes drawn in the last run (AppTest keeps custom components as unknown elements)."""
    found, nodes = [], [at._tree]
    while nodes:
        node = nodes.pop()
        nodes.extend(getattr(node, "children", {}).values())
        if getattr(node, "type", None) == "component_instance" and '"method": "set"' in node.proto.json_args:
            found.append(node.proto.json_args)
    return found


def _after_page() -> None:
    """What the router does after every page (AppTest reruns only the page script after a page switch)."""
    from app.auth_ui import write_cookie_if_due
    from app.services import get_services

    write_cookie_if_due(get_services())


def test_session_cookie_write_is_drawn_until_the_browser_confirms_it(app_env, services, principals):
    """The cookie manager's read component can rerun the script before the write component's frame has
    loaded; the write must be drawn again (same token) on every run until the browser reports it done."""
    from streamlit.testing.v1 import AppTest

    from app import state
    from app.auth_ui import COOKIE_WRITE_KEY
    from tests.conftest import PASSWORD

    at = open_page(None, None)
    at.text_input(key="login_email").input(principals["ops"].email)
    at.text_input(key="login_password").input(PASSWORD)
    at.button[0].click().run()
    assert not at.exception
    pending = at.session_state[state.SET_COOKIE]
    assert isinstance(pending, dict) and pending["token"], pending
    first = _cookie_writes(at)
    assert len(first) == 1 and pending["token"] in first[0]

    later = AppTest.from_function(_after_page, default_timeout=60)
    later.session_state[state.PRINCIPAL] = at.session_state[state.PRINCIPAL]
    later.session_state[state.SET_COOKIE] = pending
    later.run()  # a rerun the browser asked for before the write's frame reported back
    assert not later.exception
    assert later.session_state[state.SET_COOKIE] == pending, "the token is minted once"
    assert _cookie_writes(later) == first, "the same write is drawn again"
    later.session_state[COOKIE_WRITE_KEY] = True  # what the write component answers once the cookie is set
    later.run()
    assert state.SET_COOKIE not in later.session_state
    assert _cookie_writes(later) == []
