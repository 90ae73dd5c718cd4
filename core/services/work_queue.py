"""The store-backed work queue: enqueue, claim with a lease, heartbeat, complete, retry, dead-letter.

Claiming is an etag-guarded write, so when two workers race for one item exactly one wins
(the other gets ``Conflict`` and moves on). An item whose worker died keeps its lease until
``leaseUntil``; after that any worker may claim it again. Failed attempts come back after an
exponential backoff; after ``maxAttempts`` the item is dead-lettered with its last error.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from core import clock
from core.adapters.store import PLATFORM, Cond, Doc, DocumentStore
from core.errors import Conflict, Invalid, NotFound
from core.observability.logging import inject
from core.services.access import ADMIN, ANY_ROLE, Principal, require
from core.services.audit import AuditLog

QUEUED, RUNNING, SUCCEEDED, FAILED, DEAD, CANCELLED = "queued", "running", "succeeded", "failed", "dead", "cancelled"
OPEN_STATES = (QUEUED, RUNNING)


@dataclass(frozen=True)
class QueueDepth:
    queue: str
    queued: int
    running: int
    dead: int


class WorkQueue:
    CONTAINER = "jobs"

    def __init__(self, store: DocumentStore, audit: AuditLog, lease_seconds: float = 60.0) -> None:
        self.store, self.audit, self.lease_seconds = store, audit, lease_seconds

    # producing ---------------------------------------------------------------------------
    def enqueue(
        self,
        principal: Principal,
        queue: str,
        kind: str,
        tenant_id: str | None,
        payload: dict[str, Any] | None = None,
        reason: str = "",
        dedupe_key: str | None = None,
        max_attempts: int = 5,
        delay_seconds: float = 0.0,
        audit: bool = True,
    ) -> Doc:
        """Put one item on ``queue``; with ``dedupe_key`` an open item with that key is returned instead."""
        require(principal, tenant_id, ANY_ROLE)
        if not queue or not kind:
            raise Invalid("queue and kind are required")
        part = tenant_id or PLATFORM
        if dedupe_key:
            existing = self.store.query(
                self.CONTAINER,
                part,
                [Cond("dedupeKey", "=", dedupe_key), Cond("status", "in", list(OPEN_STATES))],
                limit=1,
            )
            if existing:
                return existing[0]
        now = clock.iso()
        doc = {
            "id": f"job-{uuid.uuid4().hex}",
            "tenantId": part,
            "queue": queue,
            "kind": kind,
            "payload": inject(dict(payload or {})),  # the correlation id follows the work to the worker
            "status": QUEUED,
            "attempts": 0,
            "maxAttempts": max_attempts,
            "availableAt": clock.iso_in(delay_seconds) if delay_seconds else now,
            "leaseUntil": None,
            "workerId": None,
            "createdAt": now,
            "startedAt": None,
            "finishedAt": None,
            "heartbeatAt": None,
            "progress": 0.0,
            "progressMessage": "",
            "result": None,
            "error": None,
            "errors": [],
            "dedupeKey": dedupe_key,
            "requestedBy": principal.email,
            "reason": reason,
        }
        created = self.store.create(self.CONTAINER, doc)
        if audit:
            self.audit.record(
                principal,
                tenant_id,
                f"job.enqueue.{kind}",
                f"job:{doc['id']}",
                reason,
                after={"queue": queue, "payload": payload},
            )
        return created

    # consuming ---------------------------------------------------------------------------
    def claim(self, worker_id: str, queues: list[str] | None = None, batch: int = 10) -> Doc | None:
        """Claim one due item (or one whose lease expired); None when there is nothing to do."""
        now = clock.iso()
        due = [Cond("status", "=", QUEUED), Cond("availableAt", "<=", now)]
        if queues:
            due.append(Cond("queue", "in", queues))
        candidates = self.store.query(self.CONTAINER, None, due, order_by="availableAt", limit=batch)
        expired = [Cond("status", "=", RUNNING), Cond("leaseUntil", "<", now)]
        if queues:
            expired.append(Cond("queue", "in", queues))
        candidates += self.store.query(self.CONTAINER, None, expired, order_by="leaseUntil", limit=batch)
        random.shuffle(candidates)  # racing workers spread over the candidates instead of colliding
        for item in candidates:
            if item["status"] == RUNNING:
                item.setdefault("errors", []).append(
                    {
                        "attempt": item["attempts"],
                        "at": now,
                        "error": f"lease expired (worker {item['workerId']} stopped)",
                    }
                )
                if item["attempts"] >= item["maxAttempts"]:
                    item.update(status=DEAD, error="worker stopped responding on the last attempt", finishedAt=now)
                    try:
                        self.store.upsert(self.CONTAINER, item, if_match=item["_etag"])
                    except Conflict:
                        pass
                    continue
            item.update(
                status=RUNNING,
                workerId=worker_id,
                attempts=item["attempts"] + 1,
                startedAt=now,
                heartbeatAt=now,
                leaseUntil=clock.iso_in(self.lease_seconds),
            )
            try:
                return self.store.upsert(self.CONTAINER, item, if_match=item["_etag"])
            except Conflict:
                continue  # another worker won this one
        return None

    def _owned_update(self, item: Doc, worker_id: str, **fields: Any) -> Doc:
        def change(doc: Doc | None) -> Doc | None:
            if doc is None:
                raise NotFound(f"job {item['id']} disappeared")
            if doc.get("workerId") != worker_id or doc.get("status") != RUNNING:
                raise Conflict(f"job {item['id']} is no longer held by {worker_id} (lease expired and re-claimed?)")
            doc.update(fields)
            return doc

        out = self.store.update(self.CONTAINER, item["tenantId"], item["id"], change)
        assert out is not None
        return out

    def heartbeat(self, item: Doc, worker_id: str, progress: float | None = None, message: str | None = None) -> Doc:
        fields: dict[str, Any] = {"heartbeatAt": clock.iso(), "leaseUntil": clock.iso_in(self.lease_seconds)}
        if progress is not None:
            fields["progress"] = max(0.0, min(1.0, float(progress)))
        if message is not None:
            fields["progressMessage"] = message[:500]
        return self._owned_update(item, worker_id, **fields)

    def complete(self, item: Doc, worker_id: str, result: dict[str, Any] | None = None) -> Doc:
        return self._owned_update(
            item, worker_id, status=SUCCEEDED, finishedAt=clock.iso(), progress=1.0, result=result, leaseUntil=None
        )

    def fail(
        self, item: Doc, worker_id: str, error: str, retryable: bool = True, retry_after: float | None = None
    ) -> Doc:
        """Record a failed attempt: back off and retry, or dead-letter with the reason."""
        current = self.store.get(self.CONTAINER, item["tenantId"], item["id"])
        attempts = int(current["attempts"])
        errors = list(current.get("errors") or []) + [{"attempt": attempts, "at": clock.iso(), "error": error[:2000]}]
        if retryable and attempts < int(current["maxAttempts"]):
            backoff = retry_after if retry_after is not None else min(2.0**attempts, 300.0) * random.uniform(0.8, 1.2)
            return self._owned_update(
                item,
                worker_id,
                status=QUEUED,
                availableAt=clock.iso_in(backoff),
                leaseUntil=None,
                workerId=None,
                error=error[:2000],
                errors=errors,
            )
        return self._owned_update(
            item, worker_id, status=DEAD, finishedAt=clock.iso(), leaseUntil=None, error=error[:2000], errors=errors
        )

    # managing ----------------------------------------------------------------------------
    def get(self, principal: Principal, tenant_id: str | None, job_id: str) -> Doc:
        require(principal, tenant_id)
        return self.store.get(self.CONTAINER, tenant_id or PLATFORM, job_id)

    def cancel(self, principal: Principal, tenant_id: str | None, job_id: str, reason: str) -> Doc:
        require(principal, tenant_id)
        if not reason.strip():
            raise Invalid("a reason is required to cancel a job")

        def change(doc: Doc | None) -> Doc | None:
            if doc is None:
                raise NotFound(f"job {job_id} not found")
            if doc["status"] not in OPEN_STATES:
                raise Invalid(f"job {job_id} is already {doc['status']}; only queued or running jobs can be cancelled")
            doc.update(status=CANCELLED, finishedAt=clock.iso(), leaseUntil=None, error=f"cancelled: {reason}")
            return doc

        out = self.store.update(self.CONTAINER, tenant_id or PLATFORM, job_id, change)
        self.audit.record(principal, tenant_id, "job.cancel", f"job:{job_id}", reason)
        assert out is not None
        return out

    def is_cancelled(self, item: Doc) -> bool:
        doc = self.store.get_or_none(self.CONTAINER, item["tenantId"], item["id"])
        return doc is None or doc["status"] == CANCELLED

    def retry_dead(self, principal: Principal, tenant_id: str | None, job_id: str, reason: str) -> Doc:
        require(principal, tenant_id)

        def change(doc: Doc | None) -> Doc | None:
            if doc is None:
                raise NotFound(f"job {job_id} not found")
            if doc["status"] not in (DEAD, CANCELLED):
                raise Invalid(f"job {job_id} is {doc['status']}; only dead or cancelled jobs can be retried")
            doc.update(status=QUEUED, attempts=0, availableAt=clock.iso(), error=None, finishedAt=None)
            return doc

        out = self.store.update(self.CONTAINER, tenant_id or PLATFORM, job_id, change)
        self.audit.record(principal, tenant_id, "job.retry", f"job:{job_id}", reason)
        assert out is not None
        return out

    def depths(self, principal: Principal, tenant_id: str | None = None) -> list[QueueDepth]:
        require(principal, tenant_id)
        scope = tenant_id if (tenant_id or principal.platform_wide) else principal.tenant_id
        out: dict[str, dict[str, int]] = {}
        for status in (QUEUED, RUNNING, DEAD):
            for row in self.store.query(self.CONTAINER, scope, [Cond("status", "=", status)], limit=5000):
                out.setdefault(row["queue"], {QUEUED: 0, RUNNING: 0, DEAD: 0})[status] += 1
        return [QueueDepth(q, c[QUEUED], c[RUNNING], c[DEAD]) for q, c in sorted(out.items())]

    def recent(
        self,
        principal: Principal,
        tenant_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
        kind: str | None = None,
    ) -> list[Doc]:
        require(principal, tenant_id)
        scope = tenant_id if (tenant_id or principal.platform_wide) else principal.tenant_id
        conds = [Cond("status", "=", status)] if status else []
        if kind:
            conds.append(Cond("kind", "=", kind))
        return self.store.query(self.CONTAINER, scope, conds, order_by="createdAt", descending=True, limit=limit)

    def scheduled_runs(self, principal: Principal, limit: int = 50) -> list[Doc]:
        """The worker's recent scheduled-job runs (platform records: admins only)."""
        require(principal, None, {ADMIN})
        return self.store.query("job_runs", PLATFORM, order_by="startedAt", descending=True, limit=limit)

    def backlog_age_seconds(self, queue: str | None = None) -> float:
        conds = [Cond("status", "=", QUEUED)] + ([Cond("queue", "=", queue)] if queue else [])
        oldest = self.store.query(self.CONTAINER, None, conds, order_by="createdAt", limit=1)
        if not oldest:
            return 0.0
        return max(0.0, (clock.now() - clock.parse(oldest[0]["createdAt"])).total_seconds())


def stale_after(seconds: float) -> str:
    return clock.iso(clock.now() - timedelta(seconds=seconds))
