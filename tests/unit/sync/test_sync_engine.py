"""Sync engine behaviour against a scripted connector and a real SQLite store."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from core import clock
from core.errors import Conflict
from core.services.integration_health import compute_health
from core.services.sync_engine import AutoPausePolicy, SyncEngine, record_id, rollup_id
from tests.unit.sync.sync_fakes import Env, rows


def test_first_sync_stores_everything_and_advances_cursors(env: Env) -> None:
    env.script["rows"] = {"accounts": rows("A", 7), "opportunities": rows("O", 5), "files": rows("F", 2, text="hi")}
    conn = env.connection()
    run = env.sync(conn)
    assert run["status"] == "succeeded"
    assert (run["read"], run["written"], run["skipped"]) == (14, 14, 0)
    assert env.count("crm_records") == 12
    assert env.count("documents") == 2
    c = env.conn(conn["id"])
    assert c["streams"]["accounts"]["state"] == {"modifiedAt": "2025-01-01T00:00:06Z", "id": "A0006"}
    assert run["streamStats"]["accounts"]["cursorBefore"] is None
    assert run["streamStats"]["accounts"]["cursorAfter"] == c["streams"]["accounts"]["state"]
    assert c["lastRunStatus"] == "succeeded" and c["lastSuccessAt"] and c["recordsSynced"] == 14
    assert c["activeRunId"] is None
    # Documents reach the embedding pipeline, CRM records do not.
    assert sorted(op for _, _, op in env.changes) == ["upsert", "upsert"]
    doc_id = record_id("doc", conn["id"], "document", "F0000")
    assert (("t1", doc_id, "upsert") in env.changes) and env.store.get("documents", "t1", doc_id)["text"] == "hi"
    roll = env.store.get("rollups", "t1", rollup_id(conn["id"], run["finishedAt"][:10]))
    assert (roll["runs"], roll["succeeded"], roll["written"]) == (1, 1, 14)


def test_incremental_and_full_resync_never_duplicate(env: Env) -> None:
    env.script["rows"] = {"accounts": rows("A", 7), "files": rows("F", 2, text="x")}
    conn = env.connection()
    env.sync(conn)
    again = env.sync(conn)
    assert (again["read"], again["written"]) == (0, 0)
    # The incremental run started from the stored cursor.
    assert env.script["reads"][-3][1] == {"modifiedAt": "2025-01-01T00:00:06Z", "id": "A0006"}
    full = env.sync(conn, full=True)
    assert full["read"] == 9 and full["written"] == 0 and full["unchanged"] == 9
    assert env.count("crm_records") == 7 and env.count("documents") == 2
    assert len(env.changes) == 2  # unchanged documents are not re-embedded


def test_changed_record_is_rewritten_and_announced_once(env: Env) -> None:
    env.script["rows"] = {"files": rows("F", 3, text="v1")}
    conn = env.connection()
    env.sync(conn)
    env.changes.clear()
    env.script["rows"]["files"][1].update(text="v2", modifiedAt="2025-02-01T00:00:00Z")
    run = env.sync(conn)
    assert run["written"] == 1
    assert env.changes == [("t1", record_id("doc", conn["id"], "document", "F0001"), "upsert")]
    assert env.store.get("documents", "t1", env.changes[0][1])["text"] == "v2"


def test_deleted_record_is_removed_and_announced(env: Env) -> None:
    env.script["rows"] = {"files": rows("F", 2, text="x")}
    conn = env.connection()
    env.sync(conn)
    env.script["rows"]["files"].append({"id": "F0000", "modifiedAt": "2025-03-01T00:00:00Z", "deleted": True})
    run = env.sync(conn)
    assert run["deleted"] == 1
    assert env.count("documents") == 1
    assert env.changes[-1] == ("t1", record_id("doc", conn["id"], "document", "F0000"), "delete")


def test_transient_failure_mid_stream_resumes_from_last_stored_page(env: Env) -> None:
    env.script["rows"] = {"accounts": rows("A", 10)}
    env.script["fail_at"] = {"accounts": 2}  # pages 0 and 1 (6 records) are stored, page 2 fails
    conn = env.connection(enabled_streams=["accounts"])
    run = env.engine.create_run(conn, {"type": "schedule"})
    first = env.engine.execute("t1", run["id"], final_attempt=False)
    assert first["status"] == "queued"  # the queue will run it again
    assert first["attempts"][0]["errorType"] == "transient" and "HTTP 503" in first["attempts"][0]["error"]
    assert env.conn(conn["id"])["streams"]["accounts"]["state"]["id"] == "A0005"
    assert env.count("crm_records") == 6
    assert env.conn(conn["id"])["consecutiveFailures"] == 0  # not counted until the run is final
    second = env.engine.execute("t1", run["id"], final_attempt=False)
    assert second["status"] == "succeeded"
    assert [a["status"] for a in second["attempts"]] == ["failed", "succeeded"]
    assert env.script["reads"][-1][1] == {"modifiedAt": "2025-01-01T00:00:05Z", "id": "A0005"}
    ids = {d["sourceId"] for d in env.store.query("crm_records", "t1")}
    assert ids == {f"A{i:04d}" for i in range(10)}
    assert second["read"] == 10 and second["written"] == 10
    assert second["streamStats"]["accounts"]["cursorBefore"] is None


def test_final_transient_failure_fails_the_run_and_counts(env: Env) -> None:
    env.script["rows"] = {"accounts": rows("A", 4)}
    env.script["fail_at"] = {"accounts": 0}
    conn = env.connection(enabled_streams=["accounts"])
    run = env.sync(conn)
    assert run["status"] == "failed" and run["errorType"] == "transient"
    c = env.conn(conn["id"])
    assert c["consecutiveFailures"] == 1 and c["lastErrorType"] == "transient"
    roll = env.store.get("rollups", "t1", rollup_id(conn["id"], run["finishedAt"][:10]))
    assert (roll["runs"], roll["failed"], roll["succeeded"]) == (1, 1, 0)


def test_malformed_record_is_skipped_and_run_partial(env: Env) -> None:
    data = rows("O", 5)
    data[2]["malformed"] = True
    env.script["rows"] = {"opportunities": data}
    conn = env.connection(enabled_streams=["opportunities"])
    run = env.sync(conn)
    assert run["status"] == "partial"
    assert (run["read"], run["written"], run["skipped"]) == (5, 4, 1)
    assert run["skippedSamples"][0]["sourceId"] == "O0002"
    assert env.count("crm_records") == 4
    c = env.conn(conn["id"])
    assert c["lastSuccessAt"] and c["consecutiveFailures"] == 0 and c["lastErrorType"] == "data"


def test_config_error_fails_at_once_and_needs_reauth(env: Env) -> None:
    env.script["rows"] = {"accounts": rows("A", 2)}
    env.script["config_error"] = "invalid_grant: the refresh token was revoked"
    conn = env.connection()
    run = env.engine.create_run(conn, {"type": "schedule"})
    out = env.engine.execute("t1", run["id"], final_attempt=False)
    assert out["status"] == "failed"  # a config error is never retried: it needs a person
    health = compute_health(env.conn(conn["id"]))
    assert health.status == "needs_reauth"
    assert "revoked" in health.explanation


def test_auto_pause_after_n_failures_raises_an_alert(env: Env) -> None:
    env.engine.auto_pause = AutoPausePolicy(max_failures=3, max_days=4)
    env.script["config_error"] = "401 bad credentials"
    conn = env.connection()
    for _ in range(2):
        env.sync(conn)
    assert env.conn(conn["id"])["status"] == "active"
    env.sync(conn)
    c = env.conn(conn["id"])
    assert c["status"] == "paused" and c["pausedBy"] == "auto-pause"
    assert "3 failed runs in a row" in c["pausedReason"]
    audit = env.store.query("audit", "t1", {"action": "integration.auto_pause"})
    assert len(audit) == 1 and audit[0]["target"] == f"connection:{conn['id']}"
    assert env.paused == [(conn["id"], c["pausedReason"])]
    assert compute_health(c).status == "paused"
    # A scheduled run of a paused connection does nothing.
    run = env.engine.create_run(c, {"type": "schedule"})
    assert env.engine.execute("t1", run["id"])["status"] == "cancelled"


def test_auto_pause_after_days_of_failure(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env.script["config_error"] = "403 missing permission"
    conn = env.connection()
    start = clock.now()
    env.engine.now = lambda: start
    env.sync(conn)
    assert env.conn(conn["id"])["status"] == "active"
    env.engine.now = lambda: start + timedelta(days=4, minutes=1)
    env.sync(conn)
    c = env.conn(conn["id"])
    assert c["status"] == "paused" and "failing for 4 days" in c["pausedReason"]


def test_refreshed_tokens_are_stored_encrypted_and_forecast(env: Env) -> None:
    env.script["rows"] = {"accounts": rows("A", 1)}
    env.script["refresh"] = {"access_token": "new-access", "refresh_token": "refresh-token-plaintext-r1",
                             "expires_at": 1_900_000_000}
    issued = clock.iso(clock.now() - timedelta(days=88))
    env.script["token_info"] = {"auth": "oauth2_refresh", "access_token_expires_at": clock.iso_in(3600),
                                "refresh_token_issued_at": issued, "refresh_token_lifetime_days": 90,
                                "last_refresh_at": clock.iso(), "last_refresh_error": None}
    conn = env.connection(enabled_streams=["accounts"])
    env.sync(conn)
    c = env.conn(conn["id"])
    assert "refresh-token-plaintext" not in json.dumps(c) and "new-access" not in json.dumps(c)
    assert json.loads(env.box.open(c["credentialsSealed"]))["refresh_token"] == "refresh-token-plaintext-r1"
    assert c["token"]["refreshExpiresAt"] > clock.iso()
    h = compute_health(c)
    assert h.status == "needs_reauth" and "refresh token expires in 1 d" in h.explanation


def test_cancel_between_pages_keeps_the_stored_cursor(env: Env) -> None:
    env.script["rows"] = {"accounts": rows("A", 9)}
    conn = env.connection(enabled_streams=["accounts"])
    run = env.engine.create_run(conn, {"type": "user", "actor": "ops@x", "reason": "stop"})
    seen: list[str] = []
    out = env.engine.execute("t1", run["id"], heartbeat=seen.append, should_cancel=lambda: len(seen) >= 1)
    assert out["status"] == "cancelled"
    assert seen == ["stream 1/1 accounts: 3 read"]
    assert env.conn(conn["id"])["streams"]["accounts"]["state"]["id"] == "A0002"
    assert env.count("crm_records") == 3


def test_stalled_attempt_is_closed_and_the_run_resumes(env: Env) -> None:
    env.script["rows"] = {"accounts": rows("A", 3)}
    conn = env.connection(enabled_streams=["accounts"])
    run = env.engine.create_run(conn, {"type": "schedule"})
    # What a worker leaves behind when it dies mid-run.
    env.store.update("sync_runs", "t1", run["id"], lambda d: {
        **d, "status": "running", "startedAt": clock.iso(), "heartbeatAt": clock.iso(),
        "attempts": [{"n": 1, "status": "running", "startedAt": clock.iso(), "read": 0, "written": 0, "skipped": 0}]})
    out = env.engine.execute("t1", run["id"])
    assert [a["status"] for a in out["attempts"]] == ["failed", "succeeded"]
    assert out["attempts"][0]["errorType"] == "stalled"


def test_sweep_fails_runs_that_stopped_heart_beating(env: Env) -> None:
    conn = env.connection()
    run = env.engine.create_run(conn, {"type": "schedule"})
    old = clock.iso(clock.now() - timedelta(minutes=10))
    env.store.update("sync_runs", "t1", run["id"], lambda d: {
        **d, "status": "running", "startedAt": old, "heartbeatAt": old,
        "attempts": [{"n": 1, "status": "running", "startedAt": old, "read": 0, "written": 0, "skipped": 0}]})
    swept = env.engine.fail_stale_runs(older_than_seconds=60)
    assert [r["id"] for r in swept] == [run["id"]]
    assert swept[0]["status"] == "failed" and swept[0]["errorType"] == "stalled"
    assert env.conn(conn["id"])["consecutiveFailures"] == 1


def test_second_run_waits_while_another_is_alive(env: Env) -> None:
    env.script["rows"] = {"accounts": rows("A", 3)}
    conn = env.connection(enabled_streams=["accounts"])
    holder = env.engine.create_run(conn, {"type": "schedule"})
    env.store.update("sync_runs", "t1", holder["id"], lambda d: {**d, "status": "running", "heartbeatAt": clock.iso()})
    env.store.update("connections", "t1", conn["id"], lambda d: {**d, "activeRunId": holder["id"]})
    other = env.engine.create_run(conn, {"type": "user", "actor": "a", "reason": "r"})
    with pytest.raises(Conflict):
        env.engine.execute("t1", other["id"])


def test_unknown_stream_fails_with_a_clear_message(env: Env) -> None:
    conn = env.connection()
    run = env.sync(conn, streams=["invoices"])
    assert run["status"] == "failed" and "unknown stream(s) invoices" in run["error"]


def test_test_connection_records_outcome(env: Env) -> None:
    conn = env.connection()
    ok = env.engine.test_connection(conn)
    assert ok["ok"] and ok["message"].startswith("connected as")
    env.script["config_error"] = "401 invalid client secret"
    bad = env.engine.test_connection(conn)
    assert not bad["ok"] and bad["errorType"] == "config"
    assert env.conn(conn["id"])["lastTest"]["message"] == "401 invalid client secret"


def test_engine_without_prefetch_behaves_the_same(env: Env) -> None:
    engine = SyncEngine(env.store, env.engine.connector_factory, env.box, lambda *a: None, prefetch=False)
    env.script["rows"] = {"accounts": rows("A", 8)}
    env.script["fail_at"] = {"accounts": 1}
    conn = env.connection(enabled_streams=["accounts"])
    run = engine.create_run(conn, {"type": "schedule"})
    assert engine.execute("t1", run["id"], final_attempt=False)["status"] == "queued"
    assert engine.execute("t1", run["id"])["status"] == "succeeded"
    assert env.count("crm_records") == 8


def test_a_concurrent_writer_inside_a_new_batch_falls_back_to_upserts(env: Env) -> None:
    from core.adapters.sqlite_store import SqliteStore

    class RacingStore(SqliteStore):
        """Another worker stores one of the page's records between the engine's read and its batch write."""

        raced = False

        def create_many(self, container, docs):  # type: ignore[no-untyped-def]
            if container == "crm_records" and not self.raced:
                self.raced = True
                self.create(container, {**docs[1], "data": {"name": "written by the other worker"}})
            return super().create_many(container, docs)

    store = RacingStore(env.store.path)
    engine = SyncEngine(store, env.engine.connector_factory, env.box, lambda *a: None)
    env.script["rows"] = {"accounts": rows("A", 3)}
    conn = env.connection(enabled_streams=["accounts"])
    run = engine.create_run(conn, {"type": "schedule"})
    out = engine.execute("t1", run["id"])
    assert out["status"] == "succeeded" and store.raced
    docs = {d["sourceId"]: d for d in store.query("crm_records", "t1")}
    assert set(docs) == {"A0000", "A0001", "A0002"}
    assert docs["A0001"]["data"]["name"] == "A 1"  # the engine's version won, nothing was lost
    store.close()
