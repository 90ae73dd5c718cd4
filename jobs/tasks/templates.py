"""Template generation queue handler: runs one generation job (single document or batch) with progress."""

from __future__ import annotations

from typing import Any

from core.errors import Invalid
from jobs.tasks import TaskContext, handler


@handler("templates.generate")
def run_generation(ctx: TaskContext) -> dict[str, Any]:
    """Render every record of the job; a document that fails is recorded with its reasons and the job goes on.
    Transient errors (LLM or Google unavailable) are raised so the queue retries; documents already finished
    are kept and skipped on the next attempt."""
    if ctx.tenant_id is None:
        raise Invalid(f"generation job {ctx.job['id']} has no tenant")
    job_id = str(ctx.payload["jobId"])
    return ctx.services.templates.run_job(
        ctx.tenant_id, job_id,
        progress=lambda fraction, message: ctx.progress(fraction, message),
        cancelled=ctx.cancelled,
    )
