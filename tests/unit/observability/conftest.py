"""Fakes for the observability unit tests: an in-memory DocumentStore that can be switched off."""

from __future__ import annotations

import copy
import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from core.adapters.store import ContainerSpec, Doc, DocumentStore, Where, matches, normalise_where
from core.errors import Conflict, NotFound, StoreUnavailable


class MemoryStore(DocumentStore):
    """Dict-backed store with etags; ``down = True`` makes every call raise StoreUnavailable."""

    backend = "memory"

    def __init__(self) -> None:
        self.data: dict[str, dict[tuple[str, str], Doc]] = {}
        self.down = False
        self.writes = 0
        self.reads = 0
        self._lock = threading.RLock()

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("memory store switched off by the test")

    def _c(self, container: str) -> dict[tuple[str, str], Doc]:
        return self.data.setdefault(container, {})

    def ensure_containers(self, specs: Sequence[ContainerSpec]) -> list[str]:
        return []

    def missing_containers(self, specs: Sequence[ContainerSpec]) -> list[str]:
        return []

    def ping(self) -> None:
        self._check()

    def create(self, container: str, doc: Doc) -> Doc:
        self._check()
        with self._lock:
            key = (doc["tenantId"], doc["id"])
            if key in self._c(container):
                raise Conflict(f"{container}/{doc['id']} already exists")
            stored = {**copy.deepcopy(doc), "_etag": uuid.uuid4().hex}
            self._c(container)[key] = stored
            self.writes += 1
            return copy.deepcopy(stored)

    def get(self, container: str, tenant_id: str, doc_id: str) -> Doc:
        self._check()
        with self._lock:
            self.reads += 1
            doc = self._c(container).get((tenant_id, doc_id))
            if doc is None:
                raise NotFound(f"{container}/{doc_id} not found")
            return copy.deepcopy(doc)

    def upsert(self, container: str, doc: Doc, if_match: str | None = None) -> Doc:
        self._check()
        with self._lock:
            key = (doc["tenantId"], doc["id"])
            cur = self._c(container).get(key)
            if if_match is not None and (cur is None or cur["_etag"] != if_match):
                raise Conflict(f"{container}/{doc['id']} was changed by someone else")
            stored = {**copy.deepcopy({k: v for k, v in doc.items() if k != "_etag"}), "_etag": uuid.uuid4().hex}
            self._c(container)[key] = stored
            self.writes += 1
            return copy.deepcopy(stored)

    def delete(self, container: str, tenant_id: str, doc_id: str, if_match: str | None = None) -> None:
        self._check()
        with self._lock:
            if self._c(container).pop((tenant_id, doc_id), None) is None:
                raise NotFound(f"{container}/{doc_id} not found")

    def query(self, container: str, tenant_id: str | None, where: Where = None, order_by: str | None = None,
              descending: bool = False, limit: int | None = None) -> list[Doc]:
        self._check()
        conds = normalise_where(where)
        with self._lock:
            self.reads += 1
            rows = [copy.deepcopy(d) for (t, _), d in self._c(container).items()
                    if (tenant_id is None or t == tenant_id) and matches(d, conds)]
        if order_by:
            rows.sort(key=lambda d: (d.get(order_by) is None, d.get(order_by)), reverse=descending)
        return rows[:limit] if limit is not None else rows

    def count(self, container: str, tenant_id: str | None, where: Where = None) -> int:
        return len(self.query(container, tenant_id, where))


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.t = start or datetime(2025, 3, 10, 12, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.t

    def advance(self, **kw: float) -> datetime:
        self.t += timedelta(**kw)
        return self.t


@pytest.fixture
def mem_store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()
