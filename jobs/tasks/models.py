"""Model tasks: the retrain queue handler, scheduled retrains, and the hourly drift check of each served model."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from core import clock
from core.bootstrap import Services
from core.errors import CastielError, Invalid, NotFound
from core.services.access import SYSTEM
from core.services.models import CHAMPION, DRIFT_KINDS, QUEUE, RETRAIN_JOB
from jobs.tasks import TaskContext, handler, schedule

log = logging.getLogger(__name__)


@handler(RETRAIN_JOB)
def retrain(ctx: TaskContext) -> dict[str, Any]:
    """Train a new version of ``payload.model`` for the job's tenant and make it the challenger.

    Another retrain of the same model holding the lock raises ``Conflict``: the queue retries
    this job after a backoff, so the second request waits its turn instead of racing.
    """
    tenant_id = ctx.tenant_id
    kind = ctx.payload.get("model")
    if not tenant_id or not kind:
        raise Invalid("a retrain job needs a tenant and payload.model")
    requested_by = ctx.job.get("requestedBy") or SYSTEM.email
    info = ctx.services.models.retrain(
        SYSTEM, tenant_id, kind, reason=ctx.job.get("reason") or "retrain requested", trained_by=requested_by,
        holder=f"job:{ctx.job['id']}", progress=lambda f, m: ctx.progress(f, m),
    )
    gate = info.get("gate") or {}
    return {"version": info["version"], "gate": "passed" if gate.get("passed") else "blocked",
            "reasons": gate.get("reasons", [])[:5], "metrics": info["metrics"]}


@schedule("models.scheduled_retrains", trigger="interval", hours=1)
def scheduled_retrains(services: Services) -> dict[str, Any]:
    """Enqueue the retrains whose per-model schedule is due (the queue's dedupe keeps one per model)."""
    queued = []
    for tenant_id, kind in services.models.due_retrains(services.tenants.all_ids()):
        try:
            services.queue.enqueue(SYSTEM, QUEUE, RETRAIN_JOB, tenant_id, {"model": kind},
                                   reason="scheduled retrain", dedupe_key=f"{RETRAIN_JOB}:{kind}", max_attempts=3)
            queued.append(f"{tenant_id}/{kind}")
        except CastielError as e:
            log.warning("could not queue the scheduled retrain of %s/%s: %s", tenant_id, kind, e.message)
    return {"queued": queued}


@schedule("models.drift_checks", trigger="interval", hours=1)
def drift_checks(services: Services) -> dict[str, Any]:
    """Check the last hour of logged requests of every served model against its training data."""
    end = clock.now().replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=1)
    done, skipped = [], 0
    for tenant_id in services.tenants.all_ids():
        for kind in DRIFT_KINDS:
            try:
                if services.models.backend.aliases(tenant_id, kind).get(CHAMPION) is None:
                    continue
                check = services.models.run_drift_check(SYSTEM, tenant_id, kind, clock.iso(start), clock.iso(end),
                                                         label=start.strftime("%Y-%m-%d %H:00"))
                done.append({"tenant": tenant_id, "model": kind, "alert": check["alert"]})
            except (Invalid, NotFound):
                skipped += 1  # no traffic in the window, or nothing served yet
    return {"checked": done, "skipped": skipped}


@schedule("models.prune_predictions", trigger="interval", hours=24)
def prune_predictions(services: Services) -> dict[str, Any]:
    """Keep 90 days of prediction logs (drift windows and shadow reports look back days, not months)."""
    return {"deleted": sum(services.models.prune_predictions(t) for t in services.tenants.all_ids())}
