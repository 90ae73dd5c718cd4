"""Platform housekeeping tasks: a no-op probe job (for health and tests) and job-run pruning."""

from __future__ import annotations

import time
from typing import Any

from core import clock
from core.adapters.store import Cond
from core.bootstrap import Services
from jobs.tasks import TaskContext, handler, schedule


@handler("system.probe")
def probe(ctx: TaskContext) -> dict[str, Any]:
    """Sleeps ``seconds`` in steps reporting progress; ``fail`` makes it raise. For tests and the Jobs panel."""
    seconds = float(ctx.payload.get("seconds", 0))
    steps = max(1, int(seconds / 0.1))
    for i in range(steps):
        if ctx.cancelled():
            return {"cancelled": True}
        time.sleep(seconds / steps)
        ctx.progress((i + 1) / steps, f"step {i + 1} of {steps}")
    if ctx.payload.get("fail"):
        raise RuntimeError(str(ctx.payload["fail"]))
    marker = ctx.payload.get("marker")
    if marker:
        ctx.services.store.increment("rollups", "_platform", f"probe-{marker}", {"runs": 1}, base={"kind": "probe"})
    return {"slept": seconds}


@schedule("system.prune_job_runs", trigger="interval", hours=6)
def prune_job_runs(services: Services) -> dict[str, Any]:
    """Keep 30 days of scheduled-run records."""
    cutoff = clock.iso_in(-30 * 24 * 3600)
    old = services.store.query("job_runs", "_platform", [Cond("startedAt", "<", cutoff)], limit=5000)
    for row in old:
        services.store.delete("job_runs", "_platform", row["id"])
    return {"deleted": len(old)}
