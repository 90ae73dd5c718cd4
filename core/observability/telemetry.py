"""Service telemetry: latency and outcome of every call, rolled up per operation, tenant and minute/hour/day.

The hot path (``Recorder.record`` and ``timed``) only adds to in-memory accumulators under a
lock; a background thread (or an explicit ``flush()``) merges them into rollup documents in the
``telemetry`` container with etag-checked read-modify-write, so many web and worker processes
can add to one rollup. Each rollup keeps count, errors, rejections, the sum/min/max of the
latency, a fixed log-scale histogram (see ``histogram``) for p50/p95/p99, request units
(Cosmos DB), tokens per model (LLM and embedding calls) and the few slowest samples with their
detail, which is what the Telemetry screen and the alert rules read. Raw samples are not kept.

Kinds of operation: ``service`` (core service calls), ``page`` (page renders), ``store``
(document store calls), ``vector`` (vector searches), ``llm`` and ``embedding`` (model calls).
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from core import clock
from core.adapters.store import PLATFORM, Cond, Doc, DocumentStore
from core.errors import Conflict, Forbidden, Invalid, NotFound, QuotaExceeded, StoreUnavailable
from core.observability import histogram
from core.observability.logging import get_correlation_id

log = logging.getLogger(__name__)

CONTAINER = "telemetry"
Kind = Literal["service", "page", "store", "vector", "llm", "embedding"]
KINDS: tuple[str, ...] = ("service", "page", "store", "vector", "llm", "embedding")
Grain = Literal["minute", "hour", "day", "month"]
GRAINS: tuple[str, ...] = ("minute", "hour", "day", "month")
# How long each grain is kept by ``prune`` (days); day rollups carry the cost trend, month ones the totals.
RETENTION_DAYS: dict[str, int] = {"minute": 3, "hour": 90, "day": 800, "month": 3650}
# Errors that are the caller's fault (bad input, not found, not allowed, over quota) are counted
# as rejections, not errors: they must not page ops through the error-rate rule.
REJECTIONS: tuple[type[BaseException], ...] = (Invalid, NotFound, Forbidden, Conflict, QuotaExceeded)
SLOWEST_KEPT = 5
_OP_RE = re.compile(r"[^A-Za-z0-9_.:\-]")

F = TypeVar("F", bound=Callable[..., Any])


def clean_operation(name: str) -> str:
    """Operation names become document ids: keep them to a safe alphabet and a sane length."""
    name = _OP_RE.sub("_", name.strip())[:120]
    if not name:
        raise Invalid("an operation name is required, e.g. 'integrations.resync'")
    return name


def bucket_start(at: datetime, grain: str) -> datetime:
    at = at.astimezone(UTC)
    if grain == "minute":
        return at.replace(second=0, microsecond=0)
    if grain == "hour":
        return at.replace(minute=0, second=0, microsecond=0)
    if grain == "day":
        return at.replace(hour=0, minute=0, second=0, microsecond=0)
    if grain == "month":
        return at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    raise Invalid(f"unknown grain {grain!r}; use one of {GRAINS}")


def rollup_id(grain: str, kind: str, operation: str, bucket: str) -> str:
    return f"{grain}|{kind}|{operation}|{bucket}"


@dataclass
class Accumulator:
    """In-memory (and merge-on-write) sums for one rollup document."""

    count: int = 0
    errors: int = 0
    rejected: int = 0
    sum_ms: float = 0.0
    min_ms: float | None = None
    max_ms: float | None = None
    hist: dict[str, int] = field(default_factory=dict)
    ru: float = 0.0
    error_kinds: dict[str, int] = field(default_factory=dict)
    models: dict[str, dict[str, float]] = field(default_factory=dict)
    slowest: list[dict[str, Any]] = field(default_factory=list)

    def add(
        self,
        ms: float,
        outcome: str,
        error_kind: str | None,
        ru: float | None,
        model: str | None,
        tokens_in: int,
        tokens_out: int,
        sample: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.count += 1
        if outcome == "error":
            self.errors += 1
        elif outcome == "rejected":
            self.rejected += 1
        if error_kind:
            self.error_kinds[error_kind] = self.error_kinds.get(error_kind, 0) + 1
        self.sum_ms += ms
        self.min_ms = ms if self.min_ms is None else min(self.min_ms, ms)
        self.max_ms = ms if self.max_ms is None else max(self.max_ms, ms)
        histogram.add(self.hist, ms)
        if ru:
            self.ru += ru
        if model:
            m = self.models.setdefault(model, {"calls": 0.0, "tokensIn": 0.0, "tokensOut": 0.0, "errors": 0.0})
            m["calls"] += 1
            m["tokensIn"] += tokens_in
            m["tokensOut"] += tokens_out
            if outcome == "error":
                m["errors"] += 1
        # The sample dict is built only when it would make the top few (keeps the hot path cheap).
        if sample is not None and (len(self.slowest) < SLOWEST_KEPT or ms > self.slowest[-1]["ms"]):
            self.slowest.append(sample())
            self.slowest.sort(key=lambda s: -s["ms"])
            del self.slowest[SLOWEST_KEPT:]

    def merge(self, other: Accumulator) -> None:
        self.count += other.count
        self.errors += other.errors
        self.rejected += other.rejected
        self.sum_ms += other.sum_ms
        for attr, pick in (("min_ms", min), ("max_ms", max)):
            mine, theirs = getattr(self, attr), getattr(other, attr)
            setattr(self, attr, theirs if mine is None else mine if theirs is None else pick(mine, theirs))
        histogram.merge(self.hist, other.hist)
        self.ru += other.ru
        for k, v in other.error_kinds.items():
            self.error_kinds[k] = self.error_kinds.get(k, 0) + v
        for name, m in other.models.items():
            mine_m = self.models.setdefault(name, {"calls": 0.0, "tokensIn": 0.0, "tokensOut": 0.0, "errors": 0.0})
            for field_name, amount in m.items():
                mine_m[field_name] = mine_m.get(field_name, 0.0) + amount
        self.slowest = sorted(self.slowest + other.slowest, key=lambda s: -s["ms"])[:SLOWEST_KEPT]

    def apply_to(self, doc: Doc) -> Doc:
        """Add this accumulator into a stored rollup document (the read-modify-write step)."""
        doc["count"] = doc.get("count", 0) + self.count
        doc["errors"] = doc.get("errors", 0) + self.errors
        doc["rejected"] = doc.get("rejected", 0) + self.rejected
        doc["sumMs"] = doc.get("sumMs", 0.0) + self.sum_ms
        if self.min_ms is not None:
            doc["minMs"] = self.min_ms if doc.get("minMs") is None else min(doc["minMs"], self.min_ms)
        if self.max_ms is not None:
            doc["maxMs"] = self.max_ms if doc.get("maxMs") is None else max(doc["maxMs"], self.max_ms)
        doc["hist"] = histogram.merge(dict(doc.get("hist") or {}), self.hist)
        if self.ru:
            doc["ru"] = doc.get("ru", 0.0) + self.ru
        if self.error_kinds:
            kinds = dict(doc.get("errorKinds") or {})
            for k, v in self.error_kinds.items():
                kinds[k] = kinds.get(k, 0) + v
            doc["errorKinds"] = kinds
        if self.models:
            models: dict[str, dict[str, float]] = {k: dict(v) for k, v in (doc.get("models") or {}).items()}
            for name, m in self.models.items():
                into = models.setdefault(name, {})
                for field_name, amount in m.items():
                    into[field_name] = into.get(field_name, 0.0) + amount
            doc["models"] = models
        if self.slowest:
            doc["slowest"] = sorted(list(doc.get("slowest") or []) + self.slowest, key=lambda s: -s["ms"])[
                :SLOWEST_KEPT
            ]
        return doc


_Pending = tuple[Doc, Accumulator]


def derive_bucket(minute_bucket: str, grain: str) -> str:
    """The ``grain`` bucket holding a minute bucket, by slicing the fixed-width ISO string."""
    if grain == "minute":
        return minute_bucket
    if grain == "hour":
        return minute_bucket[:14] + "00:00.000000Z"
    if grain == "day":
        return minute_bucket[:11] + "00:00:00.000000Z"
    if grain == "month":
        return minute_bucket[:8] + "01T00:00:00.000000Z"
    raise Invalid(f"unknown grain {grain!r}; use one of {GRAINS}")


class Recorder:
    """Buffers call outcomes in memory and flushes them as rollups; never raises on the hot path.

    The hot path adds to one per-minute accumulator per (tenant, kind, operation); flushing
    merges those into the minute, hour, day and month rollups it writes. ``store`` must be the
    raw store (not an instrumented one), or flushing would record itself. If a flush fails
    (store down), the unwritten rollups stay pending and are retried next time; past
    ``max_pending`` entries the oldest are dropped and counted in ``dropped``.
    """

    def __init__(
        self,
        store: DocumentStore,
        *,
        flush_seconds: float = 10.0,
        max_pending: int = 20_000,
        grains: Sequence[str] = GRAINS,
        now: Callable[[], datetime] = clock.now,
        auto_flush: bool = False,
    ) -> None:
        for g in grains:
            if g not in GRAINS:
                raise Invalid(f"unknown grain {g!r}; use one of {GRAINS}")
        self.store = store
        self.flush_seconds = flush_seconds
        self.max_pending = max_pending
        self.grains = tuple(grains)
        self._now = now
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        # hot buffer: (tenant, kind, operation, minute bucket) -> accumulator
        self._minutes: dict[tuple[str, str, str, str], Accumulator] = {}
        # rollups a failed flush could not write: (tenant, doc id) -> (fields for a new doc, accumulator)
        self._pending: dict[tuple[str, str], tuple[Doc, Accumulator]] = {}
        self._minute_cache: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # auto_flush: the first record after ``flush_seconds`` starts a short-lived flushing thread,
        # so a process needs no permanent background thread and the caller never waits for I/O.
        self.auto_flush = auto_flush
        self._last_flush = time.monotonic()
        self._flushing = threading.Event()
        self.dropped = 0
        self._next_drop_warning = 1
        self.flush_failures = 0
        self.last_flush_error: str | None = None

    # hot path ------------------------------------------------------------------------------
    def _minute(self, at: datetime) -> str:
        minute = int(at.timestamp() // 60)
        cached = self._minute_cache.get(minute)
        if cached is None:
            cached = clock.iso(bucket_start(at, "minute"))
            if len(self._minute_cache) > 512:
                self._minute_cache.clear()
            self._minute_cache[minute] = cached
        return cached

    def record(
        self,
        operation: str,
        duration_ms: float,
        *,
        tenant_id: str | None = None,
        kind: str = "service",
        outcome: str = "ok",
        error_kind: str | None = None,
        ru: float | None = None,
        model: str | None = None,
        tokens_in: int = 0,
        tokens_out: int = 0,
        detail: str | None = None,
        at: datetime | None = None,
    ) -> None:
        """Add one call to the in-memory rollups (no store I/O)."""
        try:
            if kind not in KINDS:
                raise Invalid(f"unknown telemetry kind {kind!r}; use one of {KINDS}")
            op = clean_operation(operation)
            at = at or self._now()
            ms = max(0.0, float(duration_ms))

            def sample() -> dict[str, Any]:
                s: dict[str, Any] = {"ms": round(ms, 3), "at": clock.iso(at), "outcome": outcome}
                if detail:
                    s["detail"] = detail[:300]
                cid = get_correlation_id()
                if cid:
                    s["correlationId"] = cid
                return s

            key = (tenant_id or PLATFORM, kind, op, self._minute(at))
            with self._lock:
                acc = self._minutes.get(key)
                if acc is None:
                    acc = self._minutes[key] = Accumulator()
                    if len(self._minutes) + len(self._pending) > self.max_pending:
                        self._drop_oldest()
                acc.add(ms, outcome, error_kind, ru, model, tokens_in, tokens_out, sample)
            due = time.monotonic() - self._last_flush >= self.flush_seconds
            if self.auto_flush and due and not self._flushing.is_set():
                self._flushing.set()
                threading.Thread(target=self._flush_in_background, name="telemetry-flush", daemon=True).start()
        except Exception:  # telemetry must never break the call it measures
            log.exception("telemetry record failed for %s", operation)

    def _drop_oldest(self) -> None:
        """Called with the lock held: forget the oldest minutes (then pending rollups) over the cap."""
        excess = len(self._minutes) + len(self._pending) - self.max_pending
        for pkey in sorted(self._pending, key=lambda k: self._pending[k][0]["bucket"])[:excess]:
            self.dropped += self._pending.pop(pkey)[1].count
            excess -= 1
        for mkey in sorted(self._minutes, key=lambda k: k[3])[:max(0, excess)]:
            self.dropped += self._minutes.pop(mkey).count
        if self.dropped >= self._next_drop_warning:  # warn at 1, 10, 100, ... dropped calls, not on every call
            self._next_drop_warning = max(1, self.dropped) * 10
            log.warning(
                "telemetry buffer over %d rollups; dropped the oldest (%d calls so far)", self.max_pending, self.dropped
            )

    # flushing ------------------------------------------------------------------------------
    def pending(self) -> int:
        with self._lock:
            return len(self._minutes) + len(self._pending)

    def _expand(self, minutes: dict[tuple[str, str, str, str], Accumulator]) -> dict[tuple[str, str], _Pending]:
        """Minute accumulators -> one accumulator per rollup document of every configured grain."""
        docs: dict[tuple[str, str], _Pending] = {}
        for (tenant, kind, op, minute), acc in minutes.items():
            for grain in self.grains:
                bucket = derive_bucket(minute, grain)
                key = (tenant, rollup_id(grain, kind, op, bucket))
                entry = docs.get(key)
                if entry is None:
                    entry = docs[key] = ({"kind": kind, "operation": op, "grain": grain, "bucket": bucket},
                                         Accumulator())
                entry[1].merge(acc)
        return docs

    def flush(self) -> int:
        """Write buffered rollups to the store; returns how many rollup documents were written.

        Unwritten rollups (store down, or a conflict storm) stay pending, merged with whatever
        arrives meanwhile, so no count is lost or counted twice.
        """
        with self._flush_lock:
            self._last_flush = time.monotonic()
            with self._lock:
                minutes, self._minutes = self._minutes, {}
                batch, self._pending = self._pending, {}
            for key, (meta, acc) in self._expand(minutes).items():
                if key in batch:
                    batch[key][1].merge(acc)
                else:
                    batch[key] = (meta, acc)
            written = 0
            failed: dict[tuple[str, str], tuple[Doc, Accumulator]] = {}
            error: str | None = None
            for (tenant, doc_id), (meta, acc) in batch.items():
                if error is not None:
                    failed[(tenant, doc_id)] = (meta, acc)
                    continue
                stamp = clock.iso(self._now())

                def change(doc: Doc | None, meta: Doc = meta, acc: Accumulator = acc, stamp: str = stamp) -> Doc:
                    doc = doc if doc is not None else dict(meta)
                    acc.apply_to(doc)
                    doc["updatedAt"] = stamp
                    return doc

                try:
                    self.store.update(CONTAINER, tenant, doc_id, change)
                    written += 1
                except (StoreUnavailable, Conflict) as e:
                    # Stop at the first store failure: the rest would fail the same way.
                    error = e.message
                    failed[(tenant, doc_id)] = (meta, acc)
                except Exception as e:
                    error = f"{type(e).__name__}: {e}"
                    failed[(tenant, doc_id)] = (meta, acc)
            if failed:
                self.flush_failures += 1
                self.last_flush_error = error
                log.warning("telemetry flush kept %d rollups for later: %s", len(failed), error)
                with self._lock:
                    for key, (meta, acc) in failed.items():
                        current = self._pending.get(key)
                        if current is not None:
                            acc.merge(current[1])
                        self._pending[key] = (meta, acc)
                    if len(self._minutes) + len(self._pending) > self.max_pending:
                        self._drop_oldest()
            else:
                self.last_flush_error = None
            return written

    def _flush_in_background(self) -> None:
        try:
            self.flush()
        except Exception:
            log.exception("telemetry flush failed")
        finally:
            self._flushing.clear()

    def start(self) -> None:
        """Flush every ``flush_seconds`` in a daemon thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="telemetry-flush", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            try:
                self.flush()
            except Exception:
                log.exception("telemetry flush failed")

    def stop(self, flush: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, self.flush_seconds))
            self._thread = None
        if flush:
            self.flush()


# the process-wide recorder ------------------------------------------------------------------
_installed: Recorder | None = None


def install(recorder: Recorder | None) -> Recorder | None:
    """Make ``recorder`` the one ``timed`` uses by default (the composition root calls this)."""
    global _installed
    previous, _installed = _installed, recorder
    return previous


def current_recorder() -> Recorder | None:
    return _installed


class Timing:
    """What ``timed`` yields: set ``ru``, ``model``, tokens or ``detail``; ``fail()`` marks a failure."""

    def __init__(self, operation: str, tenant_id: str | None, kind: str, detail: str | None) -> None:
        self.operation = operation
        self.tenant_id = tenant_id
        self.kind = kind
        self.detail = detail
        self.ru: float | None = None
        self.model: str | None = None
        self.tokens_in = 0
        self.tokens_out = 0
        self.outcome = "ok"
        self.error_kind: str | None = None
        self.started = 0.0
        self.elapsed_ms = 0.0

    def fail(self, error_kind: str = "error", rejected: bool = False) -> None:
        self.outcome = "rejected" if rejected else "error"
        self.error_kind = error_kind


def outcome_of(exc: BaseException) -> str:
    return "rejected" if isinstance(exc, REJECTIONS) else "error"


class timed:  # noqa: N801 - used like a function: ``with timed(...)`` / ``@timed(...)``
    """Time a block or a function and record it; as a decorator, ``tenant_id`` defaults to the call's.

    ``with timed("vector.search", tenant_id, kind="vector") as t: ...`` or
    ``@timed("integrations.resync")`` on a function with a ``tenant_id`` parameter.
    Exceptions are recorded (errors, or rejections for bad input) and re-raised unchanged.
    """

    def __init__(
        self,
        operation: str,
        tenant_id: str | None = None,
        *,
        kind: str = "service",
        detail: str | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        self.operation = operation
        self.tenant_id = tenant_id
        self.kind = kind
        self.detail = detail
        self.recorder = recorder
        self._stack: list[Timing] = []

    def __enter__(self) -> Timing:
        t = Timing(self.operation, self.tenant_id, self.kind, self.detail)
        self._stack.append(t)
        t.started = time.perf_counter()
        return t

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        t = self._stack.pop()
        t.elapsed_ms = (time.perf_counter() - t.started) * 1000.0
        if exc is not None and t.outcome == "ok":
            t.outcome = outcome_of(exc)
            t.error_kind = type(exc).__name__
        rec = self.recorder or _installed
        if rec is not None:
            rec.record(
                t.operation,
                t.elapsed_ms,
                tenant_id=t.tenant_id,
                kind=t.kind,
                outcome=t.outcome,
                error_kind=t.error_kind,
                ru=t.ru,
                model=t.model,
                tokens_in=t.tokens_in,
                tokens_out=t.tokens_out,
                detail=t.detail,
            )

    def __call__(self, func: F) -> F:
        sig = inspect.signature(func)
        takes_tenant = "tenant_id" in sig.parameters

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            tenant = self.tenant_id
            if tenant is None and takes_tenant:
                try:
                    tenant = sig.bind_partial(*args, **kwargs).arguments.get("tenant_id")
                except TypeError:
                    tenant = None
            with timed(self.operation, tenant, kind=self.kind, detail=self.detail, recorder=self.recorder):
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


# reading rollups -----------------------------------------------------------------------------
@dataclass
class OpStats:
    """Summed rollups of one operation (or any grouping) with derived rates and percentiles."""

    kind: str
    operation: str
    count: int = 0
    errors: int = 0
    rejected: int = 0
    sum_ms: float = 0.0
    min_ms: float | None = None
    max_ms: float | None = None
    hist: dict[str, int] = field(default_factory=dict)
    ru: float = 0.0
    error_kinds: dict[str, int] = field(default_factory=dict)
    models: dict[str, dict[str, float]] = field(default_factory=dict)
    slowest: list[dict[str, Any]] = field(default_factory=list)

    def add_doc(self, doc: Mapping[str, Any]) -> None:
        self.count += int(doc.get("count", 0))
        self.errors += int(doc.get("errors", 0))
        self.rejected += int(doc.get("rejected", 0))
        self.sum_ms += float(doc.get("sumMs", 0.0))
        if doc.get("minMs") is not None:
            self.min_ms = doc["minMs"] if self.min_ms is None else min(self.min_ms, doc["minMs"])
        if doc.get("maxMs") is not None:
            self.max_ms = doc["maxMs"] if self.max_ms is None else max(self.max_ms, doc["maxMs"])
        histogram.merge(self.hist, doc.get("hist") or {})
        self.ru += float(doc.get("ru", 0.0))
        for k, v in (doc.get("errorKinds") or {}).items():
            self.error_kinds[k] = self.error_kinds.get(k, 0) + int(v)
        for name, m in (doc.get("models") or {}).items():
            into = self.models.setdefault(name, {})
            for k, v in m.items():
                into[k] = into.get(k, 0) + v
        slow = doc.get("slowest")
        if slow:
            for s in slow:
                self.slowest.append({**s, "tenantId": doc.get("tenantId"), "operation": doc.get("operation")})
            self.slowest = sorted(self.slowest, key=lambda s: -s["ms"])[:SLOWEST_KEPT]

    def merge(self, other: OpStats) -> None:
        """Add another summary (e.g. one tenant's) into this one."""
        self.count += other.count
        self.errors += other.errors
        self.rejected += other.rejected
        self.sum_ms += other.sum_ms
        if other.min_ms is not None:
            self.min_ms = other.min_ms if self.min_ms is None else min(self.min_ms, other.min_ms)
        if other.max_ms is not None:
            self.max_ms = other.max_ms if self.max_ms is None else max(self.max_ms, other.max_ms)
        histogram.merge(self.hist, other.hist)
        self.ru += other.ru
        for k, v in other.error_kinds.items():
            self.error_kinds[k] = self.error_kinds.get(k, 0) + v
        if other.slowest:
            self.slowest = sorted(self.slowest + other.slowest, key=lambda s: -s["ms"])[:SLOWEST_KEPT]

    @property
    def error_rate(self) -> float:
        return self.errors / self.count if self.count else 0.0

    @property
    def mean_ms(self) -> float | None:
        return self.sum_ms / self.count if self.count else None

    def p(self, q: float) -> float | None:
        return histogram.percentile(self.hist, q, self.min_ms, self.max_ms)


def read_rollups(
    store: DocumentStore,
    tenant_id: str | None,
    *,
    grain: str,
    since: datetime,
    until: datetime | None = None,
    kind: str | None = None,
    operation: str | None = None,
) -> list[Doc]:
    """Rollup documents of one grain whose bucket starts in [since, until); ``tenant_id=None``: all tenants."""
    if grain not in GRAINS:
        raise Invalid(f"unknown grain {grain!r}; use one of {GRAINS}")
    where = [Cond("grain", "=", grain), Cond("bucket", ">=", clock.iso(bucket_start(since, grain)))]
    if until is not None:
        where.append(Cond("bucket", "<", clock.iso(until)))
    if kind is not None:
        where.append(Cond("kind", "=", kind))
    if operation is not None:
        where.append(Cond("operation", "=", operation))
    return store.query(CONTAINER, tenant_id, where, order_by="bucket")


def summarise(docs: Iterable[Mapping[str, Any]], by: Sequence[str] = ("kind", "operation")) -> dict[tuple, OpStats]:
    """Sum rollup documents grouped by the given fields (e.g. ``("kind", "operation")``, ``("tenantId",)``)."""
    out: dict[tuple, OpStats] = {}
    for d in docs:
        key = tuple(d.get(f) for f in by)
        st = out.get(key)
        if st is None:
            st = out[key] = OpStats(kind=str(d.get("kind", "")), operation=str(d.get("operation", "")))
        st.add_doc(d)
    return out


def series(docs: Iterable[Mapping[str, Any]], qs: Sequence[float] = (50, 95, 99)) -> list[dict[str, Any]]:
    """One row per (bucket, kind, operation): count, errors, error rate, mean and percentiles in ms."""
    rows = []
    for (bucket, kind, op), st in sorted(summarise(docs, by=("bucket", "kind", "operation")).items()):
        row: dict[str, Any] = {
            "bucket": bucket,
            "kind": kind,
            "operation": op,
            "count": st.count,
            "errors": st.errors,
            "error_rate": st.error_rate,
            "mean_ms": st.mean_ms,
            "ru": st.ru,
        }
        for q in qs:
            row[f"p{int(q)}_ms"] = st.p(q)
        rows.append(row)
    return rows


def slowest(docs: Iterable[Mapping[str, Any]], limit: int = 20) -> list[dict[str, Any]]:
    """The slowest recorded samples (with their detail, tenant and correlation id) across rollups."""
    samples = []
    for d in docs:
        for s in d.get("slowest") or []:
            samples.append({**s, "tenantId": d.get("tenantId"), "kind": d.get("kind"), "operation": d.get("operation")})
    samples.sort(key=lambda s: -s["ms"])
    # The same sample is stored at every grain; one copy per (operation, at, ms).
    seen: set[tuple] = set()
    out = []
    for s in samples:
        k = (s.get("tenantId"), s.get("operation"), s.get("at"), s.get("ms"))
        if k not in seen:
            seen.add(k)
            out.append(s)
        if len(out) >= limit:
            break
    return out


def prune(store: DocumentStore, now: datetime | None = None, retention_days: Mapping[str, int] | None = None) -> int:
    """Delete rollups past their grain's retention; returns how many were deleted."""
    now = now or clock.now()
    keep = {**RETENTION_DAYS, **(retention_days or {})}
    deleted = 0
    for grain, days in keep.items():
        cutoff = clock.iso(now - timedelta(days=days))
        while True:
            rows = store.query(
                CONTAINER, None, [Cond("grain", "=", grain), Cond("bucket", "<", cutoff)], limit=500
            )
            if not rows:
                break
            for r in rows:
                try:
                    store.delete(CONTAINER, r["tenantId"], r["id"])
                    deleted += 1
                except NotFound:
                    pass
            if len(rows) < 500:
                break
    return deleted
