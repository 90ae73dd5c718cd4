"""Services on a fresh SQLite store with fake embedders, plus helpers to write documents like the sync engine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core import clock
from core.bootstrap import Services, build
from core.config import load_settings
from core.embeddings.changes import record_document_change
from core.migrate import migrate
from tests.integration.embeddings.embedding_fakes import CountingEmbedder


@pytest.fixture
def fake_embedders() -> dict[str, CountingEmbedder]:
    return {"fake": CountingEmbedder("fake", 16), "fake-new": CountingEmbedder("fake-new", 24)}


def make_services(data_dir: Path, embedders: dict[str, CountingEmbedder], **kw: object) -> Services:
    svc = build(load_settings(data_dir=data_dir, telemetry_enabled=False),
                embedders={k: (lambda e=e: e) for k, e in embedders.items()}, embedder_default="fake", **kw)
    migrate(svc)
    return svc


@pytest.fixture
def emb_services(tmp_path: Path, fake_embedders: dict[str, CountingEmbedder]) -> Iterator[Services]:
    svc = make_services(tmp_path / "var", fake_embedders, strict_index=True)
    yield svc
    svc.store.close()


def write_doc(svc: Services, tenant: str, doc_id: str, text: str | bytes, project: str = "alpha",
              source: str = "localfiles", title: str | None = None, record: bool = True) -> None:
    """Store a document the way the sync engine does, then record the change (its hook)."""
    svc.store.upsert("documents", {
        "id": doc_id, "tenantId": tenant, "connectionId": "conn-1", "source": source, "sourceId": doc_id,
        "title": title or doc_id, "text": text, "project": project, "mimeType": "text/plain",
        "updatedAt": clock.iso(), "syncedAt": clock.iso()})
    if record:
        record_document_change(svc.store, tenant, doc_id, "upsert")


def delete_doc(svc: Services, tenant: str, doc_id: str) -> None:
    svc.store.delete("documents", tenant, doc_id)
    record_document_change(svc.store, tenant, doc_id, "delete")
