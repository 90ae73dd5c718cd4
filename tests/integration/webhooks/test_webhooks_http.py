"""The worker's webhook listener over real HTTP on loopback: signed deliveries, duplicates, refusals, handshakes."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from connectors.webhooks import sign_hubspot_v3, sign_slack
from core.bootstrap import Services
from core.errors import Conflict, StoreUnavailable
from core.services.access import SYSTEM
from core.services.webhook_receipt import MAX_BODY_BYTES, REJECTED_ACTION, WebhookReceiver
from jobs import tasks
from jobs.webhooks import WebhookServer, receiver_for, start_webhook_server

TENANT = "t-hooks"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
WEBHOOK_QUEUE = "sync-inbound-webhook"


@pytest.fixture
def hooks(services: Services) -> Iterator[WebhookServer]:
    services.tenants.create(SYSTEM, TENANT, "Webhook tenant", reason="test")
    server = WebhookServer(receiver_for(services), "127.0.0.1", 0)
    yield server
    server.stop()


def slack_connection(services: Services, signing_secret: str | None = SIGNING_SECRET) -> str:
    creds = {"access_token": "xoxb-test-token"}
    if signing_secret:
        creds["signing_secret"] = signing_secret
    conn = services.integrations.create_connection(
        SYSTEM, TENANT, "slack", "Team chat", {"base_url": "http://127.0.0.1:9"}, creds, reason="test"
    )
    return str(conn["id"])


def slack_event(event_id: str, ts: str = "1700000000.000100", kind: str = "event_callback") -> bytes:
    return json.dumps(
        {
            "token": "legacy-token-ignored",
            "team_id": "T0001",
            "api_app_id": "A0001",
            "type": kind,
            "event_id": event_id,
            "event_time": int(time.time()),
            "event": {
                "type": "message",
                "channel": "C0001",
                "user": "U0001",
                "text": "deal closed",
                "ts": ts,
                "event_ts": ts,
                "channel_type": "channel",
            },
        }
    ).encode()


def post(server: WebhookServer, path: str, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        f"{server.url}{path}", content=body, headers={"Content-Type": "application/json", **(headers or {})}, timeout=10
    )


def webhook_jobs(services: Services) -> list[dict[str, Any]]:
    return services.store.query("jobs", TENANT, {"queue": WEBHOOK_QUEUE})


def test_signed_slack_event_is_accepted_and_enqueued_once(services: Services, hooks: WebhookServer):
    conn_id = slack_connection(services)
    body = slack_event("Ev0001")
    r = post(hooks, f"/webhooks/{TENANT}/{conn_id}", body, sign_slack(SIGNING_SECRET, body))
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "accepted", "accepted": 1, "duplicates": 0}
    jobs = webhook_jobs(services)
    assert len(jobs) == 1
    tasks.load_all()
    assert jobs[0]["kind"] in tasks.HANDLERS, "the enqueued kind must have a worker handler"
    run = services.store.get("sync_runs", TENANT, jobs[0]["payload"]["runId"])
    assert run["trigger"]["type"] == "webhook" and run["trigger"]["eventIds"] == ["Ev0001"]
    assert run["streams"] == ["messages"] and run["status"] == "queued"
    events = services.store.query("webhook_events", TENANT, {"connectionId": conn_id})
    assert [e["eventId"] for e in events] == ["Ev0001"]
    hook = services.store.get("connections", TENANT, conn_id)["webhook"]
    assert hook["lastEventAt"] and hook["eventsReceived"] == 1


def test_the_same_event_delivered_twice_is_enqueued_once(services: Services, hooks: WebhookServer):
    conn_id = slack_connection(services)
    body = slack_event("Ev0002")
    path = f"/webhooks/{TENANT}/{conn_id}"
    first = post(hooks, path, body, sign_slack(SIGNING_SECRET, body))
    # Slack redelivers with a fresh timestamp and signature but the same event_id.
    again = post(hooks, path, body, {**sign_slack(SIGNING_SECRET, body), "X-Slack-Retry-Num": "1"})
    assert first.json()["status"] == "accepted"
    assert again.status_code == 200 and again.json() == {"status": "duplicate", "accepted": 0, "duplicates": 1}
    assert len(webhook_jobs(services)) == 1
    assert services.store.count("webhook_events", TENANT) == 1
    hook = services.store.get("connections", TENANT, conn_id)["webhook"]
    assert hook["eventsReceived"] == 1 and hook["duplicates"] == 1


def test_duplicates_racing_on_many_connections_still_enqueue_once(services: Services, hooks: WebhookServer):
    """Eight simultaneous redeliveries (the listener's thread pool serves them in parallel) -> one event, one job."""
    from concurrent.futures import ThreadPoolExecutor

    conn_id = slack_connection(services)
    body = slack_event("Ev0003")
    path = f"/webhooks/{TENANT}/{conn_id}"
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: post(hooks, path, body, sign_slack(SIGNING_SECRET, body)), range(8)))
    statuses = sorted(a.json()["status"] for a in answers)
    assert all(a.status_code == 200 for a in answers)
    assert statuses.count("accepted") == 1 and statuses.count("duplicate") == 7
    assert len(webhook_jobs(services)) == 1
    assert services.store.count("webhook_events", TENANT) == 1


def test_bad_signature_is_refused_with_401_and_audited(services: Services, hooks: WebhookServer):
    conn_id = slack_connection(services)
    body = slack_event("Ev0004")
    headers = sign_slack(SIGNING_SECRET, body)
    tampered = body.replace(b"deal closed", b"deal lost!!")
    r = post(hooks, f"/webhooks/{TENANT}/{conn_id}", tampered, headers)
    assert r.status_code == 401
    assert "signature" in r.json()["error"]
    audit = services.store.query("audit", TENANT, {"action": REJECTED_ACTION})
    assert len(audit) == 1
    assert audit[0]["target"] == f"connection:{conn_id}" and "signature" in audit[0]["reason"]
    assert webhook_jobs(services) == []
    assert services.store.count("webhook_events", TENANT) == 0


def test_stale_timestamp_is_refused_as_a_replay(services: Services, hooks: WebhookServer):
    conn_id = slack_connection(services)
    body = slack_event("Ev0005")
    r = post(hooks, f"/webhooks/{TENANT}/{conn_id}", body, sign_slack(SIGNING_SECRET, body, ts=time.time() - 3600))
    assert r.status_code == 401 and "replay" in r.json()["error"]
    assert len(services.store.query("audit", TENANT, {"action": REJECTED_ACTION})) == 1
    assert webhook_jobs(services) == []


def test_connection_without_a_signing_secret_refuses_and_audits(services: Services, hooks: WebhookServer):
    conn_id = slack_connection(services, signing_secret=None)
    body = slack_event("Ev0006")
    r = post(hooks, f"/webhooks/{TENANT}/{conn_id}", body, sign_slack("whatever", body))
    assert r.status_code == 401 and "no signing secret" in r.json()["error"]
    audit = services.store.query("audit", TENANT, {"action": REJECTED_ACTION})
    assert len(audit) == 1 and "no signing secret" in audit[0]["reason"]
    assert webhook_jobs(services) == []


def test_unknown_connection_tenant_or_path_is_404(services: Services, hooks: WebhookServer):
    slack_connection(services)
    body = slack_event("Ev0007")
    signed = sign_slack(SIGNING_SECRET, body)
    missing = post(hooks, f"/webhooks/{TENANT}/conn-doesnotexist", body, signed)
    assert missing.status_code == 404 and "conn-doesnotexist" in missing.json()["error"]
    assert post(hooks, "/webhooks/no-such-tenant/conn-x", body, signed).status_code == 404
    assert post(hooks, "/webhooks/only-one-part", body, signed).status_code == 404
    assert post(hooks, "/elsewhere", body, signed).status_code == 404
    assert post(hooks, f"/webhooks/{TENANT}/..%2F..%2Fetc", body, signed).status_code == 404
    assert webhook_jobs(services) == []
    assert services.store.query("audit", TENANT, {"action": REJECTED_ACTION}) == []


def test_wrong_method_is_405(services: Services, hooks: WebhookServer):
    conn_id = slack_connection(services)
    r = httpx.get(f"{hooks.url}/webhooks/{TENANT}/{conn_id}", timeout=10)
    assert r.status_code == 405 and r.headers["Allow"] == "POST"
    assert httpx.put(f"{hooks.url}/webhooks/{TENANT}/{conn_id}", content=b"{}", timeout=10).status_code == 405


def test_oversize_body_is_413_and_never_verified(services: Services, hooks: WebhookServer):
    conn_id = slack_connection(services)
    body = b'{"type": "event_callback", "pad": "' + b"x" * MAX_BODY_BYTES + b'"}'
    r = post(hooks, f"/webhooks/{TENANT}/{conn_id}", body, sign_slack(SIGNING_SECRET, body))
    assert r.status_code == 413 and str(MAX_BODY_BYTES) in r.json()["error"]
    assert webhook_jobs(services) == []
    assert services.store.count("webhook_events", TENANT) == 0
    # Exactly at the cap is still read (and here refused for its signature, which proves it was processed).
    at_cap = b"{" + b" " * (MAX_BODY_BYTES - 2) + b"}"
    assert post(hooks, f"/webhooks/{TENANT}/{conn_id}", at_cap, sign_slack("wrong", at_cap)).status_code == 401


def test_chunked_body_without_length_is_411(services: Services, hooks: WebhookServer):
    conn_id = slack_connection(services)
    # One write for headers and chunks: the server answers 411 from the headers and may close before a
    # second write of the body arrives (http.client then fails with a broken pipe instead of reading the answer).
    request = (f"POST /webhooks/{TENANT}/{conn_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               "Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
               "5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", hooks.port), timeout=10) as sock:
        sock.sendall(request)
        status_line = sock.makefile("rb").readline()
    assert status_line.split()[1] == b"411"


def test_slack_url_verification_handshake_is_answered(services: Services, hooks: WebhookServer):
    conn_id = slack_connection(services)
    body = json.dumps(
        {"token": "t", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"}
    ).encode()
    r = post(hooks, f"/webhooks/{TENANT}/{conn_id}", body, sign_slack(SIGNING_SECRET, body))
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    assert r.text == "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    # An unsigned handshake is not answered with the challenge.
    forged = post(hooks, f"/webhooks/{TENANT}/{conn_id}", body, sign_slack("not-the-secret", body))
    assert forged.status_code == 401 and "3eZbrw" not in forged.text
    assert webhook_jobs(services) == []


def test_graph_validation_token_handshake_is_echoed(services: Services, hooks: WebhookServer):
    conn = services.integrations.create_connection(
        SYSTEM,
        TENANT,
        "msgraph",
        "OneDrive",
        {"drive_id": "b!drive", "tenant_id": "contoso"},
        {"client_id": "app", "client_secret": "s3cret", "webhook_secret": "client-state-value"},
        reason="test",
    )
    token = "Validation: Testing client application reachability for subscription Request-Id: 12ab"
    r = httpx.post(f"{hooks.url}/webhooks/{TENANT}/{conn['id']}", params={"validationToken": token}, timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    assert r.text == token
    # A change notification with the right clientState is accepted and queues a sync of the drive.
    note = json.dumps(
        {
            "value": [
                {
                    "subscriptionId": "sub-1",
                    "clientState": "client-state-value",
                    "changeType": "updated",
                    "resource": "drives/b!drive/root",
                    "subscriptionExpirationDateTime": "2030-01-01T00:00:00Z",
                }
            ]
        }
    ).encode()
    accepted = post(hooks, f"/webhooks/{TENANT}/{conn['id']}", note)
    assert accepted.status_code == 200 and accepted.json()["status"] == "accepted"
    assert len(webhook_jobs(services)) == 1


def test_hubspot_v3_signature_over_the_public_url_is_accepted(services: Services, hooks: WebhookServer):
    """HubSpot signs method + public URL + body + timestamp; the connection's webhook_url is that URL."""
    secret = "hubspot-client-secret"
    conn = services.integrations.create_connection(
        SYSTEM,
        TENANT,
        "hubspot",
        "CRM",
        {"base_url": "http://127.0.0.1:9"},
        {"access_token": "pat-na1-test", "client_secret": secret},
        reason="test",
    )
    path = f"/webhooks/{TENANT}/{conn['id']}"
    public_url = f"https://hooks.example.com{path}"  # as seen by HubSpot, in front of the reverse proxy
    services.store.update(
        "connections", TENANT, conn["id"], lambda d: {**d, "config": {**d["config"], "webhook_url": public_url}}
    )
    body = json.dumps(
        [
            {
                "eventId": 901,
                "subscriptionId": 1,
                "portalId": 62515,
                "appId": 1,
                "occurredAt": int(time.time() * 1000),
                "subscriptionType": "deal.propertyChange",
                "attemptNumber": 0,
                "objectId": 9002,
                "propertyName": "amount",
                "propertyValue": "4321",
                "changeSource": "CRM_UI",
            }
        ]
    ).encode()
    r = post(hooks, path, body, sign_hubspot_v3(secret, body, public_url))
    assert r.status_code == 200 and r.json()["status"] == "accepted"
    run = services.store.get("sync_runs", TENANT, webhook_jobs(services)[0]["payload"]["runId"])
    assert run["streams"] == ["deals"]
    wrong_url = post(hooks, path, body, sign_hubspot_v3(secret, body, f"http://127.0.0.1:{hooks.port}{path}"))
    assert wrong_url.status_code == 401


def test_start_webhook_server_reads_settings_and_port_zero_turns_it_off(services: Services):
    import socket

    services.tenants.create(SYSTEM, TENANT, "Webhook tenant", reason="test")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    off = start_webhook_server(services, port=0)
    assert off.port == 0  # type: ignore[attr-defined]
    off()
    stop = start_webhook_server(services, port=port)
    try:
        assert stop.port == port  # type: ignore[attr-defined]
        r = httpx.post(f"http://127.0.0.1:{port}/webhooks/{TENANT}/conn-none", content=b"{}", timeout=10)
        assert r.status_code == 404
        from core.errors import Invalid

        with pytest.raises(Invalid, match="CASTIEL_WEBHOOK_PORT"):
            start_webhook_server(services, port=port)
    finally:
        stop()
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"http://127.0.0.1:{port}/webhooks/{TENANT}/conn-none", content=b"{}", timeout=2)
    assert services.settings.webhook_port == 8502 and services.settings.webhook_bind == "127.0.0.1"


class _FailingIntake:
    """Stands in for the Integrations service when the store or the code fails mid-delivery."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def receive_webhook(self, tenant_id: str, connection_id: str, headers: Any, body: bytes, query: Any = None) -> Any:
        raise self.error


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (StoreUnavailable("SQLite error: database is locked"), 503),
        (Conflict("connection changed meanwhile"), 503),
        (RuntimeError("secret internals: token=abc"), 500),
    ],
)
def test_faults_on_our_side_answer_5xx_so_the_vendor_redelivers(services: Services, error: Exception, status: int):
    server = WebhookServer(WebhookReceiver(_FailingIntake(error), services.audit), "127.0.0.1", 0)
    try:
        r = post(server, f"/webhooks/{TENANT}/conn-any", b"{}")
    finally:
        server.stop()
    assert r.status_code == status
    if status == 503:
        assert int(r.headers["Retry-After"]) > 0
    assert "token=abc" not in r.text  # internals never reach the caller
