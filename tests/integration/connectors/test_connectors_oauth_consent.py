"""Connecting a vendor account by OAuth consent, end to end against the local vendor fakes.

begin_consent -> the fake's authorize page (which consents at once and redirects back) ->
complete_consent -> the tokens are sealed into the connection -> the next sync run refreshes with
the consent's refresh token and succeeds. Also: replayed, expired, foreign and unknown states are
refused without redeeming anything; a declined consent and a refused code are recorded and
shown; the msal path (Dynamics 365, Microsoft Graph) uses msal's auth-code flow with PKCE.
"""

from __future__ import annotations

import json
import ssl
import threading
import urllib.parse
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.base import build_connector
from connectors.retry import RetryPolicy
from core import clock
from core.bootstrap import build
from core.config import load_settings
from core.errors import ConfigError, Forbidden, Invalid
from core.migrate import migrate
from core.services.access import ADMIN, OPS, SYSTEM, Principal
from core.services.integration_health import compute_health
from core.services.integrations import CONSENTS, IntegrationsService
from core.services.sync_engine import SyncEngine
from jobs.runner import Worker
from tests.fakes.vendors.catalog import CASES
from tests.fakes.vendors.server import FakeVendor
from tests.integration.sync.sync_stack import TENANT, Stack

REDIRECT = "http://127.0.0.1:8501/integrations"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """Real SQLite services, the real worker, connectors with a fast retry policy."""
    services = build(load_settings(data_dir=tmp_path / "var"), on_document_changed=lambda *a: None)
    fast = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.05)

    def factory(provider: str, config: dict[str, Any], creds: dict[str, Any], token_store: Any) -> Any:
        return build_connector(provider, config, creds, token_store, http_timeout=5.0, retry=fast)

    engine = SyncEngine(services.store, factory, services.box, lambda *a: None, audit=services.audit)
    services.overrides["sync_engine"] = engine
    migrate(services)
    services.tenants.create(SYSTEM, TENANT, "Consent tenant", reason="test")
    yield Stack(services, engine, Worker(services, consumers=1, with_scheduler=False))
    services.store.close()


def user(stack: Stack, role: str, email: str) -> Principal:
    created, _ = stack.services.users.create(SYSTEM, email, role, None if role == ADMIN else TENANT,
                                             password="correct-horse-battery", reason="test")
    principal = stack.services.users.current(created["id"])
    assert principal is not None
    return principal


@pytest.fixture
def admin(stack: Stack) -> Principal:
    return user(stack, ADMIN, "admin@example.com")


@pytest.fixture
def fakes() -> Iterator[dict[str, FakeVendor]]:
    started: dict[str, FakeVendor] = {}
    yield started
    for fake in started.values():
        fake.stop()


def start(fakes: dict[str, FakeVendor], provider: str) -> FakeVendor:
    fake = CASES[provider].start(records=6, page_size=5)
    fakes[provider] = fake
    return fake


def app_keys(fake: FakeVendor) -> dict[str, Any]:
    """The connection's credentials before consent: the OAuth app's keys, no user token."""
    return {k: v for k, v in fake.connector_credentials().items() if k not in ("refresh_token", "access_token")}


def connect(stack: Stack, fake: FakeVendor, provider: str) -> str:
    conn = stack.integrations.create_connection(
        SYSTEM, TENANT, provider, f"{provider} by consent", fake.connector_config(), app_keys(fake), reason="setup",
    )
    return str(conn["id"])


def follow(fake: FakeVendor, url: str) -> dict[str, str]:
    """What a browser does at the vendor: open the authorize URL and take the redirect's query back."""
    verify: Any = ssl.create_default_context(cafile=fake.ca_bundle) if fake.ca_bundle else True
    with httpx.Client(verify=verify, follow_redirects=False) as http:
        answer = http.get(url)
    assert answer.status_code == 302, answer.text
    location = answer.headers["location"]
    assert location.startswith(REDIRECT + "?")
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))


def start_connected(stack: Stack, fakes: dict[str, FakeVendor], provider: str) -> tuple[FakeVendor, str]:
    """A started fake vendor and a connection to it that holds the app's keys but no user token yet."""
    fake = start(fakes, provider)
    return fake, connect(stack, fake, provider)


def query_of(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


def sync(stack: Stack, connection_id: str) -> dict[str, Any]:
    result = stack.integrations.resync(SYSTEM, TENANT, connection_id, "after consent")
    assert stack.work() == 1
    return stack.services.store.get("sync_runs", TENANT, str(result.run_id))


def audit_rows(stack: Stack, action: str) -> list[dict[str, Any]]:
    return stack.services.store.query("audit", TENANT, {"action": action})


@pytest.mark.parametrize(("provider", "pkce"),
                         [("salesforce", True), ("hubspot", False), ("gdrive", True), ("slack", False),
                          ("notion", False)])
def test_consent_connects_the_account_and_the_next_sync_refreshes_with_its_token(
    stack: Stack, admin: Principal, fakes: dict[str, FakeVendor], provider: str, pkce: bool
) -> None:
    fake, conn_id = start_connected(stack, fakes, provider)
    svc: IntegrationsService = stack.integrations

    before = sync(stack, conn_id)  # no user token yet: a config error, the connection needs a person
    assert before["status"] == "failed" and "connect the account" in before["error"]
    assert compute_health(stack.connection(conn_id), clock.now()).status == "needs_reauth"

    url = svc.begin_consent(admin, TENANT, conn_id, REDIRECT, "onboarding the customer's account")
    asked = query_of(url)
    assert asked["client_id"] == fake.oauth.client_id and asked["redirect_uri"] == REDIRECT
    assert asked["response_type"] == "code" and len(asked["state"]) >= 43
    assert ("code_challenge" in asked) is pkce
    if pkce:
        assert asked["code_challenge_method"] == "S256"
    record = stack.services.store.query(CONSENTS, None)[0]
    assert asked["state"] not in json.dumps(record)  # the store holds a hash of the state and a sealed verifier

    answer = follow(fake, url)
    assert answer["state"] == asked["state"]
    outcome = svc.complete_consent(admin, answer["state"], code=answer["code"], params=answer)
    assert outcome.ok and outcome.connection_id == conn_id, outcome.message
    assert fake.oauth.code_exchanges == 1
    redeemed = fake.oauth.token_forms[-1]
    assert redeemed["grant_type"] == "authorization_code" and redeemed["redirect_uri"] == REDIRECT
    assert ("code_verifier" in redeemed) is pkce

    conn = stack.connection(conn_id)
    creds = stack.engine.credentials_of(conn)
    consent_refresh = creds["refresh_token"]
    assert consent_refresh in fake.oauth.refresh_tokens and creds["client_id"] == fake.oauth.client_id
    assert conn["token"]["auth"] == "oauth2_refresh" and conn["token"]["refreshIssuedAt"]
    assert conn["lastErrorType"] is None and conn["consecutiveFailures"] == 0
    assert compute_health(conn, clock.now()).status != "needs_reauth"

    # The access token from the consent lapses: the run must refresh with the consent's refresh token.
    fake.oauth.expire_access_tokens()
    refreshes = fake.oauth.refreshes
    after = sync(stack, conn_id)
    assert after["status"] == "succeeded", after.get("error")
    assert after["written"] > 0
    assert fake.oauth.refreshes == refreshes + 1

    started = audit_rows(stack, "integration.consent_start")
    done = audit_rows(stack, "integration.consent_complete")
    assert [r["reason"] for r in started] == ["onboarding the customer's account"]
    assert [r["reason"] for r in done] == ["onboarding the customer's account"]
    logged = json.dumps(started + done)
    assert consent_refresh not in logged and answer["code"] not in logged and creds["access_token"] not in logged


def test_slack_install_without_token_rotation_keeps_the_bot_token_and_a_replayed_code_is_refused(
    stack: Stack, admin: Principal, fakes: dict[str, FakeVendor]
) -> None:
    fake = CASES["slack"].start(records=6, page_size=5)
    fake.rotation = fake.oauth.rotate = False  # the catalog's Slack case rotates tokens; this app does not
    fakes["slack"] = fake
    keys = {"client_id": fake.oauth.client_id, "client_secret": fake.oauth.client_secret}
    conn_id = str(stack.integrations.create_connection(
        SYSTEM, TENANT, "slack", "Slack by consent", fake.connector_config(), keys, reason="setup")["id"])
    svc = stack.integrations
    url = svc.begin_consent(admin, TENANT, conn_id, REDIRECT, "install the app in the sales workspace")
    asked = query_of(url)
    assert asked["scope"] == "channels:read,channels:history,groups:read,groups:history,chat:write"
    answer = follow(fake, url)
    outcome = svc.complete_consent(admin, answer["state"], code=answer["code"], params=answer)
    assert outcome.ok, outcome.message
    creds = stack.engine.credentials_of(stack.connection(conn_id))
    assert creds["access_token"] and "refresh_token" not in creds  # a bot token that does not expire
    run = sync(stack, conn_id)
    assert run["status"] == "succeeded" and run["written"] > 0, run.get("error")

    # The same code presented again (a second consent's state): Slack answers ok=false, invalid_code.
    again = follow(fake, svc.begin_consent(admin, TENANT, conn_id, REDIRECT, "install again"))
    replay = svc.complete_consent(admin, again["state"], code=answer["code"])
    assert not replay.ok and "refused the authorization code" in replay.message and "invalid_code" in replay.message


def test_a_state_is_accepted_once_even_when_two_tabs_race(
    stack: Stack, admin: Principal, fakes: dict[str, FakeVendor]
) -> None:
    fake, conn_id = start_connected(stack, fakes, "salesforce")
    svc = stack.integrations
    answer = follow(fake, svc.begin_consent(admin, TENANT, conn_id, REDIRECT, "connect"))

    results: list[Any] = []
    barrier = threading.Barrier(2)

    def finish() -> None:
        barrier.wait()
        try:
            results.append(svc.complete_consent(admin, answer["state"], code=answer["code"]))
        except Invalid as e:
            results.append(e)

    tabs = [threading.Thread(target=finish) for _ in range(2)]
    for t in tabs:
        t.start()
    for t in tabs:
        t.join(timeout=30)
    connected = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, Invalid)]
    assert len(connected) == 1 and connected[0].ok
    assert len(refused) == 1 and "already used" in refused[0].message
    assert fake.oauth.code_exchanges == 1

    with pytest.raises(Invalid, match="already used"):  # a reload of the callback page later
        svc.complete_consent(admin, answer["state"], code=answer["code"])


def test_expired_unknown_and_foreign_states_are_refused_and_redeem_nothing(
    stack: Stack, admin: Principal, fakes: dict[str, FakeVendor]
) -> None:
    fake, conn_id = start_connected(stack, fakes, "hubspot")
    svc = stack.integrations
    answer = follow(fake, svc.begin_consent(admin, TENANT, conn_id, REDIRECT, "connect"))

    with pytest.raises(Invalid, match="unknown"):
        svc.complete_consent(admin, "not-a-state-we-issued", code=answer["code"])
    with pytest.raises(Invalid, match="no state"):
        svc.complete_consent(admin, "", code=answer["code"])

    other_admin = user(stack, ADMIN, "other-admin@example.com")
    with pytest.raises(Forbidden, match="another user"):
        svc.complete_consent(other_admin, answer["state"], code=answer["code"])
    ops = user(stack, OPS, "ops@example.com")
    with pytest.raises(Forbidden):
        svc.complete_consent(ops, answer["state"], code=answer["code"])
    with pytest.raises(Forbidden):
        svc.begin_consent(ops, TENANT, conn_id, REDIRECT, "connect")

    real_now = svc.now
    svc.now = lambda: real_now() + timedelta(minutes=11)
    try:
        with pytest.raises(Invalid, match="expired"):
            svc.complete_consent(admin, answer["state"], code=answer["code"])
    finally:
        svc.now = real_now
    assert fake.oauth.code_exchanges == 0
    assert "refresh_token" not in stack.engine.credentials_of(stack.connection(conn_id))

    # None of the refusals spent the state: its owner, in time, still connects.
    assert svc.complete_consent(admin, answer["state"], code=answer["code"]).ok
    assert fake.oauth.code_exchanges == 1

    # Two days on, starting another consent purges the spent record.
    svc.now = lambda: real_now() + timedelta(days=2)
    try:
        svc.begin_consent(admin, TENANT, conn_id, REDIRECT, "reconnect later")
    finally:
        svc.now = real_now
    records = stack.services.store.query(CONSENTS, None)
    assert len(records) == 1 and records[0]["usedAt"] is None and records[0]["reason"] == "reconnect later"


def test_a_declined_consent_is_recorded_and_shown_and_changes_no_credentials(
    stack: Stack, admin: Principal, fakes: dict[str, FakeVendor]
) -> None:
    fake, conn_id = start_connected(stack, fakes, "salesforce")
    svc = stack.integrations
    sealed_before = stack.connection(conn_id)["credentialsSealed"]
    fake.oauth.deny_consent = True
    answer = follow(fake, svc.begin_consent(admin, TENANT, conn_id, REDIRECT, "reconnect after revocation"))
    assert answer["error"] == "access_denied" and "code" not in answer

    outcome = svc.complete_consent(admin, answer["state"], error=answer["error"],
                                   error_description=answer["error_description"], params=answer)
    assert not outcome.ok and outcome.error == "access_denied"
    assert "declined" in outcome.message and "denied the request" in outcome.message
    conn = stack.connection(conn_id)
    assert conn["credentialsSealed"] == sealed_before
    assert conn["lastConsent"]["ok"] is False and "declined" in conn["lastConsent"]["message"]
    declined = audit_rows(stack, "integration.consent_declined")
    assert len(declined) == 1 and declined[0]["reason"] == "reconnect after revocation"
    assert declined[0]["after"]["error"] == "access_denied"
    with pytest.raises(Invalid, match="already used"):
        svc.complete_consent(admin, answer["state"], error="access_denied")


def test_a_code_the_vendor_refuses_is_a_config_outcome(
    stack: Stack, admin: Principal, fakes: dict[str, FakeVendor]
) -> None:
    fake, conn_id = start_connected(stack, fakes, "salesforce")
    svc = stack.integrations
    # Two consents: the code of the first presented with the state (and PKCE verifier) of the second.
    first = follow(fake, svc.begin_consent(admin, TENANT, conn_id, REDIRECT, "connect"))
    second = follow(fake, svc.begin_consent(admin, TENANT, conn_id, REDIRECT, "connect again"))
    outcome = svc.complete_consent(admin, second["state"], code=first["code"])
    assert not outcome.ok and outcome.error == "config"
    assert "refused the authorization code" in outcome.message and "invalid code verifier" in outcome.message
    assert fake.oauth.code_exchanges == 0
    assert len(audit_rows(stack, "integration.consent_failed")) == 1
    assert "refresh_token" not in stack.engine.credentials_of(stack.connection(conn_id))


@pytest.mark.parametrize("provider", ["dynamics365", "msgraph"])
def test_msal_consent_makes_the_connection_delegated(
    stack: Stack, admin: Principal, fakes: dict[str, FakeVendor], provider: str
) -> None:
    fake, conn_id = start_connected(stack, fakes, provider)
    svc = stack.integrations
    url = svc.begin_consent(admin, TENANT, conn_id, REDIRECT, "delegated access")
    asked = query_of(url)
    assert urllib.parse.urlsplit(url).path.endswith("/oauth2/v2.0/authorize")
    assert asked["code_challenge_method"] == "S256" and "offline_access" in asked["scope"].split()
    answer = follow(fake, url)
    outcome = svc.complete_consent(admin, answer["state"], code=answer["code"], params=answer)
    assert outcome.ok, outcome.message
    redeemed = fake.oauth.token_forms[-1]
    assert redeemed["grant_type"] == "authorization_code" and redeemed["code_verifier"]

    grants_before = fake.oauth.client_credential_grants
    fake.oauth.expire_access_tokens()
    run = sync(stack, conn_id)
    assert run["status"] == "succeeded", run.get("error")
    assert fake.oauth.refreshes == 1  # a refresh-token grant with the consent's token ...
    assert fake.oauth.client_credential_grants == grants_before  # ... not app-only tokens any more
    assert stack.connection(conn_id)["token"]["auth"] == "oauth2_refresh"


def test_connectors_without_consent_and_apps_without_keys_say_what_to_do(
    stack: Stack, admin: Principal, fakes: dict[str, FakeVendor]
) -> None:
    svc = stack.integrations
    folder = stack.services.settings.data_dir / "drop"
    folder.mkdir(parents=True)
    files_id = stack.integrations.create_connection(
        SYSTEM, TENANT, "localfiles", "Shared folder", {"path": str(folder)}, {}, reason="setup",
    )["id"]
    assert not svc.provider("localfiles").consent and svc.provider("notion").consent
    with pytest.raises(Invalid, match="not connected through a consent page"):
        svc.begin_consent(admin, TENANT, files_id, REDIRECT, "connect")

    notion = start(fakes, "notion")  # an internal integration: its token, no public integration keys
    internal = stack.integrations.create_connection(
        SYSTEM, TENANT, "notion", "Notion", notion.connector_config(),
        {"access_token": notion.oauth.initial_access_token}, reason="setup",
    )["id"]
    with pytest.raises(ConfigError, match="client id and client secret"):
        svc.begin_consent(admin, TENANT, internal, REDIRECT, "connect")

    hubspot = start(fakes, "hubspot")
    private_app = stack.integrations.create_connection(
        SYSTEM, TENANT, "hubspot", "HubSpot private app", hubspot.connector_config(),
        {"access_token": "pat-na1-123"}, reason="setup",
    )["id"]
    with pytest.raises(ConfigError, match="client id and client secret"):
        svc.begin_consent(admin, TENANT, private_app, REDIRECT, "connect")
    with pytest.raises(Invalid, match="reason"):
        svc.begin_consent(admin, TENANT, private_app, REDIRECT, "  ")
    assert stack.services.store.query(CONSENTS, None) == []
