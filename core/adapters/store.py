"""The document store interface every repository is written against (SQLite and Cosmos DB).

Records are JSON documents in named containers, partitioned by ``tenantId`` (platform-wide
records use ``PLATFORM``). Each carries an ``_etag`` that changes on every write, so
updates can be optimistic: pass ``if_match`` and a stale etag raises ``Conflict``.
Queries are restricted to what both backends serve: equality and range conditions on
top-level fields, one ORDER BY, a row limit (Cosmos ``TOP``) and keyset paging.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.errors import Conflict

PLATFORM = "_platform"
Doc = dict[str, Any]
_OPS = {"=", "!=", "<", "<=", ">", ">=", "in"}


@dataclass(frozen=True)
class Cond:
    """One condition on a top-level field: ``Cond("status", "=", "queued")``."""

    field: str
    op: str
    value: Any

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"unsupported operator {self.op!r}; use one of {sorted(_OPS)}")
        if not self.field.replace("_", "").isalnum():
            raise ValueError(f"field names are plain identifiers, got {self.field!r}")


Where = Sequence[Cond] | dict[str, Any] | None


def normalise_where(where: Where) -> list[Cond]:
    if where is None:
        return []
    if isinstance(where, dict):
        return [Cond(k, "=", v) for k, v in where.items()]
    return list(where)


def matches(doc: Doc, conds: Iterable[Cond]) -> bool:
    """Evaluate conditions in Python (used by fakes and to double-check backends)."""
    for c in conds:
        v = doc.get(c.field)
        if c.op == "=" and v != c.value:
            return False
        # As in SQL (and both backends): a comparison never matches a null or absent field.
        if c.op == "!=" and (v is None or v == c.value):
            return False
        if c.op == "in" and (v is None or v not in c.value):
            return False
        if c.op in {"<", "<=", ">", ">="}:
            if v is None:
                return False
            if c.op == "<" and not v < c.value:
                return False
            if c.op == "<=" and not v <= c.value:
                return False
            if c.op == ">" and not v > c.value:
                return False
            if c.op == ">=" and not v >= c.value:
                return False
    return True


@dataclass(frozen=True)
class ContainerSpec:
    """A container (table) and the fields its queries filter or sort on (indexed in SQLite)."""

    name: str
    indexes: tuple[tuple[str, ...], ...] = field(default_factory=tuple)


class DocumentStore(abc.ABC):
    """Partitioned JSON document storage with etags; two backends pass one contract suite."""

    backend: str = "abstract"

    @abc.abstractmethod
    def ensure_containers(self, specs: Sequence[ContainerSpec]) -> list[str]:
        """Create missing containers and indexes; return the names that were created."""

    @abc.abstractmethod
    def missing_containers(self, specs: Sequence[ContainerSpec]) -> list[str]:
        """Names of containers (or indexes) that ``ensure_containers`` would create."""

    @abc.abstractmethod
    def ping(self) -> None:
        """Raise ``StoreUnavailable`` with the reason when the store cannot be reached."""

    @abc.abstractmethod
    def create(self, container: str, doc: Doc) -> Doc:
        """Insert a new document; ``Conflict`` if (tenantId, id) exists. Returns it with _etag."""

    @abc.abstractmethod
    def get(self, container: str, tenant_id: str, doc_id: str) -> Doc:
        """Read one document; ``NotFound`` when absent."""

    @abc.abstractmethod
    def upsert(self, container: str, doc: Doc, if_match: str | None = None) -> Doc:
        """Insert or replace; with ``if_match`` the stored etag must equal it (else Conflict)."""

    @abc.abstractmethod
    def delete(self, container: str, tenant_id: str, doc_id: str, if_match: str | None = None) -> None:
        """Delete one document; ``NotFound`` when absent, ``Conflict`` on a stale etag."""

    @abc.abstractmethod
    def query(
        self,
        container: str,
        tenant_id: str | None,
        where: Where = None,
        order_by: str | None = None,
        descending: bool = False,
        limit: int | None = None,
    ) -> list[Doc]:
        """Documents matching all conditions; ``tenant_id=None`` queries across tenants."""

    @abc.abstractmethod
    def count(self, container: str, tenant_id: str | None, where: Where = None) -> int:
        """How many documents match."""

    def create_many(self, container: str, docs: Sequence[Doc]) -> None:
        """Insert many new documents (backends may batch); used by bulk paths and benches."""
        for d in docs:
            self.create(container, d)

    def upsert_many(self, container: str, docs: Sequence[Doc]) -> None:
        """Insert or replace many documents without etag checks (backends may batch); for bulk sync writes."""
        for d in docs:
            self.upsert(container, d)

    def find_one(self, container: str, tenant_id: str | None, where: Where) -> Doc | None:
        rows = self.query(container, tenant_id, where, limit=1)
        return rows[0] if rows else None

    def get_or_none(self, container: str, tenant_id: str, doc_id: str) -> Doc | None:
        from core.errors import NotFound

        try:
            return self.get(container, tenant_id, doc_id)
        except NotFound:
            return None

    def update(
        self,
        container: str,
        tenant_id: str,
        doc_id: str,
        change: Callable[[Doc | None], Doc | None],
        attempts: int = 20,
    ) -> Doc | None:
        """Read-modify-write with the etag, retried on ``Conflict`` (a concurrent writer).

        ``change`` gets the current document (or None) and returns the new one, or None to
        leave it as it is. This is how rollup counters and state moves stay correct when
        several workers share one store.
        """
        for attempt in range(attempts):
            current = self.get_or_none(container, tenant_id, doc_id)
            new = change(None if current is None else dict(current))
            if new is None:
                return current
            new["id"], new["tenantId"] = doc_id, tenant_id
            try:
                if current is None:
                    return self.create(container, new)
                return self.upsert(container, new, if_match=current["_etag"])
            except Conflict:
                time.sleep(min(0.002 * (2**attempt), 0.2))
        raise Conflict(f"{container}/{doc_id} kept changing under {attempts} attempts; try again")

    def increment(
        self, container: str, tenant_id: str, doc_id: str, deltas: dict[str, float], base: Doc | None = None
    ) -> Doc:
        """Add ``deltas`` to numeric fields of one rollup document, creating it from ``base``."""

        def change(doc: Doc | None) -> Doc:
            doc = doc if doc is not None else dict(base or {})
            for k, v in deltas.items():
                doc[k] = (doc.get(k) or 0) + v
            return doc

        out = self.update(container, tenant_id, doc_id, change)
        assert out is not None
        return out

    def close(self) -> None:  # noqa: B027 - optional hook
        pass
