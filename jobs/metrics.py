"""Prometheus metrics of the worker (prometheus_client): queue depths, jobs, syncs, embeddings, alerts.

Counters and histograms are updated where the work happens (``job_finished``, ``sync_finished``,
``embedded``, ``alert_cycle``); gauges that describe the store (queue depths, open alerts) are
refreshed by ``refresh_from_store`` when Prometheus scrapes, so every worker reports the same
numbers without a background loop. All instruments live on one registry, started on
``settings.metrics_port`` by ``start_exporter``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from core.adapters.store import Cond, DocumentStore
from core.errors import CastielError

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)
PREFIX = "castiel"
_JOB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

JOB_DURATION = Histogram(
    f"{PREFIX}_job_duration_seconds", "Time to run one job, by queue and outcome.", ["queue", "outcome"],
    buckets=_JOB_BUCKETS, registry=REGISTRY,
)
JOB_FAILURES = Counter(f"{PREFIX}_job_failures", "Jobs that failed (retried or dead-lettered), by queue.",
                       ["queue", "final"], registry=REGISTRY)
SYNC_RUNS = Counter(f"{PREFIX}_sync_runs", "Connector sync runs finished, by provider and status.",
                    ["provider", "status"], registry=REGISTRY)
SYNC_RECORDS = Counter(f"{PREFIX}_sync_records", "Records written by sync runs, by provider.", ["provider"],
                       registry=REGISTRY)
EMBEDDED_CHUNKS = Counter(f"{PREFIX}_embedded_chunks", "Chunks embedded, by model; rate() gives the embedding rate.",
                          ["model"], registry=REGISTRY)
EMBEDDING_FAILURES = Counter(f"{PREFIX}_embedding_failures", "Documents that failed to embed, by model.", ["model"],
                             registry=REGISTRY)
ALERT_CYCLE_SECONDS = Histogram(f"{PREFIX}_alert_cycle_seconds", "Time of one alert evaluation cycle.",
                                buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=REGISTRY)
ALERTS_OPENED = Counter(f"{PREFIX}_alerts_opened", "Alerts opened, by rule.", ["rule"], registry=REGISTRY)
NOTIFICATIONS = Counter(f"{PREFIX}_notifications", "Alert notifications, by channel and status.",
                        ["channel", "status"], registry=REGISTRY)
STORE_UP = Gauge(f"{PREFIX}_store_up", "1 when the last alert cycle could reach the store.", registry=REGISTRY)
STORE_UP.set(float("nan"))  # unknown until the first alert cycle, rather than a false "down"


def job_finished(queue: str, seconds: float, ok: bool, final: bool = False) -> None:
    JOB_DURATION.labels(queue, "ok" if ok else "failed").observe(seconds)
    if not ok:
        JOB_FAILURES.labels(queue, "true" if final else "false").inc()


def sync_finished(provider: str, status: str, records: int = 0) -> None:
    SYNC_RUNS.labels(provider, status).inc()
    if records:
        SYNC_RECORDS.labels(provider).inc(records)


def embedded(model: str, chunks: int, failures: int = 0) -> None:
    if chunks:
        EMBEDDED_CHUNKS.labels(model).inc(chunks)
    if failures:
        EMBEDDING_FAILURES.labels(model).inc(failures)


def alert_cycle(summary: Any) -> None:
    """Record one ``core.observability.alerts.CycleSummary``."""
    ALERT_CYCLE_SECONDS.observe(summary.duration_ms / 1000.0)
    STORE_UP.set(1 if summary.store_ok else 0)
    for res in summary.results:
        for alert_id in res.opened:
            ALERTS_OPENED.labels(alert_id.split(".", 1)[0]).inc()
    for d in summary.deliveries:
        NOTIFICATIONS.labels(d.kind, d.status).inc()


class StoreCollector(Collector):
    """Gauges read from rollups and summary records at scrape time: queue depths and oldest age,
    sync runs today, calls (and so the embedding rate) in the last minute, scheduled-job failures,
    open alerts.

    Results are cached for ``ttl`` seconds so several Prometheus servers scraping at once do
    not multiply the store load; a store error yields no samples (and ``castiel_store_up`` 0).
    """

    def __init__(
        self, store: DocumentStore, ttl: float = 10.0, statuses: Iterable[str] = ("queued", "running", "dead")
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.statuses = tuple(statuses)
        self._lock = threading.Lock()
        self._cached: tuple[float, list[GaugeMetricFamily]] | None = None

    def describe(self) -> list[GaugeMetricFamily]:
        return []

    def _read(self) -> list[GaugeMetricFamily]:
        from core import clock

        depth = GaugeMetricFamily(f"{PREFIX}_queue_depth", "Jobs in a work queue, by queue and status.",
                                  labels=["queue", "status"])
        oldest = GaugeMetricFamily(f"{PREFIX}_queue_oldest_age_seconds", "Age of the oldest queued job, by queue.",
                                   labels=["queue"])
        sync = GaugeMetricFamily(f"{PREFIX}_sync_runs_today", "Connector sync runs finished today (UTC), by provider "
                                 "and outcome, from the per-connection daily rollups.", labels=["provider", "status"])
        calls = GaugeMetricFamily(f"{PREFIX}_calls_last_minute", "Calls recorded by telemetry in the last complete "
                                  "minute, by kind and outcome (embedding calls give the embedding rate).",
                                  labels=["kind", "outcome"])
        runs = GaugeMetricFamily(f"{PREFIX}_scheduled_job_failures_24h", "Failed scheduled-job runs in 24 h, by job.",
                                 labels=["job"])
        alerts = GaugeMetricFamily(f"{PREFIX}_alerts_active", "Open or acknowledged alerts, by severity and rule.",
                                   labels=["severity", "rule"])
        up = GaugeMetricFamily(f"{PREFIX}_store_reachable", "1 when the metrics scrape could read the store.")
        now = clock.now()
        try:
            counts: dict[tuple[str, str], int] = {}
            first: dict[str, str] = {}
            for j in self.store.query("jobs", None, [Cond("status", "in", list(self.statuses))], limit=50_000):
                key = (str(j.get("queue", "?")), str(j.get("status", "?")))
                counts[key] = counts.get(key, 0) + 1
                at = str(j.get("createdAt") or "")
                if key[1] == "queued" and at and (key[0] not in first or at < first[key[0]]):
                    first[key[0]] = at
            for (queue, status), n in sorted(counts.items()):
                depth.add_metric([queue, status], n)
            for queue, at in first.items():
                oldest.add_metric([queue], max(0.0, (now - clock.parse(at)).total_seconds()))
            today = now.strftime("%Y-%m-%d")
            per_sync: dict[tuple[str, str], float] = {}
            for r in self.store.query("rollups", None, [Cond("kind", "=", "sync_daily"), Cond("bucket", ">=", today)]):
                for status in ("succeeded", "partial", "failed", "cancelled"):
                    k = (str(r.get("provider", "?")), status)
                    per_sync[k] = per_sync.get(k, 0) + float(r.get(status) or 0)
            for (provider, status), n in sorted(per_sync.items()):
                sync.add_metric([provider, status], n)
            minute = clock.iso((now - timedelta(minutes=1)).replace(second=0, microsecond=0))
            per_kind: dict[tuple[str, str], float] = {}
            for d in self.store.query("telemetry", None, [Cond("grain", "=", "minute"), Cond("bucket", "=", minute)]):
                kind = str(d.get("kind"))
                errors, rejected = float(d.get("errors") or 0), float(d.get("rejected") or 0)
                for outcome, n in (("ok", float(d.get("count") or 0) - errors - rejected), ("error", errors),
                                   ("rejected", rejected)):
                    per_kind[(kind, outcome)] = per_kind.get((kind, outcome), 0) + n
            for (kind, outcome), n in sorted(per_kind.items()):
                calls.add_metric([kind, outcome], n)
            since = clock.iso(now - timedelta(hours=24))
            failed_runs: dict[str, int] = {}
            for r in self.store.query("job_runs", "_platform", [Cond("startedAt", ">=", since)]):
                if r.get("status") == "failed":
                    failed_runs[str(r.get("job"))] = failed_runs.get(str(r.get("job")), 0) + 1
            for job, n in sorted(failed_runs.items()):
                runs.add_metric([job], n)
            active: dict[tuple[str, str], int] = {}
            for a in self.store.query("alerts", None, [Cond("status", "in", ["open", "acknowledged"])]):
                k = (str(a.get("severity", "warning")), str(a.get("rule", "?")))
                active[k] = active.get(k, 0) + 1
            for (sev, rule), n in sorted(active.items()):
                alerts.add_metric([sev, rule], n)
            up.add_metric([], 1)
        except CastielError as e:
            log.warning("metrics scrape could not read the store: %s", e.message)
            return [GaugeMetricFamily(f"{PREFIX}_store_reachable", "1 when the metrics scrape could read the store.",
                                      value=0)]
        return [depth, oldest, sync, calls, runs, alerts, up]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        with self._lock:
            if self._cached is None or time.monotonic() - self._cached[0] > self.ttl:
                self._cached = (time.monotonic(), self._read())
            return list(self._cached[1])


_collector: StoreCollector | None = None


def watch_store(store: DocumentStore, ttl: float = 10.0) -> StoreCollector:
    """Register (once) the scrape-time gauges that read ``store``."""
    global _collector
    if _collector is not None:
        REGISTRY.unregister(_collector)
    _collector = StoreCollector(store, ttl)
    REGISTRY.register(_collector)
    return _collector


def start_exporter(port: int, addr: str = "0.0.0.0", store: DocumentStore | None = None) -> Callable[[], None]:
    """Serve ``/metrics`` on ``port`` (``settings.metrics_port``; 0 disables); returns a stop function."""
    if store is not None:
        # Scrapes read the raw store: they are not tenant traffic and should not show in telemetry.
        watch_store(getattr(store, "inner", store))
    if port == 0:
        return lambda: None
    server, thread = start_http_server(port, addr=addr, registry=REGISTRY)
    log.info("worker metrics on http://%s:%d/metrics", addr, server.server_port)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    stop.port = server.server_port  # type: ignore[attr-defined]
    return stop
