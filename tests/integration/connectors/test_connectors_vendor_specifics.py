"""What differs per vendor: outbound writes, webhooks (signature + de-duplication), subscriptions, deletions, limits."""

from __future__ import annotations

import json

import pytest

from connectors.webhooks import MemorySeenIdStore, dedupe
from core.errors import ConfigError, Invalid, RateLimited
from tests.integration.connectors.conftest import sync

# -- outbound writes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "object_type", "fields", "check"),
    [
        (
            "salesforce",
            "opportunity",
            {"amount": 4321.0, "stage": "Closed Won"},
            lambda r: r.data["amount"] == 4321.0 and r.data["stage"] == "Closed Won",
        ),
        ("hubspot", "opportunity", {"amount": 4321.0}, lambda r: r.data["amount"] == 4321.0),
        ("dynamics365", "opportunity", {"amount": 4321.0}, lambda r: r.data["amount"] == 4321.0),
    ],
)
def test_outbound_update_lands_and_comes_back_on_the_next_sync(start_vendor, provider, object_type, fields, check):
    v = start_vendor(provider, records=12, page_size=5)
    connector = v.connector()
    first = sync(connector, v.case.stream)
    target = v.case.nth_id(v.fake, 4)
    assert connector.write(object_type, target, fields) == target
    second = sync(connector, v.case.stream, first.state, first.store)
    assert target in second.read and check(second.store[target])


@pytest.mark.parametrize("provider", ["salesforce", "hubspot", "dynamics365"])
def test_outbound_create_returns_the_vendor_id_and_rejects_bad_values(start_vendor, provider):
    v = start_vendor(provider, records=3, page_size=5)
    connector = v.connector()
    new_id = connector.write("opportunity", None, {"name": "Castiel upsell", "amount": 900.0})
    assert new_id and new_id in v.case.expected(v.fake)
    with pytest.raises(Invalid):
        connector.write("opportunity", v.case.nth_id(v.fake, 0), {"amount": "a lot"})
    with pytest.raises(Invalid, match="accept"):
        connector.write("opportunity", None, {"colour": "blue"})


def test_slack_posts_and_notion_updates_rows(start_vendor):
    slack = start_vendor("slack", records=6, page_size=5)
    sc = slack.connector()
    source_id = sc.write("message", None, {"channel": "C00000000", "text": "Deal signed"})
    assert source_id in slack.case.expected(slack.fake)
    with pytest.raises(ConfigError, match="channel"):
        sc.write("message", None, {"channel": "C99", "text": "x"})

    notion = start_vendor("notion", records=4, page_size=5)
    nc = notion.connector()
    rows = sync(nc, "rows")
    row_id = sorted(rows.store)[0]
    nc.write("row", row_id, {"Amount": {"number": 77}})
    again = sync(nc, "rows", rows.state, rows.store)
    assert again.store[row_id].data["properties"]["Amount"] == 77
    with pytest.raises(Invalid):
        nc.write("row", row_id, {"Amount": {"number": "many"}})


# -- webhooks ----------------------------------------------------------------------------------


def signed_delivery(v, connector):
    """(headers, body, forged_headers) of one genuine delivery for the vendor and a forged twin."""
    fake = v.fake
    if v.case.provider == "hubspot":
        headers, body = fake.webhook([fake.deal_event(101, v.case.nth_id(fake, 0))])
        forged, _ = fake.webhook([fake.deal_event(101, v.case.nth_id(fake, 0))], secret="not-the-secret")
    elif v.case.provider == "slack":
        ts = sorted(fake.expected_ids())[0].split(":")[1]
        headers, body = fake.event("Ev0101", "C00000000", ts)
        forged, _ = fake.event("Ev0101", "C00000000", ts, secret="not-the-secret")
    elif v.case.provider == "notion":
        headers, body = fake.webhook("evt-101", v.case.nth_id(fake, 0))
        forged, _ = fake.webhook("evt-101", v.case.nth_id(fake, 0), secret="not-the-secret")
    elif v.case.provider == "msgraph":
        sub = connector.manage_subscriptions([], "https://console.example/hooks/graph")[0]
        headers, body = {}, fake.notification(sub["id"])
        return headers, body, {}, fake.notification(sub["id"], client_state="guess")
    elif v.case.provider == "gdrive":
        channel = connector.manage_subscriptions([], "https://console.example/hooks/gdrive")[0]
        headers, body = fake.notification_headers(channel["id"], 7), b""
        forged = fake.notification_headers(channel["id"], 7, token="guess")
    else:  # dynamics365: a Dataverse service endpoint with an HttpHeader key
        body = json.dumps(
            {
                "MessageName": "Update",
                "PrimaryEntityName": "opportunity",
                "PrimaryEntityId": v.case.nth_id(fake, 0),
                "OperationId": "op-101",
                "RequestId": "req-101",
            }
        ).encode()
        headers, forged = {"x-dataverse-key": "dv-secret"}, {"x-dataverse-key": "guess"}
    return headers, body, forged, body


@pytest.mark.parametrize("provider", ["hubspot", "slack", "notion", "msgraph", "gdrive", "dynamics365"])
def test_webhooks_verify_signatures_and_duplicates_are_processed_once(start_vendor, provider):
    v = start_vendor(provider, records=5, page_size=5)
    extra = {"webhook_secret": "dv-secret"} if provider == "dynamics365" else {}
    connector = v.case.connector(v.fake, retry=None)
    if extra:
        connector.credentials.update(extra)
    headers, body, forged_headers, forged_body = signed_delivery(v, connector)
    events = connector.verify_webhook(headers, body)
    assert len(events) == 1 and events[0].event_id
    assert events[0].stream == v.case.stream or provider in ("dynamics365", "hubspot", "notion")
    seen = MemorySeenIdStore()
    assert len(dedupe(events, seen, scope="conn")) == 1
    assert dedupe(connector.verify_webhook(headers, body), seen, scope="conn") == []  # redelivery
    with pytest.raises(Invalid):
        connector.verify_webhook(forged_headers, forged_body)


def test_handshakes_echo_what_the_vendor_expects(start_vendor):
    graph = start_vendor("msgraph", records=2, page_size=5)
    assert graph.connector().webhook_handshake({"validationToken": "abc 123"}, {}, b"") == "abc 123"
    slack = start_vendor("slack", records=2, page_size=5)
    from connectors.webhooks import sign_slack

    body = json.dumps({"type": "url_verification", "challenge": "c-42"}).encode()
    assert slack.connector().webhook_handshake({}, sign_slack(slack.fake.signing_secret, body), body) == "c-42"
    with pytest.raises(Invalid):
        slack.connector().webhook_handshake({}, sign_slack("wrong", body), body)


# -- subscriptions -----------------------------------------------------------------------------


def test_graph_subscription_is_created_kept_and_renewed_before_expiry(start_vendor):
    v = start_vendor("msgraph", records=2, page_size=5)
    connector = v.connector()
    subs = connector.manage_subscriptions([], "https://console.example/hooks/graph")
    assert len(subs) == 1 and subs[0]["id"] in v.fake.subscriptions
    assert v.fake.subscriptions[subs[0]["id"]]["clientState"] == "graph-client-state-secret"
    assert connector.manage_subscriptions(subs, "https://console.example/hooks/graph") == subs  # far from expiry
    soon = [{**subs[0], "expiresAt": "2000-01-01T00:00:00.000000Z"}]
    renewed = connector.manage_subscriptions(soon, "https://console.example/hooks/graph")
    assert renewed[0]["id"] == subs[0]["id"] and renewed[0]["expiresAt"] > "2001"
    v.fake.subscriptions.clear()  # Graph deleted it after it lapsed
    replaced = connector.manage_subscriptions(soon, "https://console.example/hooks/graph")
    assert replaced[0]["id"] != subs[0]["id"] and replaced[0]["id"] in v.fake.subscriptions


# -- deletions and expired change tokens -------------------------------------------------------


@pytest.mark.parametrize("provider", ["salesforce", "dynamics365", "msgraph", "gdrive"])
def test_deletions_reach_the_store_through_incremental_feeds(start_vendor, provider):
    v = start_vendor(provider, records=12, page_size=5)
    connector = v.connector()
    first = sync(connector, v.case.stream)
    gone = v.case.nth_id(v.fake, 2)
    v.fake.table(v.case.table).delete(gone)
    second = sync(connector, v.case.stream, first.state, first.store)
    assert gone in second.read and gone not in second.store
    assert set(second.store) == v.case.expected(v.fake)


@pytest.mark.parametrize("provider", ["dynamics365", "msgraph"])
def test_an_expired_delta_token_restarts_a_full_read(start_vendor, provider):
    v = start_vendor(provider, records=12, page_size=5)
    connector = v.connector()
    first = sync(connector, v.case.stream)
    v.fake.expire_delta_tokens()
    second = sync(connector, v.case.stream, first.state, first.store)
    assert second.error is None
    assert len(second.read) == len(v.case.expected(v.fake))
    assert "deltaLink" in second.state


def test_hubspot_pages_past_the_search_apis_10000_result_cap(start_vendor):
    v = start_vendor("hubspot", records=10_450, page_size=200)
    result = sync(v.connector(), "deals")
    assert result.error is None
    assert set(result.store) == v.case.expected(v.fake)
    assert len(result.read) - len(result.store) <= 2  # one boundary repeat per restarted search


def test_salesforce_daily_api_limit_is_rate_limited_for_an_hour_without_blocking(start_vendor):
    v = start_vendor("salesforce", records=5, page_size=5)
    v.fake.faults.fail(
        403,
        times=5,
        match=r"/query",
        body=[{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}],
    )
    result = sync(v.connector(), "opportunities")
    assert isinstance(result.error, RateLimited) and result.error.retry_after == 3600.0
    assert v.sleeps == []


def test_other_salesforce_streams_and_refresh_token_use(start_vendor):
    v = start_vendor("salesforce", records=3, page_size=5)
    connector = v.connector()
    for stream, table in (("accounts", "Account"), ("contacts", "Contact"), ("tasks", "Task")):
        assert set(sync(connector, stream).store) == v.fake.expected_ids(table)
    info = connector.token_info()
    assert info["auth"] == "oauth2_refresh" and info["last_refresh_at"]
    assert "daily API requests left" in connector.test_connection()


def test_dynamics_tokens_come_from_azure_ad_via_msal_and_bad_secrets_need_a_person(start_vendor):
    v = start_vendor("dynamics365", records=3, page_size=5)
    assert "Connected to" in v.connector().test_connection()
    assert v.fake.oauth.client_credential_grants == 1
    bad = v.case.connector(v.fake, retry=None)
    bad.auth.client_secret = "wrong"
    with pytest.raises(ConfigError, match="client id/secret"):
        bad.test_connection()


def test_slack_resumes_mid_channel_and_notion_rows_advance_per_page(start_vendor):
    v = start_vendor("slack", records=45, page_size=4)
    connector = v.connector(max_attempts=2)
    v.fake.faults.die_after_pages(3)
    first = sync(connector, "messages")
    assert first.error is not None and first.state.get("current", {}).get("cursor")
    v.fake.faults.revive()
    second = sync(v.connector(), "messages", first.state, first.store)
    assert set(second.store) == v.case.expected(v.fake) and not set(first.read) & set(second.read)

    n = start_vendor("notion", records=2, page_size=3, rows=10)
    rows = list(n.connector().read_pages("rows", None))
    marks = [p.next_state["sources"][n.fake.data_source_id] for p in rows]
    assert marks == sorted(marks) and len(set(marks)) == len(marks)


def test_hubspot_deals_carry_their_company_from_the_associations_api(start_vendor):
    v = start_vendor("hubspot", records=12, page_size=5, companies=4)
    result = sync(v.connector(), "deals")
    assert {r.data["accountId"] for r in result.store.values()} == {"5000", "5001", "5002", "5003"}
    assert result.store["9005"].data["accountId"] == "5001"


def test_a_fake_can_run_in_its_own_process_for_benchmarks():
    import subprocess
    import sys

    from connectors.base import build_connector
    from connectors.retry import fast_policy

    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.vendors.serve", "hubspot", "--records", "250", "--page-size", "100"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        info = json.loads(proc.stdout.readline())
        connector = build_connector(info["provider"], info["config"], info["credentials"], retry=fast_policy())
        result = sync(connector, info["stream"])
        assert result.error is None and len(result.store) == info["expected"] == 250
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
