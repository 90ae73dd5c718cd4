"""Scheduled observability jobs: alert evaluation every minute, telemetry flush and retention, metrics exporter."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any

from core.bootstrap import Services
from core.observability import telemetry
from core.observability.wiring import raw_store
from jobs import metrics
from jobs.tasks import schedule

log = logging.getLogger(__name__)
_exporter_lock = threading.Lock()
_exporter_stop: Any = None


@schedule("alerts.evaluate", trigger="interval", seconds=60)
def evaluate_alerts(services: Services) -> dict[str, Any]:
    """One evaluation cycle over every tenant; a store outage becomes an alert, never an exception."""
    summary = services.alerting.evaluate()
    metrics.alert_cycle(summary)
    return {
        "tenants": summary.tenants,
        "opened": summary.opened,
        "reopened": summary.reopened,
        "resolved": summary.resolved,
        "active": summary.active,
        "storeOk": summary.store_ok,
        "storeError": summary.store_error,
        "failedTenants": summary.failed_tenants,
        "notifications": dict(Counter(d.status for d in summary.deliveries)),
        "durationMs": round(summary.duration_ms, 1),
    }


@schedule("telemetry.flush", trigger="interval", seconds=15)
def flush_telemetry(services: Services) -> dict[str, Any]:
    """Write the worker's buffered telemetry even when it is idle (busy processes flush on their own)."""
    rec = services.telemetry
    return {"written": rec.flush(), "dropped": rec.dropped, "lastError": rec.last_flush_error}


@schedule("telemetry.prune", trigger="interval", hours=6)
def prune_telemetry(services: Services) -> dict[str, Any]:
    """Drop minute rollups after 3 days and hour rollups after 90 (day rollups carry the cost history)."""
    return {"deleted": telemetry.prune(raw_store(services))}


class StoreWatchdog:
    """Pings the store between alert cycles; when it cannot be reached, runs the evaluator at once.

    Scheduled jobs record their runs in the store, so while it is down they cannot start; this
    thread needs nothing from the store to notice, and the evaluator raises the alert about the
    store through the fallback channels (and records it when the store is back).
    """

    def __init__(self, services: Services, interval: float) -> None:
        self.services = services
        self.interval = interval
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="store-watchdog", daemon=True)
        self.cycles = 0

    def _run(self) -> None:
        from core.errors import StoreUnavailable

        while not self.stop_event.wait(self.interval):
            try:
                self.services.store.ping()
                if self.services.alerting.evaluator.outage is None:
                    continue
            except StoreUnavailable:
                pass
            except Exception:
                log.exception("store watchdog ping failed")
                continue
            # The store is down (or just came back after an outage): let the evaluator handle it.
            try:
                metrics.alert_cycle(self.services.alerting.evaluate())
                self.cycles += 1
            except Exception:
                log.exception("store watchdog evaluation failed")

    def start(self) -> StoreWatchdog:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=5)


_watchdog: StoreWatchdog | None = None


@schedule("observability.start", trigger="date")
def start_worker_observability(services: Services) -> dict[str, Any]:
    """Once per worker process: the Prometheus exporter on ``settings.metrics_port`` and the store watchdog."""
    global _exporter_stop, _watchdog
    with _exporter_lock:
        port = services.settings.metrics_port
        if _exporter_stop is None and port:
            _exporter_stop = metrics.start_exporter(port, store=services.store)
            log.info("Prometheus metrics on :%d/metrics", port)
        if _watchdog is None:
            _watchdog = StoreWatchdog(services, services.settings.alert_interval_seconds).start()
        return {"port": port, "exporter": _exporter_stop is not None, "watchdog": True}
