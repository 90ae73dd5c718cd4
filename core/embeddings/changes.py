"""Change detection: every document insert, update or delete becomes one numbered change (an outbox).

SQLite (and any store): ``record_document_change`` is called by the sync engine right after it
writes or deletes a document. It takes the tenant's next sequence number (an etag-guarded
counter, so concurrent writers never share one) and stores the change in ``doc_changes``. The
pipeline reads changes above its checkpoint in ``seq`` order and advances the checkpoint only
through a contiguous run of numbers: a number taken by a writer that has not stored its change
yet holds the checkpoint back (for ``GAP_GRACE_SECONDS``), so no change is ever skipped.

Cosmos DB: ``CosmosChangeFeed`` reads the container's change feed instead, one lease document per
feed range in a ``leases`` container holding the continuation token, and estimates the lag.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core import clock
from core.adapters.store import Cond, Doc, DocumentStore
from core.errors import Invalid

CHANGES, STATE, DOCUMENTS, CHUNKS = "doc_changes", "pipeline_state", "documents", "chunks"
OPS = ("upsert", "delete", "reembed")  # reembed: embed again even if unchanged
GAP_GRACE_SECONDS = 60.0
UNKNOWN_SOURCE = "unknown"


def change_id(seq: int) -> str:
    return f"c{seq:012d}"


def stats_id(source: str) -> str:
    return f"stats:{source}"


def state_with_prefix(store: DocumentStore, tenant_id: str, prefix: str, kind: str) -> list[Doc]:
    """The tenant's ``pipeline_state`` rows whose id starts with ``prefix`` (and whose kind is ``kind``).

    The container also holds one state row per document (two million chunks make about 100,000 of
    them) and has no index on ``kind``; an id range is a primary-key range scan in every backend, so
    the screen's few counters cost the same at any corpus size.
    """
    rows = store.query(STATE, tenant_id, [Cond("id", ">=", prefix), Cond("id", "<", prefix + "\U0010ffff")])
    return [r for r in rows if r.get("kind") == kind]


def stats_rows(store: DocumentStore, tenant_id: str) -> list[Doc]:
    """Per-source counters (``stats:<source>``)."""
    return state_with_prefix(store, tenant_id, "stats:", "stats")


def record_document_change(
    store: DocumentStore,
    tenant_id: str,
    document_id: str,
    op: str,
    *,
    source: str | None = None,
    project: str | None = None,
    at: datetime | None = None,
) -> Doc:
    """Record that ``document_id`` was written (``upsert``) or removed (``delete``); returns the change."""
    if op not in OPS:
        raise Invalid(f"unknown change operation {op!r}; use one of {OPS}")
    if source is None:
        # The sync engine's hook passes ids only; the source lets the screen show backlog per source.
        ref = store.get_or_none(DOCUMENTS, tenant_id, document_id) if op == "upsert" else None
        ref = ref or store.find_one(CHUNKS, tenant_id, {"documentId": document_id})
        source = (ref or {}).get("source") or UNKNOWN_SOURCE
        project = project or (ref or {}).get("project")
    seq = int(store.increment(STATE, tenant_id, "seq", {"value": 1}, base={"kind": "seq"})["value"])
    change = {
        "id": change_id(seq),
        "tenantId": tenant_id,
        "seq": seq,
        "documentId": document_id,
        "op": op,
        "source": source,
        "project": project,
        "status": "pending",
        "attempts": 0,
        "createdAt": clock.iso(at),
    }
    store.create(CHANGES, change)
    store.increment(STATE, tenant_id, stats_id(source), {"recorded": 1}, base={"kind": "stats", "source": source})
    return change


def document_change_hook(store: DocumentStore) -> Callable[[str, str, str], None]:
    """The ``on_document_changed(tenant_id, document_id, op)`` hook the sync engine calls."""

    def hook(tenant_id: str, document_id: str, op: str) -> None:
        record_document_change(store, tenant_id, document_id, op)

    return hook


def read_checkpoint(store: DocumentStore, tenant_id: str) -> int:
    doc = store.get_or_none(STATE, tenant_id, "checkpoint")
    return int(doc["seq"]) if doc else 0


def pending_changes(store: DocumentStore, tenant_id: str, after_seq: int, limit: int) -> list[Doc]:
    """Changes after ``after_seq`` in order, at most ``limit``.

    Read by id range: ids are the zero-padded sequence numbers, so id order is seq order, and a
    primary-key range stays fast however many changes a tenant has (SQLite prefers the tenant's
    primary key over the ``seq`` index and would sort every change of the tenant otherwise).
    """
    return store.query(CHANGES, tenant_id, [Cond("id", ">", change_id(after_seq)), Cond("id", "<", "d")],
                       order_by="id", limit=limit)


def contiguous_prefix(changes: list[Doc], checkpoint: int, now: datetime,
                      grace_seconds: float = GAP_GRACE_SECONDS) -> list[Doc]:
    """The changes that may be processed now: in order, stopping at a fresh gap in the numbering."""
    out: list[Doc] = []
    expected = checkpoint + 1
    for c in changes:
        seq = int(c["seq"])
        if seq != expected:
            age = (now - clock.parse(c["createdAt"])).total_seconds()
            if age < grace_seconds:
                break  # a writer holds the missing number and is about to store it
        out.append(c)
        expected = seq + 1
    return out


def backlog_oldest(store: DocumentStore, tenant_id: str) -> Doc | None:
    """The oldest change not yet passed by the checkpoint, or the oldest failed one due for retry."""
    cp = read_checkpoint(store, tenant_id)
    rows = pending_changes(store, tenant_id, cp, 1)
    return rows[0] if rows else None


# Cosmos DB change feed ------------------------------------------------------------------------
@dataclass
class FeedBatch:
    range_id: str
    documents: list[Doc]
    continuation: str | None


class CosmosChangeFeed:
    """Reads the ``documents`` container's change feed with continuation tokens kept in ``leases``.

    One lease document per feed range (``lease:<range id>``) holds the continuation token, the
    owner and a lease expiry, so several workers split the ranges between them and a dead
    worker's ranges are picked up when its lease lapses. Deletes are not in Cosmos DB's
    latest-version feed: the sync engine still records them with ``record_document_change``.
    """

    def __init__(self, container: Any, leases: Any, owner: str, lease_seconds: float = 60.0) -> None:
        self.container = container  # azure.cosmos ContainerProxy of "documents"
        self.leases = leases  # ContainerProxy of "leases" (partition key /id)
        self.owner = owner
        self.lease_seconds = lease_seconds

    def feed_ranges(self) -> list[Any]:
        return list(self.container.read_feed_ranges())

    @staticmethod
    def range_id(feed_range: Any) -> str:
        import hashlib
        import json

        return hashlib.sha1(json.dumps(feed_range, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def _acquire(self, rid: str) -> Doc | None:
        from azure.core import MatchConditions
        from azure.cosmos import exceptions

        now = clock.now()
        try:
            lease = self.leases.read_item(f"lease:{rid}", partition_key=f"lease:{rid}")
        except exceptions.CosmosResourceNotFoundError:
            lease = {"id": f"lease:{rid}", "continuation": None}
            try:
                return dict(self.leases.create_item({**lease, "owner": self.owner,
                                                     "leaseUntil": clock.iso_in(self.lease_seconds)}))
            except exceptions.CosmosResourceExistsError:
                return None
        if lease.get("owner") not in (None, self.owner) and lease.get("leaseUntil", "") > clock.iso(now):
            return None
        lease.update(owner=self.owner, leaseUntil=clock.iso_in(self.lease_seconds))
        try:
            return dict(self.leases.replace_item(lease["id"], lease, etag=lease["_etag"],
                                                 match_condition=MatchConditions.IfNotModified))
        except exceptions.CosmosAccessConditionFailedError:
            return None

    def read(self, max_items: int = 100) -> Iterator[FeedBatch]:
        """For each feed range this worker can lease: the next page of changed documents."""
        for feed_range in self.feed_ranges():
            rid = self.range_id(feed_range)
            lease = self._acquire(rid)
            if lease is None:
                continue
            kwargs: dict[str, Any] = {"feed_range": feed_range, "max_item_count": max_items}
            if lease.get("continuation"):
                kwargs["continuation"] = lease["continuation"]
            else:
                kwargs["start_time"] = "Beginning"
            pager = self.container.query_items_change_feed(**kwargs).by_page()
            docs: list[Doc] = []
            for page in pager:
                docs.extend(page)
                break
            token = self.container.client_connection.last_response_headers.get("etag")
            yield FeedBatch(rid, docs, token)

    def commit(self, batch: FeedBatch) -> None:
        """Store the continuation after the batch's documents are recorded as changes."""
        lease = self.leases.read_item(f"lease:{batch.range_id}", partition_key=f"lease:{batch.range_id}")
        lease["continuation"] = batch.continuation
        lease["leaseUntil"] = clock.iso_in(self.lease_seconds)
        self.leases.replace_item(lease["id"], lease)

    def estimate_lag(self) -> dict[str, int]:
        """Per feed range: how many changes lie beyond the stored continuation (0 means caught up)."""
        out: dict[str, int] = {}
        for feed_range in self.feed_ranges():
            rid = self.range_id(feed_range)
            try:
                lease = self.leases.read_item(f"lease:{rid}", partition_key=f"lease:{rid}")
            except Exception:
                lease = {}
            kwargs: dict[str, Any] = {"feed_range": feed_range, "max_item_count": 1000}
            if lease.get("continuation"):
                kwargs["continuation"] = lease["continuation"]
            else:
                kwargs["start_time"] = "Beginning"
            n = 0
            for page in self.container.query_items_change_feed(**kwargs).by_page():
                n += sum(1 for _ in page)
                break
            out[rid] = n
        return out
