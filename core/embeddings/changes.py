"""Change detection: every document insert, update or delete becomes one numbered change (an outbox).

SQLite (and any store): ``record_document_change`` is called by the sync engine right after it
writes or deletes a document. It takes the tenant's next sequence number (an etag-guarded
counter, so concurrent writers never share one) and stores the change in ``doc_changes``. The
pipeline reads changes above its checkpoint in ``seq`` order and advances the checkpoint only
through a contiguous run of numbers: a number taken by a writer that has not stored its change
yet holds the checkpoint back (for ``GAP_GRACE_SECONDS``), so no change is ever skipped.

Cosmos DB: ``core.adapters.cosmos_change_feed.CosmosChangeFeed`` reads the container's change feed
instead, one lease document per feed range in a ``leases`` container holding the continuation token,
and estimates the lag.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from core import clock
from core.adapters.store import Cond, Doc, DocumentStore
from core.embeddings.embedder import model_slug
from core.errors import Invalid

CHANGES, STATE, DOCUMENTS, CHUNKS = "doc_changes", "pipeline_state", "documents", "chunks"
OPS = ("upsert", "delete", "reembed")  # reembed: embed again even if unchanged
GAP_GRACE_SECONDS = 60.0
UNKNOWN_SOURCE = "unknown"


def chunk_id_prefix(document_id: str, model_key: str | None = None) -> str:
    """What the ids of a document's chunks (of one model) begin with: ``<document>:<model>:``."""
    return f"{document_id}:" + (f"{model_slug(model_key)}:" if model_key is not None else "")


def document_chunks(store: DocumentStore, tenant_id: str, document_id: str, model_key: str | None = None,
                    limit: int | None = None) -> list[Doc]:
    """The stored chunks of one document (of one model), in order.

    Read by id range on the primary key: chunk ids begin with the document id, so the chunks need
    no index on ``documentId`` (every chunk written would pay for keeping it). The conditions on
    the fields keep a document whose own id begins with this one's and a colon out of the answer.
    """
    prefix = chunk_id_prefix(document_id, model_key)
    where = [Cond("id", ">=", prefix), Cond("id", "<", prefix[:-1] + ";"), Cond("documentId", "=", document_id)]
    if model_key is not None:
        where.append(Cond("model", "=", model_key))
    return store.query(CHUNKS, tenant_id, where, order_by="id", limit=limit)


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
        ref = ref or next(iter(document_chunks(store, tenant_id, document_id, limit=1)), None)
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
