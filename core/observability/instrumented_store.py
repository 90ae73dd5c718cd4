"""A DocumentStore wrapper that records every store call in telemetry (latency, outcome, Cosmos RUs).

The composition root wraps the real store with it for services and pages, and hands the
*raw* store to the telemetry ``Recorder`` (so flushing rollups is not itself recorded).
Request units are read from the inner store's ``last_request_charge`` after each call when the
backend exposes one (the Cosmos adapter does; SQLite has none).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from core.adapters.store import ContainerSpec, Doc, DocumentStore, Where, normalise_where
from core.errors import CastielError
from core.observability.telemetry import Recorder, outcome_of


def describe_where(where: Where, order_by: str | None = None, limit: int | None = None) -> str:
    """A short, value-free description of a query for the slowest-queries table (no tenant data)."""
    parts = [f"{c.field} {c.op} ?" for c in normalise_where(where)]
    text = " AND ".join(parts) or "all"
    if order_by:
        text += f" ORDER BY {order_by}"
    if limit is not None:
        text += f" LIMIT {limit}"
    return text


class InstrumentedStore(DocumentStore):
    def __init__(self, inner: DocumentStore, recorder: Recorder) -> None:
        self.inner = inner
        self.recorder = recorder
        self.backend = inner.backend

    def _timed(self, op: str, container: str, tenant_id: str | None, detail: str | None, fn: Any, *args: Any) -> Any:
        t0 = time.perf_counter()
        outcome, error_kind = "ok", None
        try:
            return fn(*args)
        except CastielError as e:
            outcome, error_kind = outcome_of(e), type(e).__name__
            raise
        except Exception as e:
            outcome, error_kind = "error", type(e).__name__
            raise
        finally:
            ms = (time.perf_counter() - t0) * 1000.0
            ru = self._request_charge(container)
            self.recorder.record(
                f"store.{op}:{container}",
                ms,
                tenant_id=tenant_id,
                kind="store",
                outcome=outcome,
                error_kind=error_kind,
                ru=ru,
                detail=detail,
            )

    def _request_charge(self, container: str) -> float | None:
        """Request units of the call just made: the adapter's ``last_request_charge`` when it keeps one,
        else the Cosmos SDK's last response header of that container's client. Best effort: with
        several threads on one client the header may belong to a neighbouring request."""
        ru = getattr(self.inner, "last_request_charge", None)
        if ru is None and self.backend == "cosmos":
            proxy = getattr(self.inner, "_containers", {}).get(container)
            headers = getattr(getattr(proxy, "client_connection", None), "last_response_headers", None) or {}
            ru = headers.get("x-ms-request-charge")
        try:
            return float(ru) if ru is not None else None
        except (TypeError, ValueError):
            return None

    def __getattr__(self, name: str) -> Any:
        # Backend-specific helpers (a path, a connection) stay reachable through the wrapper; optional
        # bulk reads are timed like the contract's calls. Looked up here rather than defined on the
        # class so that ``getattr(store, name, None)`` still says None when the backend lacks one.
        if name.startswith("__") or name == "inner":
            raise AttributeError(name)
        attr = getattr(self.inner, name)
        if name == "existing_fields":

            def existing_fields(container: str, tenant_id: str, ids: Sequence[str], fields: Sequence[str]) -> Any:
                detail = f"{len(ids)} ids, fields {', '.join(fields)}"
                return self._timed("existing_fields", container, tenant_id, detail, attr, container, tenant_id, ids,
                                   fields)

            return existing_fields
        return attr

    # schema and health pass straight through (not per-request work)
    def ensure_containers(self, specs: Sequence[ContainerSpec]) -> list[str]:
        return self.inner.ensure_containers(specs)

    def missing_containers(self, specs: Sequence[ContainerSpec]) -> list[str]:
        return self.inner.missing_containers(specs)

    def ping(self) -> None:
        self._timed("ping", "-", None, None, self.inner.ping)

    def create(self, container: str, doc: Doc) -> Doc:
        return self._timed("create", container, doc.get("tenantId"), None, self.inner.create, container, doc)

    def create_many(self, container: str, docs: Sequence[Doc]) -> None:
        tenant = docs[0].get("tenantId") if docs else None
        self._timed("create_many", container, tenant, f"{len(docs)} docs", self.inner.create_many, container, docs)

    def upsert_many(self, container: str, docs: Sequence[Doc]) -> None:
        tenant = docs[0].get("tenantId") if docs else None
        self._timed("upsert_many", container, tenant, f"{len(docs)} docs", self.inner.upsert_many, container, docs)

    def get(self, container: str, tenant_id: str, doc_id: str) -> Doc:
        return self._timed("get", container, tenant_id, None, self.inner.get, container, tenant_id, doc_id)

    def upsert(self, container: str, doc: Doc, if_match: str | None = None) -> Doc:
        return self._timed("upsert", container, doc.get("tenantId"), None, self.inner.upsert, container, doc, if_match)

    def delete(self, container: str, tenant_id: str, doc_id: str, if_match: str | None = None) -> None:
        self._timed("delete", container, tenant_id, None, self.inner.delete, container, tenant_id, doc_id, if_match)

    def query(
        self,
        container: str,
        tenant_id: str | None,
        where: Where = None,
        order_by: str | None = None,
        descending: bool = False,
        limit: int | None = None,
    ) -> list[Doc]:
        detail = describe_where(where, order_by, limit) + ("" if tenant_id is not None else " (cross-tenant)")
        return self._timed(
            "query", container, tenant_id, detail, self.inner.query, container, tenant_id, where, order_by, descending,
            limit,
        )

    def count(self, container: str, tenant_id: str | None, where: Where = None) -> int:
        return self._timed(
            "count", container, tenant_id, describe_where(where), self.inner.count, container, tenant_id, where
        )

    def close(self) -> None:
        self.inner.close()


def instrument(store: DocumentStore, flush_seconds: float = 10.0) -> InstrumentedStore:
    """Wrap ``store`` so its calls are recorded, with a recorder that flushes to the raw store by itself."""
    if isinstance(store, InstrumentedStore):
        return store
    return InstrumentedStore(store, Recorder(store, flush_seconds=flush_seconds, auto_flush=True))
