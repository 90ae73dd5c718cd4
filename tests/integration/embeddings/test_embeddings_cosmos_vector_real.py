"""Cosmos DB vector search end to end: the real pipeline writes chunks into a container created with the vector
policy, and ``VectorDistance`` answers the service's searches (real account only; the local server has no
vector search, and there it must fail with the fix, not with a stack trace)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from core import clock
from core.adapters.cosmos_store import CosmosStore
from core.adapters.cosmos_vector import CosmosVectorSearch
from core.bootstrap import Services, build
from core.config import load_settings
from core.embeddings.changes import record_document_change
from core.embeddings.pipeline import decode_vector
from core.errors import ConfigError
from core.schema import CONTAINERS
from core.services.access import SYSTEM
from core.services.embeddings import SearchResult
from tests.integration.embeddings.embedding_fakes import CountingEmbedder
from tests.servers.fixtures import CosmosServer

T = "tenant-vec"
# What the pipeline, its statistics and a search touch; creating only these keeps a real account's bill small.
NEEDED = {"documents", "doc_changes", "chunks", "pipeline_state", "rollups"}
DOCS = {
    "a-renewal": ("alpha", "files", "Renewal pricing for the enterprise plan was agreed with procurement in March."),
    "a-security": ("alpha", "crm", "The security review asked for single sign-on and audit logs before signing."),
    "a-onboarding": ("alpha", "files", "Onboarding starts next week with two training sessions for the admins."),
    "b-renewal": ("beta", "files", "Renewal pricing for the beta customer is still being negotiated by sales."),
    "b-sponsor": ("beta", "files", "Our champion left the company, so we need to find a new executive sponsor."),
}


@pytest.fixture
def cosmos_services(cosmos_server: CosmosServer, tmp_path: Path) -> Iterator[Services]:
    """Services on a throwaway Cosmos database, with a 256-d embedder (a size the chunks container serves)."""
    database = f"vec_{uuid.uuid4().hex[:10]}"
    store = CosmosStore(cosmos_server.endpoint, cosmos_server.key, database, verify_tls=cosmos_server.verify)
    emb = CountingEmbedder("fake", 256)
    svc = build(load_settings(data_dir=tmp_path / "var", telemetry_enabled=False), store=store,
                embedders={"fake": lambda: emb}, embedder_default="fake")
    store.ensure_containers([c for c in CONTAINERS if c.name in NEEDED])
    yield svc
    try:
        store._get_client().delete_database(database)
    finally:
        store.close()


def write_docs(svc: Services) -> None:
    for doc_id, (project, source, text) in DOCS.items():
        svc.store.upsert("documents", {
            "id": doc_id, "tenantId": T, "connectionId": "conn-1", "source": source, "sourceId": doc_id,
            "title": doc_id, "text": text, "project": project, "mimeType": "text/plain", "updatedAt": clock.iso()})
        record_document_change(svc.store, T, doc_id, "upsert")
    results = svc.embeddings.drain(SYSTEM, T)
    assert sum(r.chunks_embedded for r in results) == len(DOCS)


def test_chunks_carry_the_vector_field_and_the_local_server_refuses_search_with_the_fix(
        cosmos_services: Services, cosmos_server: CosmosServer) -> None:
    """Runs against the local server too: the container takes the policy, chunks get their float arrays."""
    svc = cosmos_services
    assert isinstance(svc.embeddings.vector_search, CosmosVectorSearch)
    props = svc.store._container("chunks").read()  # type: ignore[attr-defined]
    paths = {p["path"]: p["dimensions"] for p in props["vectorEmbeddingPolicy"]["vectorEmbeddings"]}
    assert paths["/embedding256"] == 256
    assert {v["path"] for v in props["indexingPolicy"]["vectorIndexes"]} >= {"/embedding256"}
    write_docs(svc)
    chunks = svc.store.query("chunks", T)
    assert len(chunks) == len(DOCS)
    for c in chunks:
        # the float array Cosmos indexes and the base64 copy the embedded index rebuilds from agree
        assert np.allclose(np.asarray(c["embedding256"]), decode_vector(c["vector"]), atol=1e-6)
    if cosmos_server.real:
        return  # the real account answers; see the test below
    with pytest.raises(ConfigError, match="EnableNoSQLVectorSearch"):
        svc.embeddings.search(SYSTEM, T, "alpha", "renewal pricing", k=3)


def _search_when_indexed(svc: Services, project: str | None, question: str, want: int, k: int = 3,
                         source: str | None = None) -> SearchResult:
    """Vector indexes are maintained as items are written; allow a short settle time before failing."""
    deadline = time.monotonic() + 30
    while True:
        res = svc.embeddings.search(SYSTEM, T, project, question, k=k, source=source)
        if len(res.hits) >= want or time.monotonic() > deadline:
            return res
        time.sleep(1)


@pytest.mark.real_cosmos_only("VectorDistance queries and vector indexes")
def test_vector_distance_returns_the_nearest_chunk_first_within_the_project(cosmos_services: Services) -> None:
    svc = cosmos_services
    write_docs(svc)
    emb = svc.embeddings.embedder(svc.embeddings.active_model(T))
    question = DOCS["a-renewal"][2]  # the nearest chunk is the document itself: cosine about 1

    res = _search_when_indexed(svc, "alpha", question, want=3)
    assert [h.document_id for h in res.hits][0] == "a-renewal"
    assert res.hits[0].score == pytest.approx(1.0, abs=1e-3)
    assert {h.project for h in res.hits} == {"alpha"} and len(res.hits) == 3
    assert [h.score for h in res.hits] == sorted((h.score for h in res.hits), reverse=True)
    assert res.searched_chunks == 3 and "Renewal pricing" in res.hits[0].text
    # the scores are cosine similarities, as the embedded index computes them
    q = emb.embed_query(question)
    stored = {c["documentId"]: decode_vector(c["vector"]) for c in svc.store.query("chunks", T)}
    for h in res.hits:
        assert h.score == pytest.approx(float(stored[h.document_id] @ q), abs=2e-2)  # quantised index: close

    beta = _search_when_indexed(svc, "beta", question, want=2)
    assert [h.document_id for h in beta.hits][0] == "b-renewal"
    assert {h.project for h in beta.hits} == {"beta"}  # the alpha twin is never returned

    crm = _search_when_indexed(svc, "alpha", question, want=1, source="crm")
    assert [h.document_id for h in crm.hits] == ["a-security"] and crm.searched_chunks == 1

    tenant_wide = _search_when_indexed(svc, None, question, want=5, k=5)
    assert {h.project for h in tenant_wide.hits} == {"alpha", "beta"} and tenant_wide.searched_chunks == 5

    nothing = svc.embeddings.search(SYSTEM, T, "gamma", question)
    assert nothing.hits == [] and "project 'gamma'" in (nothing.empty_reason or "")
