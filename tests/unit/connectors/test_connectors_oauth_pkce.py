"""Consent building blocks: PKCE (RFC 7636), the authorize URL, the code exchange and its error mapping."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from connectors.base import build_connector
from connectors.oauth2 import (
    OAuth2Client,
    OAuth2Consent,
    StaticToken,
    authorization_error,
    authorization_url,
    pkce_challenge,
    pkce_pair,
)
from core.errors import ConfigError, Invalid
from tests.unit.connectors.token_endpoint import NO_SLEEP, TokenEndpoint

REDIRECT = "https://console.example/integrations"


def consenting_client(endpoint: TokenEndpoint, now: float = 1_000_000.0) -> OAuth2Client:
    return OAuth2Client(
        "Acme", "https://acme.example/oauth/token", client_id="app-id", client_secret="app-secret", credentials={},
        http=httpx.Client(transport=httpx.MockTransport(endpoint)), retry=NO_SLEEP, grant="authorization_code",
        refresh_token_lifetime_days=90, clock=lambda: now,
    )


def test_pkce_matches_the_rfc_7636_example_and_verifiers_are_fresh_and_well_formed():
    rfc_verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"  # RFC 7636 appendix B
    assert pkce_challenge(rfc_verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    pairs = [pkce_pair() for _ in range(20)]
    assert len({v for v, _ in pairs}) == 20
    for verifier, challenge in pairs:
        assert 43 <= len(verifier) <= 128 and re.fullmatch(r"[A-Za-z0-9\-._~]+", verifier)
        assert challenge == pkce_challenge(verifier) and "=" not in challenge and len(challenge) == 43


def test_authorize_url_carries_the_request_and_keeps_what_the_endpoint_already_had():
    url = authorization_url(
        "https://login.acme.example/authorize?tenant=t1", client_id="app-id", redirect_uri=REDIRECT, state="s-1",
        scopes=("api", "refresh_token"), code_challenge="ch", extra_params={"prompt": "consent"},
    )
    parts = urlsplit(url)
    q = dict(parse_qsl(parts.query))
    assert parts.netloc == "login.acme.example" and parts.path == "/authorize"
    assert q == {"tenant": "t1", "response_type": "code", "client_id": "app-id", "redirect_uri": REDIRECT,
                 "state": "s-1", "scope": "api refresh_token", "code_challenge": "ch",
                 "code_challenge_method": "S256", "prompt": "consent"}
    plain = dict(parse_qsl(urlsplit(authorization_url(
        "https://a.example/auth", client_id="c", redirect_uri=REDIRECT, state="s", scopes=("a", "b"),
        scope_separator=",")).query))
    assert plain["scope"] == "a,b" and "code_challenge" not in plain and "code_challenge_method" not in plain


def test_consent_sends_a_challenge_and_redeems_with_its_verifier_then_refreshes_with_the_new_token():
    endpoint = TokenEndpoint(
        (200, {"access_token": "a1", "refresh_token": "r1", "expires_in": 3600, "token_type": "Bearer"}),
        (200, {"access_token": "a2", "expires_in": 3600}),
    )
    client = consenting_client(endpoint)
    flow = OAuth2Consent(client, "https://acme.example/authorize", ("read",), pkce=True)
    start = flow.begin(REDIRECT, "state-1")
    asked = dict(parse_qsl(urlsplit(start.url).query))
    verifier = start.secret["code_verifier"]
    assert asked["code_challenge"] == pkce_challenge(verifier) and asked["state"] == "state-1"

    result = flow.complete(start.secret, REDIRECT, {"code": "c-1", "state": "state-1"})
    form = endpoint.forms[0]
    assert form == {"grant_type": "authorization_code", "code": "c-1", "redirect_uri": REDIRECT,
                    "code_verifier": verifier, "client_id": "app-id", "client_secret": "app-secret"}
    assert result.tokens["refresh_token"] == "r1" and result.tokens["expires_at"] == 1_000_000.0 + 3600
    assert result.tokens["refresh_token_issued_at"] == 1_000_000.0
    assert result.token_info["auth"] == "oauth2_refresh" and result.token_info["refresh_token_lifetime_days"] == 90

    assert client.refresh() == "a2"  # from now on the client refreshes with the consent's token
    assert endpoint.forms[1]["grant_type"] == "refresh_token" and endpoint.forms[1]["refresh_token"] == "r1"


def test_without_pkce_no_verifier_is_kept_or_sent():
    endpoint = TokenEndpoint((200, {"access_token": "a1", "refresh_token": "r1"}))
    flow = OAuth2Consent(consenting_client(endpoint), "https://acme.example/authorize", ("read",), pkce=False)
    start = flow.begin(REDIRECT, "s")
    assert start.secret == {} and "code_challenge" not in start.url
    flow.complete(start.secret, REDIRECT, {"code": "c", "state": "s"})
    assert "code_verifier" not in endpoint.forms[0]


def test_a_refused_code_is_config_and_an_unavailable_token_service_is_retried():
    refused = consenting_client(TokenEndpoint((400, {"error": "invalid_grant", "error_description": "code expired"})))
    with pytest.raises(ConfigError, match="refused the authorization code .*code expired.*Start Connect again"):
        refused.exchange_code("c", REDIRECT, "v")
    assert refused.grant == "authorization_code"

    flaky = TokenEndpoint((503, {"error": "temporarily_unavailable"}),
                          (200, {"access_token": "a", "refresh_token": "r"}))
    assert consenting_client(flaky).exchange_code("c", REDIRECT, "v")["refresh_token"] == "r"
    assert len(flaky.forms) == 2

    with pytest.raises(ConfigError, match="client id/secret"):
        consenting_client(TokenEndpoint((401, {"error": "invalid_client"}))).exchange_code("c", REDIRECT)


def test_the_vendors_error_redirect_is_a_plain_config_error():
    flow = OAuth2Consent(consenting_client(TokenEndpoint((200, {}))), "https://acme.example/authorize")
    with pytest.raises(ConfigError, match=r"consent was declined \(access_denied\) \(user said no\)"):
        flow.complete({}, REDIRECT, {"error": "access_denied", "error_description": "user said no", "state": "s"})
    with pytest.raises(ConfigError, match="without an authorization code"):
        flow.complete({}, REDIRECT, {"state": "s"})
    assert "registered redirect URI" in authorization_error("Acme", "invalid_request").message


def test_a_client_waiting_for_consent_hands_out_no_token_and_says_why():
    client = consenting_client(TokenEndpoint((200, {"access_token": "never"})))
    with pytest.raises(ConfigError, match="no refresh token; connect the account"):
        client.access_token()
    assert "connect the account" in client.info()["last_refresh_error"]
    with pytest.raises(ConfigError, match="client id and client secret"):
        OAuth2Consent(StaticToken("Acme", "t"), "https://acme.example/authorize")


def test_connectors_declare_their_consent_pages(tmp_path):
    creds = {"client_id": "id", "client_secret": "secret"}
    sf = build_connector("salesforce", {"instance_url": "https://acme.my.salesforce.com",
                                        "login_url": "https://login.salesforce.com"}, creds)
    url = sf.consent().begin(REDIRECT, "s").url
    assert url.startswith("https://login.salesforce.com/services/oauth2/authorize?")
    assert dict(parse_qsl(urlsplit(url).query))["scope"] == "api refresh_token"
    sf.close()

    hs = build_connector("hubspot", {}, creds)
    hs_url = hs.consent().begin(REDIRECT, "s").url
    assert hs_url.startswith("https://app.hubspot.com/oauth/authorize?") and "code_challenge" not in hs_url
    hs.close()

    gd = build_connector("gdrive", {}, creds)
    gq = dict(parse_qsl(urlsplit(gd.consent().begin(REDIRECT, "s").url).query))
    assert gq["access_type"] == "offline" and gq["scope"].endswith("/auth/drive.readonly")
    gd.close()

    slack = build_connector("slack", {}, creds)
    sq = dict(parse_qsl(urlsplit(slack.consent().begin(REDIRECT, "s").url).query))
    assert sq["scope"] == "channels:read,channels:history,groups:read,groups:history,chat:write"
    assert "code_challenge" not in sq
    slack.close()

    notion = build_connector("notion", {}, creds)
    nq = dict(parse_qsl(urlsplit(notion.consent().begin(REDIRECT, "s").url).query))
    assert nq["owner"] == "user" and "scope" not in nq
    notion.close()
    internal = build_connector("notion", {}, {"access_token": "secret_x"})  # an internal integration's token
    with pytest.raises(ConfigError, match="client id and client secret"):
        internal.consent()
    internal.close()

    files = build_connector("localfiles", {"path": str(tmp_path)}, {})
    with pytest.raises(Invalid, match="not connected through a consent page"):
        files.consent()
    files.close()
