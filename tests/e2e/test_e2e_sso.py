"""Single sign-on through st.login against a local OpenID Connect provider (oidc-provider-mock) in Chromium."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from oidc_provider_mock import User, run_server_in_thread

from tests.e2e.conftest import ROOT, free_port, wait_idle

pytestmark = pytest.mark.e2e


def test_entra_style_groups_map_to_console_roles(browser, tmp_path: Path):
    users = [
        User(
            sub="jane",
            claims={
                "email": "jane@contoso.com",
                "name": "Jane",
                "groups": ["castiel-ops"],
                "castiel_tenant": "contoso",
            },
        ),
        User(sub="bob", claims={"email": "bob@contoso.com", "name": "Bob", "groups": ["sales"]}),
    ]
    with run_server_in_thread(port=0, user_claims=users) as idp:
        issuer = f"http://localhost:{idp.server_port}"
        port = free_port()
        secrets = tmp_path / "secrets.toml"
        secrets.write_text(
            "[auth]\n"
            f'redirect_uri = "http://127.0.0.1:{port}/oauth2callback"\n'
            'cookie_secret = "an-e2e-cookie-secret-of-some-length"\n'
            'client_id = "castiel-console"\n'
            'client_secret = "castiel-secret"\n'
            f'server_metadata_url = "{issuer}/.well-known/openid-configuration"\n'
        )
        env = {
            **os.environ,
            "CASTIEL_DATA_DIR": str(tmp_path / "var"),
            "CASTIEL_OIDC_ENABLED": "true",
            "CASTIEL_OIDC_ROLE_MAP": '{"castiel-ops": "ops", "castiel-admins": "admin"}',
            "CASTIEL_ADMIN_PASSWORD": "sso-admin-password-1",
            "PYTHONPATH": str(ROOT),
        }
        for cmd in (["setup", "--no-demo"], ["create-tenant", "--id", "contoso", "--name", "Contoso"]):
            subprocess.run([sys.executable, "-m", "core", *cmd], cwd=ROOT, env=env, check=True, capture_output=True)
        web = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                "app/main.py",
                "--server.address",
                "127.0.0.1",
                "--server.port",
                str(port),
                "--secrets.files",
                str(secrets),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(120):
                try:
                    urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
                    break
                except OSError:
                    time.sleep(0.5)
            for who, expect in (("jane", "ops"), ("bob", None)):
                context = browser.new_context()
                page = context.new_page()
                page.goto(url)
                wait_idle(page)
                page.get_by_role("button", name="Sign in with Microsoft").click()
                page.wait_for_url(f"{issuer}/**")
                page.fill('input[name="sub"]', who)
                page.get_by_role("button", name="Authorize").first.click()
                page.wait_for_url(f"{url}/**")
                wait_idle(page)
                page.screenshot(path=str(tmp_path / f"sso-{who}.png"), full_page=True)
                if expect:
                    assert page.get_by_text("jane@contoso.com").count() > 0
                    assert page.get_by_text("Ops").count() > 0
                    assert page.get_by_text("Contoso").count() > 0
                else:
                    assert page.get_by_text("has no console role").count() == 1
                context.close()
        finally:
            web.terminate()
            web.wait(20)
