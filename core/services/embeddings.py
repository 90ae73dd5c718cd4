"""Embedding jobs service: pipeline cycles, statistics from rollups, audited actions, retrieval and RAG context.

Every call that touches tenant data takes the acting principal and the tenant id and checks them
with ``require``. Screen reads come from small records only: one ``stats:<source>`` record per
tenant and source (kept by the pipeline), 5-minute rollups for the charts, the checkpoint and the
oldest unprocessed change for backlog age. Nothing here scans chunks, so the screen costs the same
with two thousand chunks or two million.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core import clock
from core.adapters.store import Cond, Doc, DocumentStore
from core.embeddings.changes import (
    CHANGES,
    CHUNKS,
    STATE,
    ChangeRef,
    backlog_oldest,
    record_document_changes,
    stats_rows,
)
from core.embeddings.chunking import ChunkingConfig
from core.embeddings.context import AssembledContext, RetrievedChunk, assemble_context
from core.embeddings.embedder import Embedder
from core.embeddings.index import Hit
from core.embeddings.pipeline import ROLLUP_KIND, ROLLUPS, CycleResult, EmbeddingPipeline, TenantConfig
from core.embeddings.reconcile import ReconcileResult
from core.embeddings.reconcile import reconcile as reconcile_changes
from core.embeddings.store_index import IndexManager
from core.errors import Invalid, NotFound
from core.services.access import ADMIN, ML_ENGINEER, OPS, SYSTEM, Principal, require
from core.services.audit import AuditLog

if TYPE_CHECKING:
    from core.adapters.cosmos_vector import ChunkVectorSearch

log = logging.getLogger(__name__)

VIEW_ROLES = frozenset({ADMIN, OPS, ML_ENGINEER})
ACT_ROLES = frozenset({ADMIN, OPS, ML_ENGINEER})
QUEUE = "embeddings"
LATENCY_SAMPLES = 200
DRAIN_RUN_SECONDS = 60.0  # a drain holds the tenant lease (renewed each cycle) this long before letting go
# Alert thresholds of the platform's rules (alerts: embedding failure rate > 5 %, backlog > 100, search p95 > 2 s).
FAILURE_RATE_ALERT = 0.05
RATE_MIN_CHUNKS = 200  # chunks embedded in the last day before re-embed estimates go by the measured rate
FALLBACK_RATE = 50.0  # chunks/s assumed when the embedder cannot even embed a sample
BACKLOG_ALERT = 100
SEARCH_P95_ALERT_MS = 2000.0


@dataclass
class SourceStats:
    source: str
    docs_total: int
    docs_embedded: int
    docs_empty: int
    docs_failed: int
    docs_dead: int
    chunks: int
    tokens: int
    backlog: int
    processed: int
    failures: int
    model_mix: dict[str, int]
    last_processed_at: str | None

    @property
    def coverage(self) -> float | None:
        embeddable = self.docs_total - self.docs_empty
        return None if embeddable <= 0 and self.backlog == 0 else self.docs_embedded / max(1, embeddable + self.backlog)

    @property
    def failure_rate(self) -> float:
        return self.failures / self.processed if self.processed else 0.0


@dataclass
class Kpis:
    backlog: int
    backlog_age_seconds: float
    rate_per_minute: float
    failure_rate: float
    coverage: float | None
    search_p50_ms: float | None
    search_p95_ms: float | None
    drain_seconds: float | None
    chunks: int
    docs_total: int
    paused: bool
    active_model: str
    target_model: str | None
    model_mix: dict[str, int]

    def status(self, name: str) -> str:
        """ok / warn / bad per the platform's alert rules, for the tile colours."""
        if name == "failure_rate":
            return "bad" if self.failure_rate > FAILURE_RATE_ALERT else "warn" if self.failure_rate > 0 else "ok"
        if name in ("backlog", "backlog_age"):
            return "bad" if self.backlog > BACKLOG_ALERT else "warn" if self.backlog else "ok"
        if name == "search_p95":
            p = self.search_p95_ms
            return "ok" if p is None or p <= SEARCH_P95_ALERT_MS / 4 else "warn" if p <= SEARCH_P95_ALERT_MS else "bad"
        if name == "coverage":
            c = self.coverage
            return "ok" if c is None or c >= 0.99 else "warn" if c >= 0.9 else "bad"
        return "ok"


@dataclass
class Estimate:
    documents: int
    chunks: int
    tokens: int
    seconds: float
    cost_usd: float
    model: str
    rate_chunks_per_second: float
    rate_basis: str  # where the rate comes from, said next to the estimate


@dataclass
class SearchHit:
    chunk_id: str
    document_id: str
    title: str
    source: str
    project: str
    score: float
    text: str
    ord: int


@dataclass
class SearchResult:
    hits: list[SearchHit]
    latency_ms: float
    model: str
    searched_chunks: int
    empty_reason: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


def default_embedder_factories(settings: Any) -> dict[str, Callable[[], Embedder]]:
    """The embedders this deployment can use, by name: the configured default first."""
    from core.adapters.local_embedder import WordLlamaEmbedder

    out: dict[str, Callable[[], Embedder]] = {
        "local": lambda: WordLlamaEmbedder(dim=256),
        "local-128": lambda: WordLlamaEmbedder(dim=128),
    }
    if getattr(settings, "llm_api_key", None) is not None:
        def openai_factory() -> Embedder:
            from core.adapters.openai_embedder import OpenAIEmbedder

            base = settings.llm_base_url
            azure = bool(settings.llm_azure_api_version)
            return OpenAIEmbedder(
                settings.embedding_model, api_key=settings.llm_api_key.get_secret_value(),
                base_url=None if azure else base, azure_endpoint=base if azure else None,
                api_version=settings.llm_azure_api_version,
                concurrency=settings.embedding_concurrency,
            )

        out["openai"] = openai_factory
    return out


class EmbeddingsService:
    def __init__(
        self,
        store: DocumentStore,
        audit: AuditLog,
        queue: Any,
        *,
        embedders: dict[str, Callable[[], Embedder]],
        default: str,
        index_root: Path | None,
        strict_index: bool = False,
        telemetry: Any = None,
        ann_threshold: int | None = None,
        batch_size: int = 256,
        vector_search: ChunkVectorSearch | None = None,
    ) -> None:
        """``vector_search``: a store-side vector search (Cosmos DB) that answers searches for the sizes it
        serves instead of the embedded index; the pipeline then also writes its fields on every chunk."""
        if default not in embedders:
            raise Invalid(f"unknown default embedder {default!r}; choose one of {sorted(embedders)}")
        self.store, self.audit, self.queue = store, audit, queue
        self.telemetry = telemetry
        self._factories = embedders
        self._by_name: dict[str, Embedder] = {}
        self._by_key: dict[str, Embedder] = {}
        self._lock = threading.Lock()
        self.default_name = default
        kwargs: dict[str, Any] = {"strict": strict_index}
        if ann_threshold is not None:
            kwargs["ann_threshold"] = ann_threshold
        self.indexes = IndexManager(store, index_root, lambda key: self.embedder(key).dim, **kwargs)
        self.vector_search = vector_search
        self.pipeline = EmbeddingPipeline(store, self.embedder, self.indexes, self.default_model,
                                          batch_size=batch_size, on_embed=self._record_embed,
                                          chunk_fields=vector_search.chunk_fields if vector_search else None,
                                          local_index=self._indexed_here)

    def _indexed_here(self, model_key: str) -> bool:
        """Whether searches for this model use the embedded index (not the store's own vector search)."""
        return self.vector_search is None or not self.vector_search.serves(self.embedder(model_key).dim)

    # models -----------------------------------------------------------------------------
    def _named(self, name: str) -> Embedder:
        with self._lock:
            e = self._by_name.get(name)
            if e is None:
                e = self._factories[name]()
                self._by_name[name] = e
                self._by_key[e.model_key] = e
            return e

    @property
    def default_model(self) -> str:
        return self._named(self.default_name).model_key

    def embedder(self, model_key: str) -> Embedder:
        """The embedder for a stored model key (or a configured name)."""
        if model_key in self._factories:
            return self._named(model_key)
        e = self._by_key.get(model_key)
        if e is not None:
            return e
        for name in self._factories:
            if self._named(name).model_key == model_key:
                return self._by_key[model_key]
        raise NotFound(f"embedding model {model_key!r} is not configured here; available: {self.model_names()}")

    def model_names(self) -> list[str]:
        return list(self._factories)

    def available_models(self) -> list[dict[str, Any]]:
        return [{"name": n, **self._named(n).describe()} for n in self._factories]

    def config(self, tenant_id: str) -> TenantConfig:
        return TenantConfig.load(self.store, tenant_id)

    def active_model(self, tenant_id: str) -> str:
        return self.config(tenant_id).active_model or self.default_model

    def _record_embed(self, tenant_id: str, model: str, texts: int, tokens: int, ms: float, ok: bool) -> None:
        if self.telemetry is not None:
            self.telemetry.record("embeddings.embed", ms, tenant_id=tenant_id, kind="embedding", model=model,
                                  tokens_in=tokens, outcome="ok" if ok else "error")

    def _config_update(self, tenant_id: str, **fields: Any) -> Doc:
        def change(doc: Doc | None) -> Doc:
            doc = doc or {"kind": "config"}
            doc.update(fields)
            return doc

        out = self.store.update(STATE, tenant_id, "config", change)
        assert out is not None
        return out

    # worker side ------------------------------------------------------------------------
    def run_cycle(self, principal: Principal, tenant_id: str, max_changes: int | None = None,
                  heartbeat: Callable[[str], None] | None = None) -> CycleResult:
        require(principal, tenant_id, ACT_ROLES)
        result = self.pipeline.run_cycle(tenant_id, max_changes, heartbeat)
        self._maybe_finish_migration(tenant_id)
        return result

    def drain(self, principal: Principal, tenant_id: str, max_cycles: int = 1000,
              heartbeat: Callable[[str], None] | None = None) -> list[CycleResult]:
        """Run cycles until the tenant's backlog is empty (or paused/busy); one result per cycle.

        Cycles run back to back under one lease for up to ``DRAIN_RUN_SECONDS`` at a time (see
        ``EmbeddingPipeline.run``), then the lease is released and taken again, so a long drain
        lets a model migration finish and another worker get a word in.
        """
        require(principal, tenant_id, ACT_ROLES)
        out: list[CycleResult] = []
        while len(out) < max_cycles:
            results = self.pipeline.run(tenant_id, max_cycles=max_cycles - len(out), heartbeat=heartbeat,
                                        max_seconds=DRAIN_RUN_SECONDS)
            self._maybe_finish_migration(tenant_id)
            out += results
            if results[-1].status != "ok":
                break
        return out

    def tenants_with_work(self) -> list[str]:
        ids = [t["id"] for t in self.store.query("tenants", None, order_by="id")]
        out = []
        now = clock.iso()
        for tid in ids:
            if backlog_oldest(self.store, tid) is not None or self.store.find_one(
                    CHANGES, tid, [Cond("status", "=", "failed"), Cond("nextAttemptAt", "<=", now)]):
                out.append(tid)
        return out

    def reconcile(self, principal: Principal, tenant_id: str, full: bool = False) -> ReconcileResult:
        """Record changes lost between a document write and its change record (see core.embeddings.reconcile)."""
        require(principal, tenant_id, ACT_ROLES)
        result = reconcile_changes(self.store, tenant_id, full=full)
        if result.upserts_recorded or result.deletes_recorded:
            log.warning("reconcile found %d written and %d deleted documents without a change record in %s",
                        result.upserts_recorded, result.deletes_recorded, tenant_id)
            self.audit.record(principal, tenant_id, "embeddings.reconcile", f"tenant:{tenant_id}",
                              "documents written or deleted without a change record", after=result.as_dict())
        return result

    # statistics -------------------------------------------------------------------------
    def source_stats(self, principal: Principal, tenant_id: str) -> list[SourceStats]:
        require(principal, tenant_id, VIEW_ROLES)
        rows = stats_rows(self.store, tenant_id)
        out = []
        for r in rows:
            out.append(SourceStats(
                source=r.get("source") or "unknown", docs_total=int(r.get("docsTotal") or 0),
                docs_embedded=int(r.get("docsEmbedded") or 0), docs_empty=int(r.get("docsEmpty") or 0),
                docs_failed=int(r.get("docsFailed") or 0), docs_dead=int(r.get("docsDead") or 0),
                chunks=int(r.get("chunks") or 0), tokens=int(r.get("tokens") or 0),
                backlog=max(0, int(r.get("recorded") or 0) - int(r.get("completed") or 0)),
                processed=int(r.get("processed") or 0), failures=int(r.get("failures") or 0),
                model_mix=dict(r.get("modelMix") or {}), last_processed_at=r.get("lastProcessedAt"),
            ))
        return sorted(out, key=lambda s: s.source)

    def timeline(self, principal: Principal, tenant_id: str, hours: float = 24.0) -> list[Doc]:
        """5-minute rollups (processed, failed, chunks, backlog) since ``hours`` ago, oldest first."""
        require(principal, tenant_id, VIEW_ROLES)
        since = (clock.now() - timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M")
        return self.store.query(ROLLUPS, tenant_id, [Cond("kind", "=", ROLLUP_KIND), Cond("bucket", ">=", since)],
                                order_by="bucket")

    def search_latency(self, tenant_id: str) -> tuple[float | None, float | None, int]:
        doc = self.store.get_or_none(STATE, tenant_id, "search_latency")
        samples = [float(x) for x in (doc or {}).get("samples") or []]
        if not samples:
            return None, None, 0
        return float(np.percentile(samples, 50)), float(np.percentile(samples, 95)), len(samples)

    def kpis(self, principal: Principal, tenant_id: str) -> Kpis:
        stats = self.source_stats(principal, tenant_id)
        cfg = self.config(tenant_id)
        backlog = sum(s.backlog for s in stats)
        oldest = backlog_oldest(self.store, tenant_id)
        age = (clock.now() - clock.parse(oldest["createdAt"])).total_seconds() if oldest else 0.0
        recent = self.timeline(principal, tenant_id, hours=1.0)
        processed = sum(int(r.get("processed") or 0) for r in recent)
        failed = sum(int(r.get("failed") or 0) for r in recent)
        last15 = (clock.now() - timedelta(minutes=15)).strftime("%Y-%m-%dT%H:%M")
        rate = sum(int(r.get("processed") or 0) + int(r.get("failed") or 0)
                   for r in recent if r["bucket"] >= last15) / 15.0
        embeddable = sum(s.docs_total - s.docs_empty for s in stats)
        embedded = sum(s.docs_embedded for s in stats)
        coverage = None if embeddable + backlog == 0 else embedded / max(1, embeddable + backlog)
        p50, p95, _ = self.search_latency(tenant_id)
        mix: dict[str, int] = {}
        for s in stats:
            for m, n in s.model_mix.items():
                mix[m] = mix.get(m, 0) + n
        return Kpis(
            backlog=backlog, backlog_age_seconds=age, rate_per_minute=rate,
            failure_rate=failed / (processed + failed) if processed + failed else 0.0, coverage=coverage,
            search_p50_ms=p50, search_p95_ms=p95,
            drain_seconds=(backlog / rate * 60.0) if rate > 0 and backlog else (0.0 if not backlog else None),
            chunks=sum(s.chunks for s in stats), docs_total=sum(s.docs_total for s in stats), paused=cfg.paused,
            active_model=cfg.active_model or self.default_model, target_model=cfg.target_model, model_mix=mix,
        )

    def failed_items(self, principal: Principal, tenant_id: str, limit: int = 200) -> list[Doc]:
        require(principal, tenant_id, VIEW_ROLES)
        # one query per status: with an equality on status SQLite walks the (status, seq) index in order;
        # with "in" it sorts every change of the tenant instead
        rows = [r for status in ("failed", "dead") for r in self.store.query(
            CHANGES, tenant_id, [Cond("status", "=", status)], order_by="seq", descending=True, limit=limit)]
        rows = sorted(rows, key=lambda r: -int(r.get("seq") or 0))[:limit]
        return [{k: r.get(k) for k in ("id", "seq", "documentId", "source", "project", "status", "attempts", "error",
                                        "failedAt", "nextAttemptAt", "createdAt")} for r in rows]

    def jobs(self, principal: Principal, tenant_id: str, status: str | None = None, limit: int = 100) -> list[Doc]:
        require(principal, tenant_id, VIEW_ROLES)
        conds = [Cond("queue", "=", QUEUE)] + ([Cond("status", "=", status)] if status else [])
        return self.store.query("jobs", tenant_id, conds, order_by="createdAt", descending=True, limit=limit)

    def projects(self, principal: Principal, tenant_id: str) -> list[str]:
        require(principal, tenant_id, VIEW_ROLES)
        return self.indexes.projects(tenant_id, self.active_model(tenant_id))

    def overview_figures(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """Per tenant: ``backlog`` (count), ``backlog_age_seconds``, ``coverage`` (0..1 or None)."""
        out: dict[str, dict[str, Any]] = {}
        for tid in ids:
            k = self.kpis(SYSTEM, tid)
            if k.docs_total == 0 and k.backlog == 0:
                continue
            out[tid] = {"backlog": k.backlog, "backlog_age_seconds": k.backlog_age_seconds, "coverage": k.coverage,
                        "failure_rate": k.failure_rate, "search_p95_ms": k.search_p95_ms}
        return out

    # actions ----------------------------------------------------------------------------
    def _reason(self, reason: str) -> str:
        reason = (reason or "").strip()
        if len(reason) < 3:
            raise Invalid("say why (a short reason is recorded in the audit log)")
        return reason

    def retry_failed(self, principal: Principal, tenant_id: str, reason: str,
                     change_ids: list[str] | None = None) -> int:
        require(principal, tenant_id, ACT_ROLES)
        reason = self._reason(reason)
        rows = self.store.query(CHANGES, tenant_id, [Cond("status", "in", ["failed", "dead"])])
        if change_ids is not None:
            wanted = set(change_ids)
            rows = [r for r in rows if r["id"] in wanted]
        now = clock.iso()
        for r in rows:
            self.store.upsert(CHANGES, {**{k: v for k, v in r.items() if k != "_etag"}, "status": "failed",
                                        "nextAttemptAt": now, "attempts": 0 if r["status"] == "dead" else r.get(
                                            "attempts", 0)})
        self.audit.record(principal, tenant_id, "embeddings.retry_failed", f"tenant:{tenant_id}", reason,
                          after={"items": len(rows)})
        if rows:
            self.queue.enqueue(principal, QUEUE, "embeddings.drain", tenant_id, {}, reason=reason,
                               dedupe_key=f"drain:{tenant_id}", audit=False)
        return len(rows)

    def estimate_reembed(self, principal: Principal, tenant_id: str, source: str | None = None,
                         model: str | None = None) -> Estimate:
        require(principal, tenant_id, ACT_ROLES)
        stats = [s for s in self.source_stats(principal, tenant_id) if source is None or s.source == source]
        if source is not None and not stats:
            raise NotFound(f"no embedded documents from source {source!r} in this tenant")
        active = self.active_model(tenant_id)
        emb = self.embedder(model) if model else self.embedder(active)
        docs = sum(s.docs_total for s in stats)
        chunks = sum(s.chunks for s in stats)
        tokens = sum(s.tokens for s in stats)
        rate, basis = self._pipeline_rate(principal, tenant_id) if emb.model_key == active else (0.0, "")
        if rate <= 0:
            rate = self._sampled_rate(emb)
            basis = "sampled from the embedder (no recent pipeline runs with this model to go by)"
        seconds = chunks / rate if rate > 0 else 0.0
        return Estimate(docs, chunks, tokens, seconds, tokens / 1e6 * emb.cost_per_million_tokens, emb.model_key,
                        rate, basis)

    def _pipeline_rate(self, principal: Principal, tenant_id: str) -> tuple[float, str]:
        """This tenant's pipeline rate over the last day: chunks embedded per second the pipeline was busy
        (cycles record their busy time in the rollups); 0 with fewer than ``RATE_MIN_CHUNKS`` to go by."""
        recent = self.timeline(principal, tenant_id, hours=24.0)
        done = sum(int(r.get("chunks") or 0) for r in recent)
        busy = sum(int(r.get("busyMs") or 0) for r in recent) / 1000.0
        if done < RATE_MIN_CHUNKS or busy <= 0:
            return 0.0, ""
        return done / busy, f"measured: {done:,} chunks in {busy:,.1f} s of pipeline work over the last 24 h"

    _rates: dict[str, float] = {}

    def _sampled_rate(self, emb: Embedder) -> float:
        """Chunks per second to expect from this embedder when the pipeline has no history with it: a small
        sample embedded once per process, halved for chunks being longer than the sample's sentences and
        halved again for the pipeline's own work (reading, chunking, storing), which on two cores costs
        about as much as the local embedder (bench/embeddings.py)."""
        key = emb.model_key
        if key not in self._rates:
            sample = ["The customer asked about renewal pricing and the security review before signing."] * 64
            t0 = time.perf_counter()
            try:
                emb.embed(sample)
                self._rates[key] = len(sample) / max(1e-6, time.perf_counter() - t0) * 0.25
            except Exception:  # the estimate still shows chunks and cost; the time is then a rough guess
                self._rates[key] = FALLBACK_RATE
        return self._rates[key]

    def request_reembed(self, principal: Principal, tenant_id: str, reason: str, source: str | None = None,
                        model: str | None = None) -> Doc:
        """Queue a re-embed of the tenant (or one source), with the same model or a new one."""
        require(principal, tenant_id, ACT_ROLES)
        reason = self._reason(reason)
        target = self.embedder(model).model_key if model else None
        est = self.estimate_reembed(principal, tenant_id, source, target)
        job = self.queue.enqueue(principal, QUEUE, "embeddings.reembed", tenant_id,
                                 {"source": source, "model": target}, reason=reason,
                                 dedupe_key=f"reembed:{tenant_id}:{source}:{target}", audit=False)
        self.audit.record(principal, tenant_id, "embeddings.reembed", f"tenant:{tenant_id}" + (
            f"/source:{source}" if source else ""), reason,
            after={"jobId": job["id"], "model": target or self.active_model(tenant_id), "chunks": est.chunks,
                   "estimatedSeconds": round(est.seconds, 1), "estimatedCostUsd": round(est.cost_usd, 4)})
        return job

    def reembed(self, principal: Principal, tenant_id: str, source: str | None = None, model: str | None = None,
                progress: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Worker side of a re-embed: record a change per known document, then drain.

        With a new model the config gets ``targetModel``: the pipeline embeds every document for
        both models while search keeps the active one; once every document has the new model the
        service switches ``activeModel`` and deletes the old vectors.
        """
        require(principal, tenant_id, ACT_ROLES)
        cfg = self.config(tenant_id)
        active = cfg.active_model or self.default_model
        target = self.embedder(model).model_key if model else active
        if target != active:
            self._config_update(tenant_id, activeModel=active, targetModel=target)
            op = "upsert"  # documents embedded for the target only where its fingerprint is missing
        else:
            op = "reembed"
        conds = [Cond("kind", "=", "doc")] + ([Cond("source", "=", source)] if source else [])
        docs = self.store.query(STATE, tenant_id, conds)
        refs = [ChangeRef(d["id"].removeprefix("doc:"), op, d.get("source"), d.get("project"))
                for d in docs if d.get("status") != "deleted"]
        for i in range(0, len(refs), 500):
            record_document_changes(self.store, tenant_id, refs[i : i + 500])
        results = self.drain(principal, tenant_id, heartbeat=progress)
        return {"documents": len(docs), "model": target, "cycles": len(results),
                "chunks": sum(r.chunks_embedded for r in results), "failed": sum(r.failed for r in results),
                "active": self.active_model(tenant_id)}

    def _maybe_finish_migration(self, tenant_id: str) -> None:
        cfg = self.config(tenant_id)
        if not cfg.target_model or cfg.target_model == (cfg.active_model or self.default_model):
            return
        docs = self.store.query(STATE, tenant_id, [Cond("kind", "=", "doc")])
        live = [d for d in docs if d.get("status") in ("embedded", "empty")]
        if any(cfg.target_model not in (d.get("models") or {}) for d in live):
            return
        if backlog_oldest(self.store, tenant_id) is not None:
            return
        old = cfg.active_model or self.default_model
        self._config_update(tenant_id, activeModel=cfg.target_model, targetModel=None, previousModel=old,
                            switchedAt=clock.iso())
        self.audit.record(SYSTEM, tenant_id, "embeddings.model_switched", f"tenant:{tenant_id}",
                          "every document embedded with the new model", before={"model": old},
                          after={"model": cfg.target_model})
        self._drop_model_chunks(tenant_id, old, live)

    def _drop_model_chunks(self, tenant_id: str, model: str, docs: list[Doc]) -> None:
        from core.embeddings.pipeline import chunk_id, docstate_id, index_version_id

        projects: set[str] = set()
        for d in docs:
            info = (d.get("models") or {}).get(model)
            if not info:
                continue
            projects.add(d.get("project") or "")
            doc_id = d["id"].removeprefix("doc:")
            for i in range(int(info.get("chunks") or 0)):
                try:
                    self.store.delete(CHUNKS, tenant_id, chunk_id(doc_id, model, i))
                except NotFound:
                    pass
            models = {k: v for k, v in (d.get("models") or {}).items() if k != model}
            self.store.upsert(STATE, {**{k: v for k, v in d.items() if k != "_etag"}, "models": models,
                                      "id": docstate_id(doc_id)})
        for project in projects:
            try:
                self.store.delete(STATE, tenant_id, index_version_id(model, project))
            except NotFound:
                pass
        for s in stats_rows(self.store, tenant_id):
            mix = {k: v for k, v in (s.get("modelMix") or {}).items() if k != model}
            self.store.upsert(STATE, {**{k: v for k, v in s.items() if k != "_etag"}, "modelMix": mix,
                                      "chunks": int(mix.get(self.active_model(tenant_id)) or 0)})

    def set_paused(self, principal: Principal, tenant_id: str, paused: bool, reason: str) -> None:
        require(principal, tenant_id, ACT_ROLES)
        reason = self._reason(reason)
        before = self.config(tenant_id).paused
        self._config_update(tenant_id, paused=paused)
        self.audit.record(principal, tenant_id, "embeddings.pause" if paused else "embeddings.resume",
                          f"tenant:{tenant_id}", reason, before={"paused": before}, after={"paused": paused})

    def set_chunking(self, principal: Principal, tenant_id: str, raw: dict[str, Any], reason: str) -> ChunkingConfig:
        require(principal, tenant_id, ACT_ROLES)
        reason = self._reason(reason)
        cfg = ChunkingConfig.parse(raw)
        before = self.config(tenant_id).chunking
        self._config_update(tenant_id, chunking=cfg.model_dump())
        self.audit.record(principal, tenant_id, "embeddings.set_chunking", f"tenant:{tenant_id}", reason,
                          before=before.model_dump(), after=cfg.model_dump())
        return cfg

    # retrieval --------------------------------------------------------------------------
    def _note_latency(self, tenant_id: str, ms: float) -> None:
        def change(doc: Doc | None) -> Doc:
            doc = doc or {"kind": "latency"}
            samples = list(doc.get("samples") or [])[-(LATENCY_SAMPLES - 1):]
            samples.append(round(ms, 3))
            doc["samples"] = samples
            return doc

        self.store.update(STATE, tenant_id, "search_latency", change)
        if self.telemetry is not None:
            self.telemetry.record("embeddings.search", ms, tenant_id=tenant_id, kind="vector")

    def search(self, principal: Principal, tenant_id: str, project: str | None, query: str, k: int = 8,
               source: str | None = None, record_latency: bool = True) -> SearchResult:
        """Top-k chunks for ``query`` within the tenant (and project, and source), with texts and scores."""
        require(principal, tenant_id, VIEW_ROLES)
        query = (query or "").strip()
        if not query:
            raise Invalid("type a question to search for")
        if not 1 <= k <= 100:
            raise Invalid("k must be between 1 and 100")
        t0 = time.perf_counter()
        model = self.active_model(tenant_id)
        emb = self.embedder(model)
        # The store's own vector search when it serves this model's size (then no local partition is
        # loaded or rebuilt); otherwise the embedded index. Both answer with Hits, cosine, best first.
        remote = None if self._indexed_here(model) else self.vector_search
        if remote is None:
            parts = self.indexes.fresh_tenant(tenant_id, model, project or None)
            searched = sum(len(p) for p in parts)
        else:
            # An index-served COUNT with the search's own filters: exact for any tenant/project/source
            # combination (the stats rollups are per source, not per project).
            searched = remote.count(tenant_id, model, project or None, source)
        t1 = time.perf_counter()
        if searched == 0:
            where = f"project {project!r}" if project else "this tenant"
            reason = (f"No embedded chunks in {where}" + (f" from source {source!r}" if source else "")
                      + ". Check the project name, or wait for the pipeline to embed its documents.")
            return SearchResult([], (time.perf_counter() - t0) * 1000, model, 0, reason)
        qv = emb.embed_query(query)
        t2 = time.perf_counter()
        hits: list[Hit]
        if remote is None:
            hits = self.indexes.index(model).search(qv, k, tenant_id=tenant_id, project=project or None,
                                                    source=source)
        else:
            hits = remote.search(tenant_id, model, qv, k, project=project or None, source=source)
        t3 = time.perf_counter()
        ms = (t3 - t0) * 1000
        out = []
        for h in hits:
            # Store-side hits carry the fields shown (read with the score); index hits are read here.
            text = getattr(h, "text", None)
            d = ({"title": getattr(h, "title", ""), "text": text, "ord": getattr(h, "ord", 0)} if text is not None
                 else self.store.get_or_none(CHUNKS, tenant_id, h.chunk_id))
            if d is None:
                continue
            out.append(SearchHit(h.chunk_id, h.document_id, d.get("title") or h.document_id, h.source, h.project,
                                 h.score, d.get("text") or "", int(d.get("ord") or 0)))
        if record_latency:
            self._note_latency(tenant_id, ms)
        empty = None if out else (f"No chunks from source {source!r} in this project." if source else
                                  "Nothing matched.")
        return SearchResult(out, ms, model, searched, empty, {
            "refresh_ms": (t1 - t0) * 1000, "embed_ms": (t2 - t1) * 1000, "search_ms": (t3 - t2) * 1000,
            "fetch_ms": (time.perf_counter() - t3) * 1000})

    def context(self, principal: Principal, tenant_id: str, project: str | None, question: str,
                budget_tokens: int = 1500, k: int = 20) -> AssembledContext:
        """RAG context: the best chunks for ``question`` within ``budget_tokens``, de-duplicated, with sources."""
        if budget_tokens < 50:
            raise Invalid("the context budget must be at least 50 tokens")
        res = self.search(principal, tenant_id, project, question, k=k)
        retrieved = [RetrievedChunk(h.chunk_id, h.document_id, h.text, h.score, h.ord, h.title, h.source, h.project)
                     for h in res.hits]
        return assemble_context(retrieved, budget_tokens, self.embedder(res.model).count_tokens)


def seed_embeddings_demo(services: Any, tenant_id: str, actor: Principal) -> list[dict[str, Any]]:
    """Demo hook: embed the demo tenant's synced documents with the real pipeline, then save the index."""
    svc: EmbeddingsService = services.embeddings
    results = svc.drain(actor, tenant_id)
    svc.audit.record(actor, tenant_id, "embeddings.seed", f"tenant:{tenant_id}", "demo seed",
                     after={"cycles": len(results), "chunks": sum(r.chunks_embedded for r in results)})
    return [r.as_dict() for r in results]
