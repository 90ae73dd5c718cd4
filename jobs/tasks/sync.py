"""Sync queue handlers (runs, connection tests, outbound writes) and the sync schedules (due runs, stale sweep)."""

from __future__ import annotations

from typing import Any

from core.bootstrap import Services
from core.errors import Conflict, Invalid, RateLimited, TransientError
from core.services.access import SYSTEM
from core.services.integrations import IntegrationsService
from core.services.sync_engine import QUEUED, RUNNING
from jobs.tasks import TaskContext, handler, schedule

# How long a run waits before trying again when another run of its connection holds it.
WAIT_FOR_OTHER_RUN_SECONDS = 30.0


def _tenant(ctx: TaskContext) -> str:
    if ctx.tenant_id is None:
        raise Invalid(f"sync job {ctx.job['id']} has no tenant")
    return ctx.tenant_id


@handler("sync.run")
def run_sync(ctx: TaskContext) -> dict[str, Any]:
    """Execute (or resume) one sync run; a retryable failure is raised so the queue backs off and retries."""
    services = ctx.services
    tenant_id = _tenant(ctx)
    run_id = str(ctx.payload["runId"])
    engine = services.sync_engine
    final = int(ctx.job.get("attempts") or 1) >= int(ctx.job.get("maxAttempts") or 1)

    def cancelled() -> bool:
        if ctx.cancelled():
            return True
        return engine.get_run(tenant_id, run_id)["status"] not in (RUNNING, QUEUED)

    try:
        run = engine.execute(
            tenant_id, run_id,
            heartbeat=lambda message: ctx.progress(None, message),
            should_cancel=cancelled,
            final_attempt=final,
        )
    except Conflict as e:
        if "still in progress" not in e.message:
            raise
        # Another run of this connection is alive: come back later as a fresh item, without
        # using up this run's attempts.
        services.queue.enqueue(
            SYSTEM, ctx.job["queue"], "sync.run", tenant_id, ctx.payload,
            reason=f"waiting for another run: {e.message}", delay_seconds=WAIT_FOR_OTHER_RUN_SECONDS, audit=False,
            max_attempts=int(ctx.job.get("maxAttempts") or 5),
        )
        return {"runId": run_id, "deferred": e.message}
    if run["status"] == QUEUED:
        last = run["attempts"][-1]
        if last.get("errorType") == "rate_limited":
            raise RateLimited(last.get("error") or "rate limited", retry_after=last.get("retryAfter"))
        raise TransientError(last.get("error") or "the run failed and will be retried")
    return {"runId": run_id, "status": run["status"], "read": run["read"], "written": run["written"],
            "skipped": run["skipped"]}


@handler("sync.test")
def test_connection(ctx: TaskContext) -> dict[str, Any]:
    services = ctx.services
    tenant_id = _tenant(ctx)
    conn = services.store.get("connections", tenant_id, str(ctx.payload["connectionId"]))
    ctx.progress(0.1, "calling the vendor")
    result = services.sync_engine.test_connection(conn)
    return result


@handler("sync.write")
def write_back(ctx: TaskContext) -> dict[str, Any]:
    """One outbound create/update; vendor errors surface as the job's error with the vendor's message."""
    services = ctx.services
    tenant_id = _tenant(ctx)
    p = ctx.payload
    conn = services.store.get("connections", tenant_id, str(p["connectionId"]))
    connector, _ = services.sync_engine.connector_for(conn)
    try:
        vendor_id = connector.write(str(p["objectType"]), p.get("sourceId"), dict(p.get("fields") or {}))
    finally:
        connector.close()
    return {"sourceId": vendor_id, "objectType": p["objectType"]}


@schedule("sync.enqueue_due", trigger="interval", seconds=30)
def enqueue_due(services: Services) -> dict[str, Any]:
    integrations: IntegrationsService = services.integrations
    return {"queued": len(integrations.enqueue_due())}


@schedule("sync.fail_stale_runs", trigger="interval", minutes=2)
def fail_stale_runs(services: Services) -> dict[str, Any]:
    return {"failed": [r["id"] for r in services.sync_engine.fail_stale_runs()]}


@schedule("sync.renew_subscriptions", trigger="interval", hours=1)
def renew_subscriptions(services: Services) -> dict[str, Any]:
    integrations: IntegrationsService = services.integrations
    return integrations.renew_subscriptions()
