"""The sync engine: runs one sync run of one connection, page by page, into the store, and records what happened.

For each stream the engine reads pages from the connector, upserts the page's records under
deterministic ids (a hash of connection, object type and source id, so a resync or a repeated
boundary page never duplicates), and only then stores the page's ``next_state`` as the stream's
cursor. A run that dies is therefore resumed from its last committed page.

Pages flow through three threads: the connector's next page is fetched and parsed ahead
(``_Prefetch``), the current one is mapped and planned against the store on the calling thread, and
the page before is written, then its cursor and counts stored, on a writer thread. The plan of page
n+1 overlays page n's pending changes, so the result is what one page after the other gives.

A full resync is a mark-and-sweep (``_sweep``): once every stream was read to its end, the records of
those streams that the run neither wrote nor found unchanged are deleted as vendor deletes are (and
documents announced to the embedding pipeline), counted on the run (``swept``) and audited. A full
resync that fails or is cancelled before that point deletes nothing; its retries keep what earlier
attempts saw (``sync_seen``).

Runs (``sync_runs``) carry status, trigger, per-attempt errors with their error type, counts,
per-stream cursors before and after, and duration. The connection record carries what the
health model needs (last success, consecutive failures, token state) and each finished run adds
to a per-connection, per-day rollup so the Integrations screen never scans ``sync_runs``.

The engine is core: it never imports a connector module. It is handed a factory that builds a
connector from (provider, config, credentials, token_store) and uses the connector contract of
``connectors.base`` structurally (``read_pages``, ``token_info``, ``test_connection``, ``close``).

Run status moves::

    queued -> running -> succeeded | partial | failed | cancelled
                  \\-> queued (a retryable failure with attempts left: the queue runs it again)
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from core import clock
from core.adapters.store import Cond, Doc, DocumentStore
from core.crypto import SecretBox
from core.errors import CastielError, Conflict, ConnectorError, Invalid, NotFound, RateLimited, StoreUnavailable
from core.services.access import SYSTEM
from core.services.audit import AuditLog

CONNECTIONS, RUNS, CRM, DOCUMENTS, ROLLUPS = "connections", "sync_runs", "crm_records", "documents", "rollups"
# Ids a full resync saw without rewriting them (unchanged records), kept until the run ends; see ``_sweep``.
SEEN = "sync_seen"
QUEUED, RUNNING, SUCCEEDED, PARTIAL, FAILED, CANCELLED = (
    "queued", "running", "succeeded", "partial", "failed", "cancelled",
)
FINAL_STATES = (SUCCEEDED, PARTIAL, FAILED, CANCELLED)
OPEN_STATES = (QUEUED, RUNNING)
# Object types stored as text documents (fed to the embedding pipeline); all others are CRM records.
DOCUMENT_TYPES = frozenset({"document", "message", "row"})
ROLLUP_KIND = "sync_daily"
# Kinds of failure that another attempt may cure; a config error waits for a person instead.
RETRYABLE_KINDS = frozenset({"transient", "rate_limited", "store", "stalled"})
MAX_SKIPPED_SAMPLES = 20
# Source ids of swept records kept in the sweep's audit entry (the count is always complete).
MAX_SWEEP_SAMPLES = 50
SWEEP_DELETE_BATCH = 500


class ConnectorLike(Protocol):
    """What the engine uses of ``connectors.base.Connector``."""

    def read_pages(self, stream_name: str, state: dict[str, Any] | None, full: bool = False) -> Iterator[Any]: ...

    def test_connection(self) -> str: ...

    def token_info(self) -> dict[str, Any] | None: ...

    def close(self) -> None: ...

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> list[Any]: ...

    def webhook_handshake(self, query: Mapping[str, str], headers: Mapping[str, str], body: bytes) -> str | None: ...

    def write(self, object_type: str, source_id: str | None, fields: dict[str, Any]) -> str: ...

    def manage_subscriptions(
        self, subscriptions: list[dict[str, Any]], notification_url: str
    ) -> list[dict[str, Any]]: ...


ConnectorFactory = Callable[..., ConnectorLike]
# (tenant_id, [(document_id, "upsert" | "delete", source, project), ...]): once per page of documents stored
DocumentChangedHook = Callable[[str, list[tuple[str, str, str | None, str | None]]], None]
AutoPauseHook = Callable[[Doc, str], None]
Heartbeat = Callable[[str], None]


@dataclass(frozen=True)
class AutoPausePolicy:
    """Pause a connection whose runs keep failing, like the large connector platforms do.

    A connection is paused when ``max_failures`` runs in a row have failed, or when it has kept
    failing (no success in between) for ``max_days`` days: whichever comes first.
    """

    max_failures: int = 20
    max_days: float = 4.0


@dataclass
class _PreparedPage:
    """A page's records mapped to store documents, per container, and the ids it deletes."""

    tenant_id: str
    by_container: dict[str, dict[str, Doc]]
    deletions: dict[str, set[str]]


@dataclass
class _PagePlan:
    """What storing a page does: per container the changed documents, what is stored, the ids to delete.

    ``written`` maps each container to the changed documents by id and ``gone`` to the deleted ids:
    the next page is planned against them while this one is still being written. ``kept`` are the
    ids of unchanged records; ``seen`` is the ``sync_seen`` record of a full resync's page (the ids it
    saw without rewriting them), or None, and ``sweep_blocked`` why the stream cannot be swept.
    """

    tenant_id: str
    steps: list[tuple[str, list[Doc], dict[str, tuple[Any, ...]], list[str]]] = field(default_factory=list)
    unchanged: int = 0
    written: dict[str, dict[str, Doc]] = field(default_factory=dict)
    gone: dict[str, set[str]] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)
    seen: Doc | None = None
    sweep_blocked: str | None = None


class RunCancelled(Exception):
    """Raised inside a run when an operator cancelled it; the cursor stays at the last stored page."""


def record_id(prefix: str, connection_id: str, object_type: str, source_id: str) -> str:
    """Deterministic store id: the same vendor object always lands on the same document."""
    digest = hashlib.sha256(f"{connection_id}\x1f{object_type}\x1f{source_id}".encode()).hexdigest()[:32]
    return f"{prefix}-{digest}"


class _RecordIds:
    """``record_id`` for many records of one connection: the hash of the fixed prefix is taken once per type."""

    def __init__(self, connection_id: str) -> None:
        self.connection_id = connection_id
        self._seeds: dict[str, Any] = {}

    def __call__(self, prefix: str, object_type: str, source_id: str) -> str:
        seed = self._seeds.get(object_type)
        if seed is None:
            seed = self._seeds[object_type] = hashlib.sha256(f"{self.connection_id}\x1f{object_type}\x1f".encode())
        h = seed.copy()
        h.update(source_id.encode())
        return f"{prefix}-{h.hexdigest()[:32]}"


def content_hash(data: Any) -> str:
    return hashlib.blake2b(json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode(),
                           digest_size=16).hexdigest()


def day_of(iso_ts: str) -> str:
    return iso_ts[:10]


def rollup_id(connection_id: str, day: str) -> str:
    return f"{ROLLUP_KIND}:{connection_id}:{day}"


def error_kind(exc: BaseException) -> str:
    if isinstance(exc, ConnectorError):
        return exc.kind
    if isinstance(exc, StoreUnavailable):
        return "store"
    return "internal"


def error_text(exc: BaseException) -> str:
    if isinstance(exc, CastielError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


# The stored fields that decide whether a record changed; only these are read back, not whole bodies.
# Comparing CRM ``data`` dicts is cheaper than hashing every CRM record on the way in.
COMPARED_FIELDS: dict[str, tuple[str, ...]] = {CRM: ("data",), DOCUMENTS: ("contentHash", "title")}


def _same_content(container: str, new: Doc, old: tuple[Any, ...] | None) -> bool:
    """Whether a stored record (its ``COMPARED_FIELDS`` values) already holds this content.

    Then it is neither rewritten nor re-announced to the embedding pipeline.
    """
    if old is None:
        return False
    if container == DOCUMENTS:
        return bool(old[0] == new["contentHash"] and old[1] == new["title"])
    return bool(old[0] == new["data"])


def _overlay(existing: dict[str, tuple[Any, ...]], container: str, ids: set[str], in_flight: _PagePlan) -> None:
    """Lay the changes of the page still being written over what the store returned for these ids.

    The store may answer from before or after that write commits; either way the next page must be
    planned as if it had (records it writes exist with their new content, records it deletes do not).
    """
    written = in_flight.written.get(container)
    if written:
        fields = COMPARED_FIELDS[container]
        for i in written.keys() & ids:
            d = written[i]
            existing[i] = tuple(d.get(f) for f in fields)
    gone = in_flight.gone.get(container)
    if gone:
        for i in gone & ids:
            existing.pop(i, None)


def _document_fields(rec: Any, conn: Doc) -> dict[str, Any]:
    """Map a normalised record onto the ``documents`` shape the embedding pipeline reads."""
    data = dict(rec.data)
    if rec.object_type == "message":
        title = f"#{data.get('channel') or 'channel'} message {data.get('ts') or rec.source_id}"
        text = data.get("text") or ""
    elif rec.object_type == "row":
        title = data.get("title") or rec.source_id
        props = data.get("properties") or {}
        text = "\n".join([title] + [f"{k}: {v}" for k, v in props.items() if v not in (None, "", [])])
    else:
        title = data.get("title") or data.get("path") or rec.source_id
        text = data.get("text") or ""
    return {
        "title": title,
        "text": text,
        "mimeType": data.get("mimeType") or "text/plain",
        "project": data.get("project") or (conn.get("config") or {}).get("project") or conn.get("name"),
        "url": data.get("url"),
        "path": data.get("path"),
        "size": data.get("size") if data.get("size") is not None else len(text.encode()),
        "modifiedAt": data.get("modifiedAt"),
        "metadata": {k: v for k, v in data.items() if k not in {"text", "title"}},
    }


def new_connection(
    tenant_id: str,
    provider: str,
    name: str,
    *,
    config: dict[str, Any] | None = None,
    credentials_sealed: str | None = None,
    interval_seconds: float = 3600.0,
    enabled_streams: list[str] | None = None,
    webhook: dict[str, Any] | None = None,
    created_by: str = "system",
    connection_id: str | None = None,
    now: datetime | None = None,
) -> Doc:
    """The one shape of a ``connections`` record (the health model and the screen read these fields)."""
    at = clock.iso(now)
    return {
        "id": connection_id or f"conn-{uuid.uuid4().hex[:12]}",
        "tenantId": tenant_id,
        "provider": provider,
        "name": name,
        "status": "active",
        "config": dict(config or {}),
        "credentialsSealed": credentials_sealed,
        "credentialsUpdatedAt": at if credentials_sealed else None,
        "schedule": {"intervalSeconds": float(interval_seconds)},
        "nextDueAt": at,
        "enabledStreams": enabled_streams,
        "streams": {},
        "webhook": webhook,
        "token": None,
        "activeRunId": None,
        "lastRunId": None,
        "lastRunStatus": None,
        "lastRunAt": None,
        "lastRunFinishedAt": None,
        "lastSuccessAt": None,
        "lastError": None,
        "lastErrorType": None,
        "consecutiveFailures": 0,
        "failingSince": None,
        "recordsSynced": 0,
        "pausedAt": None,
        "pausedReason": None,
        "pausedBy": None,
        "lastTest": None,
        "createdAt": at,
        "createdBy": created_by,
    }


class _Prefetch:
    """Reads the connector's next page on a helper thread while the engine stores the current one.

    HTTP waits and SQLite writes both release the GIL, so fetching and storing overlap. Only one
    page is read ahead, so the cursor order (store page n, then its state) is unchanged.
    """

    _END = object()

    def __init__(self, pages: Iterator[Any], depth: int = 1) -> None:
        self._pages = pages
        self._q: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sync-prefetch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for page in self._pages:
                while not self._stop.is_set():
                    try:
                        self._q.put(("page", page), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    break
            item: tuple[str, Any] = ("end", None)
        except BaseException as e:  # noqa: BLE001 - handed to the consuming thread as is
            item = ("error", e)
        finally:
            close = getattr(self._pages, "close", None)
            if close is not None:
                close()
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[Any]:
        while True:
            kind, value = self._q.get()
            if kind == "page":
                yield value
            elif kind == "error":
                raise value
            else:
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


class _TokenSaver:
    """The connector's TokenStore: merges refreshed tokens into the sealed credentials at once.

    Vendors rotate refresh tokens on use, so the new one must be stored before anything else
    can fail, or the connection would be left holding a dead token.
    """

    def __init__(self, engine: SyncEngine, tenant_id: str, connection_id: str, credentials: dict[str, Any]) -> None:
        self.engine, self.tenant_id, self.connection_id = engine, tenant_id, connection_id
        self.credentials = credentials

    def save(self, tokens: dict[str, Any]) -> None:
        self.credentials.update(tokens)
        sealed = self.engine.secret_box.seal(json.dumps(self.credentials))

        def change(doc: Doc | None) -> Doc | None:
            if doc is None:
                return None
            doc["credentialsSealed"] = sealed
            doc["credentialsUpdatedAt"] = clock.iso(self.engine.now())
            return doc

        self.engine.store.update(CONNECTIONS, self.tenant_id, self.connection_id, change)


class SyncEngine:
    """Runs sync runs; one instance per process, shared by the worker's handlers."""

    def __init__(
        self,
        store: DocumentStore,
        connector_factory: ConnectorFactory,
        secret_box: SecretBox,
        on_document_changed: DocumentChangedHook,
        *,
        audit: AuditLog | None = None,
        on_auto_pause: AutoPauseHook | None = None,
        auto_pause: AutoPausePolicy | None = None,
        now: Callable[[], datetime] = clock.now,
        prefetch: bool = True,
        overlap_writes: bool = True,
        stale_after_seconds: float = 180.0,
    ) -> None:
        self.store = store
        self.connector_factory = connector_factory
        self.secret_box = secret_box
        self.on_document_changed = on_document_changed
        self.audit = audit or AuditLog(store)
        self.on_auto_pause = on_auto_pause
        self.auto_pause = auto_pause or AutoPausePolicy()
        self.now = now
        self.prefetch = prefetch
        # Write page n on a helper thread while page n+1 is mapped to documents (SQLite and network
        # writes release the GIL); page n's cursor still moves only once its write has returned.
        self.overlap_writes = overlap_writes
        self.stale_after_seconds = stale_after_seconds
        # Bulk upsert is optional in the store contract; one transaction per page is far faster.
        self._upsert_many: Callable[[str, Sequence[Doc]], None] | None = getattr(store, "upsert_many", None)
        # Optional too: reading back only the compared fields of a page's stored records in one query.
        self._existing_fields: Callable[..., dict[str, tuple[Any, ...]]] | None = getattr(
            store, "existing_fields", None
        )
        # Optional: listing the records a full resync did not rewrite without reading their bodies, and
        # deleting many in one transaction (the sweep falls back to ``query`` and ``delete``).
        self._query_fields: Callable[..., dict[str, tuple[Any, ...]]] | None = getattr(store, "query_fields", None)
        self._delete_many: Callable[[str, str, Sequence[str]], int] | None = getattr(store, "delete_many", None)

    # credentials -----------------------------------------------------------------------
    def credentials_of(self, conn: Doc) -> dict[str, Any]:
        sealed = conn.get("credentialsSealed")
        return json.loads(self.secret_box.open(sealed)) if sealed else {}

    def connector_for(self, conn: Doc) -> tuple[ConnectorLike, _TokenSaver]:
        creds = self.credentials_of(conn)
        saver = _TokenSaver(self, conn["tenantId"], conn["id"], creds)
        connector = self.connector_factory(conn["provider"], dict(conn.get("config") or {}), dict(creds), saver)
        return connector, saver

    def test_connection(self, conn: Doc) -> dict[str, Any]:
        """One cheap authenticated call; the outcome (and token state) is stored on the connection."""
        at = clock.iso(self.now())
        connector: ConnectorLike | None = None
        token = None
        try:
            connector, _ = self.connector_for(conn)
            message = connector.test_connection()
            result = {"at": at, "ok": True, "message": message, "errorType": None}
        except Exception as e:  # noqa: BLE001 - the outcome is the answer, typed
            result = {"at": at, "ok": False, "message": error_text(e), "errorType": error_kind(e)}
        finally:
            if connector is not None:
                try:
                    token = connector.token_info()
                finally:
                    connector.close()

        def change(doc: Doc | None) -> Doc | None:
            if doc is None:
                return None
            doc["lastTest"] = result
            if token is not None:
                doc["token"] = token_record(token, doc.get("token"))
            return doc

        self.store.update(CONNECTIONS, conn["tenantId"], conn["id"], change)
        return result

    # runs --------------------------------------------------------------------------------
    def create_run(
        self,
        conn: Doc,
        trigger: dict[str, Any],
        *,
        streams: list[str] | None = None,
        full: bool = False,
        queue_name: str = "sync-inbound-scheduled",
        retry_of: str | None = None,
    ) -> Doc:
        """Record a queued run; the caller enqueues a work item naming its id."""
        at = clock.iso(self.now())
        run = {
            "id": f"run-{at[:19].replace(':', '').replace('-', '')}-{uuid.uuid4().hex[:10]}",
            "tenantId": conn["tenantId"],
            "connectionId": conn["id"],
            "provider": conn["provider"],
            "status": QUEUED,
            "trigger": trigger,
            "queue": queue_name,
            "full": bool(full),
            "streams": streams,
            "retryOf": retry_of,
            "queuedAt": at,
            "startedAt": None,
            "finishedAt": None,
            "heartbeatAt": None,
            "durationMs": None,
            "read": 0,
            "written": 0,
            "unchanged": 0,
            "deleted": 0,
            "swept": 0,
            "skipped": 0,
            "skippedSamples": [],
            "attempts": [],
            "streamStats": {},
            "progress": "queued",
            "progressFraction": 0.0,
            "error": None,
            "errorType": None,
            "jobId": None,
        }
        return self.store.create(RUNS, run)

    def get_run(self, tenant_id: str, run_id: str) -> Doc:
        return self.store.get(RUNS, tenant_id, run_id)

    def _update_run(self, tenant_id: str, run_id: str, **fields: Any) -> Doc:
        def change(doc: Doc | None) -> Doc:
            if doc is None:
                raise NotFound(f"sync run {run_id} not found")
            doc.update(fields)
            return doc

        out = self.store.update(RUNS, tenant_id, run_id, change)
        assert out is not None
        return out

    def execute(
        self,
        tenant_id: str,
        run_id: str,
        *,
        heartbeat: Heartbeat | None = None,
        should_cancel: Callable[[], bool] | None = None,
        final_attempt: bool = True,
    ) -> Doc:
        """Run (or resume) one run; returns the run record as left by this attempt.

        ``final_attempt`` False means the queue will try again after a retryable failure, so
        the run goes back to ``queued`` instead of ``failed`` and the connection's failure
        streak is not counted yet.
        """
        run = self.get_run(tenant_id, run_id)
        if run["status"] in FINAL_STATES:
            return run  # a duplicate delivery of a finished run: nothing to do
        conn = self.store.get(CONNECTIONS, tenant_id, run["connectionId"])
        now = self.now()
        at = clock.iso(now)
        attempts = list(run.get("attempts") or [])
        if attempts and attempts[-1].get("status") == RUNNING:
            # The previous worker stopped heart-beating (its lease expired and we were handed the item).
            attempts[-1].update(status=FAILED, finishedAt=at, errorType="stalled",
                                error=f"the worker stopped heart-beating after {run.get('heartbeatAt') or 'start'}")
        if conn.get("status") == "paused" and run["trigger"].get("type") == "schedule":
            return self._finish_without_running(run, attempts, CANCELLED, "the connection is paused")
        holder = conn.get("activeRunId")
        if holder and holder != run_id and self._holder_alive(conn):
            raise Conflict(f"run {holder} of this connection is still in progress; this run waits for it")

        attempt = {"n": len(attempts) + 1, "startedAt": at, "finishedAt": None, "status": RUNNING,
                   "error": None, "errorType": None, "read": 0, "written": 0, "skipped": 0}
        attempts.append(attempt)
        run = self._update_run(tenant_id, run_id, status=RUNNING, startedAt=run.get("startedAt") or at,
                               heartbeatAt=at, attempts=attempts, progress="starting")
        self._claim_connection(conn, run_id, at)

        outcome_error: BaseException | None = None
        cancelled = False
        connector: ConnectorLike | None = None
        saver: _TokenSaver | None = None
        try:
            connector, saver = self.connector_for(conn)
            stream_names = self._stream_names(conn, connector, run)
            for i, name in enumerate(stream_names):
                self._sync_stream(run, conn, connector, name, i, len(stream_names), attempt, heartbeat, should_cancel)
            if run.get("full"):
                # Every stream was read to its end: only now may records that were not seen be removed.
                self._sweep(run_id, conn, stream_names, should_cancel, heartbeat)
        except RunCancelled:
            cancelled = True
        except Conflict:
            raise  # lost the lease or the connection: another worker owns this run now
        except Exception as e:  # noqa: BLE001 - every failure is recorded on the run, typed
            outcome_error = e
        finally:
            token = None
            if connector is not None:
                try:
                    token = connector.token_info()
                finally:
                    connector.close()
        return self._finish(run_id, conn, attempt, outcome_error, cancelled, token, final_attempt)

    def _holder_alive(self, conn: Doc) -> bool:
        holder = self.store.get_or_none(RUNS, conn["tenantId"], conn["activeRunId"])
        if holder is None or holder["status"] != RUNNING or not holder.get("heartbeatAt"):
            return False
        age = (self.now() - clock.parse(holder["heartbeatAt"])).total_seconds()
        return age < self.stale_after_seconds

    def _claim_connection(self, conn: Doc, run_id: str, at: str) -> None:
        def change(doc: Doc | None) -> Doc | None:
            if doc is None:
                raise NotFound(f"connection {conn['id']} was deleted")
            doc.update(activeRunId=run_id, lastRunId=run_id, lastRunStatus=RUNNING, lastRunAt=at)
            return doc

        self.store.update(CONNECTIONS, conn["tenantId"], conn["id"], change)

    def _stream_names(self, conn: Doc, connector: ConnectorLike, run: Doc) -> list[str]:
        declared = [s.name for s in getattr(connector, "streams", ())]
        enabled = conn.get("enabledStreams") or declared
        wanted = run.get("streams") or enabled
        unknown = [s for s in wanted if s not in declared]
        if unknown:
            raise Invalid(f"unknown stream(s) {', '.join(unknown)}; this connector has: {', '.join(declared)}")
        return list(wanted)

    # one stream --------------------------------------------------------------------------
    def _sync_stream(
        self,
        run: Doc,
        conn: Doc,
        connector: ConnectorLike,
        name: str,
        index: int,
        total: int,
        attempt: dict[str, Any],
        heartbeat: Heartbeat | None,
        should_cancel: Callable[[], bool] | None,
    ) -> None:
        tenant_id, run_id = run["tenantId"], run["id"]
        fresh_conn = self.store.get(CONNECTIONS, tenant_id, conn["id"])
        stream_state = ((fresh_conn.get("streams") or {}).get(name) or {}).get("state")
        stats = dict((run.get("streamStats") or {}).get(name) or {})
        if "cursorBefore" not in stats:
            stats["cursorBefore"] = stream_state
        sweeping = bool(run.get("full"))
        # A full resync restarts the stream until one page of it is stored; from then on a retried
        # attempt of that run resumes from the state this run committed, so it must not start over.
        resumed = "cursorAfter" in stats
        full = sweeping and not resumed
        if sweeping and resumed and stream_state != stats["cursorAfter"] and not stats.get("sweepBlocked"):
            # Another run synced this stream between two attempts: the records it read past this run's
            # cursor were never seen by this run, so this run cannot tell which records vanished.
            stats["sweepBlocked"] = ("another run moved this stream's cursor while this full resync waited to "
                                     "retry; vanished records stay until the next full resync")
        stats.update(status=RUNNING, fullStarted=sweeping or stats.get("fullStarted", False))
        stats.setdefault("read", 0)
        stats.setdefault("written", 0)
        stats.setdefault("skipped", 0)
        self._set_stream_stats(tenant_id, run_id, name, stats)
        object_type = {s.name: s.object_type for s in getattr(connector, "streams", ())}.get(name)
        seen_ids = _RecordIds(conn["id"])

        pages: Iterator[Any] = connector.read_pages(name, None if full else stream_state, full=full)
        prefetch = _Prefetch(pages) if self.prefetch else None
        source = iter(prefetch) if prefetch is not None else pages
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sync-write") if self.overlap_writes else None
        # The page whose write is in flight: (its plan, the future of storing it).
        in_flight: tuple[_PagePlan, Future[Doc]] | None = None

        def store_page(page: Any, plan: _PagePlan) -> Doc:
            """Write the page, then (and only then) move the cursor and count: on the writer thread when
            writes overlap, so the main thread's next page never waits for this page's bookkeeping."""
            self._apply_page(plan)
            counts, samples = self._page_done(plan, name, page)
            # The page is stored: now, and only now, its state may become the stream's cursor.
            self._advance_cursor(tenant_id, conn["id"], name, page.next_state, counts["written"])
            stats["cursorAfter"] = page.next_state
            if plan.sweep_blocked and not stats.get("sweepBlocked"):
                stats["sweepBlocked"] = plan.sweep_blocked
            for k in ("read", "written", "skipped"):
                stats[k] += counts[k]
                attempt[k] += counts[k]
            return self._add_page_counts(tenant_id, run_id, name, stats, counts, samples, index, total)

        def collect() -> None:
            nonlocal in_flight
            if in_flight is not None:
                _plan, write = in_flight
                in_flight = None
                stored = write.result()
                if heartbeat is not None:
                    heartbeat(stored["progress"])

        try:
            for page_no, page in enumerate(source):
                # Mapping and planning page n+1 overlap page n's write: the plan reads what is stored and
                # overlays page n's changes, which the single writer commits before page n+1's.
                prepared = self._prepare_page(conn, run_id, page)
                plan = self._plan_page(conn, prepared, in_flight[0] if in_flight is not None else None)
                if sweeping:
                    self._note_seen(plan, run_id, name, attempt["n"], page_no, page, object_type, seen_ids)
                collect()
                if should_cancel is not None and should_cancel():
                    raise RunCancelled()
                if writer is None:
                    stored = store_page(page, plan)
                    if heartbeat is not None:
                        heartbeat(stored["progress"])
                else:
                    in_flight = (plan, writer.submit(store_page, page, plan))
            collect()
        except BaseException as e:
            err: BaseException = e
            if in_flight is not None:
                # Reading page n+1 failed while page n was being written: finish page n first, as a
                # run without overlap would have (its cursor moves); if its write failed, that is the error.
                try:
                    collect()
                except BaseException as write_error:  # noqa: BLE001 - reported instead, like before
                    err = write_error
            stats.update(status=FAILED, errorType=error_kind(err), error=error_text(err))
            self._set_stream_stats(tenant_id, run_id, name, stats)
            if err is e:
                raise
            raise err from e
        finally:
            if writer is not None:
                writer.shutdown(wait=True)
            if prefetch is not None:
                prefetch.stop()
        stats["status"] = PARTIAL if stats["skipped"] else SUCCEEDED
        stats.setdefault("cursorAfter", stream_state)
        self._set_stream_stats(tenant_id, run_id, name, stats)

    def _set_stream_stats(self, tenant_id: str, run_id: str, name: str, stats: dict[str, Any]) -> None:
        def change(doc: Doc | None) -> Doc:
            if doc is None:
                raise NotFound(f"sync run {run_id} not found")
            doc.setdefault("streamStats", {})[name] = stats
            return doc

        self.store.update(RUNS, tenant_id, run_id, change)

    def _add_page_counts(
        self, tenant_id: str, run_id: str, name: str, stats: dict[str, Any], counts: dict[str, int],
        samples: list[dict[str, Any]], index: int, total: int,
    ) -> Doc:
        at = clock.iso(self.now())

        def change(doc: Doc | None) -> Doc:
            if doc is None:
                raise NotFound(f"sync run {run_id} not found")
            if doc.get("status") != RUNNING:
                # An operator cancelled it (or a sweep failed it) while this page was stored.
                raise RunCancelled()
            for k, v in counts.items():
                doc[k] = int(doc.get(k) or 0) + v
            doc["skippedSamples"] = (list(doc.get("skippedSamples") or []) + samples)[:MAX_SKIPPED_SAMPLES]
            doc.setdefault("streamStats", {})[name] = stats
            last = doc["attempts"][-1]
            last.update({k: last.get(k, 0) + counts[k] for k in ("read", "written", "skipped")})
            doc["heartbeatAt"] = at
            doc["progress"] = f"stream {index + 1}/{total} {name}: {stats['read']} read"
            # Streams are the only known denominator (vendors rarely say how many records remain).
            doc["progressFraction"] = round((index + min(0.9, stats["read"] / (stats["read"] + 1000))) / total, 3)
            return doc

        out = self.store.update(RUNS, tenant_id, run_id, change)
        assert out is not None
        return out

    def _advance_cursor(self, tenant_id: str, connection_id: str, name: str, state: Any, written: int) -> None:
        at = clock.iso(self.now())

        def change(doc: Doc | None) -> Doc:
            if doc is None:
                raise NotFound(f"connection {connection_id} was deleted during the run")
            streams = doc.setdefault("streams", {})
            entry = streams.setdefault(name, {})
            entry["state"] = state
            entry["updatedAt"] = at
            entry["records"] = int(entry.get("records") or 0) + written
            return doc

        self.store.update(CONNECTIONS, tenant_id, connection_id, change)

    # storing records ---------------------------------------------------------------------
    def _store_page(
        self, conn: Doc, run_id: str, stream: str, page: Any
    ) -> tuple[dict[str, int], list[dict[str, Any]]]:
        """Store one page's records, one step after the other (the overlapped loop runs the same steps)."""
        plan = self._plan_page(conn, self._prepare_page(conn, run_id, page))
        self._apply_page(plan)
        return self._page_done(plan, stream, page)

    def _prepare_page(self, conn: Doc, run_id: str, page: Any) -> _PreparedPage:
        """The page's records as store documents: pure work, no store reads, so it may run ahead.

        Runs for every synced record while the fetch thread parses the next page under the same GIL,
        so what is fixed per object type (container, id prefix, the hash of the id's fixed part) is
        worked out once per page.
        """
        tenant_id, connection_id, provider = conn["tenantId"], conn["id"], conn["provider"]
        at = clock.iso(self.now())
        by_container: dict[str, dict[str, Doc]] = {CRM: {}, DOCUMENTS: {}}
        deletions: dict[str, set[str]] = {CRM: set(), DOCUMENTS: set()}
        kinds: dict[str, tuple[bool, dict[str, Doc], set[str], Any, str]] = {}
        for rec in page.records:
            object_type = rec.object_type
            kind = kinds.get(object_type)
            if kind is None:
                is_doc = object_type in DOCUMENT_TYPES
                container = DOCUMENTS if is_doc else CRM
                # The same ids as ``record_id``: sha256 of connection, object type and source id.
                seed = hashlib.sha256(f"{connection_id}\x1f{object_type}\x1f".encode())
                kind = kinds[object_type] = (is_doc, by_container[container], deletions[container], seed,
                                             "doc-" if is_doc else "crm-")
            is_doc, docs, dels, seed, prefix = kind
            source_id = rec.source_id if type(rec.source_id) is str else str(rec.source_id)
            digest = seed.copy()
            digest.update(source_id.encode())
            doc_id = prefix + digest.hexdigest()[:32]
            if rec.deleted:
                dels.add(doc_id)
                docs.pop(doc_id, None)
                continue
            if dels:
                dels.discard(doc_id)
            if is_doc:
                base = {"id": doc_id, "tenantId": tenant_id, "connectionId": connection_id, "source": provider,
                        "stream": rec.stream, "objectType": object_type, "sourceId": source_id, "syncedAt": at,
                        "runId": run_id}
                base.update(_document_fields(rec, conn))
                base["updatedAt"] = base.get("modifiedAt") or rec.cursor_value or at
                # Documents carry a hash of their content: the embedding pipeline keys re-embedding on it.
                base["contentHash"] = content_hash(rec.data)
            else:
                data = rec.data
                base = {"id": doc_id, "tenantId": tenant_id, "connectionId": connection_id, "source": provider,
                        "stream": rec.stream, "objectType": object_type, "sourceId": source_id, "syncedAt": at,
                        "runId": run_id, "data": data,
                        "updatedAt": data.get("modifiedAt") or rec.cursor_value or at}
            docs[doc_id] = base
        return _PreparedPage(tenant_id, by_container, deletions)

    def _plan_page(self, conn: Doc, prepared: _PreparedPage, in_flight: _PagePlan | None = None) -> _PagePlan:
        """Read what is stored and keep only what changed.

        ``in_flight`` is the previous page while its write is still running: its changes are laid over
        what the store returns, as the single writer commits them before this page's.
        """
        tenant_id = prepared.tenant_id
        plan = _PagePlan(tenant_id)
        for container, docs in prepared.by_container.items():
            dels = prepared.deletions[container]
            if not docs and not dels:
                continue
            existing = self._existing(container, tenant_id, list(docs) + list(dels))
            if in_flight is not None:
                _overlay(existing, container, docs.keys() | dels, in_flight)
            changed: list[Doc] = []
            kept = plan.kept
            for i, d in docs.items():
                if _same_content(container, d, existing.get(i)):
                    kept.append(i)
                else:
                    changed.append(d)
            gone = [i for i in dels if i in existing]
            plan.steps.append((container, changed, existing, gone))
            plan.written[container] = {d["id"]: d for d in changed}
            plan.gone[container] = set(gone)
        plan.unchanged = len(plan.kept)
        return plan

    def _note_seen(
        self, plan: _PagePlan, run_id: str, stream: str, attempt_n: int, page_no: int, page: Any,
        object_type: str | None, ids: _RecordIds,
    ) -> None:
        """For a full resync: which of the page's ids must be remembered as seen (see ``_sweep``).

        Written records carry this run's id already; what the page kept unchanged, and the malformed
        records it skipped (they still exist at the vendor), go into a ``sync_seen`` record written
        with the page. A skipped record without an id could be any stored record: the stream is then
        not swept.
        """
        seen = list(plan.kept)
        for source_id, reason in page.skipped:
            if source_id is None or object_type is None:
                plan.sweep_blocked = (f"a malformed record without an id was skipped ({str(reason)[:200]}); "
                                      "vanished records stay until a full resync without such records")
                continue
            is_doc = object_type in DOCUMENT_TYPES
            seen.append(ids("doc" if is_doc else "crm", object_type, str(source_id)))
        if seen:
            plan.seen = {"id": f"{run_id}:{stream}:{attempt_n:03d}:{page_no:06d}", "tenantId": plan.tenant_id,
                         "runId": run_id, "stream": stream, "ids": seen}

    def _apply_page(self, plan: _PagePlan) -> None:
        """Write a page's changed records and deletions (on the writer thread when writes overlap)."""
        for container, changed, existing, gone in plan.steps:
            if changed:
                self._write(container, changed, existing)
            for doc_id in gone:
                try:
                    self.store.delete(container, plan.tenant_id, doc_id)
                except NotFound:
                    pass
        if plan.seen is not None:
            # Before the cursor moves past this page: a resumed attempt never re-reads it.
            self.store.upsert(SEEN, plan.seen)

    def _page_done(
        self, plan: _PagePlan, stream: str, page: Any
    ) -> tuple[dict[str, int], list[dict[str, Any]]]:
        """After the page's writes are committed: announce changed documents and count."""
        written = deleted = 0
        for container, changed, _existing, gone in plan.steps:
            written += len(changed)
            deleted += len(gone)
            if container == DOCUMENTS and (changed or gone):
                # After the write, so the embedding pipeline never sees a change it cannot read yet.
                self.on_document_changed(plan.tenant_id, [
                    *((d["id"], "upsert", d.get("source"), d.get("project")) for d in changed),
                    *((doc_id, "delete", None, None) for doc_id in gone),
                ])
        samples = [{"stream": stream, "sourceId": sid, "reason": str(reason)[:300]} for sid, reason in page.skipped]
        counts = {"read": len(page.records) + len(page.skipped), "written": written, "unchanged": plan.unchanged,
                  "deleted": deleted, "skipped": len(page.skipped)}
        return counts, samples[:MAX_SKIPPED_SAMPLES]

    def _existing(self, container: str, tenant_id: str, ids: list[str]) -> dict[str, tuple[Any, ...]]:
        """id -> ``COMPARED_FIELDS`` values of those of a page's records that are already stored.

        With a store that reads back single fields this is one query per page and no body is
        parsed; otherwise one query per 500 ids for the whole documents.
        """
        fields = COMPARED_FIELDS[container]
        if self._existing_fields is not None:
            return self._existing_fields(container, tenant_id, ids, fields)
        out: dict[str, tuple[Any, ...]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for d in self.store.query(container, tenant_id, [Cond("id", "in", chunk)]):
                out[d["id"]] = tuple(d.get(f) for f in fields)
        return out

    def _write(self, container: str, docs: list[Doc], existing: Mapping[str, Any]) -> None:
        """Store a page's changed records in as few transactions as the store allows.

        New records go in one ``create_many`` batch; if a concurrent writer created one of them
        first the batch is refused whole (``Conflict``) and everything falls back to upserts.
        Changed records go in one ``upsert_many`` batch when the store has one.
        """
        new = [d for d in docs if d["id"] not in existing]
        old = [d for d in docs if d["id"] in existing]
        if new:
            try:
                self.store.create_many(container, new)
            except Conflict:
                old += new
        if not old:
            return
        if self._upsert_many is not None:
            self._upsert_many(container, old)
            return
        for d in old:
            self.store.upsert(container, d)

    # full resync: mark and sweep ------------------------------------------------------------
    def _sweep(
        self, run_id: str, conn: Doc, stream_names: list[str], should_cancel: Callable[[], bool] | None,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        """Delete the records of the resynced streams that the complete full read did not see.

        Seen means: written by this run (the record's ``runId`` is this run's), found unchanged by it
        (its id is in one of the run's ``sync_seen`` records), or skipped as malformed (it exists at
        the vendor). Records another run wrote after this one started are kept too. Deletes follow
        vendor delete events: removed from the store, documents announced to the embedding pipeline
        as ``delete``. Counted on the run (``swept``, included in ``deleted``) and audited.

        Called only after every stream was read to its last page; a run that fails or is cancelled
        before that deletes nothing. A stream marked ``sweepBlocked`` is left as it is.
        """
        tenant_id, connection_id = conn["tenantId"], conn["id"]
        run = self.get_run(tenant_id, run_id)
        if run["status"] != RUNNING or (should_cancel is not None and should_cancel()):
            raise RunCancelled()
        seen: dict[str, set[str]] = {}
        for rec in self._seen_records(tenant_id, run_id):
            seen.setdefault(rec["stream"], set()).update(rec.get("ids") or ())
        started = run.get("startedAt") or run["queuedAt"]
        swept: dict[str, int] = {}
        blocked: dict[str, str] = {}
        samples: list[str] = []
        for name in stream_names:
            stats = (run.get("streamStats") or {}).get(name) or {}
            if stats.get("sweepBlocked"):
                blocked[name] = stats["sweepBlocked"]
                continue
            seen_here = seen.get(name, set())
            if not seen_here and not int(stats.get("read") or 0):
                # An empty answer (an emptied export folder, a token that now sees nothing) is far more often
                # a mistake than a vendor that really holds nothing: never wipe a stream on that alone.
                blocked[name] = ("the source returned no records for this stream, so nothing was removed; "
                                 "if they really are all gone, pause the connection and remove it")
                continue
            removed = 0
            for container in (CRM, DOCUMENTS):
                gone = self._vanished(container, tenant_id, connection_id, name, run_id, seen_here, started)
                vanished = list(gone)
                for start in range(0, len(vanished), SWEEP_DELETE_BATCH):
                    batch = vanished[start:start + SWEEP_DELETE_BATCH]
                    removed += self._delete_ids(container, tenant_id, batch)
                    if container == DOCUMENTS:
                        # After the delete, as for vendor delete events: the pipeline drops their chunks.
                        self.on_document_changed(tenant_id, [(doc_id, "delete", None, None) for doc_id in batch])
                    if heartbeat is not None:
                        # A large sweep outlasts the queue lease; it is still making progress.
                        heartbeat(f"removing records no longer at the vendor: {name}, {removed} so far")
                room = MAX_SWEEP_SAMPLES - len(samples)
                samples += [gone[i] for i in vanished[:max(room, 0)]]
            swept[name] = removed
        total = sum(swept.values())
        at = clock.iso(self.now())

        def change(doc: Doc | None) -> Doc:
            if doc is None:
                raise NotFound(f"sync run {run_id} not found")
            # Added, not set: an attempt that died mid-sweep left part of it done, and the retry sweeps the rest.
            doc["swept"] = int(doc.get("swept") or 0) + total
            doc["deleted"] = int(doc.get("deleted") or 0) + total
            for name, n in swept.items():
                entry = doc.setdefault("streamStats", {}).setdefault(name, {})
                entry["swept"] = int(entry.get("swept") or 0) + n
            doc["sweep"] = {"at": at, "streams": swept, "notSwept": blocked}
            return doc

        self.store.update(RUNS, tenant_id, run_id, change)
        trigger = run.get("trigger") or {}
        who = trigger.get("actor") or trigger.get("type") or "the system"
        why = trigger.get("reason") or "no reason given"
        self.audit.record(
            SYSTEM, tenant_id, "integration.full_resync_sweep", f"connection:{connection_id}",
            f"full resync {run_id} requested by {who} ({why}): removed {total} record(s) no longer at the vendor",
            after={"runId": run_id, "deleted": total, "streams": swept, "notSwept": blocked,
                   "sampleSourceIds": samples},
        )

    def _seen_records(self, tenant_id: str, run_id: str) -> list[Doc]:
        """The run's ``sync_seen`` records, by id prefix (a primary-key range in both backends)."""
        prefix = f"{run_id}:"
        return self.store.query(SEEN, tenant_id, [Cond("id", ">=", prefix), Cond("id", "<", prefix + "\U0010ffff")])

    def _drop_seen(self, tenant_id: str, run_id: str) -> None:
        """A finished run's ``sync_seen`` records are of no further use."""
        ids = [d["id"] for d in self._seen_records(tenant_id, run_id)]
        if ids:
            self._delete_ids(SEEN, tenant_id, ids)

    def _vanished(
        self, container: str, tenant_id: str, connection_id: str, stream: str, run_id: str, seen: set[str],
        started: str,
    ) -> dict[str, str]:
        """id -> sourceId of the stream's stored records that this run neither wrote nor saw, and that no
        other run wrote after this one started.

        With a store that reads single fields, the ids come from the (connectionId, stream, runId)
        index and only the unseen ones are read further; otherwise one query returns the records.
        """
        where = [Cond("connectionId", "=", connection_id), Cond("stream", "=", stream), Cond("runId", "!=", run_id)]
        if self._query_fields is not None and self._existing_fields is not None:
            unseen = [i for i in self._query_fields(container, tenant_id, where, ()) if i not in seen]
            found = self._existing_fields(container, tenant_id, unseen, ("sourceId", "syncedAt")) if unseen else {}
        else:
            found = {d["id"]: (d.get("sourceId"), d.get("syncedAt"))
                     for d in self.store.query(container, tenant_id, where) if d["id"] not in seen}
        return {i: str(source_id) for i, (source_id, synced_at) in found.items()
                if synced_at is None or synced_at < started}

    def _delete_ids(self, container: str, tenant_id: str, ids: Sequence[str]) -> int:
        if self._delete_many is not None:
            return self._delete_many(container, tenant_id, ids)
        n = 0
        for doc_id in ids:
            try:
                self.store.delete(container, tenant_id, doc_id)
                n += 1
            except NotFound:
                pass
        return n

    # finishing ---------------------------------------------------------------------------
    def _finish_without_running(self, run: Doc, attempts: list[dict[str, Any]], status: str, reason: str) -> Doc:
        at = clock.iso(self.now())
        return self._update_run(run["tenantId"], run["id"], status=status, attempts=attempts, finishedAt=at,
                                error=reason, errorType=None, progress=reason, durationMs=0)

    def _finish(
        self,
        run_id: str,
        conn: Doc,
        attempt: dict[str, Any],
        error: BaseException | None,
        cancelled: bool,
        token: dict[str, Any] | None,
        final_attempt: bool,
    ) -> Doc:
        tenant_id = conn["tenantId"]
        now = self.now()
        at = clock.iso(now)
        kind = error_kind(error) if error is not None else None
        message = error_text(error) if error is not None else None
        retry_after = error.retry_after if isinstance(error, RateLimited) else None
        will_retry = error is not None and kind in RETRYABLE_KINDS and not final_attempt

        already_final: list[bool] = []

        def change_run(doc: Doc | None) -> Doc | None:
            if doc is None:
                raise NotFound(f"sync run {run_id} not found")
            if doc["status"] in FINAL_STATES:
                # Cancelled by an operator (or failed by the stale sweep) while a page was stored;
                # that path already recorded the outcome and its rollup.
                already_final.append(True)
                return None
            skipped = int(doc.get("skipped") or 0)
            if cancelled:
                status = CANCELLED
            elif error is not None:
                status = QUEUED if will_retry else FAILED
            else:
                status = PARTIAL if skipped else SUCCEEDED
            last = doc["attempts"][-1]
            last.update(status=FAILED if error is not None else (CANCELLED if cancelled else status),
                        finishedAt=at, error=message, errorType=kind)
            if retry_after is not None:
                last["retryAfter"] = retry_after
            started = clock.parse(doc["startedAt"])
            doc.update(
                status=status,
                error=message if error is not None else ("cancelled by an operator" if cancelled else None),
                errorType=kind,
                heartbeatAt=at,
                progress={QUEUED: f"attempt {last['n']} failed; retrying", RUNNING: "running"}.get(status, status),
            )
            if status in FINAL_STATES:
                doc.update(finishedAt=at, durationMs=int((now - started).total_seconds() * 1000), progressFraction=1.0)
            return doc

        run = self.store.update(RUNS, tenant_id, run_id, change_run)
        assert run is not None
        if already_final:
            self._release_connection(conn, run_id)
            if run.get("full"):
                self._drop_seen(tenant_id, run_id)
            return run
        status = run["status"]
        self._update_connection_after(conn, run, token, kind, message, at)
        if status in FINAL_STATES:
            self._roll_up(conn, run)
            if run.get("full"):
                self._drop_seen(tenant_id, run_id)
        return run

    def _update_connection_after(
        self, conn: Doc, run: Doc, token: dict[str, Any] | None, kind: str | None, message: str | None, at: str
    ) -> None:
        status = run["status"]
        now = self.now()
        paused_now: dict[str, Any] = {}

        def change(doc: Doc | None) -> Doc | None:
            if doc is None:
                return None
            if doc.get("activeRunId") == run["id"]:
                doc["activeRunId"] = None
            doc["lastRunStatus"] = status
            doc["lastRunAt"] = at
            doc["lastAttemptAt"] = at
            if token is not None:
                doc["token"] = token_record(token, doc.get("token"))
            if status in (SUCCEEDED, PARTIAL):
                doc.update(lastSuccessAt=at, consecutiveFailures=0, failingSince=None, lastError=None,
                           lastErrorType=None)
                if status == PARTIAL:
                    doc.update(lastError=f"{run.get('skipped', 0)} malformed record(s) skipped", lastErrorType="data")
                doc["recordsSynced"] = int(doc.get("recordsSynced") or 0) + int(run.get("written") or 0)
                # A successful run (scheduled, user or webhook) counts as this interval's sync.
                interval = float((doc.get("schedule") or {}).get("intervalSeconds") or 3600.0)
                doc["nextDueAt"] = max(doc.get("nextDueAt") or "", clock.iso(now + timedelta(seconds=interval)))
            elif status == FAILED:
                doc["consecutiveFailures"] = int(doc.get("consecutiveFailures") or 0) + 1
                doc["failingSince"] = doc.get("failingSince") or at
                doc.update(lastError=message, lastErrorType=kind)
                reason = self._pause_reason(doc, now)
                if reason and doc.get("status") != "paused":
                    doc.update(status="paused", pausedAt=at, pausedReason=reason, pausedBy="auto-pause")
                    paused_now["reason"] = reason
            elif status == QUEUED:
                # A retry is coming: show the error without counting the run as failed yet.
                doc.update(lastAttemptError=message, lastAttemptErrorType=kind)
            if status in FINAL_STATES:
                doc["lastRunFinishedAt"] = at
            return doc

        self.store.update(CONNECTIONS, conn["tenantId"], conn["id"], change)
        if paused_now:
            self._raise_alert(conn, paused_now["reason"], at)

    def _release_connection(self, conn: Doc, run_id: str) -> None:
        def change(doc: Doc | None) -> Doc | None:
            if doc is None or doc.get("activeRunId") != run_id:
                return None
            doc["activeRunId"] = None
            return doc

        self.store.update(CONNECTIONS, conn["tenantId"], conn["id"], change)

    def _pause_reason(self, doc: Doc, now: datetime) -> str | None:
        failures = int(doc.get("consecutiveFailures") or 0)
        since = doc.get("failingSince")
        if failures >= self.auto_pause.max_failures:
            return f"auto-paused after {failures} failed runs in a row (last: {doc.get('lastError')})"
        if since and now - clock.parse(since) >= timedelta(days=self.auto_pause.max_days) and failures >= 2:
            return (f"auto-paused after failing for {self.auto_pause.max_days:g} days "
                    f"({failures} failed runs in a row; last: {doc.get('lastError')})")
        return None

    def _raise_alert(self, conn: Doc, reason: str, at: str) -> None:
        """Record the auto-pause where people look: the audit log, and the alerting hook.

        The alert itself is opened by the alert evaluator from the ``connectors_attention`` fact
        (``IntegrationsService.attention_facts``), which de-duplicates and notifies; the hook lets
        the composition root evaluate at once instead of on the next cycle.
        """
        self.audit.record(SYSTEM, conn["tenantId"], "integration.auto_pause", f"connection:{conn['id']}", reason,
                          after={"status": "paused", "pausedAt": at})
        if self.on_auto_pause is not None:
            self.on_auto_pause(conn, reason)

    def _roll_up(self, conn: Doc, run: Doc) -> None:
        day = day_of(run["finishedAt"])
        status = run["status"]
        deltas: dict[str, float] = {
            "runs": 1,
            "succeeded": 1 if status == SUCCEEDED else 0,
            "partial": 1 if status == PARTIAL else 0,
            "failed": 1 if status == FAILED else 0,
            "cancelled": 1 if status == CANCELLED else 0,
            "read": int(run.get("read") or 0),
            "written": int(run.get("written") or 0),
            "skipped": int(run.get("skipped") or 0),
            "durationMs": int(run.get("durationMs") or 0),
        }
        base = {"kind": ROLLUP_KIND, "bucket": day, "connectionId": conn["id"], "provider": conn["provider"]}
        self.store.increment(ROLLUPS, conn["tenantId"], rollup_id(conn["id"], day), deltas, base=base)

    # housekeeping ------------------------------------------------------------------------
    def cancel_run(self, tenant_id: str, run_id: str, reason: str) -> Doc:
        """Mark a queued or running run cancelled; a running one stops after its current page."""
        at = clock.iso(self.now())

        def change(doc: Doc | None) -> Doc:
            if doc is None:
                raise NotFound(f"sync run {run_id} not found")
            if doc["status"] not in OPEN_STATES:
                raise Invalid(f"run {run_id} is already {doc['status']}")
            doc.update(status=CANCELLED, finishedAt=at, error=f"cancelled: {reason}", progress="cancelled")
            if doc.get("attempts") and doc["attempts"][-1].get("status") == RUNNING:
                doc["attempts"][-1].update(status=CANCELLED, finishedAt=at)
            started = doc.get("startedAt") or doc["queuedAt"]
            doc["durationMs"] = int((self.now() - clock.parse(started)).total_seconds() * 1000)
            return doc

        run = self.store.update(RUNS, tenant_id, run_id, change)
        assert run is not None
        conn = self.store.get_or_none(CONNECTIONS, tenant_id, run["connectionId"])
        if conn is not None:
            self._update_connection_after(conn, run, None, None, None, at)
            self._roll_up(conn, run)
        if run.get("full"):
            # A running attempt may still store a page (and its seen ids) before it notices; what it
            # leaves is dropped when that attempt finishes (``_finish``).
            self._drop_seen(tenant_id, run_id)
        return run

    def fail_stale_runs(self, older_than_seconds: float | None = None) -> list[Doc]:
        """Fail runs whose worker stopped heart-beating and whose queue item will not come back.

        The queue re-delivers an item whose lease expired (``execute`` then closes the dead
        attempt and resumes); this sweep covers runs left ``running`` after their item was
        dead-lettered or lost, so nothing shows as running forever.
        """
        limit = older_than_seconds if older_than_seconds is not None else self.stale_after_seconds
        cutoff = clock.iso(self.now() - timedelta(seconds=limit))
        out = []
        for run in self.store.query(RUNS, None, [Cond("status", "=", RUNNING)], limit=1000):
            if (run.get("heartbeatAt") or run["queuedAt"]) >= cutoff:
                continue
            conn = self.store.get_or_none(CONNECTIONS, run["tenantId"], run["connectionId"])
            if conn is None:
                continue
            attempt = (run.get("attempts") or [{}])[-1]
            err = Stalled(f"the worker stopped heart-beating at {run.get('heartbeatAt')}; the run was abandoned")
            out.append(self._finish(run["id"], conn, attempt, err, False, None, True))
        return out


class Stalled(ConnectorError):
    """A run whose worker vanished: retried like a transient failure, shown as 'stalled'."""

    kind = "stalled"


def token_record(info: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    """Connector ``token_info()`` -> the connection's ``token`` record the health model reads."""
    refresh_expires = None
    issued = info.get("refresh_token_issued_at")
    lifetime = info.get("refresh_token_lifetime_days")
    if issued and lifetime:
        refresh_expires = clock.iso(_parse_any(issued) + timedelta(days=float(lifetime)))
    return {
        "auth": info.get("auth"),
        "accessExpiresAt": _iso_or_none(info.get("access_token_expires_at")),
        "refreshIssuedAt": _iso_or_none(issued),
        "refreshLifetimeDays": lifetime,
        "refreshExpiresAt": refresh_expires,
        "lastRefreshAt": _iso_or_none(info.get("last_refresh_at")) or (previous or {}).get("lastRefreshAt"),
        "lastRefreshError": info.get("last_refresh_error"),
    }


def _parse_any(value: Any) -> datetime:
    """Connectors report ISO strings in a few shapes (with or without microseconds, 'Z' or offset)."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, int | float):
        return datetime.fromtimestamp(float(value), tz=clock.now().tzinfo)
    text = str(value).replace("Z", "+00:00")
    return datetime.fromisoformat(text)


def _iso_or_none(value: Any) -> str | None:
    return clock.iso(_parse_any(value)) if value else None


