"""Embedding pipeline jobs: the scheduled cycle over tenants with work, and on-demand drain / re-embed / rebuild."""

from __future__ import annotations

from typing import Any

from core.bootstrap import Services
from core.errors import Invalid
from core.services.access import SYSTEM
from jobs.tasks import TaskContext, handler, schedule


def _tenant(ctx: TaskContext) -> str:
    if ctx.tenant_id is None:
        raise Invalid(f"embedding job {ctx.job['id']} has no tenant")
    return ctx.tenant_id


@schedule("embeddings.cycle", trigger="interval", seconds=10)
def cycle(services: Services) -> dict[str, Any]:
    """One pipeline cycle for every tenant with unprocessed changes or failures due for retry."""
    svc = services.embeddings
    out: dict[str, Any] = {}
    for tenant_id in svc.tenants_with_work():
        r = svc.run_cycle(SYSTEM, tenant_id)
        out[tenant_id] = {"status": r.status, "documents": r.documents, "chunks": r.chunks_embedded,
                          "failed": r.failed}
    return out


@schedule("embeddings.index", trigger="interval", seconds=15)
def index_graphs(services: Services) -> dict[str, Any]:
    """Add rows the pipeline wrote to the HNSW graphs of big partitions (search scans them exactly until then)."""
    rows = services.embeddings.indexes.catch_up(max_seconds=20.0)
    return {"rows": rows}


@schedule("embeddings.reconcile", trigger="interval", minutes=10)
def reconcile(services: Services) -> dict[str, Any]:
    """Record document writes and deletes whose change record was lost (a crash between the two)."""
    out: dict[str, Any] = {}
    for tenant_id in services.tenants.all_ids():
        r = services.embeddings.reconcile(SYSTEM, tenant_id)
        if r.upserts_recorded or r.deletes_recorded:
            out[tenant_id] = {"upserts": r.upserts_recorded, "deletes": r.deletes_recorded}
    return out


@handler("embeddings.drain")
def drain(ctx: TaskContext) -> dict[str, Any]:
    tenant_id = _tenant(ctx)
    results = ctx.services.embeddings.drain(SYSTEM, tenant_id, heartbeat=lambda m: ctx.progress(None, m))
    return {"cycles": len(results), "documents": sum(r.documents for r in results),
            "chunks": sum(r.chunks_embedded for r in results), "failed": sum(r.failed for r in results)}


@handler("embeddings.reembed")
def reembed(ctx: TaskContext) -> dict[str, Any]:
    tenant_id = _tenant(ctx)
    p = ctx.payload
    return ctx.services.embeddings.reembed(SYSTEM, tenant_id, source=p.get("source"), model=p.get("model"),
                                           progress=lambda m: ctx.progress(None, m))


@handler("embeddings.rebuild_index")
def rebuild_index(ctx: TaskContext) -> dict[str, Any]:
    """Rebuild a tenant's index partitions from the stored chunks (after restoring a backup, say)."""
    tenant_id = _tenant(ctx)
    svc = ctx.services.embeddings
    model = svc.active_model(tenant_id)
    projects = svc.indexes.projects(tenant_id, model)
    for i, project in enumerate(projects):
        svc.indexes.rebuild(tenant_id, project, model)
        ctx.progress((i + 1) / max(1, len(projects)), f"rebuilt {project}")
    return {"projects": projects}
