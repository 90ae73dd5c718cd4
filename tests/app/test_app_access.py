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
