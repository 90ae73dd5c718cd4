"""The append-only audit log: who did what to which thing, in which tenant, when and why."""

from __future__ import annotations

import csv
import io
import json
import uuid
from dataclasses import dataclass
from typing import Any

from core import clock
from core.adapters.store import PLATFORM, Cond, Doc, DocumentStore
from core.services.access import ADMIN, Principal, require

_MAX_SNAPSHOT = 4000  # characters; larger before/after values are summarised, not stored whole


def _small(value: Any) -> Any:
    if value is None:
        return None
    text = json.dumps(value, default=str)
    return value if len(text) <= _MAX_SNAPSHOT else {"summary": f"{len(text)} characters, not stored"}


@dataclass(frozen=True)
class AuditPage:
    rows: list[Doc]
    next_cursor: str | None


class AuditLog:
    """Records are only ever created; there is no update or delete path."""

    CONTAINER = "audit"

    def __init__(self, store: DocumentStore) -> None:
        self.store = store

    def record(
        self,
        actor: Principal,
        tenant_id: str | None,
        action: str,
        target: str,
        reason: str | None = None,
        before: Any = None,
        after: Any = None,
    ) -> Doc:
        at = clock.iso()
        doc = {
            "id": f"{at}-{uuid.uuid4().hex[:8]}",
            "tenantId": tenant_id or PLATFORM,
            "at": at,
            "actor": actor.email,
            "actorRole": actor.role,
            "action": action,
            "target": target,
            "reason": reason or "",
            "before": _small(before),
            "after": _small(after),
        }
        return self.store.create(self.CONTAINER, doc)

    def search(
        self,
        principal: Principal,
        tenant_id: str | None = None,
        action: str | None = None,
        actor: str | None = None,
        since: str | None = None,
        cursor: str | None = None,
        page_size: int = 50,
    ) -> AuditPage:
        """Newest first, keyset-paged by time (``cursor`` is the last row's ``at``).

        Tenant users see their own tenant's records only; platform records are for admins.
        """
        require(principal, tenant_id)
        scope = tenant_id
        if scope is None and not principal.platform_wide:
            scope = principal.tenant_id
        conds: list[Cond] = []
        if action:
            conds.append(Cond("action", "=", action))
        if actor:
            conds.append(Cond("actor", "=", actor))
        if since:
            conds.append(Cond("at", ">=", since))
        if cursor:
            conds.append(Cond("at", "<", cursor))
        rows = self.store.query(self.CONTAINER, scope, conds, order_by="at", descending=True, limit=page_size + 1)
        if principal.role != ADMIN:
            rows = [r for r in rows if r["tenantId"] != PLATFORM or r["actor"] == principal.email]
        more = len(rows) > page_size
        rows = rows[:page_size]
        return AuditPage(rows=rows, next_cursor=rows[-1]["at"] if more and rows else None)

    @staticmethod
    def to_csv(rows: list[Doc]) -> str:
        buf = io.StringIO()
        cols = ["at", "tenantId", "actor", "actorRole", "action", "target", "reason", "before", "after"]
        w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "before": json.dumps(r.get("before")), "after": json.dumps(r.get("after"))})
        return buf.getvalue()
