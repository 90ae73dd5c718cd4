"""Integrations page under AppTest: Connect with <vendor> (reason, consent link) and the vendor's callback handling."""

from __future__ import annotations

import ssl
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from core.bootstrap import Services
from core.services.access import Principal
from core.services.integrations import CONSENTS
from tests.app.apptest_helpers import open_page, texts
from tests.fakes.vendors.salesforce import FakeSalesforce

REDIRECT = "http://localhost:8501/integrations"  # the page's own address when CASTIEL_CONSOLE_URL is unset


@pytest.fixture
def salesforce() -> Iterator[FakeSalesforce]:
    fake = FakeSalesforce(accounts=3, opportunities=4, contacts=2, tasks=1)
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def conn_id(app_env: Any, services: Services, principals: dict[str, Principal], salesforce: FakeSalesforce) -> str:
    keys = {"client_id": salesforce.oauth.client_id, "client_secret": salesforce.oauth.client_secret}
    conn = services.integrations.create_connection(
        principals["admin"], "tenant-a", "salesforce", "Acme Salesforce", salesforce.connector_config(), keys,
        reason="setup",
    )
    return str(conn["id"])


def vendor_answer(fake: FakeSalesforce, url: str) -> dict[str, str]:
    """The browser at the vendor: the fake consents at once and redirects back to the console."""
    with httpx.Client(verify=ssl.create_default_context(cafile=fake.ca_bundle)) as http:
        answer = http.get(url, follow_redirects=False)
    location = answer.headers["location"]
    assert answer.status_code == 302 and location.startswith(REDIRECT + "?")
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))


def callback(principal: Principal, answer: dict[str, str]) -> Any:
    """The vendor's redirect landing on /integrations?code=..&state=.. (or ?error=..&state=..)."""
    at = open_page("integrations", principal)
    for k, v in answer.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, at.exception
    return at


def credentials(services: Services, conn_id: str) -> dict[str, Any]:
    conn = services.store.get("connections", "tenant-a", conn_id)
    return services.sync_engine.credentials_of(conn)


def test_admin_connects_with_a_reason_and_gets_the_vendor_link(
    services: Services, principals: dict[str, Principal], salesforce: FakeSalesforce, conn_id: str
) -> None:
    at = open_page("integrations", principals["admin"])
    at.query_params["connection"] = conn_id
    at.run()
    assert "Connect with Salesforce" in texts(at)
    at.button(key="integ_consent_open").click().run()
    at.button(key="integ_dlg_consent_go").click().run()
    assert "a reason is required to connect an account" in texts(at)
    assert services.store.query(CONSENTS, None) == []
    at.text_area(key="integ_dlg_consent_reason").input("customer re-authorised the integration user")
    at.button(key="integ_dlg_consent_go").click().run()
    assert not at.exception, at.exception
    links = at.get("link_button")
    assert len(links) == 1
    url = links[0].proto.url
    assert url.startswith(f"{salesforce.url}/services/oauth2/authorize?")
    asked = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    assert asked["redirect_uri"] == REDIRECT and asked["code_challenge_method"] == "S256"
    record = services.store.query(CONSENTS, None)
    assert len(record) == 1 and record[0]["connectionId"] == conn_id
    assert record[0]["reason"] == "customer re-authorised the integration user"


def test_callback_connects_clears_the_answer_and_opens_the_connection(
    services: Services, principals: dict[str, Principal], salesforce: FakeSalesforce, conn_id: str
) -> None:
    admin = principals["admin"]
    url = services.integrations.begin_consent(admin, "tenant-a", conn_id, REDIRECT, "onboarding")
    answer = vendor_answer(salesforce, url)
    at = callback(admin, answer)
    assert "Salesforce account connected" in texts(at)
    assert at.title[0].value == "Acme Salesforce"  # deep-linked to the connection's detail
    assert at.query_params["connection"] == conn_id
    assert not {"code", "state"} & set(at.query_params.keys())
    assert credentials(services, conn_id)["refresh_token"] in salesforce.oauth.refresh_tokens
    assert "connected" in texts(at) and "Last consent" in texts(at)

    replay = callback(admin, answer)  # the same answer again (a reload, a second tab)
    assert "already used" in texts(replay)
    assert salesforce.oauth.code_exchanges == 1


def test_a_declined_consent_is_shown_plainly_on_the_connection(
    services: Services, principals: dict[str, Principal], salesforce: FakeSalesforce, conn_id: str
) -> None:
    admin = principals["admin"]
    salesforce.oauth.deny_consent = True
    answer = vendor_answer(salesforce, services.integrations.begin_consent(admin, "tenant-a", conn_id, REDIRECT,
                                                                            "reconnect"))
    at = callback(admin, answer)
    shown = " ".join(str(w.value) for w in at.warning)
    assert "Salesforce consent was declined (access_denied)" in shown and "Nothing changed" in shown
    assert at.title[0].value == "Acme Salesforce"
    assert "error" not in at.query_params and "state" not in at.query_params
    assert "refresh_token" not in credentials(services, conn_id)


def test_someone_else_cannot_finish_an_admins_consent(
    services: Services, principals: dict[str, Principal], salesforce: FakeSalesforce, conn_id: str
) -> None:
    admin = principals["admin"]
    answer = vendor_answer(salesforce, services.integrations.begin_consent(admin, "tenant-a", conn_id, REDIRECT,
                                                                            "onboarding"))
    ops = callback(principals["ops"], answer)
    refused = " ".join(str(e.value) for e in ops.error)
    assert "Not authorised: your role (Ops) may not do this; needs: Admin" in refused, refused
    assert salesforce.oauth.code_exchanges == 0
    detail = open_page("integrations", principals["ops"])
    detail.query_params["connection"] = conn_id
    detail.run()
    assert not detail.exception and "Connect with Salesforce" not in texts(detail)
    assert callback(admin, answer).title[0].value == "Acme Salesforce"  # the admin still can
    assert salesforce.oauth.code_exchanges == 1
