"""A full resync is a mark-and-sweep: records that vanished at the vendor without a delete event are removed,
but only by a full resync that read every stream to its end (the real worker, SQLite, local vendor fakes)."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from core.adapters.sqlite_store import SqliteStore
from core.adapters.store import Doc, DocumentStore
from core.crypto import SecretBox
from core.schema import CONTAINERS
from core.services.access import SYSTEM
from core.services.sync_engine import SyncEngine, new_connection, record_id
from tests.fakes.change_hook import collect_changes
from tests.fakes.vendors.hubspot import FakeHubSpot
from tests.integration.sync.sync_stack import TENANT, Stack, hubspot_connection
from tests.unit.sync.sync_fakes import ScriptedConnector, rows

TABLES = ("companies", "deals", "contacts")


def runs_of(stack: Stack, connection_id: str) -> list[dict[str, Any]]:
    return stack.services.store.query("sync_runs", TENANT, {"connectionId": connection_id}, order_by="queuedAt")


def source_ids(stack: Stack, stream: str) -> set[str]:
    return {r["sourceId"] for r in stack.records(stream)}


def sweep_audits(stack: Stack) -> list[dict[str, Any]]:
    return stack.services.store.query("audit", TENANT, {"action": "integration.full_resync_sweep"})


def seen_left(stack: Stack) -> int:
    return stack.services.store.count("sync_seen", TENANT)


def full_resync(stack: Stack, conn_id: str, stream: str | None = None) -> dict[str, Any]:
    result = stack.integrations.resync(SYSTEM, TENANT, conn_id, "records vanished at the vendor", full=True,
                                       stream=stream)
    assert stack.work() == 1
    return stack.services.store.get("sync_runs", TENANT, str(result.run_id))


def test_full_resync_removes_records_that_vanished_without_a_delete_event(stack: Stack, hubspot: FakeHubSpot):
    conn_id = hubspot_connection(stack, hubspot)
    stack.integrations.resync(SYSTEM, TENANT, conn_id, "first sync")
    stack.work()
    assert source_ids(stack, "deals") == hubspot.expected_ids("deals")
    # HubSpot's search API never lists archived records: to the connector they simply stop appearing.
    for deal in ("9002", "9017", "9033"):
        hubspot.table("deals").delete(deal)
    hubspot.table("contacts").delete("104")
    hubspot.table("deals").update("9005", dealname="Deal 5 (renamed)")

    stack.integrations.resync(SYSTEM, TENANT, conn_id, "incremental")
    stack.work()
    incremental = runs_of(stack, conn_id)[-1]
    assert incremental["status"] == "succeeded" and incremental["swept"] == 0
    assert {"9002", "9017", "9033"} <= source_ids(stack, "deals")  # an incremental read cannot know

    run = full_resync(stack, conn_id)
    assert run["status"] == "succeeded", run["error"]
    assert run["swept"] == 4 and run["deleted"] == 4
    assert run["streamStats"]["deals"]["swept"] == 3 and run["streamStats"]["contacts"]["swept"] == 1
    assert run["streamStats"]["companies"]["swept"] == 0
    assert run["sweep"]["notSwept"] == {}
    for table in TABLES:
        assert source_ids(stack, table) == hubspot.expected_ids(table), table
    renamed = next(r for r in stack.records("deals") if r["sourceId"] == "9005")
    assert renamed["data"]["name"] == "Deal 5 (renamed)"  # changed earlier, seen unchanged now: kept
    audit = sweep_audits(stack)
    assert len(audit) == 1 and audit[0]["target"] == f"connection:{conn_id}"
    assert audit[0]["after"]["runId"] == run["id"] and audit[0]["after"]["deleted"] == 4
    assert sorted(audit[0]["after"]["sampleSourceIds"]) == ["104", "9002", "9017", "9033"]
    assert "records vanished at the vendor" in audit[0]["reason"]
    assert seen_left(stack) == 0  # the run's seen ids are dropped once it has finished

    # A second full resync finds nothing more to remove.
    again = full_resync(stack, conn_id)
    assert again["status"] == "succeeded" and again["swept"] == 0 and again["written"] == 0


def test_interrupted_full_resync_deletes_nothing_and_its_retry_sweeps_exactly_the_vanished(
    stack: Stack, hubspot: FakeHubSpot
):
    conn_id = hubspot_connection(stack, hubspot)
    stack.integrations.resync(SYSTEM, TENANT, conn_id, "first sync")
    stack.work()
    for deal in ("9001", "9030"):
        hubspot.table("deals").delete(deal)
    hubspot.table("companies").delete("5003")
    before = {t: source_ids(stack, t) for t in TABLES}

    # The server dies part-way through the full read (companies is read, then one page of deals).
    hubspot.faults.die_after_pages(4)
    stack.integrations.resync(SYSTEM, TENANT, conn_id, "records vanished at the vendor", full=True)
    assert stack.work() == 1
    run = runs_of(stack, conn_id)[-1]
    assert run["status"] == "queued" and run["attempts"][0]["errorType"] == "transient"
    assert run["swept"] == 0 and not sweep_audits(stack)
    assert {t: source_ids(stack, t) for t in TABLES} == before  # nothing deleted, not even in the read stream
    assert seen_left(stack) > 0  # the unchanged ids the first attempt saw are kept for the retry

    # The retry resumes from the stored cursor: the records the first attempt saw unchanged are not
    # read again, yet they are not swept; only the vanished ones go.
    hubspot.faults.revive()
    stack.make_due()
    assert stack.work() == 1
    run = runs_of(stack, conn_id)[-1]
    assert run["status"] == "succeeded", run["error"]
    assert [a["status"] for a in run["attempts"]] == ["failed", "succeeded"]
    assert run["swept"] == 3
    for table in TABLES:
        assert source_ids(stack, table) == hubspot.expected_ids(table), table
    assert seen_left(stack) == 0


def test_cancelled_full_resync_deletes_nothing(stack: Stack, hubspot: FakeHubSpot):
    conn_id = hubspot_connection(stack, hubspot)
    stack.integrations.resync(SYSTEM, TENANT, conn_id, "first sync")
    stack.work()
    hubspot.table("deals").delete("9004")
    trigger = {"type": "user", "actor": "ops@x", "reason": "test"}

    def cancel_on(call: int) -> tuple[list[int], Any]:
        calls: list[int] = []

        def should_cancel() -> bool:
            calls.append(1)
            return len(calls) == call

        return calls, should_cancel

    # Part-way through the read.
    run = stack.engine.create_run(stack.connection(conn_id), trigger, full=True)
    _, should_cancel = cancel_on(5)
    out = stack.engine.execute(TENANT, run["id"], should_cancel=should_cancel)
    assert out["status"] == "cancelled"
    assert "9004" in source_ids(stack, "deals")
    assert out["swept"] == 0 and not sweep_audits(stack)
    assert seen_left(stack) == 0

    # At the last moment: every page was read and stored, the sweep is next. The engine asks once per
    # page and once before the sweep, so the last question of a run left alone is the sweep's.
    run = stack.engine.create_run(stack.connection(conn_id), trigger, full=True, streams=["deals"])
    calls, never = cancel_on(0)
    left_alone = stack.engine.execute(TENANT, run["id"], should_cancel=never)
    hubspot.table("deals").delete("9006")
    run = stack.engine.create_run(stack.connection(conn_id), trigger, full=True, streams=["deals"])
    _, last_moment = cancel_on(len(calls))
    out = stack.engine.execute(TENANT, run["id"], should_cancel=last_moment)
    assert out["status"] == "cancelled" and out["swept"] == 0
    assert out["read"] == left_alone["read"] - 1  # every page was stored (one deal fewer at the vendor)
    assert "9006" in source_ids(stack, "deals")


def test_malformed_record_still_at_the_vendor_is_kept(stack: Stack, hubspot: FakeHubSpot):
    conn_id = hubspot_connection(stack, hubspot)
    stack.integrations.resync(SYSTEM, TENANT, conn_id, "first sync")
    stack.work()
    hubspot.table("deals").malform("9003")  # exists at the vendor but no longer parses: skipped, not swept
    hubspot.table("deals").delete("9010")
    run = full_resync(stack, conn_id, stream="deals")
    assert run["status"] == "partial" and run["skipped"] == 1
    assert run["swept"] == 1
    deals = source_ids(stack, "deals")
    assert "9003" in deals and "9010" not in deals


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "export"
    docs = root / "documents" / "alpha"
    docs.mkdir(parents=True)
    for i in range(7):
        (docs / f"note-{i}.md").write_text(f"# Note {i}\n\nBody of note {i}.\n")
    crm = root / "crm"
    crm.mkdir()
    with (crm / "accounts.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "name", "industry", "updated_at"])
        for i in range(5):
            w.writerow([f"A{i}", f"Account {i}", "Retail", f"2024-05-0{i + 1}T10:00:00Z"])
    yield root


def test_full_resync_of_one_stream_sweeps_only_that_stream_and_retracts_embeddings(stack: Stack, folder: Path):
    conn = stack.integrations.create_connection(
        SYSTEM, TENANT, "localfiles", "Shared drive", {"path": str(folder), "page_size": 3}, {}, reason="test",
    )
    conn_id = str(conn["id"])
    stack.integrations.resync(SYSTEM, TENANT, conn_id, "first sync")
    stack.work()
    store = stack.services.store
    assert store.count("documents", TENANT, {"connectionId": conn_id}) == 7
    assert len(stack.records("accounts")) == 5
    os.remove(folder / "documents" / "alpha" / "note-2.md")
    os.remove(folder / "documents" / "alpha" / "note-5.md")
    rows = (folder / "crm" / "accounts.csv").read_text().splitlines()
    (folder / "crm" / "accounts.csv").write_text("\n".join(r for r in rows if not r.startswith("A4,")) + "\n")
    stack.changes.clear()

    run = full_resync(stack, conn_id, stream="documents")
    assert run["status"] == "succeeded", run["error"]
    assert run["streams"] == ["documents"] and run["swept"] == 2
    paths = {d["sourceId"] for d in store.query("documents", TENANT, {"connectionId": conn_id})}
    assert paths == {f"alpha/note-{i}.md" for i in (0, 1, 3, 4, 6)}
    # Deleted documents reach the embedding pipeline as deletes, like vendor delete events.
    gone = {record_id("doc", conn_id, "document", f"alpha/note-{i}.md") for i in (2, 5)}
    assert {(doc_id, op) for _, doc_id, op in stack.changes} == {(doc_id, "delete") for doc_id in gone}
    # The accounts stream was not resynced: its vanished row stays until a full resync of it.
    assert {r["sourceId"] for r in stack.records("accounts")} == {f"A{i}" for i in range(5)}

    # A row without an id is skipped; it could be any stored account, so the stream is not swept.
    csv_path = folder / "crm" / "accounts.csv"
    kept_rows = csv_path.read_text()
    csv_path.write_text(kept_rows + ",Nameless,Retail,2024-05-09T10:00:00Z\n")
    run = full_resync(stack, conn_id, stream="accounts")
    assert run["status"] == "partial" and run["swept"] == 0
    assert "without an id" in run["sweep"]["notSwept"]["accounts"]
    assert "A4" in {r["sourceId"] for r in stack.records("accounts")}

    csv_path.write_text(kept_rows)
    run = full_resync(stack, conn_id)
    assert run["status"] == "succeeded" and run["swept"] == 1
    assert run["streamStats"]["accounts"]["swept"] == 1 and run["streamStats"]["documents"]["swept"] == 0
    assert {r["sourceId"] for r in stack.records("accounts")} == {f"A{i}" for i in range(4)}

    # An emptied folder is far more often a mistake than a source that holds nothing: nothing is wiped.
    for f in (folder / "documents" / "alpha").glob("*.md"):
        f.unlink()
    run = full_resync(stack, conn_id, stream="documents")
    assert run["swept"] == 0 and "returned no records" in run["sweep"]["notSwept"]["documents"]
    assert store.count("documents", TENANT, {"connectionId": conn_id}) == 5


def test_a_cursor_moved_by_another_run_between_attempts_blocks_the_sweep(stack: Stack, hubspot: FakeHubSpot):
    conn_id = hubspot_connection(stack, hubspot)
    stack.integrations.resync(SYSTEM, TENANT, conn_id, "first sync")
    stack.work()
    hubspot.table("deals").delete("9020")
    conn = stack.connection(conn_id)
    run = stack.engine.create_run(conn, {"type": "user", "actor": "ops@x", "reason": "test"}, full=True,
                                  streams=["deals"])
    hubspot.faults.die_after_pages(2)
    first = stack.engine.execute(TENANT, run["id"], final_attempt=False)
    assert first["status"] == "queued"
    hubspot.faults.revive()
    # While the full resync waits for its retry, an incremental run moves the deals cursor on.
    hubspot.table("deals").update("9039", dealname="Deal 39 (renamed)")
    other = stack.engine.create_run(stack.connection(conn_id), {"type": "schedule"}, streams=["deals"])
    assert stack.engine.execute(TENANT, other["id"])["status"] == "succeeded"
    out = stack.engine.execute(TENANT, run["id"])
    assert out["status"] == "succeeded"
    assert out["swept"] == 0 and "another run moved" in out["sweep"]["notSwept"]["deals"]
    assert "9020" in source_ids(stack, "deals")  # kept: this run could not tell it vanished


class ContractOnlyStore(DocumentStore):
    """Only the store contract (what the Cosmos DB backend offers): no single-field reads, no bulk delete."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner

    def ensure_containers(self, specs: Any) -> list[str]:
        return self.inner.ensure_containers(specs)

    def missing_containers(self, specs: Any) -> list[str]:
        return self.inner.missing_containers(specs)

    def ping(self) -> None:
        self.inner.ping()

    def create(self, container: str, doc: Doc) -> Doc:
        return self.inner.create(container, doc)

    def get(self, container: str, tenant_id: str, doc_id: str) -> Doc:
        return self.inner.get(container, tenant_id, doc_id)

    def upsert(self, container: str, doc: Doc, if_match: str | None = None) -> Doc:
        return self.inner.upsert(container, doc, if_match)

    def delete(self, container: str, tenant_id: str, doc_id: str, if_match: str | None = None) -> None:
        self.inner.delete(container, tenant_id, doc_id, if_match)

    def query(self, container: str, tenant_id: str | None, where: Any = None, order_by: str | None = None,
              descending: bool = False, limit: int | None = None) -> list[Doc]:
        return self.inner.query(container, tenant_id, where, order_by, descending, limit)

    def count(self, container: str, tenant_id: str | None, where: Any = None) -> int:
        return self.inner.count(container, tenant_id, where)


def test_sweep_on_a_store_with_only_the_contract(tmp_path: Path) -> None:
    store = ContractOnlyStore(SqliteStore(tmp_path / "contract.db"))
    store.ensure_containers(CONTAINERS)
    box = SecretBox(Fernet.generate_key())
    script: dict[str, Any] = {"rows": {"accounts": rows("A", 8), "files": rows("F", 5, text="x")}}
    changes: list[tuple[str, str, str]] = []
    engine = SyncEngine(store, lambda p, c, cr, ts: ScriptedConnector(c, cr, token_store=ts, script=script), box,
                        collect_changes(changes))
    assert engine._query_fields is None and engine._delete_many is None  # the fallbacks are what runs
    conn = store.create("connections", new_connection("t1", "scripted", "Scripted", credentials_sealed=box.seal("{}"),
                                                      enabled_streams=["accounts", "files"]))
    trigger = {"type": "user", "actor": "ops@x", "reason": "test"}
    assert engine.execute("t1", engine.create_run(conn, trigger)["id"])["written"] == 13
    script["rows"]["accounts"] = [r for r in script["rows"]["accounts"] if r["id"] not in ("A0001", "A0006")]
    script["rows"]["files"] = script["rows"]["files"][1:]
    changes.clear()
    run = engine.execute("t1", engine.create_run(conn, trigger, full=True)["id"])
    assert run["status"] == "succeeded" and run["swept"] == 3
    assert {d["sourceId"] for d in store.query("crm_records", "t1")} == {f"A{i:04d}" for i in (0, 2, 3, 4, 5, 7)}
    assert {d["sourceId"] for d in store.query("documents", "t1")} == {f"F{i:04d}" for i in range(1, 5)}
    assert changes == [("t1", record_id("doc", conn["id"], "document", "F0000"), "delete")]
    assert store.count("sync_seen", "t1") == 0
    store.inner.close()
