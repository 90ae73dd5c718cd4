"""The pipeline on real SQLite: exactly-once changes, hash reuse, deletes, faults, model change, index rebuild."""

from __future__ import annotations

import shutil

import pytest

from core.adapters.store import Cond
from core.embeddings.changes import record_document_change
from core.services.access import SYSTEM
from tests.integration.embeddings.conftest import delete_doc, make_services, write_doc

T = "tenant-x"
PARAS = [f"Paragraph {i} is about renewal pricing, the liability cap and security review number {i}. " * 6
         for i in range(6)]


def chunks_of(svc, doc_id: str) -> list[dict]:
    return svc.store.query("chunks", T, [Cond("documentId", "=", doc_id)], order_by="ord")


def drain(svc) -> list:
    return svc.embeddings.drain(SYSTEM, T)


def test_insert_update_delete_each_processed_once(emb_services, fake_embedders) -> None:
    svc, fake = emb_services, fake_embedders["fake"]
    write_doc(svc, T, "d1", "\n".join(PARAS))
    write_doc(svc, T, "d2", "Short note about the EU data residency requirement.", project="beta")
    results = drain(svc)
    assert results[0].documents == 2 and results[-1].status == "idle"
    first = len(fake.texts)
    n1 = len(chunks_of(svc, "d1"))
    assert n1 > 1 and first == n1 + 1
    # update one paragraph: only chunks whose text changed are embedded again
    changed = PARAS[:5] + ["A new closing paragraph about the signed order form."]
    write_doc(svc, T, "d1", "\n".join(changed))
    drain(svc)
    re_embedded = len(fake.texts) - first
    assert 0 < re_embedded < n1
    assert all(c["docFingerprint"] == chunks_of(svc, "d1")[0]["docFingerprint"] for c in chunks_of(svc, "d1"))
    hits = svc.embeddings.search(SYSTEM, T, "alpha", "signed order form closing paragraph", k=3).hits
    assert "signed order form" in hits[0].text
    # delete: chunks leave the store and the index
    delete_doc(svc, T, "d1")
    drain(svc)
    assert chunks_of(svc, "d1") == []
    res = svc.embeddings.search(SYSTEM, T, "alpha", "renewal pricing", k=5)
    assert res.hits == [] and res.searched_chunks == 0
    stats = {s.source: s for s in svc.embeddings.source_stats(SYSTEM, T)}["localfiles"]
    assert (stats.docs_total, stats.docs_embedded, stats.backlog) == (1, 1, 0)
    assert stats.chunks == len(chunks_of(svc, "d2"))


def test_duplicate_change_delivery_embeds_once(emb_services, fake_embedders) -> None:
    svc, fake = emb_services, fake_embedders["fake"]
    write_doc(svc, T, "d1", "One sentence about the renewal. Another about the security review.")
    record_document_change(svc.store, T, "d1", "upsert")  # the same change delivered again
    drain(svc)
    assert len(fake.texts) == 1
    record_document_change(svc.store, T, "d1", "upsert")  # and once more, after it was processed
    r = drain(svc)[0]
    assert r.skipped_unchanged == 1 and len(fake.texts) == 1
    assert len(chunks_of(svc, "d1")) == 1


def test_empty_binary_and_languages(emb_services, fake_embedders) -> None:
    svc = emb_services
    write_doc(svc, T, "empty", "   \n\n  ")
    write_doc(svc, T, "binary", "%PDF-1.7 \x00\x01\x02\x03\x04\x05\x06" * 40)
    write_doc(svc, T, "ja", "データは地域内に保存する必要があります。夜間バッチは一時間以内に完了しています。")
    write_doc(svc, T, "de", "Der Betriebsrat muss jedes Werkzeug prüfen. Die Daten bleiben in der EU.")
    write_doc(svc, T, "fr", "L'équipe juridique demande de relever le plafond de responsabilité.")
    r = drain(svc)[0]
    assert (r.documents, r.empty, r.failed) == (5, 1, 1)
    assert chunks_of(svc, "empty") == [] and chunks_of(svc, "binary") == []
    assert "データは地域内" in chunks_of(svc, "ja")[0]["text"]
    failed = svc.embeddings.failed_items(SYSTEM, T)
    assert [f["documentId"] for f in failed] == ["binary"] and "binary content" in failed[0]["error"]
    k = svc.embeddings.kpis(SYSTEM, T)
    assert k.coverage == pytest.approx(3 / 4)  # empty documents do not count against coverage


def test_failed_document_is_retried_then_dead_lettered(tmp_path, fake_embedders) -> None:
    from datetime import timedelta

    from core import clock

    svc = make_services(tmp_path / "var", fake_embedders)
    shift = [0.0]
    svc.embeddings.pipeline.now = lambda: clock.now() + timedelta(seconds=shift[0])
    svc.embeddings.pipeline.max_attempts = 3
    write_doc(svc, T, "bad", "\x01\x02\x03\x04\x05 corrupt " * 30)
    write_doc(svc, T, "good", "A normal sentence about the pilot review.")
    drain(svc)
    attempts = []
    for _ in range(4):
        shift[0] += 7200  # past any backoff
        drain(svc)
        attempts.append(svc.embeddings.failed_items(SYSTEM, T)[0]["attempts"])
    item = svc.embeddings.failed_items(SYSTEM, T)[0]
    assert item["status"] == "dead" and attempts[:2] == [2, 3] and attempts[-1] == 3
    stats = svc.embeddings.source_stats(SYSTEM, T)[0]
    assert (stats.docs_dead, stats.docs_failed, stats.docs_embedded) == (1, 0, 1)
    # a person retries it after fixing the source: it is tried again
    write_doc(svc, T, "bad", "The fixed document text.", record=False)
    assert svc.embeddings.retry_failed(SYSTEM, T, "source fixed") == 1
    drain(svc)
    assert svc.embeddings.failed_items(SYSTEM, T) == []
    assert len(chunks_of(svc, "bad")) == 1


def test_embedder_failing_for_one_batch_loses_nothing(emb_services, fake_embedders) -> None:
    svc, fake = emb_services, fake_embedders["fake"]
    svc.embeddings.pipeline.batch_size = 4
    svc.embeddings.pipeline.backoff_seconds = 0.0
    fake.fail_batches = {1}  # the second call fails once; the retry succeeds
    for i in range(10):
        write_doc(svc, T, f"d{i}", f"Document {i} about the quarterly business review and forecast {i}.")
    r = drain(svc)[0]
    assert r.failed == 0 and r.documents == 10
    assert sum(len(chunks_of(svc, f"d{i}")) for i in range(10)) == 10


def test_one_bad_document_does_not_abort_its_batch(emb_services, fake_embedders) -> None:
    svc, fake = emb_services, fake_embedders["fake"]
    svc.embeddings.pipeline.backoff_seconds = 0.0
    fake.poison = "POISON"
    for i in range(6):
        write_doc(svc, T, f"d{i}", f"Document {i} about renewal terms." + (" POISON" if i == 3 else ""))
    r = drain(svc)[0]
    assert r.failed == 1 and r.documents == 6
    assert [f["documentId"] for f in svc.embeddings.failed_items(SYSTEM, T)] == ["d3"]
    assert "embedding failed" in svc.embeddings.failed_items(SYSTEM, T)[0]["error"]
    assert all(len(chunks_of(svc, f"d{i}")) == 1 for i in (0, 1, 2, 4, 5))


def test_model_change_reembeds_in_background_while_search_serves_old(emb_services, fake_embedders) -> None:
    svc = emb_services
    for i in range(5):
        write_doc(svc, T, f"d{i}", f"Account plan {i}: expansion into EMEA with works council approval.")
    drain(svc)
    old = svc.embeddings.active_model(T)
    # start the move but stop after one cycle: search must keep serving the old model
    svc.embeddings._config_update(T, activeModel=old, targetModel=svc.embeddings.embedder("fake-new").model_key)
    for i in range(5):
        record_document_change(svc.store, T, f"d{i}", "upsert")
    svc.embeddings.pipeline.max_changes = 2
    svc.embeddings.run_cycle(SYSTEM, T)
    assert svc.embeddings.active_model(T) == old
    res = svc.embeddings.search(SYSTEM, T, "alpha", "works council approval", k=5)
    assert res.model == old and len(res.hits) == 5
    mix = svc.embeddings.kpis(SYSTEM, T).model_mix
    assert mix[old] == 5 and 0 < mix["fake-new@1"] < 5
    drain(svc)
    assert svc.embeddings.active_model(T) == "fake-new@1"
    assert svc.embeddings.kpis(SYSTEM, T).model_mix == {"fake-new@1": 5}
    assert svc.store.count("chunks", T, [Cond("model", "=", old)]) == 0
    assert len(svc.embeddings.search(SYSTEM, T, "alpha", "works council", k=5).hits) == 5


def test_index_is_rebuilt_from_the_store_when_missing(tmp_path, fake_embedders) -> None:
    svc = make_services(tmp_path / "var", fake_embedders)
    for i in range(8):
        write_doc(svc, T, f"d{i}", f"Meeting {i} notes on the pilot success criteria.")
    drain(svc)
    before = [h.chunk_id for h in svc.embeddings.search(SYSTEM, T, "alpha", "pilot success", k=8).hits]
    shutil.rmtree(tmp_path / "var" / "vectors")
    fresh = make_services(tmp_path / "var", fake_embedders)
    after = [h.chunk_id for h in fresh.embeddings.search(SYSTEM, T, "alpha", "pilot success", k=8).hits]
    assert after == before and fresh.embeddings.indexes.rebuilds == 1
    assert (tmp_path / "var" / "vectors").exists()  # saved again


def test_reader_process_sees_worker_writes_after_a_cycle(tmp_path, fake_embedders) -> None:
    worker = make_services(tmp_path / "var", fake_embedders, strict_index=True)
    app = make_services(tmp_path / "var", fake_embedders)
    write_doc(worker, T, "d1", "The first document about onboarding.")
    drain(worker)
    assert len(app.embeddings.search(SYSTEM, T, "alpha", "onboarding", k=5).hits) == 1
    write_doc(worker, T, "d2", "A second document about onboarding and training.")
    drain(worker)
    assert {h.document_id for h in app.embeddings.search(SYSTEM, T, "alpha", "onboarding", k=5).hits} == {
        "d1", "d2"}
    assert app.embeddings.indexes.rebuilds == 0  # it loaded the worker's saved copy


def test_tenant_scoping(emb_services, principals, two_tenants) -> None:
    from core.errors import Forbidden

    with pytest.raises(Forbidden):
        emb_services.embeddings.kpis(principals["ops"], two_tenants[1])
    with pytest.raises(Forbidden):
        emb_services.embeddings.search(principals["content_admin"], two_tenants[0], None, "anything")


def test_50mb_document_is_embedded_in_batches(emb_services, fake_embedders) -> None:
    svc, fake = emb_services, fake_embedders["fake"]
    svc.embeddings.set_chunking(SYSTEM, T, {"max_tokens": 2000, "overlap_tokens": 0}, "big documents")
    para = "The customer asked about renewal pricing and the security review before the deadline. " * 40 + "\n"
    text = para * (50 * 1024 * 1024 // len(para))
    write_doc(svc, T, "big", text)
    del text
    r = drain(svc)[0]
    assert r.failed == 0
    n = svc.store.count("chunks", T, [Cond("documentId", "=", "big")])
    assert n > 5000 and n == r.chunks_embedded + r.chunks_reused
    assert max(fake.batches) <= svc.embeddings.pipeline.batch_size  # never the whole document at once


def test_overlapped_batches_skip_a_failed_documents_later_chunks_and_batch_state_writes(
        emb_services, fake_embedders, monkeypatch) -> None:
    svc, fake = emb_services, fake_embedders["fake"]
    pipe = svc.embeddings.pipeline
    pipe.batch_size = 2
    pipe.backoff_seconds = 0.0
    fake.poison = "POISON"
    fake.delay = 0.01  # the embedding thread is still busy while the next batch is chunked
    write_doc(svc, T, "bad", "POISON first sentence. " + " ".join(PARAS))
    for i in range(5):
        write_doc(svc, T, f"ok{i}", " ".join(PARAS[:2]) + f" Document {i}.")
    single_state_writes = []
    real_upsert = svc.store.upsert
    monkeypatch.setattr(svc.store, "upsert", lambda c, d, **kw: (
        single_state_writes.append(d["id"]) if c == "pipeline_state" and d["id"].startswith("doc:") else None,
        real_upsert(c, d, **kw))[1])
    r = drain(svc)[0]
    assert r.failed == 1 and r.documents == 6
    assert chunks_of(svc, "bad") == []
    # the bad document's later chunks were dropped before they reached the embedder
    assert not any(PARAS[5][:40] in t and "Document" not in t for t in fake.texts)
    assert all(len(chunks_of(svc, f"ok{i}")) >= 2 for i in range(5))
    assert single_state_writes == []  # per-document states went in one batched write
    states = svc.store.query("pipeline_state", T, [Cond("kind", "=", "doc")])
    assert {s["id"]: s["status"] for s in states} == {"doc:bad": "failed", **{f"doc:ok{i}": "embedded"
                                                                                 for i in range(5)}}


def test_batches_are_embedded_as_concurrently_as_the_embedder_allows(emb_services, fake_embedders) -> None:
    import threading

    import numpy as np

    from core.embeddings.embedder import l2_normalise
    from core.embeddings.pipeline import decode_vector
    from tests.fakes.openai_server import fake_embedding

    svc, fake = emb_services, fake_embedders["fake"]
    pipe = svc.embeddings.pipeline
    pipe.batch_size = 2
    pipe.backoff_seconds = 0.0
    fake.concurrency = 2
    fake.delay = 0.05
    fake.poison = "POISON"
    lock, running, most = threading.Lock(), [0], [0]
    real_embed = fake.embed

    def tracked(texts):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            return real_embed(texts)
        finally:
            with lock:
                running[0] -= 1

    fake.embed = tracked
    for i in range(12):
        write_doc(svc, T, f"d{i:02d}", f"Document {i} about the renewal terms and the security review {i}."
                  + (" POISON" if i == 5 else ""))
    r = drain(svc)[0]
    assert most[0] == 2  # two calls at once, never more than the embedder takes
    assert r.failed == 1 and r.documents == 12
    assert [f["documentId"] for f in svc.embeddings.failed_items(SYSTEM, T)] == ["d05"]
    rows = [c for i in range(12) if i != 5 for c in chunks_of(svc, f"d{i:02d}")]
    assert len(rows) == 11 and len({c["id"] for c in rows}) == 11
    for c in rows:  # each chunk kept its own vector, whichever thread embedded it
        want = l2_normalise(fake_embedding(c["text"], 16))[0]
        assert np.allclose(decode_vector(c["vector"]), want, atol=1e-6)


def test_screen_reads_use_id_ranges_and_merge_failed_and_dead(emb_services) -> None:
    from core.embeddings.changes import pending_changes, stats_rows

    svc = emb_services
    for i in range(3):
        write_doc(svc, T, f"d{i}", f"Document {i} about renewal terms.", project=f"p{i % 2}",
                  source="slack" if i else "drive")
    drain(svc)
    # per-document state rows share the container; only the per-source counters come back
    assert sorted(r["source"] for r in stats_rows(svc.store, T)) == ["drive", "slack"]
    assert svc.embeddings.projects(SYSTEM, T) == ["p0", "p1"]
    for i in range(3, 6):
        write_doc(svc, T, f"d{i}", f"Document {i}.")
    assert [int(c["seq"]) for c in pending_changes(svc.store, T, 4, 10)] == [5, 6]
    # failed and dead changes come back together, newest first
    for seq, status in ((1, "dead"), (2, "failed"), (3, "dead")):
        c = svc.store.query("doc_changes", T, [Cond("seq", "=", seq)])[0]
        svc.store.upsert("doc_changes", {**{k: v for k, v in c.items() if k != "_etag"}, "status": status})
    assert [(f["seq"], f["status"]) for f in svc.embeddings.failed_items(SYSTEM, T, limit=2)] == [
        (3, "dead"), (2, "failed")]


def test_reconcile_sweep_recovers_changes_lost_in_a_crash(emb_services) -> None:
    svc = emb_services
    write_doc(svc, T, "d1", "Renewal pricing was agreed with the buyer on Monday.")
    write_doc(svc, T, "d2", "The security review is booked for Friday.")
    drain(svc)
    states = svc.store.query("pipeline_state", T, [Cond("id", "in", ["doc:d1", "doc:d2"])])
    assert len(states) == 2 and all(s.get("docVersion") for s in states)
    clean = svc.embeddings.reconcile(SYSTEM, T)
    assert (clean.upserts_recorded, clean.deletes_recorded, clean.documents_checked) == (0, 0, 2)
    # the worker died after storing d3 and before recording its change; d1 was deleted the same way
    write_doc(svc, T, "d3", "Quarterly churn review found three at-risk accounts in Benelux.", record=False)
    svc.store.delete("documents", T, "d1")
    assert drain(svc)[0].status == "idle"  # the outbox knows nothing of either
    found = svc.embeddings.reconcile(SYSTEM, T)
    assert (found.upserts_recorded, found.deletes_recorded) == (1, 1)
    assert found.since is not None and found.documents_checked <= 3  # only documents written since the last sweep
    drain(svc)
    assert chunks_of(svc, "d3") and chunks_of(svc, "d1") == []
    hits = svc.embeddings.search(SYSTEM, T, "alpha", "churn review at-risk accounts", k=1).hits
    assert hits[0].document_id == "d3"
    again = svc.embeddings.reconcile(SYSTEM, T)
    assert (again.upserts_recorded, again.deletes_recorded) == (0, 0)
    assert len(svc.audit.search(SYSTEM, T, action="embeddings.reconcile").rows) == 1  # only the sweep that found some


def test_a_document_whose_id_begins_with_another_keeps_its_chunks(emb_services, fake_embedders) -> None:
    """Chunks are found by id range (``<document>:<model>:<ord>``); 'acme:notes' lies in 'acme:''s range."""
    svc, fake = emb_services, fake_embedders["fake"]
    write_doc(svc, T, "acme", "\n".join(PARAS[:3]))
    write_doc(svc, T, "acme:notes", "\n".join(PARAS[3:]))
    drain(svc)
    notes = chunks_of(svc, "acme:notes")
    assert notes and chunks_of(svc, "acme")
    # updating 'acme' re-uses only its own vectors: every one of its chunk texts is new, so all are embedded
    before = len(fake.texts)
    write_doc(svc, T, "acme", "\n".join(PARAS[3:]))  # the other document's text: its hashes must not be reused
    drain(svc)
    assert len(fake.texts) - before == len(chunks_of(svc, "acme"))
    delete_doc(svc, T, "acme")
    drain(svc)
    assert chunks_of(svc, "acme") == [] and chunks_of(svc, "acme:notes") == notes
    hits = svc.embeddings.search(SYSTEM, T, "alpha", PARAS[4][:80], k=20).hits
    assert {h.document_id for h in hits} == {"acme:notes"}


def test_back_to_back_cycles_overlap_but_store_progress_in_order(emb_services, fake_embedders, monkeypatch) -> None:
    """A drain runs cycles back to back; one whose bookkeeping fails stops every later one from moving on."""
    from core.embeddings import pipeline as pl
    from core.embeddings.changes import read_checkpoint

    svc, fake = emb_services, fake_embedders["fake"]
    svc.embeddings.pipeline.max_changes = 2
    for i in range(6):
        write_doc(svc, T, f"d{i}", f"Note {i} about the renewal and the works council approval.")
    write_doc(svc, T, "d1", "Note 1, changed while d1 still waited in the backlog.")  # d1 twice, in cycles 1 and 4
    calls = []
    real_finish = pl.EmbeddingPipeline._finish

    def failing_finish(self, tenant_id, models, works, *rest):
        calls.append([w.document_id for w in works])
        if len(calls) == 2:
            raise RuntimeError("the store went away")
        return real_finish(self, tenant_id, models, works, *rest)

    monkeypatch.setattr(pl.EmbeddingPipeline, "_finish", failing_finish)
    with pytest.raises(RuntimeError, match="went away"):
        drain(svc)
    assert len(calls) == 2  # the third cycle's bookkeeping never ran: it waits behind the failed one
    assert read_checkpoint(svc.store, T) == 2  # only the first cycle's changes count as done
    monkeypatch.setattr(pl.EmbeddingPipeline, "_finish", real_finish)
    results = drain(svc)
    assert [r.status for r in results][-1] == "idle" and read_checkpoint(svc.store, T) == 7
    assert svc.store.count("chunks", T) == 6  # each document once, whatever ran twice
    assert "changed while d1" in chunks_of(svc, "d1")[0]["text"]
    assert sum("changed while d1" in t for t in fake.texts) >= 1
    stats = svc.embeddings.source_stats(SYSTEM, T)[0]
    assert (stats.docs_total, stats.docs_embedded, stats.backlog) == (6, 6, 0)


def test_a_page_of_changes_is_recorded_in_one_go_with_its_sources(emb_services) -> None:
    """The sync engine's hook: consecutive numbers after earlier changes, sources looked up only where not
    given (from the document, or for a delete from its chunks), per-source counters, then processed once."""
    from core.embeddings.changes import ChangeRef, document_change_hook, record_document_changes
    from core.errors import Invalid

    svc = emb_services
    write_doc(svc, T, "old", "An earlier note about the renewal.", source="crm")  # change 1
    drain(svc)
    for doc_id, source in (("p1", "files"), ("p2", "crm"), ("p3", "files")):
        write_doc(svc, T, doc_id, f"Page document {doc_id} about the onboarding plan.", source=source, record=False)
    svc.store.delete("documents", T, "old")
    hook = document_change_hook(svc.store)
    hook(T, [("p1", "upsert", "files", "alpha"), ("p2", "upsert", None, None), ("p3", "upsert", None, None),
             ("old", "delete", None, None)])
    changes = svc.store.query("doc_changes", T, order_by="seq")
    assert [(c["seq"], c["documentId"], c["op"], c["source"]) for c in changes] == [
        (1, "old", "upsert", "crm"), (2, "p1", "upsert", "files"), (3, "p2", "upsert", "crm"),
        (4, "p3", "upsert", "files"), (5, "old", "delete", "crm")]
    assert {c["project"] for c in changes[1:4]} == {"alpha"}
    backlog = {s.source: s.backlog for s in svc.embeddings.source_stats(SYSTEM, T)}
    assert backlog == {"crm": 2, "files": 2}  # crm: three recorded, the first one processed
    with pytest.raises(Invalid, match="unknown change operation"):  # nothing of a bad page is recorded
        record_document_changes(svc.store, T, [ChangeRef("p1", "upsert"), ChangeRef("p2", "touch")])
    assert len(svc.store.query("doc_changes", T)) == 5
    drain(svc)
    assert {d for d in ("p1", "p2", "p3") if chunks_of(svc, d)} == {"p1", "p2", "p3"} and chunks_of(svc, "old") == []


def test_reembed_estimate_goes_by_the_pipelines_measured_rate(emb_services, fake_embedders, monkeypatch) -> None:
    """Cycles record their busy time in the rollups, overlapping cycles counted once; a re-embed estimate
    with the active model divides by that measured rate, one with another model by a sampled one."""
    import time

    from core.services import embeddings as emb_mod

    svc, fake = emb_services, fake_embedders["fake"]
    monkeypatch.setattr(emb_mod, "RATE_MIN_CHUNKS", 5)
    svc.embeddings.pipeline.max_changes = 4
    svc.embeddings.pipeline.batch_size = 2
    fake.delay = 0.05
    for i in range(12):
        write_doc(svc, T, f"d{i}", f"Note {i} about the renewal, the security review and the pricing.")
    t0 = time.perf_counter()
    results = drain(svc)
    wall = time.perf_counter() - t0
    assert sum(r.status == "ok" for r in results) >= 3  # several cycles, overlapping
    rolls = svc.embeddings.timeline(SYSTEM, T)
    busy = sum(int(r["busyMs"]) for r in rolls) / 1000
    chunks = sum(int(r["chunks"]) for r in rolls)
    assert chunks == 12
    assert len(fake.batches) * 0.05 <= busy <= wall + 0.01
    est = svc.embeddings.estimate_reembed(SYSTEM, T)
    assert est.rate_basis.startswith("measured: 12 chunks in")
    assert est.rate_chunks_per_second == pytest.approx(chunks / busy, rel=0.01)
    assert est.seconds == pytest.approx(est.chunks / est.rate_chunks_per_second)
    other = svc.embeddings.estimate_reembed(SYSTEM, T, model="fake-new")
    assert other.rate_basis.startswith("sampled") and other.rate_chunks_per_second > 0
