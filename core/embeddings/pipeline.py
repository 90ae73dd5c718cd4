"""The embedding pipeline: changed documents to stored chunk vectors and an up-to-date vector index.

One cycle per tenant: take the tenant's pipeline lease (so two workers never interleave one
tenant's changes), read changes above the checkpoint in order (plus failed ones due for retry),
keep the last change per document, then stream each document through decode -> chunk -> hash.
Chunks whose hash the document already had keep their stored vector; the rest are embedded in
batches across documents, as many batches at once as the embedder takes (``Embedder.concurrency``),
and stored in order by one writer thread. A batch the embedder refuses is retried with backoff, then split per
document, so one bad document fails alone (recorded with its reason, retried with backoff up to
``max_attempts``, then dead-lettered) and the batch's other documents go through.

Writes are idempotent: chunk ids are ``<document>:<model>:<ord>``, so a worker killed mid-batch
and restarted rewrites the same ids; the per-document state (its fingerprint) is written last, so
an interrupted document is redone, never half-counted. The index partition's version is bumped in
the store before chunks are written: a crash leaves the saved index older than the store, which
makes the next reader rebuild that partition from the stored chunks.

A drain runs cycles back to back under one lease (``run``): the next cycle is read and chunked
while the last one's bookkeeping is written, so the embedder never waits for a cycle to end.

While a model change is under way (``targetModel`` set) every document is embedded for both
models; search keeps using ``activeModel`` until the target covers every document.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from core import clock
from core.adapters.store import Cond, Doc, DocumentStore
from core.embeddings.changes import (
    CHANGES,
    CHUNKS,
    DOCUMENTS,
    STATE,
    UNKNOWN_SOURCE,
    chunk_id_prefix,
    contiguous_prefix,
    document_chunks,
    pending_changes,
    read_checkpoint,
    stats_id,
    stats_rows,
)
from core.embeddings.chunking import Chunk, ChunkingConfig, chunk_documents, iter_chunks
from core.embeddings.embedder import Embedder, model_slug
from core.embeddings.hashing import chunk_hash, document_fingerprint
from core.embeddings.index import Partition
from core.embeddings.reconcile import document_version
from core.embeddings.text import decode_document_text
from core.errors import CastielError, Conflict, Invalid

if TYPE_CHECKING:
    from core.embeddings.store_index import IndexManager

log = logging.getLogger(__name__)

ROLLUPS = "rollups"
ROLLUP_KIND = "embeddings"
BUCKET_MINUTES = 5
DEFAULT_MAX_ATTEMPTS = 5
PREFETCH = 100  # documents read per query while chunking (bounded, since a document may be large)
EMBED_AHEAD = 1  # batches handed to the embedder and queued beyond one per embedding thread
BIG_DOCUMENT_CHARS = 1 << 20  # documents from this size are chunked as a stream, not with the others


def encode_vectors(vectors: np.ndarray) -> list[str]:
    """Each row as base64 of its little-endian float32 bytes (what ``decode_vector`` reads)."""
    return [base64.b64encode(row).decode("ascii") for row in np.ascontiguousarray(vectors, dtype="<f4")]


def decode_vector(s: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype="<f4")


def chunk_id(document_id: str, model_key: str, ord_: int) -> str:
    return f"{chunk_id_prefix(document_id, model_key)}{ord_:06d}"


def docstate_id(document_id: str) -> str:
    return f"doc:{document_id}"


def index_version_id(model_key: str, project: str) -> str:
    return f"index:{model_slug(model_key)}:{project}"


def bucket_of(at: datetime) -> str:
    minute = at.minute - at.minute % BUCKET_MINUTES
    return at.replace(minute=minute, second=0, microsecond=0).strftime("%Y-%m-%dT%H:%M")


@dataclass
class TenantConfig:
    chunking: ChunkingConfig
    paused: bool
    active_model: str | None
    target_model: str | None

    @classmethod
    def load(cls, store: DocumentStore, tenant_id: str) -> TenantConfig:
        doc = store.get_or_none(STATE, tenant_id, "config") or {}
        return cls(ChunkingConfig.parse(doc.get("chunking")), bool(doc.get("paused")), doc.get("activeModel"),
                   doc.get("targetModel"))


@dataclass
class CycleResult:
    tenant_id: str
    changes: int = 0
    documents: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0
    deleted: int = 0
    skipped_unchanged: int = 0
    empty: int = 0
    failed: int = 0
    dead: int = 0
    checkpoint: int = 0
    seconds: float = 0.0
    status: str = "ok"  # ok | paused | busy | idle | aborted (an earlier cycle's bookkeeping failed)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class _DocWork:
    """One document on its way through a cycle."""

    change: Doc
    document_id: str
    op: str
    source: str
    project: str
    doc: Doc | None = None
    state: Doc | None = None
    fingerprint: str = ""
    models: list[str] = field(default_factory=list)
    reuse: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # model -> hash -> vector
    existing_ords: dict[str, int] = field(default_factory=dict)  # model -> stored chunk count
    chunk_counts: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    new_doc: dict[str, bool] = field(default_factory=dict)
    error: str | None = None
    done_chunking: bool = False
    prefetched: bool = False
    outcome: str = ""  # embedded | empty | deleted | unchanged | failed


@dataclass
class _Pending:
    work: _DocWork
    model: str
    chunk: Chunk
    hash: str
    vector: np.ndarray | None


@dataclass
class _Batch:
    """One embedding batch: its chunks per model, those that needed the embedder, the embedding futures."""

    by_model: dict[str, list[_Pending]] = field(default_factory=dict)
    need: dict[str, list[_Pending]] = field(default_factory=dict)
    futures: list[Future[None]] = field(default_factory=list)

    def wait(self) -> None:
        for f in self.futures:
            f.result()  # _embed records per-document failures itself; anything else is a bug and surfaces


@dataclass
class _Cycle:
    """One cycle's changes and documents, its chunk writes and (once submitted) its bookkeeping task."""

    result: CycleResult
    fresh: list[Doc]
    due: list[Doc]
    works: list[_DocWork]
    now: datetime
    started: float
    touched: set[tuple[str, str]] = field(default_factory=set)
    writes: list[Future[None]] = field(default_factory=list)
    end: Future[None] | None = None
    ended: float = 0.0  # perf_counter when its bookkeeping finished (on the writer thread)

    @property
    def document_ids(self) -> set[str]:
        return {w.document_id for w in self.works}


@dataclass
class _Stages:
    """A run's threads: ``embed`` (the embedder's concurrency), ``write`` (one, in order), and how many
    batches may wait for the embedder at once (one running per embedding thread, plus ``EMBED_AHEAD``)."""

    embed: ThreadPoolExecutor
    write: ThreadPoolExecutor
    max_ahead: int


def _vec(p: _Pending) -> np.ndarray:
    assert p.vector is not None, "only embedded chunks are written"
    return p.vector


class EmbeddingPipeline:
    """Runs cycles for tenants; ``embedder_for(model_key)`` and the index manager come from the service."""

    def __init__(
        self,
        store: DocumentStore,
        embedder_for: Callable[[str], Embedder],
        indexes: IndexManager,
        default_model: str,
        *,
        batch_size: int = 256,
        max_changes: int = 2000,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        embed_attempts: int = 3,
        backoff_seconds: float = 0.5,
        lease_seconds: float = 120.0,
        worker_id: str | None = None,
        now: Callable[[], datetime] = clock.now,
        sleep: Callable[[float], None] = time.sleep,
        on_embed: Callable[[str, str, int, int, float, bool], None] | None = None,
        chunk_fields: Callable[[str, np.ndarray], dict[str, Any]] | None = None,
        local_index: Callable[[str], bool] | None = None,
    ) -> None:
        self.store = store
        self.embedder_for = embedder_for
        self.indexes = indexes
        self.default_model = default_model
        self.batch_size = batch_size
        self.max_changes = max_changes
        self.max_attempts = max_attempts
        self.embed_attempts = embed_attempts
        self.backoff_seconds = backoff_seconds
        self.lease_seconds = lease_seconds
        self.worker_id = worker_id or f"pipeline-{uuid.uuid4().hex[:8]}"
        self.now = now
        self.sleep = sleep
        # telemetry hook: (tenant, model, texts, tokens, ms, ok)
        self.on_embed = on_embed
        # extra fields per stored chunk from (model, vector), e.g. a float array for a store's own vector search
        self.chunk_fields = chunk_fields
        # whether a model's vectors go into the embedded index too (not when the store's own vector search
        # serves that model: its partitions would only be written, never read); the version rows are kept
        # either way, so an embedded index needed later rebuilds from the store
        self.local_index = local_index or (lambda _model: True)
        # The writer thread and this thread (deletes, stale chunks) both bump partition versions; one
        # at a time, so a bump by this process is never mistaken for another worker's (see _bump).
        self._partition_lock = threading.RLock()

    # tenant lease -------------------------------------------------------------------------
    def _acquire(self, tenant_id: str) -> bool:
        now = clock.iso(self.now())
        until = clock.iso(self.now() + timedelta(seconds=self.lease_seconds))
        got = False

        def change(doc: Doc | None) -> Doc | None:
            nonlocal got
            doc = doc or {"kind": "lock"}
            if doc.get("owner") not in (None, self.worker_id) and (doc.get("leaseUntil") or "") > now:
                got = False
                return None
            got = True
            doc.update(owner=self.worker_id, leaseUntil=until)
            return doc

        self.store.update(STATE, tenant_id, "lock", change)
        return got

    def _release(self, tenant_id: str) -> None:
        def change(doc: Doc | None) -> Doc | None:
            if not doc or doc.get("owner") != self.worker_id:
                return None
            doc.update(owner=None, leaseUntil=None)
            return doc

        self.store.update(STATE, tenant_id, "lock", change)

    def models_for(self, cfg: TenantConfig) -> list[str]:
        active = cfg.active_model or self.default_model
        return [active] + ([cfg.target_model] if cfg.target_model and cfg.target_model != active else [])

    # cycles -----------------------------------------------------------------------------
    def run_cycle(self, tenant_id: str, max_changes: int | None = None,
                  heartbeat: Callable[[str], None] | None = None) -> CycleResult:
        """One cycle: up to ``max_changes`` changes (plus failed ones due for retry)."""
        return self.run(tenant_id, max_cycles=1, max_changes=max_changes, heartbeat=heartbeat)[0]

    def run(self, tenant_id: str, max_cycles: int = 1, max_changes: int | None = None,
            heartbeat: Callable[[str], None] | None = None, max_seconds: float | None = None) -> list[CycleResult]:
        """Up to ``max_cycles`` cycles back to back under one lease (renewed per cycle); their results.

        Stops early when the backlog is empty (the last result is then "idle") or after
        ``max_seconds``. Consecutive cycles overlap: a cycle's bookkeeping (stale chunks, index save,
        document states, change records, statistics, checkpoint) runs on the writer thread after its
        last chunk is stored, while this thread already reads and chunks the next cycle's documents
        and the embedder carries on, so the embedder does not wait for a cycle's end. The writer
        thread runs everything in order: a cycle's bookkeeping starts only after its chunks and the
        previous cycle's bookkeeping are stored (and does nothing if that failed), at most one
        cycle's bookkeeping is outstanding when the next starts, and a cycle never reads a document
        the previous cycle still has in hand.
        """
        cfg = TenantConfig.load(self.store, tenant_id)
        if cfg.paused:
            return [CycleResult(tenant_id, status="paused")]
        if not self._acquire(tenant_id):
            return [CycleResult(tenant_id, status="busy")]
        started = time.perf_counter()
        cycles: list[_Cycle] = []
        try:
            # Three stages overlap: this thread reads and chunks documents, ``embedder.concurrency``
            # threads embed, another stores chunks and ends cycles. The embedder (Rust tokenizer, numpy
            # pooling, or an HTTP call) and SQLite release the GIL, so chunking and store writes run
            # beside the embedder.
            workers = self._embed_workers(self.models_for(cfg))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="embed") as pool, \
                    ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed-write") as writer:
                stages = _Stages(pool, writer, workers + EMBED_AHEAD)
                try:
                    self._run_cycles(tenant_id, cfg, cycles, max_cycles, max_changes or self.max_changes,
                                     heartbeat, started, max_seconds, stages)
                finally:
                    wait_futures([c.end for c in cycles if c.end is not None])
            for c in cycles:  # the first cycle whose bookkeeping failed (the ones after it stored nothing)
                error = c.end.exception() if c.end is not None else None
                if error is not None:
                    raise error
        finally:
            self._release(tenant_id)
        return [c.result for c in cycles]

    def _embed_workers(self, models: list[str]) -> int:
        """Embedding calls to have running at once: the most any of the run's models' embedders takes."""
        workers = 1
        for model in models:
            try:
                workers = max(workers, self.embedder_for(model).concurrency)
            except Exception:  # e.g. an unknown model: its batches fail with the reason when they are embedded
                log.debug("no embedder for %s yet; one embedding call at a time", model, exc_info=True)
        return workers

    def _run_cycles(self, tenant_id: str, cfg: TenantConfig, cycles: list[_Cycle], max_cycles: int, limit: int,
                    heartbeat: Callable[[str], None] | None, started: float, max_seconds: float | None,
                    stages: _Stages) -> None:
        checkpoint = read_checkpoint(self.store, tenant_id)
        models = self.models_for(cfg)
        for n in range(max_cycles):
            prev = cycles[-1] if cycles else None
            if len(cycles) >= 2 and cycles[-2].end is not None:
                # At most one cycle's bookkeeping outstanding: so the writer never falls further behind,
                # and only the previous cycle can still hold a document this one reads.
                wait_futures([cycles[-2].end])
            if prev is not None:
                if max_seconds is not None and time.perf_counter() - started >= max_seconds:
                    return
                if prev.end is not None and prev.end.done() and prev.end.exception() is not None:
                    return
                if not self._acquire(tenant_id):  # renews our lease; False once another worker took it over
                    return
            cycle = self._read_cycle(tenant_id, checkpoint, limit, retries=n == 0)
            cycles.append(cycle)
            if cycle.result.status == "idle":
                return
            if prev is not None and prev.end is not None and prev.document_ids & cycle.document_ids:
                wait_futures([prev.end])  # its document states must be stored before these are read
            self._process_batches(tenant_id, cfg, models, cycle, heartbeat, stages)
            cycle.end = stages.write.submit(self._end_cycle, tenant_id, models, cycle, prev)
            if cycle.fresh:
                checkpoint = int(cycle.fresh[-1]["seq"])

    def _read_cycle(self, tenant_id: str, checkpoint: int, limit: int, retries: bool) -> _Cycle:
        """The next cycle's changes: those above ``checkpoint``, and failed ones due for retry if ``retries``."""
        now = self.now()
        result = CycleResult(tenant_id, checkpoint=checkpoint)
        fresh = contiguous_prefix(pending_changes(self.store, tenant_id, checkpoint, limit), checkpoint, now)
        due = self.store.query(CHANGES, tenant_id, [Cond("status", "=", "failed"),
                                                    Cond("nextAttemptAt", "<=", clock.iso(now))],
                               limit=limit) if retries else []
        cycle = _Cycle(result, fresh, due, [], now, time.perf_counter())
        if not fresh and not due:
            result.status = "idle"
            return cycle
        # The last change per document wins; earlier ones are covered by processing it.
        latest: dict[str, Doc] = {}
        for c in sorted(due + fresh, key=lambda c: int(c["seq"])):
            latest[c["documentId"]] = c
        result.changes = len(fresh) + len(due)
        cycle.works = [_DocWork(c, c["documentId"], c["op"], c.get("source") or UNKNOWN_SOURCE,
                                c.get("project") or "") for c in latest.values()]
        return cycle

    # processing -------------------------------------------------------------------------
    def _process_batches(self, tenant_id: str, cfg: TenantConfig, models: list[str], cycle: _Cycle,
                         heartbeat: Callable[[str], None] | None, stages: _Stages) -> None:
        """Read, chunk and hash the cycle's documents; hand each full batch to the embedder and the writer.

        A batch goes to the embedding threads and at once to the writer, which waits for its vectors,
        so each embedding thread always has a batch and one more is queued. At most
        ``stages.max_ahead`` batches wait for the embedder at a time, which bounds memory and keeps
        this thread from racing ahead.
        """
        works, touched = cycle.works, cycle.touched
        pending: list[_Pending] = []
        to_embed = 0
        ahead: deque[_Batch] = deque()

        def flush(batch: list[_Pending]) -> None:
            if not batch:
                return
            while len(ahead) >= stages.max_ahead:
                ahead.popleft().wait()
            nxt = self._start_batch(tenant_id, batch, stages.embed)  # leaves out documents that failed already
            ahead.append(nxt)
            cycle.writes.append(stages.write.submit(self._write_batch, tenant_id, nxt, cycle.result, touched))

        for g in range(0, len(works), PREFETCH):
            group = works[g : g + PREFETCH]
            try:
                self._prefetch(tenant_id, group)
            except CastielError as e:  # read them one by one instead, so a failure stays with its document
                log.warning("prefetching %d documents failed (%s)", len(group), e)
            texts: list[tuple[_DocWork, str]] = []
            for w in group:
                try:
                    text = self._prepare(tenant_id, cfg, models, w, touched)
                except CastielError as e:
                    self._fail(w, e.message)
                    continue
                except Exception as e:  # one document's surprise must not stop the others
                    log.exception("preparing document %s failed", w.document_id)
                    self._fail(w, f"{type(e).__name__}: {e}")
                    continue
                if text is not None:
                    texts.append((w, text))
            for w, chunks in self._chunked(texts, cfg.chunking):
                try:
                    for chunk in chunks:
                        h = chunk_hash(chunk.text)
                        for model in w.models:
                            vec = w.reuse.get(model, {}).get(h)
                            pending.append(_Pending(w, model, chunk, h, vec))
                            if vec is None:
                                to_embed += 1
                        if to_embed >= self.batch_size:
                            flush(pending)
                            pending, to_embed = [], 0
                    w.done_chunking = True
                except CastielError as e:
                    self._fail(w, e.message)
                    pending = [p for p in pending if p.work is not w]
                except Exception as e:
                    log.exception("chunking document %s failed", w.document_id)
                    self._fail(w, f"{type(e).__name__}: {e}")
                    pending = [p for p in pending if p.work is not w]
            if heartbeat:
                heartbeat(f"{min(g + PREFETCH, len(works))} of {len(works)} documents")
        flush(pending)

    def _end_cycle(self, tenant_id: str, models: list[str], cycle: _Cycle, prev: _Cycle | None) -> None:
        """On the writer thread, after the cycle's chunk writes: stale chunks, index save, bookkeeping."""
        prev_end = prev.end if prev is not None else None
        if prev_end is not None and prev_end.exception() is not None:  # done: the writer runs its tasks in order
            cycle.result.status = "aborted"
            raise CastielError("an earlier cycle's bookkeeping failed, so this cycle stored no progress")
        for f in cycle.writes:
            f.result()  # every chunk is stored before any document's state is
        for w in cycle.works:
            if w.error is None and w.done_chunking and not w.outcome:
                self._complete_document(tenant_id, w, models)
        for model in {pm.split("\x00", 1)[0] for _, pm in cycle.touched}:
            self.indexes.index(model).save()
        # Busy time for the rollups (what re-embed estimates divide by): from the cycle's start, or from
        # the previous cycle's end where they overlapped, so a drain's cycles add up to its wall time.
        busy = time.perf_counter() - max(cycle.started, prev.ended if prev is not None else 0.0)
        self._finish(tenant_id, models, cycle.works, cycle.fresh, cycle.due, cycle.result, cycle.now, busy)
        cycle.ended = time.perf_counter()
        cycle.result.seconds = cycle.ended - cycle.started

    def _prefetch(self, tenant_id: str, works: list[_DocWork]) -> None:
        """Read the next documents and their states in two queries instead of two reads per document."""
        states = self.store.query(STATE, tenant_id, [Cond("id", "in", [docstate_id(w.document_id) for w in works])])
        by_state = {r["id"]: r for r in states}
        wanted = [w.document_id for w in works if w.op != "delete"]
        docs = self.store.query(DOCUMENTS, tenant_id, [Cond("id", "in", wanted)]) if wanted else []
        by_doc = {r["id"]: r for r in docs}
        for w in works:
            w.state = by_state.get(docstate_id(w.document_id))
            w.doc = None if w.op == "delete" else by_doc.get(w.document_id)
            w.prefetched = True

    @staticmethod
    def _chunked(texts: list[tuple[_DocWork, str]], cfg: ChunkingConfig) -> Iterator[tuple[_DocWork, Iterable[Chunk]]]:
        """Each document's chunks: ordinary ones chunked together (one token count), big ones streamed."""
        small = [(w, t) for w, t in texts if len(t) < BIG_DOCUMENT_CHARS]
        try:
            together = chunk_documents([t for _, t in small], cfg)
        except Exception:  # chunk them one by one below, so a failure stays with its document
            log.exception("chunking %d documents together failed", len(small))
            together = None
        done = {id(w): chunks for (w, _), chunks in zip(small, together or [], strict=False)}
        for w, t in texts:
            yield w, done[id(w)] if id(w) in done else iter_chunks(t, cfg)

    def _prepare(self, tenant_id: str, cfg: TenantConfig, models: list[str], w: _DocWork,
                 touched: set[tuple[str, str]]) -> str | None:
        """The document's text when it needs chunking ("" when it is empty), None when there is nothing to do."""
        if not w.prefetched:
            w.state = self.store.get_or_none(STATE, tenant_id, docstate_id(w.document_id))
            w.doc = None if w.op == "delete" else self.store.get_or_none(DOCUMENTS, tenant_id, w.document_id)
        if w.state:
            w.project = w.project or w.state.get("project") or ""
            if w.source == UNKNOWN_SOURCE:
                w.source = w.state.get("source") or UNKNOWN_SOURCE
        if w.doc is None:
            self._delete_document(tenant_id, w, touched)
            return None
        w.source = w.doc.get("source") or w.source
        w.project = w.doc.get("project") or w.project or "default"
        if w.state and w.state.get("project") not in (None, w.project):
            self._delete_document(tenant_id, w, touched, keep_state=True)  # moved to another project
            w.state = None
        text = decode_document_text(w.doc.get("text"))
        w.fingerprint = document_fingerprint(text, cfg.chunking.key)
        known = (w.state or {}).get("models") or {}
        force = w.op == "reembed"  # a user asked to embed again with the same model: no shortcuts
        w.models = [m for m in models if force or (known.get(m) or {}).get("fingerprint") != w.fingerprint
                    or (w.state or {}).get("status") in ("failed", "dead")]
        if not w.models:
            w.outcome = "unchanged"
            return None
        for m in w.models:
            n = int((known.get(m) or {}).get("chunks") or 0)
            w.existing_ords[m] = n
            w.new_doc[m] = n == 0
            w.chunk_counts[m] = 0
            w.tokens[m] = 0
            if n and not force:
                rows = document_chunks(self.store, tenant_id, w.document_id, m)
                w.reuse[m] = {r["hash"]: decode_vector(r["vector"]) for r in rows if r.get("vector")}
        return text if text.strip() else ""

    def _start_batch(self, tenant_id: str, pending: list[_Pending], pool: ThreadPoolExecutor) -> _Batch:
        """Group a batch by model and hand the chunks without a vector to the embedding thread."""
        batch = _Batch()
        for p in pending:
            if p.work.error is None:
                batch.by_model.setdefault(p.model, []).append(p)
        for model, items in batch.by_model.items():
            need = [p for p in items if p.vector is None]
            batch.need[model] = need
            if need:
                batch.futures.append(pool.submit(self._embed, tenant_id, model, need))
        return batch

    def _write_batch(self, tenant_id: str, batch: _Batch, result: CycleResult,
                     touched: set[tuple[str, str]]) -> None:
        batch.wait()  # on the writer thread: the embedding thread finishes the batch first
        for model, items in batch.by_model.items():
            need = batch.need[model]
            ok = [p for p in items if p.work.error is None and p.vector is not None]
            result.chunks_embedded += sum(1 for p in need if p.vector is not None and p.work.error is None)
            result.chunks_reused += len(items) - len(need)
            self._write_chunks(tenant_id, model, ok, touched)

    def _embed(self, tenant_id: str, model: str, items: list[_Pending]) -> None:
        embedder = self.embedder_for(model)
        texts = [p.chunk.text for p in items]
        try:
            vectors = self._embed_with_retry(tenant_id, embedder, texts)
        except Exception as batch_error:
            # Isolate: embed per document, so only the documents the embedder refuses fail.
            log.warning("embedding batch of %d failed (%s); retrying per document", len(items), batch_error)
            by_doc: dict[int, list[_Pending]] = {}
            for p in items:
                by_doc.setdefault(id(p.work), []).append(p)
            for group in by_doc.values():
                try:
                    vecs = self._embed_with_retry(tenant_id, embedder, [p.chunk.text for p in group], attempts=1)
                except Exception as e:
                    msg = e.message if isinstance(e, CastielError) else f"{type(e).__name__}: {e}"
                    self._fail(group[0].work, f"embedding failed: {msg}")
                    continue
                for p, v in zip(group, vecs, strict=True):
                    p.vector = v
            return
        for p, v in zip(items, vectors, strict=True):
            p.vector = v

    def _embed_with_retry(self, tenant_id: str, embedder: Embedder, texts: list[str],
                          attempts: int | None = None) -> np.ndarray:
        attempts = attempts or self.embed_attempts
        last: Exception | None = None
        for attempt in range(attempts):
            t0 = time.perf_counter()
            try:
                vectors = embedder.embed(texts)
            except Exception as e:
                last = e
                if self.on_embed:
                    self.on_embed(tenant_id, embedder.model_key, len(texts), 0, (time.perf_counter() - t0) * 1000,
                                  False)
                if attempt + 1 < attempts:
                    delay = getattr(e, "retry_after", None) or self.backoff_seconds * (2**attempt)
                    self.sleep(min(float(delay), 30.0))
                continue
            if self.on_embed:
                tokens = sum(len(t) for t in texts) // 4
                self.on_embed(tenant_id, embedder.model_key, len(texts), tokens, (time.perf_counter() - t0) * 1000,
                              True)
            if vectors.shape != (len(texts), embedder.dim):
                raise Invalid(f"the embedder returned {vectors.shape} for {len(texts)} texts")
            return vectors
        assert last is not None
        raise last

    def _write_chunks(self, tenant_id: str, model: str, items: list[_Pending],
                      touched: set[tuple[str, str]]) -> None:
        """Store one batch's chunks of one model (one store write for all its projects) and index them."""
        if not items:
            return
        at = clock.iso(self.now())
        by_partition: dict[str, list[_Pending]] = {}
        for p in items:
            by_partition.setdefault(p.work.project, []).append(p)
        encoded = encode_vectors(np.stack([_vec(p) for p in items]))
        docs_new: list[Doc] = []
        docs_old: list[Doc] = []
        for p, vector in zip(items, encoded, strict=True):
            w, c = p.work, p.chunk
            d = {
                "id": chunk_id(w.document_id, model, c.ord), "tenantId": tenant_id, "documentId": w.document_id,
                "project": w.project, "source": w.source, "connectionId": (w.doc or {}).get("connectionId"),
                "title": (w.doc or {}).get("title") or w.document_id, "ord": c.ord, "text": c.text,
                "tokens": c.tokens, "start": c.start, "end": c.end, "hash": p.hash,
                "docFingerprint": w.fingerprint, "model": model, "vector": vector, "embeddedAt": at,
            }
            if self.chunk_fields is not None:
                d.update(self.chunk_fields(model, _vec(p)))
            (docs_new if w.new_doc.get(model) else docs_old).append(d)
            w.chunk_counts[model] = max(w.chunk_counts[model], c.ord + 1)
            w.tokens[model] += c.tokens
        with self._partition_lock:
            # Versions first: a crash after this leaves the saved index older than the store (rebuilt).
            parts = {project: self._bump(tenant_id, model, project) for project in by_partition}
            if docs_new:
                try:
                    self.store.create_many(CHUNKS, docs_new)
                except Conflict:  # a retry after a crash: some ids exist already
                    docs_old += docs_new
            if docs_old:
                self.store.upsert_many(CHUNKS, docs_old)
            for project, group in by_partition.items():
                part = parts[project]
                if part is None:
                    continue
                part.upsert([chunk_id(p.work.document_id, model, p.chunk.ord) for p in group],
                            np.stack([_vec(p) for p in group]), [p.work.document_id for p in group],
                            [p.work.source for p in group])
                touched.add((tenant_id, f"{model}\x00{project}"))

    def _complete_document(self, tenant_id: str, w: _DocWork, models: list[str]) -> None:
        for m in w.models:
            n_new, n_old = w.chunk_counts[m], w.existing_ords.get(m, 0)
            stale = [chunk_id(w.document_id, m, i) for i in range(n_new, n_old)]
            if stale:
                for cid in stale:
                    try:
                        self.store.delete(CHUNKS, tenant_id, cid)
                    except CastielError:
                        pass
                with self._partition_lock:
                    part = self._bump(tenant_id, m, w.project)
                    if part is not None:
                        part.remove(stale)
        w.outcome = "embedded" if any(w.chunk_counts[m] for m in w.models) else "empty"

    def _bump(self, tenant_id: str, model: str, project: str) -> Partition | None:
        """Move the partition's stored version on; the embedded partition to change with it (None when
        this model is not indexed here). Callers hold ``_partition_lock`` until its rows are changed."""
        part: Partition | None = None
        if self.local_index(model):
            part = self.indexes.fresh(tenant_id, project, model, for_write=True)
            part = part if part is not None else self.indexes.index(model).partition(tenant_id, project)
        ver = int(self.store.increment(STATE, tenant_id, index_version_id(model, project), {"version": 1},
                                       base={"kind": "index", "model": model, "project": project})["version"])
        if part is not None:
            # Another worker wrote in between: our copy misses its rows, so mark it for a rebuild.
            part.version = ver if ver == part.version + 1 else -1
        return part

    def _delete_document(self, tenant_id: str, w: _DocWork, touched: set[tuple[str, str]],
                         keep_state: bool = False) -> None:
        rows = document_chunks(self.store, tenant_id, w.document_id)
        by_model: dict[tuple[str, str], list[str]] = {}
        for r in rows:
            by_model.setdefault((r["model"], r.get("project") or ""), []).append(r["id"])
        for (model, project), ids in by_model.items():
            with self._partition_lock:
                part = self._bump(tenant_id, model, project)
                for cid in ids:
                    try:
                        self.store.delete(CHUNKS, tenant_id, cid)
                    except CastielError:
                        pass
                if part is not None:
                    part.remove(ids)
                    touched.add((tenant_id, f"{model}\x00{project}"))
        if not keep_state:
            w.outcome = "deleted"

    def _fail(self, w: _DocWork, reason: str) -> None:
        w.error = reason[:500]
        w.outcome = "failed"

    # bookkeeping ------------------------------------------------------------------------
    def _finish(self, tenant_id: str, models: list[str], works: list[_DocWork], fresh: list[Doc], due: list[Doc],
                result: CycleResult, now: datetime, busy_seconds: float) -> None:
        at = clock.iso(now)
        active = models[0]
        deltas: dict[str, dict[str, float]] = {}
        model_mix: dict[str, dict[str, int]] = {}

        def d(source: str) -> dict[str, float]:
            return deltas.setdefault(source, {})

        def add(source: str, key: str, v: float) -> None:
            if v:
                d(source)[key] = d(source).get(key, 0) + v

        by_doc = {w.document_id: w for w in works}
        states: list[Doc] = []  # written together after the loop: one batched write instead of one per document
        for w in works:
            old = w.state or {}
            old_status = old.get("status")
            src = w.source
            if w.outcome == "unchanged":
                result.skipped_unchanged += 1
                version = document_version(w.doc) if w.doc else None
                if w.state is not None and version != old.get("docVersion"):  # what the reconcile sweep compares
                    states.append({**{k: v for k, v in old.items() if k != "_etag"}, "docVersion": version})
                continue
            result.documents += 1
            new_status = {"embedded": "embedded", "empty": "empty", "deleted": "deleted", "failed": "failed"}[
                w.outcome]
            attempts = int(w.change.get("attempts") or 0) + (1 if w.outcome == "failed" else 0)
            if w.outcome == "failed" and attempts >= self.max_attempts:
                new_status = "dead"
            # document counters move with the status change
            was_known = old_status not in (None, "deleted")
            is_known = new_status != "deleted"
            add(src, "docsTotal", int(is_known) - int(was_known))
            for status, key in (("embedded", "docsEmbedded"), ("empty", "docsEmpty"), ("failed", "docsFailed"),
                                ("dead", "docsDead")):
                add(src, key, int(new_status == status) - int(old_status == status))
            old_models = dict(old.get("models") or {})
            new_models = dict(old_models)
            if w.outcome in ("embedded", "empty"):
                for m in w.models:
                    new_models[m] = {"fingerprint": w.fingerprint, "chunks": w.chunk_counts.get(m, 0),
                                     "tokens": w.tokens.get(m, 0)}
            elif w.outcome == "deleted":
                new_models = {}
            for m in set(old_models) | set(new_models):
                delta = int((new_models.get(m) or {}).get("chunks") or 0) - int(
                    (old_models.get(m) or {}).get("chunks") or 0)
                if delta:
                    model_mix.setdefault(src, {})[m] = model_mix.setdefault(src, {}).get(m, 0) + delta
                if m == active:
                    add(src, "chunks", delta)
                    add(src, "tokens", int((new_models.get(m) or {}).get("tokens") or 0)
                        - int((old_models.get(m) or {}).get("tokens") or 0))
            if w.outcome == "failed":
                result.failed += 1
                if len(result.errors) < 20:
                    result.errors.append(f"{w.document_id}: {w.error}")
                add(src, "failures", 1)
                result.dead += int(new_status == "dead")
            else:
                result.empty += int(w.outcome == "empty")
                result.deleted += int(w.outcome == "deleted")
            add(src, "processed", 1)
            # the document's own state, written last (after its chunks)
            state = {"kind": "doc", "source": src, "project": w.project, "status": new_status, "models": new_models,
                     "title": (w.doc or {}).get("title") or old.get("title"), "updatedAt": at,
                     "error": w.error, "attempts": attempts if w.outcome == "failed" else 0,
                     "docVersion": document_version(w.doc) if w.doc else old.get("docVersion")}
            if new_status == "deleted":
                try:
                    self.store.delete(STATE, tenant_id, docstate_id(w.document_id))
                except CastielError:
                    pass
            else:
                states.append({"id": docstate_id(w.document_id), "tenantId": tenant_id, **state})
        if states:
            self.store.upsert_many(STATE, states)
        # change records: failures get a retry time or the dead letter; retried ones that passed close
        for c in fresh + due:
            owner = by_doc.get(c["documentId"])
            if owner is None:
                continue
            w = owner
            is_latest = w.change["id"] == c["id"]
            if w.outcome == "failed" and is_latest:
                attempts = int(c.get("attempts") or 0) + 1
                dead = attempts >= self.max_attempts
                backoff = min(3600.0, 30.0 * (2 ** (attempts - 1)))
                self.store.upsert(CHANGES, {**{k: v for k, v in c.items() if k != "_etag"},
                                            "status": "dead" if dead else "failed", "attempts": attempts,
                                            "error": w.error, "failedAt": at, "source": w.source,
                                            "project": w.project,
                                            "nextAttemptAt": None if dead else clock.iso(now + timedelta(
                                                seconds=backoff))})
            elif c.get("status") in ("failed", "dead") or (c in due):
                self.store.upsert(CHANGES, {**{k: v for k, v in c.items() if k != "_etag"},
                                            "status": "done" if is_latest else "superseded", "nextAttemptAt": None,
                                            "doneAt": at})
        # backlog: every fresh change leaves it, whatever its outcome (failures are tracked above)
        for c in fresh:
            add(c.get("source") or UNKNOWN_SOURCE, "completed", 1)
        for src, dl in deltas.items():
            base = {"kind": "stats", "source": src}
            mix = model_mix.get(src) or {}

            def change(doc: Doc | None, dl: dict[str, float] = dl, mix: dict[str, int] = mix,
                       base: dict[str, str] = base) -> Doc:
                doc = doc if doc is not None else dict(base)
                for k, v in dl.items():
                    doc[k] = (doc.get(k) or 0) + v
                mm = dict(doc.get("modelMix") or {})
                for m, v in mix.items():
                    mm[m] = int(mm.get(m) or 0) + v
                doc["modelMix"] = {m: v for m, v in mm.items() if v}
                doc["lastProcessedAt"] = at
                return doc

            self.store.update(STATE, tenant_id, stats_id(src), change)
        if fresh:
            new_cp = int(fresh[-1]["seq"])
            self.store.upsert(STATE, {"id": "checkpoint", "tenantId": tenant_id, "kind": "checkpoint",
                                      "seq": new_cp, "at": at})
            result.checkpoint = new_cp
        bucket = bucket_of(now)
        stats = stats_rows(self.store, tenant_id)
        backlog = sum(max(0, int(x.get("recorded") or 0) - int(x.get("completed") or 0)) for x in stats)
        counts = {"processed": result.documents - result.failed, "failed": result.failed,
                  "chunks": result.chunks_embedded, "reused": result.chunks_reused, "cycles": 1,
                  "busyMs": round(busy_seconds * 1000)}

        def roll(doc: Doc | None) -> Doc:
            doc = doc or {"kind": ROLLUP_KIND, "bucket": bucket}
            for k, v in counts.items():
                doc[k] = int(doc.get(k) or 0) + v
            doc["backlog"] = backlog  # a gauge: the backlog left when the bucket's last cycle ended
            return doc

        self.store.update(ROLLUPS, tenant_id, f"emb:{bucket}", roll)
