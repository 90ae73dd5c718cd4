"""Reconcile sweep: find document writes and deletes whose change record was lost, and record them.

The sync engine writes a document, then records its change. A process killed between the two
leaves a document the pipeline never hears of (or chunks of a deleted document that stay
searchable). The sweep closes that gap without trusting the outbox:

- every document state the pipeline writes remembers the document version it processed
  (``docVersion``: the connector's content hash, else its modified time);
- documents written since the last sweep (by ``syncedAt``, with an overlap) whose version differs
  from their state's, and that have no change waiting, get an ``upsert`` change;
- document states whose document no longer exists, and that have no change waiting, get a
  ``delete`` change.

A document that failed for good (``dead``) is not retried by the sweep unless it changes again.
The sweep runs on the worker's schedule (``embeddings.reconcile``) and on demand; it records what
it found in ``pipeline_state/reconcile`` for the screen.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from core import clock
from core.adapters.store import Cond, Doc, DocumentStore
from core.embeddings.changes import (
    CHANGES,
    DOCUMENTS,
    GAP_GRACE_SECONDS,
    STATE,
    id_prefix,
    pending_changes,
    read_checkpoint,
    record_document_change,
    state_with_prefix,
)

RECONCILE_ID = "reconcile"
BATCH = 500
# Writes this long before the last sweep are looked at again: a writer may have stamped a document
# just before the last sweep read, and stored it just after.
OVERLAP_SECONDS = 2 * GAP_GRACE_SECONDS


def document_version(doc: Doc) -> str | None:
    """What changes whenever a document's content does: the content hash, else its modified time."""
    v = doc.get("contentHash") or doc.get("updatedAt") or doc.get("syncedAt")
    return str(v) if v is not None else None


@dataclass
class ReconcileResult:
    tenant_id: str
    documents_checked: int = 0
    states_checked: int = 0
    upserts_recorded: int = 0
    deletes_recorded: int = 0
    since: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _waiting(store: DocumentStore, tenant_id: str) -> set[str]:
    """Documents with a change the pipeline has not finished: above the checkpoint, or failed and due again."""
    cp = read_checkpoint(store, tenant_id)
    ids: set[str] = set()
    after = cp
    while True:
        rows = pending_changes(store, tenant_id, after, 5000)
        ids.update(r["documentId"] for r in rows)
        if len(rows) < 5000:
            break
        after = int(rows[-1]["seq"])
    ids.update(r["documentId"] for r in store.query(CHANGES, tenant_id, [Cond("status", "=", "failed")]))
    return ids


def _batches(items: list[str], n: int = BATCH) -> Iterator[list[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _existing_ids(store: DocumentStore, tenant_id: str, ids: list[str]) -> set[str]:
    fields = getattr(store, "existing_fields", None)
    if fields is not None:  # reads ids only, not bodies
        return set(fields(DOCUMENTS, tenant_id, ids, ("id",)))
    return {d["id"] for d in store.query(DOCUMENTS, tenant_id, [Cond("id", "in", ids)])}


def _live_state_ids(store: DocumentStore, tenant_id: str) -> list[str]:
    """Document ids of the tenant's document states not marked deleted; only ids and status are read
    where the store can (a document state body is read whole otherwise)."""
    fields = getattr(store, "query_fields", None)
    if fields is None:
        return [s["id"][4:] for s in state_with_prefix(store, tenant_id, "doc:", "doc") if s.get("status") != "deleted"]
    rows = fields(STATE, tenant_id, id_prefix("doc:"), ("kind", "status"))
    return [i[4:] for i, (kind, status) in rows.items() if kind == "doc" and status != "deleted"]


def reconcile(store: DocumentStore, tenant_id: str, now: datetime | None = None,
              full: bool = False) -> ReconcileResult:
    """One sweep for a tenant; ``full`` looks at every document, not only those written since the last sweep."""
    now = now or clock.now()
    marker = store.get_or_none(STATE, tenant_id, RECONCILE_ID) or {}
    since = None if full or not marker.get("lastRunAt") else clock.iso(
        clock.parse(marker["lastRunAt"]) - timedelta(seconds=OVERLAP_SECONDS))
    result = ReconcileResult(tenant_id, since=since)
    waiting = _waiting(store, tenant_id)

    # 1. written documents the pipeline never heard of (or heard of an older version)
    where = [Cond("syncedAt", ">=", since)] if since else None
    docs = store.query(DOCUMENTS, tenant_id, where)
    result.documents_checked = len(docs)
    by_id = {d["id"]: d for d in docs}
    for ids in _batches(list(by_id)):
        states = {s["id"][4:]: s for s in store.query(STATE, tenant_id, [Cond("id", "in", [f"doc:{i}" for i in ids])])}
        for doc_id in ids:
            if doc_id in waiting:
                continue
            doc = by_id[doc_id]
            state = states.get(doc_id)
            if state is not None and state.get("docVersion") == document_version(doc):
                continue
            record_document_change(store, tenant_id, doc_id, "upsert", source=doc.get("source"),
                                   project=doc.get("project"), at=now)
            waiting.add(doc_id)
            result.upserts_recorded += 1

    # 2. documents gone from the store whose chunks the pipeline still holds
    live = _live_state_ids(store, tenant_id)
    result.states_checked = len(live)
    for group in _batches(live):
        present = _existing_ids(store, tenant_id, group)
        for doc_id in group:
            if doc_id in present or doc_id in waiting:
                continue
            record_document_change(store, tenant_id, doc_id, "delete", at=now)
            waiting.add(doc_id)
            result.deletes_recorded += 1

    store.upsert(STATE, {"id": RECONCILE_ID, "tenantId": tenant_id, "kind": "reconcile", "lastRunAt": clock.iso(now),
                         "last": result.as_dict()})
    return result
