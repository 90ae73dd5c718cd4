"""Every container the console stores, with the fields its queries filter and sort on.

One list, so `python -m core migrate` creates the same shape on SQLite and Cosmos DB.
Add a feature's containers here (with the indexes its queries need).
"""

from __future__ import annotations

from core.adapters.cosmos_vector import CHUNK_VECTORS, VectorContainerSpec
from core.adapters.store import ContainerSpec as C

CONTAINERS: tuple[C, ...] = (
    # foundation
    C("tenants"),
    C("users", indexes=(("email",),)),
    C("audit", indexes=(("at",), ("action", "at"), ("actor", "at"))),
    C("jobs", indexes=(("queue", "status", "availableAt"), ("status", "leaseUntil"), ("dedupeKey",))),
    C("job_runs", indexes=(("startedAt",), ("job", "startedAt"))),
    C("rollups", indexes=(("kind", "bucket"),)),
    # integrations (issue 3)
    C("connections", indexes=(("provider",), ("status",))),
    C("sync_runs", indexes=(("connectionId", "queuedAt"), ("status",))),
    # (connectionId, stream, runId): a full resync lists the records it did not see from the index alone
    C("crm_records", indexes=(("connectionId", "stream", "runId"), ("objectType", "updatedAt"))),
    C("documents", indexes=(("connectionId", "stream", "runId"), ("project",), ("sourceId",))),
    C("sync_seen"),  # ids a full resync saw but did not rewrite, until its run ends (read by id prefix)
    C("webhook_events", indexes=(("connectionId", "receivedAt"),)),
    # one-time OAuth consent states (platform partition, read by id = hash of the state)
    C("oauth_consents", indexes=(("expiresAt",),)),
    # embeddings (issue 4)
    C("doc_changes", indexes=(("seq",), ("status", "seq"))),
    # vectors: one float-array path per embedding size, for Cosmos DB vector search (SQLite ignores them).
    # Chunks are read by document by id range (ids begin with the document id, see document_chunks)
    # and by project and model for index rebuilds, which read the whole project anyway: an index on
    # documentId or model would only cost every chunk write another parse of its body.
    VectorContainerSpec("chunks", indexes=(("project",),), vectors=CHUNK_VECTORS),
    C("pipeline_state"),
    # prompts and experiments (issue 5)
    C("prompts", indexes=(("slot", "version"),)),
    C("prompt_labels", indexes=(("slot", "at"),)),
    C("eval_runs", indexes=(("slot", "startedAt"),)),
    C("experiments", indexes=(("status",), ("slot",))),
    C("exp_events", indexes=(("experimentId", "at"), ("dedupeKey",))),
    C("exp_rollups", indexes=(("experimentId", "day"),)),
    C("exp_units", indexes=(("experimentId",),)),
    # models (issue 6)
    C("model_aliases", indexes=(("model", "at"),)),
    C("predictions", indexes=(("model", "at"),)),
    C("drift_checks", indexes=(("model", "at"),)),
    C("model_settings", indexes=(("kind",),)),
    # templates (issue 7)
    C("templates", indexes=(("name",),)),
    C("generation_jobs", indexes=(("templateId", "createdAt"), ("status",))),
    C("generated_docs", indexes=(("jobId",), ("templateId", "createdAt"))),
    # overview, telemetry and alerts (issue 8)
    C("telemetry", indexes=(("grain", "bucket"), ("operation", "bucket"), ("bucket",))),
    C("alert_rules", indexes=(("rule",),)),
    C("alerts", indexes=(("status", "openedAt"), ("rule", "status"), ("current", "status"), ("openedAt",))),
    C("notifications", indexes=(("alertId",), ("status",))),
)
