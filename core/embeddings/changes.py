"""Change detection: every document insert, update or delete becomes one numbered change (an outbox).

SQLite (and any store): ``record_document_changes`` is called by the sync engine right after it
writes or deletes a page of documents. It takes the tenant's next sequence numbers (an etag-guarded
counter, so concurrent writers never share one) and stores the changes in ``doc_changes``. The
pipeline reads changes above its checkpoint in ``seq`` order and advances the checkpoint only
through a contiguous run of numbers: a number taken by a writer that has not stored its change
yet holds the checkpoint back (for ``GAP_GRACE_SECONDS``), so no change is ever skipped.

Cosmos DB: ``core.adapters.cosmos_change_feed.CosmosChangeFeed`` reads the container's change feed
instead, one lease document per feed range in a ``leases`` container holding the continuation token,
and estimates the lag.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

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
    rows = store.query(STATE, tenant_id, id_prefix(prefix))
    return [r for r in rows if r.get("kind") == kind]


def id_prefix(prefix: str) -> list[Cond]:
    """Conditions for the ids that start with ``prefix``: a primary-key range in every backend."""
    return [Cond("id", ">=", prefix), Cond("id", "<", prefix + "\U0010ffff")]


def stats_rows(store: DocumentStore, tenant_id: str) -> list[Doc]:
    """Per-source counters (``stats:<source>``)."""
    return state_with_prefix(store, tenant_id, "stats:", "stats")


class ChangeRef(NamedTuple):
    """One document write or removal to record; ``source`` and ``project`` are looked up when not given."""

    document_id: str
    op: str
    source: str | None = None
    project: str | None = None


RefTuple = tuple[str, str, str | None, str | None]  # a ChangeRef as the sync engine passes it


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
    return record_document_changes(store, tenant_id, [ChangeRef(document_id, op, source, project)], at)[0]


def record_document_changes(store: DocumentStore, tenant_id: str, refs: Sequence[ChangeRef | RefTuple],
                            at: datetime | None = None) -> list[Doc]:
    """Record many changes at once (a synced page): one counter step takes all their numbers, one write
    stores them, and each source's counter moves once. Returns the changes in order.

    A process that dies between taking the numbers and storing the changes leaves a gap, which the
    pipeline waits out for ``GAP_GRACE_SECONDS`` as it does for a single change (the reconcile sweep
    finds the documents again).
    """
    given = [ChangeRef(*r) for r in refs]
    for r in given:
        if r.op not in OPS:
            raise Invalid(f"unknown change operation {r.op!r}; use one of {OPS}")
    if not given:
        return []
    filled = _with_sources(store, tenant_id, given)
    last = int(store.increment(STATE, tenant_id, "seq", {"value": len(filled)}, base={"kind": "seq"})["value"])
    created = clock.iso(at)
    changes = [
        {"id": change_id(seq), "tenantId": tenant_id, "seq": seq, "documentId": r.document_id, "op": r.op,
         "source": r.source, "project": r.project, "status": "pending", "attempts": 0, "createdAt": created}
        for seq, r in enumerate(filled, start=last - len(filled) + 1)
    ]
    store.create_many(CHANGES, changes)
    for source, n in Counter(str(r.source) for r in filled).items():
        store.increment(STATE, tenant_id, stats_id(source), {"recorded": n}, base={"kind": "stats", "source": source})
    return changes


def _with_sources(store: DocumentStore, tenant_id: str, refs: list[ChangeRef]) -> list[ChangeRef]:
    """Fill in the source (and project) the screen shows backlog by, from the document or its chunks."""
    missing = [r.document_id for r in refs if r.source is None and r.op == "upsert"]
    known: dict[str, tuple[Any, ...]] = {}
    if missing:
        fields = getattr(store, "existing_fields", None)
        if fields is not None:  # one query, two fields read, no bodies
            known = fields(DOCUMENTS, tenant_id, missing, ("source", "project"))
        else:
            for doc_id in missing:
                d = store.get_or_none(DOCUMENTS, tenant_id, doc_id)
                if d is not None:
                    known[doc_id] = (d.get("source"), d.get("project"))
    out = []
    for r in refs:
        if r.source is None:
            source, project = known.get(r.document_id) or (None, None)
            if not source:
                chunk = next(iter(document_chunks(store, tenant_id, r.document_id, limit=1)), None) or {}
                source, project = chunk.get("source"), project or chunk.get("project")
            r = r._replace(source=source or UNKNOWN_SOURCE, project=r.project or project)
        out.append(r)
    return out


def document_change_hook(store: DocumentStore) -> Callable[[str, Sequence[RefTuple]], None]:
    """The ``on_document_changed(tenant_id, [(document_id, op, source, project), ...])`` hook the sync
    engine calls once per page it stored."""

    def hook(tenant_id: str, refs: Sequence[RefTuple]) -> None:
        record_document_changes(store, tenant_id, refs)

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
