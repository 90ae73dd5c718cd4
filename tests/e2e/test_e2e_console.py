"""The real console in Chromium: sign in, open every screen, no Streamlit exception anywhere."""

from __future__ import annotations

import pytest

from app.registry import available_pages
from tests.e2e.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, DEMO_PASSWORD, open_signed_in, sign_in

pytestmark = pytest.mark.e2e


def test_admin_visits_every_page(console, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    sign_in(page, console.url, ADMIN_EMAIL, ADMIN_PASSWORD)
    assert page.get_by_text(f"Signed in as {ADMIN_EMAIL}").count() or page.get_by_text(ADMIN_EMAIL).count()
    for spec in available_pages():
        # A fresh page load is a new Streamlit session: it must resume from the session cookie.
        open_signed_in(page, f"{console.url}/{spec.key}")
        page.screenshot(path=str(tmp_path / f"{spec.key}.png"), full_page=True)
        assert page.locator('[data-testid="stException"]').count() == 0, f"exception on {spec.key}"
        assert page.get_by_role("button", name="Sign in").count() == 0, (
            f"{spec.key}: sent back to sign in (cookie not resumed)"
        )
        assert page.get_by_text("Not authorised").count() == 0, f"admin refused on {spec.key}"
        assert page.get_by_text("Something went wrong").count() == 0, f"unexpected error on {spec.key}"
    page.close()


def test_support_user_sees_only_their_pages(console, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    sign_in(page, console.url, "support@acme-demo.castiel.local", DEMO_PASSWORD)
    sidebar = page.locator('[data-testid="stSidebar"]')
    allowed = {s.title for s in available_pages() if s.allows("support")}
    for spec in available_pages():
        shown = sidebar.get_by_role("link", name=spec.title, exact=True).count() > 0
        assert shown == (spec.title in allowed), f"{spec.title}: shown={shown} for support"
    open_signed_in(page, f"{console.url}/users")
    page.screenshot(path=str(tmp_path / "support-users.png"))
    assert page.get_by_text("Not authorised").count() > 0
    assert page.locator('[data-testid="stDataFrame"]').count() == 0
    page.close()


def test_wrong_password_is_refused_in_the_browser(console, browser):
    page = browser.new_page()
    sign_in(page, console.url, ADMIN_EMAIL, "wrong-password-123")
    assert page.get_by_text("wrong email or password").count() == 1
    page.close()
