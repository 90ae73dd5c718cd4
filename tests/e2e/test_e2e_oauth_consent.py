"""An admin connects a Salesforce account by consent in Chromium: Connect -> the (fake) vendor -> back, connected."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from core.bootstrap import build
from core.config import load_settings
from core.migrate import migrate
from core.services.access import ADMIN, SYSTEM
from tests.e2e.conftest import ROOT, free_port, open_signed_in, sign_in, wait_idle
from tests.fakes.vendors.salesforce import FakeSalesforce

pytestmark = pytest.mark.e2e

ADMIN_EMAIL = "consent-admin@e2e.example.com"
ADMIN_PASSWORD = "consent-admin-password-1"
TENANT = "acme"
CONNECTION_NAME = "Acme Salesforce"


@dataclass
class ConsentConsole:
    url: str
    data_dir: Path
    connection_id: str
    fake: FakeSalesforce


def stored_credentials(data_dir: Path, connection_id: str) -> dict:
    services = build(load_settings(data_dir=data_dir))
    try:
        conn = services.store.get("connections", TENANT, connection_id)
        return services.sync_engine.credentials_of(conn)
    finally:
        services.store.close()


@pytest.fixture
def consent_console(tmp_path: Path) -> Iterator[ConsentConsole]:
    """A console of its own, started with CASTIEL_CONSOLE_URL = its address (the redirect URI vendors get)."""
    fake = FakeSalesforce(accounts=3, opportunities=4, contacts=2, tasks=1)
    fake.start()
    data_dir = tmp_path / "var"
    services = build(load_settings(data_dir=data_dir))
    try:
        migrate(services)
        services.users.create(SYSTEM, ADMIN_EMAIL, ADMIN, None, password=ADMIN_PASSWORD, reason="e2e")
        services.tenants.create(SYSTEM, TENANT, "Acme", reason="e2e")
        conn = services.integrations.create_connection(
            SYSTEM, TENANT, "salesforce", CONNECTION_NAME, fake.connector_config(),
            {"client_id": fake.oauth.client_id, "client_secret": fake.oauth.client_secret}, reason="e2e",
        )
    finally:
        services.store.close()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "CASTIEL_DATA_DIR": str(data_dir),
        "CASTIEL_CONSOLE_URL": url,
        "CASTIEL_METRICS_PORT": str(free_port()),
        "CASTIEL_WEBHOOK_PORT": str(free_port()),
        "PYTHONPATH": str(ROOT),
    }
    log = open(tmp_path / "web.log", "w")  # noqa: SIM115 - closed in finally, after the process
    web = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.address", "127.0.0.1",
         "--server.port", str(port), "--server.headless", "true"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(240):
            if web.poll() is not None:
                raise RuntimeError(f"console exited early:\n{(tmp_path / 'web.log').read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
                break
            except OSError:
                subprocess.run(["sleep", "0.5"], check=False)
        yield ConsentConsole(url, data_dir, str(conn["id"]), fake)
    finally:
        web.terminate()
        try:
            web.wait(30)
        except subprocess.TimeoutExpired:
            web.kill()
            web.wait(10)
        log.close()
        fake.stop()


@pytest.mark.timeout(600)
def test_admin_connects_salesforce_by_consent(consent_console: ConsentConsole, browser, tmp_path: Path):
    c = consent_console
    # The fake vendor speaks TLS with a local test CA the browser does not know.
    context = browser.new_context(viewport={"width": 1440, "height": 1100}, ignore_https_errors=True)
    page = context.new_page()
    try:
        sign_in(page, c.url, ADMIN_EMAIL, ADMIN_PASSWORD)
        open_signed_in(page, f"{c.url}/integrations?connection={c.connection_id}")
        page.get_by_role("heading", name=CONNECTION_NAME).wait_for(timeout=30_000)
        # Not connected yet: no user token, and the Credentials area offers the consent.
        assert "refresh_token" not in stored_credentials(c.data_dir, c.connection_id)
        page.get_by_text("Credentials", exact=True).click()
        page.locator(".st-key-integ_consent_open button").click()
        dialog = page.get_by_role("dialog")
        dialog.wait_for(timeout=30_000)
        dialog.get_by_label("Reason (required, kept in the audit log)").fill("onboarding Acme's Salesforce org")
        page.screenshot(path=str(tmp_path / "1-consent-dialog.png"), full_page=True)
        # Continue: the console sends the browser to the vendor, which consents and redirects back.
        visited: list[str] = []
        page.on("request", lambda r: visited.append(r.url) if r.is_navigation_request() else None)
        dialog.locator(".st-key-integ_dlg_consent_go button").click()
        page.wait_for_url(f"{c.url}/integrations?connection=*", timeout=60_000)
        wait_idle(page)
        assert any(u.startswith(f"{c.fake.url}/services/oauth2/authorize?") for u in visited), visited
        assert any("code=" in u and u.startswith(f"{c.url}/integrations?") for u in visited), visited
        page.get_by_text("Salesforce account connected").wait_for(timeout=60_000)
        page.screenshot(path=str(tmp_path / "2-connected.png"), full_page=True)

        query = parse_qs(urlsplit(page.url).query)
        assert query.get("connection") == [c.connection_id]  # deep-linked to the connection
        assert "code" not in query and "state" not in query  # the one-time answer is gone from the address
        page.get_by_role("heading", name=CONNECTION_NAME).wait_for(timeout=30_000)
        assert page.locator('[data-testid="stException"]').count() == 0

        assert c.fake.oauth.consents == 1 and c.fake.oauth.code_exchanges == 1
        creds = stored_credentials(c.data_dir, c.connection_id)
        assert creds["refresh_token"] in c.fake.oauth.refresh_tokens
        asked = c.fake.oauth.authorize_requests[-1]
        assert asked["redirect_uri"] == f"{c.url}/integrations" and asked["code_challenge_method"] == "S256"
    finally:
        context.close()
