"""Engine-level faults against the local HubSpot fake, driven by the real client library, queue and worker."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from core import clock
from core.errors import Invalid
from core.services.access import SYSTEM
from core.services.integration_health import compute_health
from tests.fakes.vendors.hubspot import FakeHubSpot
from tests.integration.sync.sync_stack import TENANT, Stack, hubspot_connection

TABLES = {"companies": "companies", "deals": "deals", "contacts": "contacts"}


def assert_store_matches_server(stack: Stack, fake: FakeHubSpot) -> None:
    for stream, table in TABLES.items():
        rows = stack.records(stream)
        ids = [r["sourceId"] for r in rows]
        assert len(ids) == len(set(ids)), f"{stream}: duplicates"
        assert set(ids) == fake.expected_ids(table), f"{stream}: store differs from the server"


def runs_of(stack: Stack, connection_id: str) -> list[dict]:
    return stack.services.store.query("sync_runs", TENANT, {"connectionId": connection_id}, order_by="queuedAt")


def test_server_dying_mid_sync_then_resuming_ends_with_exactly_the_servers_records(stack: Stack, hubspot: FakeHubSpot):
    conn_id = hubspot_connection(stack, hubspot)
    hubspot.faults.die_after_pages(4)  # companies (3 pages of 7) then one page of deals, then silence
    stack.integrations.resync(SYSTEM, TENANT, conn_id, "first sync")
    assert stack.work() == 1
    run = runs_of(stack, conn_id)[-1]
    assert run["status"] == "queued"  # the queue will try again
    assert run["attempts"][0]["errorType"] == "transient"
    stored_cursor = stack.connection(conn_id)["streams"]["deals"]["state"]
    assert stored_cursor is not None  # the one stored deals page moved the cursor
    assert 0 < len(stack.records("deals")) < 40
    # While the server is down, the vendor's data moves on.
    hubspot.faults.revive()
    hubspot.table("deals").update("9001", dealname="Deal 1 (renamed)")
    hubspot.table("deals").put({"id": "9999", "dealname": "New deal", "amount": "10", "dealstage": "closedwon",
                                "closedate": "2024-09-01T00:00:00+00:00"})
    stack.make_due()
    assert stack.work() == 1
    run = runs_of(stack, conn_id)[-1]
    assert run["status"] == "succeeded", run["error"]
    assert [a["status"] for a in run["attempts"]] == ["failed", "succeeded"]
    assert run["streamStats"]["deals"]["cursorBefore"] is None
    assert_store_matches_server(stack, hubspot)
    renamed = next(r for r in stack.records("deals") if r["sourceId"] == "9001")
    assert renamed["data"]["name"] == "Deal 1 (renamed)"
    # A further incremental run reads only what is new and changes nothing.
    stack.integrations.resync(SYSTEM, TENANT, conn_id, "again")
    stack.work()
    again = runs_of(stack, conn_id)[-1]
    assert again["status"] == "succeeded" and again["written"] == 0
    assert_store_matches_server(stack, hubspot)


def test_malformed_record_is_skipped_and_the_run_is_partial(stack: Stack, hubspot: FakeHubSpot):
    hubspot.table("deals").malform("9003")
    conn_id = hubspot_connection(stack, hubspot)
    stack.integrations.resync(SYSTEM, TENANT, conn_id, "sync")
    stack.work()
    run = runs_of(stack, conn_id)[-1]
    assert run["status"] == "partial"
    assert run["skipped"] == 1 and run["skippedSamples"][0]["sourceId"] == "9003"
    assert "amount" in run["skippedSamples"][0]["reason"]
    assert_store_matches_server(stack, hubspot)
    conn = stack.connection(conn_id)
    assert conn["lastSuccessAt"] and compute_health(conn).status == "healthy"


def test_revoked_refresh_token_fails_as_config_and_needs_reauth(stack: Stack, hubspot: FakeHubSpot):
    conn_id = hubspot_connection(stack, hubspot)
    hubspot.oauth.revoke()
    stack.integrations.resync(SYSTEM, TENANT, conn_id, "sync")
    stack.work()
    run = runs_of(stack, conn_id)[-1]
    assert run["status"] == "failed" and run["errorType"] == "config"
    assert len(run["attempts"]) == 1  # a person must act: no retries
    job = stack.services.store.get("jobs", TENANT, run["jobId"])
    assert job["status"] == "succeeded" and job["attempts"] == 1
    conn = stack.connection(conn_id)
    health = compute_health(conn)
    assert health.status == "needs_reauth"
    assert conn["token"]["lastRefreshError"]
    facts = stack.integrations.attention_facts(TENANT)["connectors_attention"]
    assert list(facts) == [conn_id] and facts[conn_id]["value"] == 1.0
    listed = stack.integrations.list_connections(SYSTEM, TENANT)
    assert listed.counts["needs_reauth"] == 1
    # An admin enters new credentials: the config error is cleared for the next run to judge.
    stack.integrations.update_credentials(SYSTEM, TENANT, conn_id, {"refresh_token": "fresh-consent"}, "reconnected")
    assert compute_health(stack.connection(conn_id)).status != "needs_reauth"


def test_expired_access_token_is_refreshed_and_the_rotated_token_stored_encrypted(
    stack: Stack, hubspot: FakeHubSpot
):
    hubspot.oauth.rotate = True
    conn_id = hubspot_connection(stack, hubspot)
    first_refresh = hubspot.oauth.refresh_token
    stack.integrations.resync(SYSTEM, TENANT, conn_id, "sync")
    stack.work()
    hubspot.oauth.expire_access_tokens()
    hubspot.table("companies").update("5001", name="Renamed company")
    stack.integrations.resync(SYSTEM, TENANT, conn_id, "sync again")
    stack.work()
    run = runs_of(stack, conn_id)[-1]
    assert run["status"] == "succeeded", run["error"]
    conn = stack.connection(conn_id)
    creds = json.loads(stack.services.box.open(conn["credentialsSealed"]))
    assert creds["refresh_token"] == hubspot.oauth.refresh_token != first_refresh
    assert hubspot.oauth.refresh_token not in json.dumps(conn)
    assert conn["token"]["lastRefreshError"] is None and conn["token"]["refreshIssuedAt"]
    assert_store_matches_server(stack, hubspot)


def test_long_retry_after_reschedules_the_run_instead_of_blocking(stack: Stack, hubspot: FakeHubSpot):
    conn_id = hubspot_connection(stack, hubspot)
    hubspot.faults.fail(429, times=50, match="/search", retry_after=900)
    stack.integrations.resync(SYSTEM, TENANT, conn_id, "sync")
    stack.work()
    run = runs_of(stack, conn_id)[-1]
    assert run["status"] == "queued" and run["attempts"][0]["errorType"] == "rate_limited"
    job = stack.services.store.get("jobs", TENANT, run["jobId"])
    wait = (clock.parse(job["availableAt"]) - clock.now()).total_seconds()
    assert 850 < wait <= 900  # the vendor's Retry-After, not the default backoff


def test_duplicated_webhook_is_processed_once(stack: Stack, hubspot: FakeHubSpot):
    conn_id = hubspot_connection(stack, hubspot)
    stack.integrations.resync(SYSTEM, TENANT, conn_id, "initial")
    stack.work()
    hubspot.table("deals").update("9002", amount="4321")
    headers, body = hubspot.webhook([hubspot.deal_event(77, "9002")])
    first = stack.integrations.receive_webhook(TENANT, conn_id, headers, body)
    second = stack.integrations.receive_webhook(TENANT, conn_id, headers, body)
    assert first.status == "accepted" and first.accepted == 1 and first.run_id
    assert second.status == "duplicate" and second.duplicates == 1 and second.run_id is None
    jobs = stack.services.store.query("jobs", TENANT, {"queue": "sync-inbound-webhook"})
    assert len(jobs) == 1
    assert stack.work() == 1
    run = stack.services.store.get("sync_runs", TENANT, first.run_id)
    assert run["status"] == "succeeded" and run["trigger"]["type"] == "webhook" and run["streams"] == ["deals"]
    assert run["written"] == 1
    deal = next(r for r in stack.records("deals") if r["sourceId"] == "9002")
    assert deal["data"]["amount"] == 4321.0
    hook = stack.connection(conn_id)["webhook"]
    assert hook["eventsReceived"] == 1 and hook["duplicates"] == 1 and hook["lastEventAt"]


def test_bad_webhook_signature_is_rejected_and_audited(stack: Stack, hubspot: FakeHubSpot):
    conn_id = hubspot_connection(stack, hubspot)
    headers, body = hubspot.webhook([hubspot.deal_event(5, "9004")])
    tampered = body.replace(b"9004", b"9005")
    with pytest.raises(Invalid, match="signature"):
        stack.integrations.receive_webhook(TENANT, conn_id, headers, tampered)
    audit = stack.services.store.query("audit", TENANT, {"action": "integration.webhook_rejected"})
    assert len(audit) == 1 and audit[0]["target"] == f"connection:{conn_id}" and "signature" in audit[0]["reason"]
    assert stack.services.store.count("webhook_events", TENANT) == 0
    assert stack.services.store.count("jobs", TENANT) == 0


def test_worker_that_stops_heart_beating_is_replaced_and_the_run_resumes(stack: Stack, hubspot: FakeHubSpot):
    from core.services.work_queue import WorkQueue

    conn_id = hubspot_connection(stack, hubspot)
    result = stack.integrations.resync(SYSTEM, TENANT, conn_id, "sync")
    short_lease = WorkQueue(stack.services.store, stack.services.audit, lease_seconds=0.2)
    item = short_lease.claim("worker-that-dies", ["sync-inbound-scheduled"])
    assert item is not None and item["id"] == result.job_id

    class WorkerDied(BaseException):
        pass

    pages = []

    def die_after_two_pages(message: str) -> None:
        pages.append(message)
        if len(pages) == 2:
            raise WorkerDied()

    with pytest.raises(WorkerDied):
        stack.engine.execute(TENANT, str(result.run_id), heartbeat=die_after_two_pages, final_attempt=False)
    assert stack.services.store.get("sync_runs", TENANT, str(result.run_id))["status"] == "running"
    import time

    time.sleep(0.3)  # the lease runs out; another worker may take the item
    assert stack.work() == 1
    run = stack.services.store.get("sync_runs", TENANT, str(result.run_id))
    assert run["status"] == "succeeded"
    assert [a["status"] for a in run["attempts"]] == ["failed", "succeeded"]
    assert run["attempts"][0]["errorType"] == "stalled"
    assert_store_matches_server(stack, hubspot)


def test_schedule_queues_each_due_connection_once(stack: Stack, hubspot: FakeHubSpot):
    conn_id = hubspot_connection(stack, hubspot)
    assert len(stack.integrations.enqueue_due()) == 1
    assert stack.integrations.enqueue_due() == []  # not due again until its interval passes
    conn = stack.connection(conn_id)
    assert clock.parse(conn["nextDueAt"]) > clock.now() + timedelta(minutes=59)
    stack.work()
    run = runs_of(stack, conn_id)[-1]
    assert run["trigger"] == {"type": "schedule"} and run["status"] == "succeeded"
    stack.integrations.pause(SYSTEM, TENANT, conn_id, "maintenance")
    stack.services.store.update("connections", TENANT, conn_id, lambda d: {**d, "nextDueAt": clock.iso()})
    assert stack.integrations.enqueue_due() == []  # paused connections are not scheduled
