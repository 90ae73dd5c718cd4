"""OAuth2 token providers against a scripted token endpoint (httpx MockTransport)."""

from __future__ import annotations

import httpx
import pytest

from connectors.base import MemoryTokenStore
from connectors.oauth2 import OAuth2Client, StaticToken
from core.errors import ConfigError
from tests.unit.connectors.token_endpoint import NO_SLEEP, TokenEndpoint


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def client(endpoint: TokenEndpoint, clock: Clock, store: MemoryTokenStore | None = None, **creds) -> OAuth2Client:
    credentials = {"refresh_token": "r1", **creds}
    return OAuth2Client(
        "Acme",
        "https://acme.example/token",
        client_id="id",
        client_secret="secret",
        credentials=credentials,
        http=httpx.Client(transport=httpx.MockTransport(endpoint)),
        retry=NO_SLEEP,
        token_store=store,
        refresh_margin=300,
        refresh_token_lifetime_days=90,
        clock=clock,
    )


def test_refreshes_ahead_of_expiry_and_persists_new_tokens():
    endpoint = TokenEndpoint((200, {"access_token": "a2", "expires_in": 3600}))
    clock = Clock()
    store = MemoryTokenStore()
    c = client(endpoint, clock, store, access_token="a1", expires_at=clock.t + 3600)
    assert c.access_token() == "a1"  # fresh: no call
    assert endpoint.forms == []
    clock.t += 3600 - 299  # inside the 300 s margin
    assert c.access_token() == "a2"
    assert endpoint.forms[0]["grant_type"] == "refresh_token" and endpoint.forms[0]["refresh_token"] == "r1"
    assert store.latest["access_token"] == "a2"
    assert store.latest["expires_at"] == pytest.approx(clock.t + 3600)
    info = c.info()
    assert info["auth"] == "oauth2_refresh" and info["access_token_expires_at"].endswith("Z")
    assert info["refresh_token_lifetime_days"] == 90


def test_a_rotated_refresh_token_restarts_its_lifetime_clock():
    endpoint = TokenEndpoint((200, {"access_token": "a2", "refresh_token": "r2", "expires_in": 1800}))
    clock = Clock()
    store = MemoryTokenStore()
    c = client(endpoint, clock, store)
    c.access_token()
    assert store.latest["refresh_token"] == "r2"
    assert store.latest["refresh_token_issued_at"] == clock.t
    assert c.info()["refresh_token_issued_at"] is not None


def test_invalid_grant_means_reconnect_and_is_recorded():
    endpoint = TokenEndpoint((400, {"error": "invalid_grant", "error_description": "Token has been revoked."}))
    c = client(endpoint, Clock())
    with pytest.raises(ConfigError, match="revoked or expired. Reconnect"):
        c.access_token()
    assert len(endpoint.forms) == 1  # not retried
    assert "invalid_grant" in c.info()["last_refresh_error"]


def test_token_service_outage_is_retried():
    endpoint = TokenEndpoint(
        (503, {"error": "temporarily_unavailable"}), (200, {"access_token": "a9", "expires_in": 60})
    )
    c = client(endpoint, Clock())
    assert c.access_token() == "a9"
    assert len(endpoint.forms) == 2


def test_vendor_specific_error_bodies_map_through_the_hook():
    endpoint = TokenEndpoint((200, {"ok": False, "error": "invalid_refresh_token"}))
    c = OAuth2Client(
        "Slack",
        "https://slack.example/api/oauth.v2.access",
        client_id="id",
        client_secret="secret",
        credentials={"refresh_token": "r"},
        http=httpx.Client(transport=httpx.MockTransport(endpoint)),
        retry=NO_SLEEP,
        response_error=lambda body: (body["error"], "") if body.get("ok") is False else None,
    )
    with pytest.raises(ConfigError, match="Reconnect"):
        c.refresh()


def test_no_advertised_lifetime_means_use_until_rejected():
    endpoint = TokenEndpoint((200, {"access_token": "a2"}))
    clock = Clock()
    c = client(endpoint, clock, access_token="a1")
    clock.t += 10 * 86400
    assert c.access_token() == "a1"
    assert c.refresh() == "a2"  # what a 401 triggers
    assert c.tokens["expires_at"] is None


def test_client_credentials_grant_sends_scope_and_no_refresh_token():
    endpoint = TokenEndpoint((200, {"access_token": "app", "expires_in": 3599}))
    c = OAuth2Client(
        "Acme",
        "https://acme.example/token",
        client_id="id",
        client_secret="secret",
        credentials={},
        http=httpx.Client(transport=httpx.MockTransport(endpoint)),
        retry=NO_SLEEP,
        grant="client_credentials",
        scope="api/.default",
    )
    assert c.access_token() == "app"
    assert endpoint.forms[0]["grant_type"] == "client_credentials" and endpoint.forms[0]["scope"] == "api/.default"
    assert "refresh_token" not in endpoint.forms[0]
    assert c.info()["auth"] == "client_credentials"


def test_missing_pieces_are_config_errors():
    with pytest.raises(ConfigError, match="no refresh token"):
        client(TokenEndpoint((200, {})), Clock(), refresh_token="")
    with pytest.raises(ConfigError, match="no API token"):
        StaticToken("Notion", "")
    with pytest.raises(ConfigError, match="revoked"):
        StaticToken("Notion", "t").refresh()
