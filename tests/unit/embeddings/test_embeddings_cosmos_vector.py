"""Cosmos DB vector search with a fake container client: query text and parameters, mapping to Hits, the
policy given at container creation, the chunk fields the pipeline stores, and the service answering the
same through it as through the embedded index."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from azure.cosmos.exceptions import CosmosHttpResponseError

from core import clock
from core.adapters.cosmos_store import CosmosStore
from core.adapters.cosmos_vector import (
    CHUNK_VECTORS,
    ChunkHit,
    CosmosVectorSearch,
    VectorContainerSpec,
    VectorPath,
    create_container,
)
from core.adapters.store import ContainerSpec, Doc, DocumentStore
from core.bootstrap import Services, build
from core.config import load_settings
from core.embeddings.changes import record_document_change
from core.embeddings.embedder import Embedder, l2_normalise
from core.embeddings.index import Hit
from core.errors import ConfigError, Invalid
from core.migrate import migrate
from core.schema import CONTAINERS
from core.services.access import SYSTEM
from tests.fakes.openai_server import fake_embedding

T = "tenant-v"
POLICY_16 = {"vectorEmbeddingPolicy": {"vectorEmbeddings": [
    {"path": "/embedding16", "dataType": "float32", "dimensions": 16, "distanceFunction": "cosine"}]}}


class FakeChunksContainer:
    """The two ContainerProxy calls the search makes. Answers from ``rows`` when given; otherwise evaluates the
    query the way Cosmos would over the chunk documents in ``store`` (filters from the parameters, cosine)."""

    def __init__(self, store: DocumentStore | None = None, rows: list[Any] | None = None,
                 properties: dict[str, Any] | None = None, error: Exception | None = None) -> None:
        self.store = store
        self.rows = rows
        self.properties = POLICY_16 if properties is None else properties
        self.error = error
        self.queries: list[tuple[str, dict[str, Any]]] = []
        self.reads = 0

    def read(self) -> dict[str, Any]:
        self.reads += 1
        return {"id": "chunks", **self.properties}

    def query_items(self, query: str, **kwargs: Any) -> list[Any]:
        self.queries.append((query, kwargs))
        kwargs["response_hook"]({"x-ms-request-charge": "2.5"}, None)  # one page, as the SDK reports it
        if self.error is not None:
            raise self.error
        if self.rows is not None:
            return list(self.rows)
        assert self.store is not None
        p = {x["name"]: x["value"] for x in kwargs["parameters"]}
        docs = [d for d in self.store.query("chunks", kwargs["partition_key"])
                if d["tenantId"] == p["@tenantId"] and d["model"] == p["@model"]
                and ("@project" not in p or d.get("project") == p["@project"])
                and ("@source" not in p or d.get("source") == p["@source"])]
        if query.startswith("SELECT VALUE COUNT(1)"):
            return [len(docs)]
        top = int(re.search(r"SELECT TOP (\d+) ", query).group(1))  # type: ignore[union-attr]
        fld = re.search(r"VectorDistance\(c\.(\w+), @vector\)", query).group(1)  # type: ignore[union-attr]
        q = np.asarray(p["@vector"], dtype=np.float64)
        scored = []
        for d in docs:
            if fld not in d:
                continue
            v = np.asarray(d[fld], dtype=np.float64)
            scored.append((float(v @ q / (np.linalg.norm(v) * np.linalg.norm(q))), d))
        scored.sort(key=lambda s: -s[0])
        return [{"id": d["id"], "documentId": d["documentId"], "project": d["project"], "source": d["source"],
                 "title": d["title"], "text": d["text"], "ord": d["ord"], "score": s} for s, d in scored[:top]]


class BagOfWords(Embedder):
    """A deterministic 16-d embedder (hashed words), like the fake OpenAI server's."""

    name, version, dim = "bow", "1", 16

    def embed(self, texts: list[str]) -> np.ndarray:  # type: ignore[override]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalise(np.stack([fake_embedding(t, self.dim) for t in texts]))


def search_with(container: FakeChunksContainer, dims: tuple[int, ...] = (16,)) -> CosmosVectorSearch:
    return CosmosVectorSearch(lambda: container, tuple(VectorPath(d) for d in dims))


def params(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {p["name"]: p["value"] for p in kwargs["parameters"]}


# queries ---------------------------------------------------------------------------------------------


def test_search_query_text_parameters_and_partition() -> None:
    fake = FakeChunksContainer(rows=[])
    q = l2_normalise(np.arange(1, 17, dtype=np.float32))[0]
    vs = search_with(fake)
    vs.search(T, "bow@1", q, 5, project="alpha", source="files")
    assert vs.last_request_charge == 2.5  # the RU of this search alone, from the response pages
    sql, kwargs = fake.queries[-1]
    assert sql == (
        "SELECT TOP 5 c.id, c.documentId, c.project, c.source, c.title, c.text, c.ord, "
        "VectorDistance(c.embedding16, @vector) AS score FROM c "
        "WHERE c.tenantId = @tenantId AND c.model = @model AND c.project = @project AND c.source = @source "
        "ORDER BY VectorDistance(c.embedding16, @vector)")
    assert kwargs["partition_key"] == T and "enable_cross_partition_query" not in kwargs
    p = params(kwargs)
    assert (p["@tenantId"], p["@model"], p["@project"], p["@source"]) == (T, "bow@1", "alpha", "files")
    assert isinstance(p["@vector"], list) and len(p["@vector"]) == 16
    assert np.allclose(p["@vector"], q) and all(type(x) is float for x in p["@vector"])  # JSON numbers


def test_filters_are_dropped_only_when_not_given() -> None:
    fake = FakeChunksContainer(rows=[])
    vs = search_with(fake)
    q = np.ones(16, dtype=np.float32)
    vs.search(T, "bow@1", q, 3)  # tenant-wide
    sql, kwargs = fake.queries[-1]
    assert "c.project" not in sql.split("WHERE")[1] and "c.source =" not in sql
    assert set(params(kwargs)) == {"@tenantId", "@model", "@vector"}
    vs.search(T, "bow@1", q, 3, project="")  # documents without a project are a project of their own
    assert params(fake.queries[-1][1])["@project"] == ""


def test_count_query_and_partial_counts_are_summed() -> None:
    fake = FakeChunksContainer(rows=[3, 4])
    n = search_with(fake).count(T, "bow@1", project="alpha")
    sql, kwargs = fake.queries[-1]
    assert sql == ("SELECT VALUE COUNT(1) FROM c "
                   "WHERE c.tenantId = @tenantId AND c.model = @model AND c.project = @project")
    assert kwargs["partition_key"] == T and n == 7
    assert search_with(fake).last_request_charge is None  # per searcher and thread


@pytest.mark.parametrize("k", [0, 101, 2.5, True])
def test_k_must_be_a_small_whole_number(k: Any) -> None:
    with pytest.raises(Invalid, match="k must be"):
        search_with(FakeChunksContainer(rows=[])).search(T, "bow@1", np.ones(16), k)


def test_a_size_without_a_path_is_not_served() -> None:
    vs = search_with(FakeChunksContainer(rows=[]), dims=(256,))
    assert vs.serves(256) and not vs.serves(16)
    with pytest.raises(Invalid, match="16-dimension vectors have no vector path"):
        vs.search(T, "bow@1", np.ones(16), 3)


# results ---------------------------------------------------------------------------------------------


def test_rows_become_hits_best_first_with_their_display_fields() -> None:
    rows = [
        {"id": "d2:bow_1:000000", "documentId": "d2", "project": "alpha", "source": "files", "title": "Two",
         "text": "second", "ord": 0, "score": 0.61},
        {"id": "d1:bow_1:000003", "documentId": "d1", "project": "alpha", "source": "files", "title": "One",
         "text": "first", "ord": 3, "score": 0.93},
        {"id": "d3:bow_1:000000", "documentId": "d3", "project": "alpha", "source": "files", "title": "Old",
         "text": "no vector", "ord": 0},  # written before the float array existed: no score, not a hit
    ]
    hits = search_with(FakeChunksContainer(rows=rows)).search(T, "bow@1", np.ones(16), 3, project="alpha")
    assert [h.chunk_id for h in hits] == ["d1:bow_1:000003", "d2:bow_1:000000"]
    first = hits[0]
    assert isinstance(first, Hit) and isinstance(first, ChunkHit)
    assert (first.score, first.tenant_id, first.project, first.document_id, first.source) == (
        0.93, T, "alpha", "d1", "files")
    assert (first.title, first.text, first.ord) == ("One", "first", 3)


def test_policy_is_checked_once_and_an_old_container_is_named() -> None:
    fake = FakeChunksContainer(rows=[])
    vs = search_with(fake)
    vs.search(T, "bow@1", np.ones(16), 2)
    vs.search(T, "bow@1", np.ones(16), 2)
    assert fake.reads == 1
    old = FakeChunksContainer(rows=[], properties={})  # created before vector search: no policy
    with pytest.raises(ConfigError, match=r"no 16-dimension vector path /embedding16.*EnableNoSQLVectorSearch"):
        search_with(old).search(T, "bow@1", np.ones(16), 2)
    assert old.queries == []  # refused before any query is spent


def test_a_refused_vector_query_says_how_to_fix_the_account() -> None:
    refused = CosmosHttpResponseError(status_code=400, message="'VectorDistance' is not a recognized built-in function")
    with pytest.raises(ConfigError, match=r"VectorDistance' is not a recognized.*EnableNoSQLVectorSearch"):
        search_with(FakeChunksContainer(error=refused)).search(T, "bow@1", np.ones(16), 2)


# container creation -----------------------------------------------------------------------------------


class FakeDatabase:
    def __init__(self, refuse: Exception | None = None) -> None:
        self.created: list[dict[str, Any]] = []
        self.refuse = refuse

    def list_containers(self) -> list[dict[str, Any]]:
        return [{"id": c["id"]} for c in self.created]

    def create_container_if_not_exists(self, **kwargs: Any) -> dict[str, Any]:
        if self.refuse is not None and "vector_embedding_policy" in kwargs:
            raise self.refuse
        self.created.append(kwargs)
        return {"id": kwargs["id"]}


class FakeClient:
    def __init__(self, db: FakeDatabase) -> None:
        self.db = db

    def create_database_if_not_exists(self, *args: Any, **kwargs: Any) -> None:
        return None

    def get_database_client(self, name: str) -> FakeDatabase:
        return self.db


def fake_cosmos_store(db: FakeDatabase) -> CosmosStore:
    store = CosmosStore("https://cosmos.example:443/", "a2V5", "castiel")
    store._client = FakeClient(db)  # type: ignore[assignment]  # no account: the SDK calls go to the fake
    return store


def test_migrate_creates_chunks_with_the_vector_policy_and_others_without() -> None:
    db = FakeDatabase()
    created = fake_cosmos_store(db).ensure_containers(CONTAINERS)
    assert "chunks" in created and len(created) == len(CONTAINERS)
    chunks = next(c for c in db.created if c["id"] == "chunks")
    assert chunks["partition_key"]["paths"] == ["/tenantId"]
    assert chunks["vector_embedding_policy"] == {"vectorEmbeddings": [
        {"path": f"/embedding{d}", "dataType": "float32", "dimensions": d, "distanceFunction": "cosine"}
        for d in (128, 256, 1536, 3072)]}
    assert chunks["indexing_policy"] == {
        "indexingMode": "consistent", "automatic": True, "includedPaths": [{"path": "/*"}],
        "excludedPaths": [{"path": '/"_etag"/?'}] + [{"path": f"/embedding{d}/*"} for d in (128, 256, 1536, 3072)],
        "vectorIndexes": [{"path": f"/embedding{d}", "type": "diskANN"} for d in (128, 256, 1536, 3072)]}
    others = [c for c in db.created if c["id"] != "chunks"]
    assert others and all(set(c) == {"id", "partition_key"} for c in others)  # default policy, as before


def test_a_refused_vector_policy_fails_migrate_with_the_fix() -> None:
    refused = CosmosHttpResponseError(status_code=400, message="vector embedding policy is not supported")
    spec = VectorContainerSpec("chunks", vectors=(VectorPath(256),))
    with pytest.raises(ConfigError, match=r"refused the vector policy of container 'chunks'.*migrate"):
        create_container(FakeDatabase(refuse=refused), spec, {"paths": ["/tenantId"]})
    plain = FakeDatabase(refuse=refused)
    create_container(plain, ContainerSpec("audit"), {"paths": ["/tenantId"]})  # no vectors: never refused
    assert plain.created == [{"id": "audit", "partition_key": {"paths": ["/tenantId"]}}]


def test_vector_paths_are_checked() -> None:
    with pytest.raises(Invalid, match="505"):
        VectorPath(1536, "flat")
    with pytest.raises(Invalid, match="index type"):
        VectorPath(256, "hnsw")
    assert [v.path for v in CHUNK_VECTORS] == ["/embedding128", "/embedding256", "/embedding1536", "/embedding3072"]


# chunk fields -----------------------------------------------------------------------------------------


def test_chunk_fields_store_one_rounded_float_array_per_size() -> None:
    vs = CosmosVectorSearch(lambda: None)
    rng = np.random.default_rng(4)
    v = l2_normalise(rng.standard_normal((1, 256)).astype(np.float32))[0]
    fields = vs.chunk_fields("local@1", v)
    assert list(fields) == ["embedding256"] and len(fields["embedding256"]) == 256
    stored = np.asarray(fields["embedding256"])
    assert np.max(np.abs(stored - v)) <= 5e-7 + 1e-9
    assert abs(float(stored @ v) - 1.0) < 1e-5  # the cosine moves by far less than any ranking gap
    assert len(json.dumps(fields)) < 256 * 11  # six decimals, not float64's seventeen digits
    big = l2_normalise(rng.standard_normal((1, 1536)).astype(np.float32))[0]
    assert list(vs.chunk_fields("openai@1", big)) == ["embedding1536"]
    assert vs.chunk_fields("probe@1", np.ones(64, dtype=np.float32)) == {}  # no path for 64: nothing extra


# the service through the seam ---------------------------------------------------------------------------


def make_services(data_dir: Path, vector_search: Any) -> Services:
    emb = BagOfWords()
    svc = build(load_settings(data_dir=data_dir, telemetry_enabled=False), embedders={"bow": lambda: emb},
                embedder_default="bow", vector_search=vector_search)
    migrate(svc)
    return svc


def write_doc(svc: Services, doc_id: str, text: str, project: str, source: str = "files") -> None:
    svc.store.upsert("documents", {"id": doc_id, "tenantId": T, "connectionId": "c1", "source": source,
                                   "sourceId": doc_id, "title": doc_id.upper(), "text": text, "project": project,
                                   "mimeType": "text/plain", "updatedAt": clock.iso()})
    record_document_change(svc.store, T, doc_id, "upsert")


TEXTS = {
    "a1": ("alpha", "Renewal pricing for the enterprise plan was agreed with procurement."),
    "a2": ("alpha", "The security review asked for SSO and audit logs before signing."),
    "a3": ("alpha", "Onboarding starts next week with two training sessions."),
    "b1": ("beta", "Renewal pricing in the beta project is still under discussion."),
    "b2": ("beta", "The champion left the company; find a new sponsor."),
}


def test_service_answers_the_same_through_cosmos_search_as_through_the_embedded_index(tmp_path: Path) -> None:
    holder: dict[str, FakeChunksContainer] = {}
    vs = CosmosVectorSearch(lambda: holder["c"], (VectorPath(16),))
    svc = make_services(tmp_path / "var", vs)
    holder["c"] = FakeChunksContainer(svc.store)
    for doc_id, (project, text) in TEXTS.items():
        write_doc(svc, doc_id, text, project, source="crm" if doc_id == "a2" else "files")
    svc.embeddings.drain(SYSTEM, T)
    stored: list[Doc] = svc.store.query("chunks", T)
    assert len(stored) == 5 and all(len(d["embedding16"]) == 16 and d["vector"] for d in stored)

    question = "what renewal pricing was agreed"
    res = svc.embeddings.search(SYSTEM, T, "alpha", question, k=3)
    sql, kwargs = holder["c"].queries[-1]
    assert sql.startswith("SELECT TOP 3 ") and params(kwargs)["@project"] == "alpha"
    model = svc.embeddings.active_model(T)
    svc.embeddings.indexes.fresh_tenant(T, model, "alpha")
    local = svc.embeddings.indexes.index(model).search(
        svc.embeddings.embedder(model).embed_query(question), 3, tenant_id=T, project="alpha")
    assert [h.chunk_id for h in res.hits] == [h.chunk_id for h in local]
    assert [h.score for h in res.hits] == pytest.approx([h.score for h in local], abs=1e-5)
    assert res.hits[0].document_id == "a1" and res.hits[0].title == "A1" and "Renewal" in res.hits[0].text
    assert res.searched_chunks == 3 and {h.project for h in res.hits} == {"alpha"}

    by_source = svc.embeddings.search(SYSTEM, T, "alpha", question, k=3, source="crm")
    assert [h.document_id for h in by_source.hits] == ["a2"] and by_source.searched_chunks == 1
    nothing = svc.embeddings.search(SYSTEM, T, "gamma", question)
    assert nothing.hits == [] and nothing.searched_chunks == 0 and "project 'gamma'" in (nothing.empty_reason or "")


def test_cosmos_search_needs_no_local_partitions(tmp_path: Path) -> None:
    holder: dict[str, FakeChunksContainer] = {}
    data = tmp_path / "var"
    writer = make_services(data, CosmosVectorSearch(lambda: holder["c"], (VectorPath(16),)))
    holder["c"] = FakeChunksContainer(writer.store)
    for doc_id, (project, text) in TEXTS.items():
        write_doc(writer, doc_id, text, project)
    writer.embeddings.drain(SYSTEM, T)
    model = writer.embeddings.active_model(T)
    # The worker keeps no embedded partitions for a model Cosmos serves: nothing held, nothing saved...
    assert writer.embeddings.indexes.index(model).get(T, "alpha") is None
    assert not list((data / "vectors").rglob("*.npy"))
    # ...but the partitions' version rows still name the projects (the playground's project picker).
    assert writer.embeddings.projects(SYSTEM, T) == ["alpha", "beta"]
    writer.store.delete("documents", T, "b1")
    record_document_change(writer.store, T, "b1", "delete")
    writer.embeddings.drain(SYSTEM, T)  # a delete needs no partition either
    assert [d["id"] for d in writer.store.query("chunks", T) if d["documentId"] == "b1"] == []

    reader = make_services(data, CosmosVectorSearch(lambda: holder["c"], (VectorPath(16),)))
    res = reader.embeddings.search(SYSTEM, T, "beta", "a new sponsor after the champion left", k=2)
    assert [h.document_id for h in res.hits] == ["b2"] and {h.project for h in res.hits} == {"beta"}
    assert reader.embeddings.indexes.rebuilds == 0
    assert reader.embeddings.indexes.index(model).get(T, "beta") is None  # nothing loaded or rebuilt
    assert not list((data / "vectors").rglob("*.npy"))

    # Without Cosmos search (the setting turned off), the embedded index is rebuilt from the stored chunks.
    local = make_services(data, None)
    again = local.embeddings.search(SYSTEM, T, "beta", "a new sponsor after the champion left", k=2)
    assert [h.document_id for h in again.hits] == ["b2"] and local.embeddings.indexes.rebuilds >= 1


def test_sizes_without_a_path_and_sqlite_use_the_embedded_index(tmp_path: Path) -> None:
    fake = FakeChunksContainer(rows=[])
    svc = make_services(tmp_path / "var", CosmosVectorSearch(lambda: fake, (VectorPath(256),)))
    for doc_id, (project, text) in TEXTS.items():
        write_doc(svc, doc_id, text, project)
    svc.embeddings.drain(SYSTEM, T)
    assert not any(k.startswith("embedding") for d in svc.store.query("chunks", T) for k in d)
    res = svc.embeddings.search(SYSTEM, T, "alpha", "security review before signing", k=2)
    assert res.hits[0].document_id == "a2" and fake.queries == []  # 16-d model: Cosmos never asked
    plain = make_services(tmp_path / "plain", None)
    assert plain.embeddings.vector_search is None and plain.embeddings.pipeline.chunk_fields is None


def test_bootstrap_wires_cosmos_search_only_for_the_cosmos_store(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "var", telemetry_enabled=False)
    emb = {"bow": lambda: BagOfWords()}
    cosmos = CosmosStore("https://cosmos.example:443/", "a2V5", "castiel")  # lazy: nothing is contacted
    on_cosmos = build(settings, store=cosmos, embedders=emb, embedder_default="bow").embeddings
    assert isinstance(on_cosmos.vector_search, CosmosVectorSearch)
    assert on_cosmos.pipeline.chunk_fields == on_cosmos.vector_search.chunk_fields
    assert build(settings, embedders=emb, embedder_default="bow").embeddings.vector_search is None
    off = build(settings, store=cosmos, embedders=emb, embedder_default="bow", vector_search=None).embeddings
    assert off.vector_search is None
