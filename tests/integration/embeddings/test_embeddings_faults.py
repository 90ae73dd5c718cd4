"""Faults across processes and the wire: a worker killed mid-batch; the OpenAI embedder against a local server."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from core import clock
from core.adapters.openai_embedder import OpenAIEmbedder, _matrix
from core.adapters.store import Cond
from core.config import load_settings
from core.errors import ConfigError, Invalid, RateLimited, TransientError
from core.services.access import SYSTEM
from core.services.embeddings import default_embedder_factories
from tests.fakes.openai_server import OpenAIFakeServer, fake_embedding
from tests.integration.embeddings.conftest import make_services, write_doc
from tests.integration.embeddings.embedding_fakes import CountingEmbedder

ROOT = Path(__file__).resolve().parents[3]
T = "tenant-k"

WORKER = textwrap.dedent("""
    import sys
    from tests.integration.embeddings.conftest import make_services
    from tests.integration.embeddings.embedding_fakes import CountingEmbedder
    from core.services.access import SYSTEM
    slow = CountingEmbedder("fake", 16)
    slow.delay = 0.3
    svc = make_services(__import__("pathlib").Path(sys.argv[1]), {"fake": slow, "fake-new": slow},
                        strict_index=True)
    svc.embeddings.pipeline.batch_size = 4
    print("ready", flush=True)
    svc.embeddings.drain(SYSTEM, sys.argv[2])
""")


def test_worker_killed_mid_batch_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    data = tmp_path / "var"
    fakes = {"fake": CountingEmbedder("fake", 16), "fake-new": CountingEmbedder("fake-new", 24)}
    svc = make_services(data, fakes, strict_index=True)
    for i in range(40):
        write_doc(svc, T, f"d{i:02d}", f"Document {i} about the renewal of contract {i}.", project="p")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", WORKER, str(data), T], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while svc.store.count("chunks", T) < 8:
            assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
            assert time.monotonic() < deadline, "the worker wrote no chunks in time"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)  # mid-cycle: some chunks written, checkpoint not advanced
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    written_before = svc.store.count("chunks", T)
    assert 8 <= written_before < 40
    # a new worker starts after the dead one's lease ran out
    restarted = make_services(data, fakes, strict_index=True)
    restarted.embeddings.pipeline.now = lambda: clock.now() + timedelta(minutes=5)
    restarted.embeddings.drain(SYSTEM, T)
    ids = [c["id"] for c in restarted.store.query("chunks", T)]
    assert len(ids) == 40 == len(set(ids))  # none lost, none duplicated
    for i in range(40):
        assert restarted.store.count("chunks", T, [Cond("documentId", "=", f"d{i:02d}")]) == 1
    model = restarted.embeddings.active_model(T)
    part = restarted.embeddings.indexes.fresh(T, "p", model)
    assert part is not None and len(part) == 40
    stats = restarted.embeddings.source_stats(SYSTEM, T)[0]
    assert (stats.docs_total, stats.docs_embedded, stats.chunks, stats.backlog) == (40, 40, 40, 0)


@pytest.fixture
def server():
    with OpenAIFakeServer(api_key="sk-test") as srv:
        yield srv


def test_openai_batches_by_count_and_tokens(server: OpenAIFakeServer) -> None:
    e = OpenAIEmbedder("text-embedding-3-small", api_key="sk-test", base_url=server.base_url, dimensions=32,
                       max_batch=4, max_request_tokens=60)
    texts = [f"note {i} about renewal pricing and the legal review" for i in range(10)]
    v = e.embed(texts)
    sizes = [len(b["input"]) for b in server.embedding_requests()]
    assert v.shape == (10, 32) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert sum(sizes) == 10 and max(sizes) <= 4 and len(sizes) >= 3
    assert all(b["dimensions"] == 32 and b["encoding_format"] == "base64" for b in server.embedding_requests())
    # same text, same vector as the server's (sent as base64 float32); long input is truncated, empty answered
    assert np.allclose(v, np.stack([fake_embedding(t, 32) for t in texts]), atol=1e-6)
    long = "word " * 20_000
    out = e.embed(["", long])
    assert out.shape == (2, 32)
    assert len(server.embedding_requests()[-1]["input"][-1].split()) <= e.max_input_tokens  # truncated


def test_openai_vectors_read_from_base64_or_float_lists() -> None:
    rows = np.arange(6, dtype="<f4").reshape(2, 3)
    as_b64 = [base64.b64encode(r.tobytes()).decode() for r in rows]
    assert np.array_equal(_matrix(as_b64), rows)
    assert np.array_equal(_matrix([r.tolist() for r in rows]), rows)  # a server that ignores encoding_format
    for bad in ([as_b64[0], as_b64[0][:-4]], [[1.0, 2.0], [1.0]], ["not base64!"]):
        with pytest.raises(TransientError, match="malformed vectors"):
            _matrix(bad)


def test_openai_embedder_from_settings_keeps_the_configured_requests_in_flight(server: OpenAIFakeServer) -> None:
    settings = load_settings(embedder="openai", llm_api_key="sk-test", llm_base_url=server.base_url,
                             embedding_model="text-embedding-3-small", embedding_concurrency=2)
    e = default_embedder_factories(settings)["openai"]()
    assert e.concurrency == 2 and e.embed(["renewal terms"]).shape == (1, 1536)
    assert default_embedder_factories(load_settings(llm_api_key="sk-test"))["openai"]().concurrency == 4
    with pytest.raises(Invalid, match="CASTIEL_EMBEDDING_CONCURRENCY"):
        load_settings(embedding_concurrency=0)


def test_openai_backs_off_on_429_and_honours_retry_after(server: OpenAIFakeServer) -> None:
    slept: list[float] = []
    e = OpenAIEmbedder("text-embedding-3-small", api_key="sk-test", base_url=server.base_url, dimensions=16,
                       sleep=slept.append)
    server.rate_limit_next(2, retry_after=0.25)
    assert e.embed(["hello"]).shape == (1, 16)
    assert slept == [0.25, 0.25] and e.requests == 3
    server.rate_limit_next(10, retry_after=None)
    with pytest.raises(RateLimited, match="429"):
        e.embed(["again"])
    assert len(slept) == 2 + 5 and slept[2] < slept[-1]  # exponential without a hint


def test_openai_errors_are_actionable(server: OpenAIFakeServer) -> None:
    bad = OpenAIEmbedder("text-embedding-3-small", api_key="wrong", base_url=server.base_url)
    with pytest.raises(ConfigError, match="API key"):
        bad.embed(["x"])
    with pytest.raises(ConfigError, match="CASTIEL_LLM_API_KEY"):
        OpenAIEmbedder("text-embedding-3-small", api_key=None)
    e = OpenAIEmbedder("text-embedding-3-small", api_key="sk-test", base_url=server.base_url, dimensions=8,
                       sleep=lambda s: None)
    server.fail_next(1, status=500)
    assert e.embed(["after one 500"]).shape == (1, 8)


def test_azure_openai_deployment_path(server: OpenAIFakeServer) -> None:
    e = OpenAIEmbedder("my-embeddings", api_key="sk-test", azure_endpoint=server.azure_endpoint,
                       api_version="2024-06-01")
    assert e.model_key == "openai-my-embeddings@64"  # probed: unknown deployments say their size
    assert e.embed(["x", "y"]).shape == (2, 64)
    assert server.requests[-1][0] == "/openai/deployments/my-embeddings/embeddings"


def test_pipeline_with_openai_embedder_and_one_failing_batch(tmp_path: Path, server: OpenAIFakeServer) -> None:
    e = OpenAIEmbedder("text-embedding-3-small", api_key="sk-test", base_url=server.base_url, dimensions=16,
                       max_attempts=1)
    svc = make_services(tmp_path / "var", {"fake": e, "fake-new": e})  # type: ignore[dict-item]
    svc.embeddings.pipeline.batch_size = 3
    svc.embeddings.pipeline.backoff_seconds = 0.0
    for i in range(9):
        write_doc(svc, T, f"d{i}", f"Opportunity {i}: the champion asked for a security review.")
    server.fail_next(1, status=503)
    r = svc.embeddings.drain(SYSTEM, T)[0]
    assert r.failed == 0 and svc.store.count("chunks", T) == 9
    hits = svc.embeddings.search(SYSTEM, T, "alpha", "champion security review", k=3).hits
    assert len(hits) == 3


@pytest.mark.real_cosmos_only("incremental, partition-scoped change feed with continuation tokens")
def test_cosmos_change_feed_leases_and_lag(cosmos_endpoint) -> None:
    import uuid

    from azure.cosmos import CosmosClient, PartitionKey

    from core.adapters.cosmos_change_feed import CosmosChangeFeed

    endpoint, key = cosmos_endpoint
    db = CosmosClient(endpoint, key).create_database_if_not_exists("castiel-feed-test")
    name = f"docs-{uuid.uuid4().hex[:8]}"
    docs = db.create_container(name, PartitionKey("/tenantId"))
    leases = db.create_container(f"{name}-leases", PartitionKey("/id"))
    try:
        for i in range(5):
            docs.upsert_item({"id": f"d{i}", "tenantId": "t", "text": f"doc {i}"})
        feed = CosmosChangeFeed(docs, leases, owner="w1")
        assert sum(feed.estimate_lag().values()) == 5
        seen = []
        for batch in feed.read():
            seen += [d["id"] for d in batch.documents]
            feed.commit(batch)
        assert sorted(seen) == [f"d{i}" for i in range(5)]
        assert sum(feed.estimate_lag().values()) == 0
        other = CosmosChangeFeed(docs, leases, owner="w2")
        assert list(other.read()) == []  # w1 holds every range's lease
    finally:
        db.delete_container(name)
        db.delete_container(f"{name}-leases")
