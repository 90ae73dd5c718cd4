"""Cosmos DB vector search over the embedding pipeline's chunks: the container's vector policy, the float
array each chunk stores for it, and ``VectorDistance`` queries that answer like the embedded index.

Field layout, one path per dimension (``/embedding256``, ``/embedding1536``, ...), because a container's
vector embedding policy fixes each path's dimensions when the container is created and cannot be
changed afterwards, while models come and go: during a model change two models are live at once,
often with different sizes (256 for the local WordLlama, 1536 or 3072 for OpenAI). A chunk is
written per model (its id holds the model), so each chunk document carries exactly one of these
fields, chosen by its vector's length; two models of the same size share a path and the query
tells them apart with ``c.model = @model``. A path per *model* would need a new container for every
new model; a path per size needs one only for a size nobody planned for. A model whose size has no
path here is not searched in Cosmos: ``serves`` says no and the service uses the embedded index.

The base64 ``vector`` field stays on every chunk (the embedded index is rebuilt from it); the float
array is an extra copy that only Cosmos reads. It is rounded to six decimals, which halves the JSON
(and the write RUs) and moves a unit vector's cosine by about 1e-6, far below what the index's own
quantisation does. Vector paths are excluded from the range index, as Microsoft advises, or every
insert would index each float as a number.

Index type: ``diskANN`` by default, because one tenant+project may hold a million chunks and
``quantizedFlat`` is advised for up to about 50,000 vectors per physical partition; ``flat`` stops
at 505 dimensions. Both quantised kinds answer by a full scan until a partition holds about 1,000
vectors, so small tenants get exact results.

Queries run in one logical partition (``partition_key`` = tenant, and ``c.tenantId = @tenantId`` in
the text as everywhere in the Cosmos adapter). With the cosine distance function ``VectorDistance``
returns a similarity from -1 to 1, higher is closer, and ``ORDER BY VectorDistance(...)`` (which takes
no ASC/DESC) puts the closest first, so scores mean what the embedded index's inner products on unit
vectors mean. ``TOP`` is written as a literal (``k`` is validated) because the SDK refuses an ORDER BY
VectorDistance query whose query plan has no TOP, and a literal is certain to appear in the plan.
The query projects the few fields a search result shows, so a hit needs no second read.

The azure SDK is imported lazily (only for its exception types); the container is any object with
the ``ContainerProxy`` methods used here (``query_items``, ``read``), which is what the unit tests fake.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

import numpy as np

from core.adapters.store import ContainerSpec
from core.embeddings.index import Hit
from core.errors import ConfigError, Invalid, StoreUnavailable

CHUNKS = "chunks"
DISTANCE = "cosine"
DATA_TYPE = "float32"
DEFAULT_INDEX_TYPE = "diskANN"
INDEX_TYPES = frozenset({"flat", "quantizedFlat", "diskANN"})
FLAT_MAX_DIMENSIONS = 505
MAX_DIMENSIONS = 4096
DECIMALS = 6
MAX_K = 100
ENABLE_HINT = (
    "enable 'Vector Search for NoSQL API' on the account (az cosmosdb update --capabilities EnableNoSQLVectorSearch; "
    "it takes about 15 minutes) and create the chunks container with its vector policy (`python -m core migrate` "
    "against a database that has no chunks container yet, then re-embed)"
)


@dataclass(frozen=True)
class VectorPath:
    """One vector field of a container: its size, and how Cosmos compares and indexes it."""

    dimensions: int
    index_type: str = DEFAULT_INDEX_TYPE

    def __post_init__(self) -> None:
        if self.index_type not in INDEX_TYPES:
            raise Invalid(f"vector index type {self.index_type!r} is not one of {sorted(INDEX_TYPES)}")
        limit = FLAT_MAX_DIMENSIONS if self.index_type == "flat" else MAX_DIMENSIONS
        if not 1 <= self.dimensions <= limit:
            raise Invalid(f"a {self.index_type} vector index holds 1 to {limit} dimensions, not {self.dimensions}")

    @property
    def field(self) -> str:
        return f"embedding{self.dimensions}"

    @property
    def path(self) -> str:
        return f"/{self.field}"


# The sizes this console's embedders produce: local WordLlama (256, or 128 truncated) and OpenAI's
# text-embedding-3-small / ada-002 (1536) and text-embedding-3-large (3072). Adding a size later
# means a new chunks container (the policy is fixed at creation), so it is chosen here, once.
CHUNK_VECTORS: tuple[VectorPath, ...] = (VectorPath(128), VectorPath(256), VectorPath(1536), VectorPath(3072))


@dataclass(frozen=True)
class VectorContainerSpec(ContainerSpec):
    """A container whose documents carry vector fields; the Cosmos backend creates it with their policy."""

    vectors: tuple[VectorPath, ...] = field(default_factory=tuple)


def vector_embedding_policy(vectors: Sequence[VectorPath]) -> dict[str, Any]:
    return {"vectorEmbeddings": [
        {"path": v.path, "dataType": DATA_TYPE, "dimensions": v.dimensions, "distanceFunction": DISTANCE}
        for v in vectors
    ]}


def vector_indexing_policy(vectors: Sequence[VectorPath]) -> dict[str, Any]:
    """The default policy (every path range-indexed) plus the vector indexes, minus the vector paths."""
    return {
        "indexingMode": "consistent",
        "automatic": True,
        "includedPaths": [{"path": "/*"}],
        "excludedPaths": [{"path": '/"_etag"/?'}] + [{"path": f"{v.path}/*"} for v in vectors],
        "vectorIndexes": [{"path": v.path, "type": v.index_type} for v in vectors],
    }


def container_vector_options(spec: ContainerSpec) -> dict[str, Any]:
    """Keyword arguments for ``create_container(_if_not_exists)``: empty for a container without vectors."""
    vectors = getattr(spec, "vectors", ())
    if not vectors:
        return {}
    return {"indexing_policy": vector_indexing_policy(vectors), "vector_embedding_policy": vector_embedding_policy(
        vectors)}


def _reason(e: Exception) -> str:
    """The server's own words from an SDK error, without the SDK's "Status code: 400" line."""
    text = str(getattr(e, "message", None) or e)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("Status code:")]
    return (lines[0] if lines else text)[:300]


def create_container(db: Any, spec: ContainerSpec, partition_key: Any, where: str = "Cosmos DB") -> Any:
    """``create_container_if_not_exists`` with the spec's vector policy; a refused policy says how to fix it."""
    from azure.cosmos.exceptions import CosmosHttpResponseError

    options = container_vector_options(spec)
    try:
        return db.create_container_if_not_exists(id=spec.name, partition_key=partition_key, **options)
    except CosmosHttpResponseError as e:
        if not options or e.status_code != 400:
            raise
        raise ConfigError(f"{where} refused the vector policy of container {spec.name!r} ({_reason(e)}): "
                          "enable 'Vector Search for NoSQL API' on the account (az cosmosdb update --capabilities "
                          "EnableNoSQLVectorSearch; it takes about 15 minutes), then run `python -m core migrate` "
                          "again") from e


@dataclass(frozen=True, slots=True)
class ChunkHit(Hit):
    """A Hit that also carries what a search result shows, read in the same query as the score."""

    title: str
    text: str
    ord: int


class ChunkVectorSearch(Protocol):
    """What the embeddings service asks of a store-side vector search (the embedded index answers the
    same questions through ``IndexManager``): same filters, same Hits, cosine scores, best first."""

    def serves(self, dimensions: int) -> bool: ...

    def chunk_fields(self, model_key: str, vector: np.ndarray) -> dict[str, Any]: ...

    def count(self, tenant_id: str, model_key: str, project: str | None = None, source: str | None = None) -> int: ...

    def search(self, tenant_id: str, model_key: str, query: np.ndarray, k: int, project: str | None = None,
               source: str | None = None) -> list[Hit]: ...


Params = list[dict[str, Any]]


def _filters(tenant_id: str, model_key: str, project: str | None, source: str | None) -> tuple[str, Params]:
    parts = ["c.tenantId = @tenantId", "c.model = @model"]
    params: list[dict[str, Any]] = [{"name": "@tenantId", "value": tenant_id}, {"name": "@model", "value": model_key}]
    # None means "no filter"; "" is a real project (documents without one), as in the embedded index.
    if project is not None:
        parts.append("c.project = @project")
        params.append({"name": "@project", "value": project})
    if source is not None:
        parts.append("c.source = @source")
        params.append({"name": "@source", "value": source})
    return " AND ".join(parts), params


def count_query(tenant_id: str, model_key: str, project: str | None = None,
                source: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """Chunks a search with these filters looks at; served from the range index on model/project/source."""
    where, params = _filters(tenant_id, model_key, project, source)
    return f"SELECT VALUE COUNT(1) FROM c WHERE {where}", params


def search_query(vector_field: str, query: np.ndarray, k: int, tenant_id: str, model_key: str,
                 project: str | None = None, source: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """The top-``k`` query: filters in WHERE (pushed into the vector index), closest first."""
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        raise Invalid(f"k must be a whole number from 1 to {MAX_K}, got {k!r}")
    if not vector_field.isidentifier():
        raise Invalid(f"vector field must be a plain name, got {vector_field!r}")
    where, params = _filters(tenant_id, model_key, project, source)
    distance = f"VectorDistance(c.{vector_field}, @vector)"
    sql = (f"SELECT TOP {k} c.id, c.documentId, c.project, c.source, c.title, c.text, c.ord, {distance} AS score "
           f"FROM c WHERE {where} ORDER BY {distance}")
    params.append({"name": "@vector", "value": np.asarray(query, dtype=np.float32).tolist()})
    return sql, params


class CosmosVectorSearch:
    """Top-k chunks by ``VectorDistance`` in the Cosmos chunks container, as the same Hits the embedded index gives.

    ``container`` returns the chunks ``ContainerProxy`` (called lazily, so building this costs no
    request). ``unavailable`` turns other SDK failures into the store's own actionable errors.
    """

    def __init__(self, container: Callable[[], Any], vectors: Sequence[VectorPath] = CHUNK_VECTORS, *,
                 unavailable: Callable[[Exception, str], NoReturn] | None = None, where: str = "Cosmos DB") -> None:
        self._container = container
        self.vectors = {v.dimensions: v for v in vectors}
        self._unavailable = unavailable
        self.where = where
        self._charges = threading.local()  # request units of this thread's last count or search
        self._checked: set[int] = set()  # sizes whose path the live container's policy was seen to have
        self._lock = threading.Lock()

    @classmethod
    def from_store(cls, store: Any, container: str = CHUNKS,
                   vectors: Sequence[VectorPath] = CHUNK_VECTORS) -> CosmosVectorSearch:
        """Over a CosmosStore (or the telemetry wrapper around one): its client, its error messages, its RU tally."""
        from core.adapters.cosmos_store import CosmosStore

        raw = getattr(store, "inner", store)
        if not isinstance(raw, CosmosStore):
            raise ConfigError(f"Cosmos DB vector search needs the Cosmos store, not the {raw.backend} store")
        return cls(lambda: raw._container(container), vectors, unavailable=raw._unavailable,
                   where=f"Cosmos DB at {raw.endpoint} (database {raw.database_name!r})")

    # writing -----------------------------------------------------------------------------
    def serves(self, dimensions: int) -> bool:
        return dimensions in self.vectors

    def chunk_fields(self, model_key: str, vector: np.ndarray) -> dict[str, Any]:
        """The float array a chunk stores for Cosmos (the pipeline's ``chunk_fields`` hook); {} for other sizes."""
        v = np.asarray(vector, dtype=np.float32).reshape(-1)
        spec = self.vectors.get(int(v.shape[0]))
        if spec is None:
            return {}
        return {spec.field: np.round(v.astype(np.float64), DECIMALS).tolist()}

    # reading -----------------------------------------------------------------------------
    @property
    def last_request_charge(self) -> float | None:
        """Request units the calling thread's last count or search cost (vector queries are the costly reads)."""
        return getattr(self._charges, "total", None)

    def _hook(self, headers: Any, _result: Any) -> None:
        # Called once per response page, so the charges of a multi-page query add up.
        try:
            self._charges.total = getattr(self._charges, "total", 0.0) + float(
                headers.get("x-ms-request-charge") or 0.0)
        except (AttributeError, TypeError, ValueError):
            return

    def _run(self, sql: str, params: list[dict[str, Any]], tenant_id: str, what: str) -> list[Any]:
        from azure.core.exceptions import AzureError
        from azure.cosmos.exceptions import CosmosHttpResponseError

        self._charges.total = 0.0
        kwargs: dict[str, Any] = {"parameters": params, "partition_key": tenant_id, "response_hook": self._hook}
        try:
            return list(self._container().query_items(sql, **kwargs))
        except CosmosHttpResponseError as e:
            if e.status_code == 400:
                raise ConfigError(f"{self.where} refused the {what} ({_reason(e)}): {ENABLE_HINT}") from e
            self._fail(e, what)
        except AzureError as e:
            self._fail(e, what)

    def _fail(self, e: Exception, what: str) -> NoReturn:
        if self._unavailable is not None:
            self._unavailable(e, f"container {CHUNKS!r}")
        raise StoreUnavailable(f"{self.where} failed the {what}: {e}") from e

    def _check_policy(self, spec: VectorPath) -> None:
        """Once per size: the live container must have this vector path (an old container has none)."""
        if spec.dimensions in self._checked:
            return
        from azure.core.exceptions import AzureError

        try:
            props = self._container().read()
        except AzureError as e:
            self._fail(e, "container read")
        policy = (props or {}).get("vectorEmbeddingPolicy") or {}
        paths = {p.get("path"): p for p in policy.get("vectorEmbeddings") or []}
        have = paths.get(spec.path)
        if have is None or int(have.get("dimensions") or 0) != spec.dimensions:
            raise ConfigError(
                f"the {CHUNKS} container in {self.where} has no {spec.dimensions}-dimension vector path "
                f"{spec.path} in its vector embedding policy (it was created before vector search, or with other "
                f"sizes; a policy cannot be changed afterwards): {ENABLE_HINT}")
        with self._lock:
            self._checked.add(spec.dimensions)

    def count(self, tenant_id: str, model_key: str, project: str | None = None, source: str | None = None) -> int:
        sql, params = count_query(tenant_id, model_key, project, source)
        rows = self._run(sql, params, tenant_id, "chunk count")
        return sum(int(r) for r in rows)

    def search(self, tenant_id: str, model_key: str, query: np.ndarray, k: int, project: str | None = None,
               source: str | None = None) -> list[Hit]:
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        spec = self.vectors.get(int(q.shape[0]))
        if spec is None:
            raise Invalid(f"{q.shape[0]}-dimension vectors have no vector path in the {CHUNKS} container; "
                          f"it serves {sorted(self.vectors)}")
        self._check_policy(spec)
        sql, params = search_query(spec.field, q, k, tenant_id, model_key, project, source)
        rows = self._run(sql, params, tenant_id, "vector search")
        hits: list[Hit] = []
        for r in rows:
            score = r.get("score")
            if score is None:  # a chunk without this vector field (written before Cosmos search was on)
                continue
            hits.append(ChunkHit(r["id"], float(score), tenant_id, r.get("project") or "", r.get("documentId") or "",
                                 r.get("source") or "", r.get("title") or r.get("documentId") or "",
                                 r.get("text") or "", int(r.get("ord") or 0)))
        # Best first is the contract; the server's order of near-ties from a quantised index is not promised.
        hits.sort(key=lambda h: -h.score)
        return hits[:k]


__all__ = [
    "CHUNK_VECTORS",
    "ChunkHit",
    "ChunkVectorSearch",
    "CosmosVectorSearch",
    "VectorContainerSpec",
    "VectorPath",
    "container_vector_options",
    "create_container",
    "count_query",
    "search_query",
    "vector_embedding_policy",
    "vector_indexing_policy",
]
