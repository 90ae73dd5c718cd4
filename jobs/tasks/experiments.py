"""Worker tasks of prompts and experiments: offline evaluation runs of a prompt version, queued from the screen."""

from __future__ import annotations

from typing import Any

from core.errors import Invalid
from core.services.access import SYSTEM
from core.services.intents import EVALUATE_KIND
from jobs.tasks import TaskContext, handler


@handler(EVALUATE_KIND)
def evaluate_prompt_version(ctx: TaskContext) -> dict[str, Any]:
    """Run the labelled intent set through one prompt version and store the run (accuracy, latency, cost)."""
    services = ctx.services
    client = services.chat_llm
    if client is None:
        from core.adapters.llm_openai import HOW_TO_CONFIGURE

        raise Invalid(HOW_TO_CONFIGURE)
    payload = ctx.payload
    requester = services.users.current(str(payload.get("requestedBy") or "")) or SYSTEM
    version = services.prompts.version(requester, str(payload["slot"]), int(payload["version"]))

    def progress(done: int, total: int) -> None:
        if done % 20 == 0 or done == total:
            ctx.progress(done / total, f"{done}/{total} messages classified")

    run = services.eval_runs.run(requester, version, client, progress=progress)
    return {"runId": run["id"], "version": run["version"], "accuracy": run["accuracy"], "n": run["n"],
            "costUsd": run["cost_usd"]}
