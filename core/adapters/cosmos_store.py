"""Azure Cosmos DB backend of the document store: one container per ContainerSpec, partitioned by /tenantId.

Written to the portable subset that both real Cosmos DB and the local ``@vercel/cosmosdb-server``
serve (see DESIGN.md "Facts seen"), so the same contract suite runs against both:

* Every tenant-scoped query carries ``c.tenantId = @t`` in its text *and* ``partition_key=``:
  the test server ignores the partition key, real Cosmos uses it to route to one partition.
* Row limits use ``SELECT TOP n`` (no OFFSET/LIMIT), counts ``SELECT VALUE COUNT(1)``,
  ``in`` is ``ARRAY_CONTAINS(@p, field)``; no GROUP BY, DISTINCT or transactional batch.
* Optimistic concurrency: writes with ``if_match`` send the etag with
  ``MatchConditions.IfNotModified``; a 412 becomes ``Conflict`` and nothing is overwritten.
  A conditional write is a *replace*, never an upsert, so a document deleted meanwhile is not
  brought back by a writer holding its old etag.
* The test server answers 500 (not 404) when a read misses; ``get`` then looks the id up by
  query, and keeps doing so for that server (the SDK would wait 0.5 s to retry each 500).

Null semantics follow the SQLite backend: ``= None`` matches a null or absent field, and
other comparisons never match a null or absent field.
"""

from __future__ import annotations

import json
import logging
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from core.adapters.store import ContainerSpec, Doc, DocumentStore, Where, normalise_where
from core.errors import Conflict, Invalid, NotFound, StoreUnavailable

if TYPE_CHECKING:  # the SDK is imported lazily so core stays importable without it
    from azure.cosmos import ContainerProxy, CosmosClient, DatabaseProxy

log = logging.getLogger(__name__)

PARTITION_KEY_PATH = "/tenantId"
# Added by the server to every document; callers never see them (``_etag`` is kept on purpose).
SYSTEM_FIELDS = frozenset({"_rid", "_self", "_ts", "_attachments", "_lsn"})
_SQL_OPS = {"=": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_ILLEGAL_ID_CHARS = set("/\\?#")
_SUBSTATUS_OWNER_MISSING = 1003  # 404 because the container or database does not exist
# What @vercel/cosmosdb-server says (with a 500) when a point read misses.
_TEST_SERVER_MISSING_ITEM = "Cannot read properties of undefined"
# Endpoints seen answering that way; shared by every store in the process (tests build many).
_READS_BY_QUERY: set[str] = set()
T = TypeVar("T")


def _field(name: str) -> str:
    # Bracket notation, because plain names such as ``value`` or ``order`` are reserved words.
    if name in {"id", "tenantId"}:
        return f"c.{name}"
    return f'c["{name}"]'


def _clean(doc: dict[str, Any]) -> Doc:
    return {k: v for k, v in doc.items() if k not in SYSTEM_FIELDS}


def _check_id(doc_id: Any) -> str:
    if not isinstance(doc_id, str) or not doc_id:
        raise Invalid(f"a document id must be a non-empty string, got {doc_id!r}")
    if _ILLEGAL_ID_CHARS & set(doc_id) or doc_id[-1] in " \n" or len(doc_id) > 255:
        raise Invalid(
            f"document id {doc_id!r} cannot be stored in Cosmos DB: ids are at most 255 characters, "
            "contain none of / \\ ? # and do not end in a space"
        )
    return doc_id


class CosmosStore(DocumentStore):
    """DocumentStore over the azure-cosmos sync client (gateway mode, one client per store)."""

    backend = "cosmos"

    def __init__(
        self,
        endpoint: str,
        key: str,
        database: str = "castiel",
        *,
        verify_tls: bool | str = True,
        timeout_s: float = 10.0,
        database_throughput: int | None = None,
        bulk_workers: int = 8,
    ) -> None:
        """
        ``verify_tls``: True verifies against the system CAs (even on localhost, where the SDK
        would otherwise silently skip it), a path verifies against that CA file (the local test
        server's own certificate), False turns verification off (a local emulator only).
        ``database_throughput``: RU/s shared by all containers when the database is created; on a
        provisioned-throughput account this avoids paying for every container separately.
        Connections are kept alive and pooled by the SDK's one requests session per client.
        """
        self.endpoint = endpoint
        self._key = key
        self.database_name = database
        self.verify_tls = verify_tls
        self.timeout_s = timeout_s
        self.database_throughput = database_throughput
        self.bulk_workers = max(1, bulk_workers)
        self._lock = threading.Lock()
        self._client: CosmosClient | None = None
        self._db: DatabaseProxy | None = None
        self._containers: dict[str, ContainerProxy] = {}
        self._charges = threading.local()  # request units of this thread's last store call

    # client ------------------------------------------------------------------------------
    def _client_kwargs(self) -> dict[str, Any]:
        from azure.cosmos.documents import SSLConfiguration

        kwargs: dict[str, Any] = {"connection_timeout": self.timeout_s}
        if self.verify_tls is False:
            log.warning("TLS verification is OFF for Cosmos DB at %s: only for a local test server", self.endpoint)
            # urllib3 would warn on every request; the operator chose this once, above.
            warnings.filterwarnings("ignore", message="Unverified HTTPS request")
            kwargs["connection_verify"] = False
        else:
            # Passing an SSLConfiguration makes the SDK verify even on localhost/127.0.0.1.
            ssl_config = SSLConfiguration()
            ssl_config.SSLCaCerts = self.verify_tls
            kwargs["ssl_config"] = ssl_config
        return kwargs

    def _get_client(self) -> CosmosClient:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    from azure.cosmos import CosmosClient

                    # The constructor already talks to the account, so map its failures too.
                    self._client = self._call(lambda: CosmosClient(self.endpoint, self._key, **self._client_kwargs()))
        return self._client

    def _database(self) -> DatabaseProxy:
        if self._db is None:
            self._db = self._get_client().get_database_client(self.database_name)
        return self._db

    def _container(self, name: str) -> ContainerProxy:
        proxy = self._containers.get(name)
        if proxy is None:
            proxy = self._database().get_container_client(name)
            self._containers[name] = proxy
        return proxy

    # request units ----------------------------------------------------------------------
    @property
    def last_request_charge(self) -> float | None:
        """Request units (RU) the calling thread's last store call cost; read by the telemetry wrapper."""
        return getattr(self._charges, "total", None)

    def _begin(self) -> None:
        self._charges.total = 0.0

    def _hook(self, headers: Any, _result: Any) -> None:
        # Called by the SDK once per response (once per page for queries), so charges add up.
        try:
            charge = float(headers.get("x-ms-request-charge") or 0.0)
        except (AttributeError, TypeError, ValueError):
            return
        self._charges.total = getattr(self._charges, "total", 0.0) + charge

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
            self._client, self._db = None, None
            self._containers.clear()

    # error mapping -----------------------------------------------------------------------
    def _unavailable(self, e: Exception, what: str = "") -> NoReturn:
        from azure.cosmos.exceptions import CosmosHttpResponseError

        where = f"Cosmos DB at {self.endpoint}"
        if isinstance(e, CosmosHttpResponseError):
            status = e.status_code
            if status in (401, 403):
                raise StoreUnavailable(
                    f"{where} refused the key ({status}): check CASTIEL_COSMOS_KEY and the account's network rules"
                ) from e
            if status == 404:
                raise StoreUnavailable(
                    f"{where}: {what or 'the container'} does not exist in database {self.database_name!r}; "
                    "run `python -m core migrate`"
                ) from e
            if status == 429:
                raise StoreUnavailable(f"{where} is throttling (429) after retries; raise its throughput") from e
            reason = (e.message or str(e)).splitlines()[0][:300]
            raise StoreUnavailable(f"{where} answered {status}: {reason}") from e
        raise StoreUnavailable(f"cannot reach {where}: {e}") from e

    def _call(self, fn: Callable[[], T], what: str = "") -> T:
        """Run one SDK call, turning transport and server failures into StoreUnavailable."""
        from azure.core.exceptions import AzureError

        try:
            return fn()
        except AzureError as e:
            self._unavailable(e, what)

    # schema ------------------------------------------------------------------------------
    def _existing_containers(self) -> set[str] | None:
        """Container names in the database, or None when the database itself does not exist."""
        from azure.core.exceptions import AzureError
        from azure.cosmos.exceptions import CosmosResourceNotFoundError

        db = self._database()
        try:
            return {c["id"] for c in db.list_containers()}
        except CosmosResourceNotFoundError:
            return None
        except AzureError as e:
            self._unavailable(e, f"database {self.database_name!r}")

    def missing_containers(self, specs: Sequence[ContainerSpec]) -> list[str]:
        have = self._existing_containers() or set()
        # Cosmos indexes every path by default; single-field ORDER BY needs no composite index,
        # so only containers are reported.
        return [s.name for s in specs if s.name not in have]

    def ensure_containers(self, specs: Sequence[ContainerSpec]) -> list[str]:
        from azure.cosmos import PartitionKey

        from core.adapters.cosmos_vector import create_container

        client = self._get_client()
        self._call(
            lambda: client.create_database_if_not_exists(self.database_name, offer_throughput=self.database_throughput),
            f"database {self.database_name!r}",
        )
        db = self._database()
        have = self._existing_containers() or set()
        created = []
        for spec in specs:
            if spec.name in have:
                continue
            # create_if_not_exists: two migrations racing both succeed. A container with vector fields
            # gets its vector embedding policy and vector indexes now: the policy's paths are fixed at creation.
            self._call(
                partial(create_container, db, spec, PartitionKey(PARTITION_KEY_PATH), f"Cosmos DB at {self.endpoint}"),
                f"container {spec.name!r}",
            )
            created.append(spec.name)
        return created

    def ping(self) -> None:
        client = self._get_client()
        self._call(client.get_database_account)

    # documents ---------------------------------------------------------------------------
    @staticmethod
    def _body(doc: Doc) -> dict[str, Any]:
        _check_id(doc.get("id"))
        if not isinstance(doc.get("tenantId"), str) or not doc["tenantId"]:
            raise Invalid(f"document {doc.get('id')!r} needs a tenantId (use PLATFORM for platform-wide records)")
        # Round-trip through JSON like the SQLite backend, so dates and other values stored
        # with ``default=str`` come back the same from both.
        body = json.loads(json.dumps({k: v for k, v in doc.items() if k != "_etag"}, default=str))
        return {k: v for k, v in body.items() if k not in SYSTEM_FIELDS}

    def create(self, container: str, doc: Doc) -> Doc:
        self._begin()
        return self._create_one(container, self._body(doc))

    def _create_one(self, container: str, body: dict[str, Any]) -> Doc:
        from azure.core.exceptions import AzureError
        from azure.cosmos.exceptions import CosmosHttpResponseError

        proxy = self._container(container)
        try:
            return _clean(proxy.create_item(body, response_hook=self._hook))
        except CosmosHttpResponseError as e:
            if e.status_code == 409:
                raise Conflict(f"{container}/{body['id']} already exists") from e
            self._unavailable(e, f"container {container!r}")
        except AzureError as e:
            self._unavailable(e, f"container {container!r}")

    def create_many(self, container: str, docs: Sequence[Doc]) -> None:
        """Parallel single creates (the test server has no transactional batch), not atomic:
        on a Conflict the other documents are still written and the Conflict names how many clashed."""
        self._begin()
        if not docs:
            return
        bodies = [self._body(d) for d in docs]
        if len(bodies) == 1 or self.bulk_workers == 1:
            for d in bodies:
                self._create_one(container, d)
            return

        def create_counted(body: dict[str, Any]) -> float:
            self._begin()  # the worker thread's own tally, summed below
            self._create_one(container, body)
            return self.last_request_charge or 0.0

        conflicts: list[str] = []
        total = 0.0
        with ThreadPoolExecutor(max_workers=min(self.bulk_workers, len(bodies))) as pool:
            futures = [pool.submit(create_counted, d) for d in bodies]
            first_error: Exception | None = None
            for d, f in zip(bodies, futures, strict=True):
                try:
                    total += f.result()
                except Conflict:
                    conflicts.append(d["id"])
                except Exception as e:  # noqa: BLE001 - the first other failure is re-raised below
                    first_error = first_error or e
        self._charges.total = total
        if first_error is not None:
            raise first_error
        if conflicts:
            shown = ", ".join(conflicts[:5]) + (" ..." if len(conflicts) > 5 else "")
            raise Conflict(f"{len(conflicts)} document(s) in this batch already exist in {container}: {shown}")

    def get(self, container: str, tenant_id: str, doc_id: str) -> Doc:
        from azure.core.exceptions import AzureError
        from azure.cosmos.exceptions import CosmosHttpResponseError

        try:
            _check_id(doc_id)
        except Invalid:
            raise NotFound(f"{container}/{doc_id} not found") from None
        self._begin()
        if self.endpoint in _READS_BY_QUERY:
            return self._get_by_query(container, tenant_id, doc_id)
        proxy = self._container(container)
        try:
            return _clean(proxy.read_item(item=doc_id, partition_key=tenant_id, response_hook=self._hook))
        except CosmosHttpResponseError as e:
            if e.status_code == 404:
                if e.sub_status == _SUBSTATUS_OWNER_MISSING:
                    self._unavailable(e, f"container {container!r}")
                raise NotFound(f"{container}/{doc_id} not found") from e
            if e.status_code != 500:
                self._unavailable(e, f"container {container!r}")
            if _TEST_SERVER_MISSING_ITEM in str(e.message or e):
                # The local test server crashes on a missing item, and the SDK waits 0.5 s to retry
                # every 500: from now on this store reads by query, which answers at once.
                log.info("%s answers 500 for missing items (the local test server); reading by query", self.endpoint)
                _READS_BY_QUERY.add(self.endpoint)
            return self._get_by_query(container, tenant_id, doc_id)
        except AzureError as e:
            self._unavailable(e, f"container {container!r}")

    def _get_by_query(self, container: str, tenant_id: str, doc_id: str) -> Doc:
        rows = self._query_sql(
            container,
            tenant_id,
            "SELECT * FROM c WHERE c.tenantId = @t AND c.id = @id",
            [{"name": "@t", "value": tenant_id}, {"name": "@id", "value": doc_id}],
        )
        if not rows:
            raise NotFound(f"{container}/{doc_id} not found")
        return _clean(rows[0])

    def upsert(self, container: str, doc: Doc, if_match: str | None = None) -> Doc:
        from azure.core import MatchConditions
        from azure.core.exceptions import AzureError
        from azure.cosmos.exceptions import CosmosHttpResponseError

        body = self._body(doc)
        self._begin()
        proxy = self._container(container)
        try:
            if if_match is None:
                return _clean(proxy.upsert_item(body, response_hook=self._hook))
            return _clean(
                proxy.replace_item(
                    item=body["id"],
                    body=body,
                    etag=if_match,
                    match_condition=MatchConditions.IfNotModified,
                    response_hook=self._hook,
                )
            )
        except CosmosHttpResponseError as e:
            if if_match is not None and e.status_code == 412:
                raise Conflict(f"{container}/{doc['id']} was changed by someone else; reload and retry") from e
            if if_match is not None and e.status_code in (404, 500) and e.sub_status != _SUBSTATUS_OWNER_MISSING:
                # Gone since it was read: for the caller holding an etag that is a conflict too.
                raise Conflict(f"{container}/{doc['id']} was deleted by someone else; reload and retry") from e
            self._unavailable(e, f"container {container!r}")
        except AzureError as e:
            self._unavailable(e, f"container {container!r}")

    def delete(self, container: str, tenant_id: str, doc_id: str, if_match: str | None = None) -> None:
        from azure.core import MatchConditions
        from azure.core.exceptions import AzureError
        from azure.cosmos.exceptions import CosmosHttpResponseError

        try:
            _check_id(doc_id)
        except Invalid:
            raise NotFound(f"{container}/{doc_id} not found") from None
        self._begin()
        proxy = self._container(container)
        kwargs: dict[str, Any] = {"response_hook": self._hook}
        if if_match is not None:
            kwargs.update(etag=if_match, match_condition=MatchConditions.IfNotModified)
        try:
            proxy.delete_item(item=doc_id, partition_key=tenant_id, **kwargs)
        except CosmosHttpResponseError as e:
            if e.status_code == 412:
                raise Conflict(f"{container}/{doc_id} was changed by someone else; reload and retry") from e
            if e.status_code == 404 and e.sub_status != _SUBSTATUS_OWNER_MISSING:
                raise NotFound(f"{container}/{doc_id} not found") from e
            self._unavailable(e, f"container {container!r}")
        except AzureError as e:
            self._unavailable(e, f"container {container!r}")

    # queries -----------------------------------------------------------------------------
    @staticmethod
    def _where_sql(tenant_id: str | None, where: Where) -> tuple[str, list[dict[str, Any]]]:
        parts: list[str] = []
        params: list[dict[str, Any]] = []
        if tenant_id is not None:
            # Always in the text: the local server ignores partition_key= on queries.
            parts.append("c.tenantId = @t")
            params.append({"name": "@t", "value": tenant_id})
        for i, c in enumerate(normalise_where(where)):
            col, p = _field(c.field), f"@p{i}"
            if c.op == "in":
                # SQL's ``IN (.., NULL)`` never matches a null; ARRAY_CONTAINS would, so drop None.
                values = [v for v in c.value if v is not None]
                if not values:
                    parts.append("false")
                    continue
                parts.append(f"ARRAY_CONTAINS({p}, {col})")
                params.append({"name": p, "value": values})
            elif c.value is None and c.op == "=":
                parts.append(f"(NOT IS_DEFINED({col}) OR IS_NULL({col}))")
            elif c.value is None and c.op == "!=":
                parts.append(f"(IS_DEFINED({col}) AND NOT IS_NULL({col}))")
            else:
                # Cosmos would let ``null != 'x'`` through; SQL (and the SQLite backend) does not.
                guard = f" AND NOT IS_NULL({col})" if c.op == "!=" else ""
                parts.append(f"({col} {_SQL_OPS[c.op]} {p}{guard})")
                params.append({"name": p, "value": c.value})
        return (" WHERE " + " AND ".join(parts)) if parts else "", params

    def _query_sql(
        self, container: str, tenant_id: str | None, sql: str, params: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        proxy = self._container(container)
        kwargs: dict[str, Any] = {"parameters": params, "response_hook": self._hook}
        if tenant_id is None:
            kwargs["enable_cross_partition_query"] = True
        else:
            kwargs["partition_key"] = tenant_id
        return self._call(lambda: list(proxy.query_items(sql, **kwargs)), f"container {container!r}")

    def query(
        self,
        container: str,
        tenant_id: str | None,
        where: Where = None,
        order_by: str | None = None,
        descending: bool = False,
        limit: int | None = None,
    ) -> list[Doc]:
        self._begin()
        if limit is not None and limit <= 0:
            return []
        clause, params = self._where_sql(tenant_id, where)
        top = f"TOP {int(limit)} " if limit is not None else ""
        sql = f"SELECT {top}* FROM c{clause}"
        if order_by:
            if not order_by.replace("_", "").isalnum():
                raise Invalid(f"order_by must be a plain field name, got {order_by!r}")
            sql += f" ORDER BY {_field(order_by)} {'DESC' if descending else 'ASC'}"
        return [_clean(d) for d in self._query_sql(container, tenant_id, sql, params)]

    def count(self, container: str, tenant_id: str | None, where: Where = None) -> int:
        self._begin()
        clause, params = self._where_sql(tenant_id, where)
        rows = self._query_sql(container, tenant_id, f"SELECT VALUE COUNT(1) FROM c{clause}", params)
        # Summed because a cross-partition aggregate may arrive as one partial count per partition.
        return sum(int(r) for r in rows)  # type: ignore[call-overload]  # VALUE rows are numbers
