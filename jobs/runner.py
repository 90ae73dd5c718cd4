"""The worker: APScheduler for scheduled jobs plus consumer threads for the work queue.

Scheduled jobs are registered with explicit ids, ``replace_existing``, ``coalesce`` and
``max_instances=1``; each run is recorded in ``job_runs``. Consumers claim queue items with a
lease, heartbeat while the handler runs, and complete, retry with backoff, or dead-letter.
SIGTERM stops claiming, lets running items finish (up to a grace period) and shuts down.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import traceback
import uuid
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from core import clock
from core.bootstrap import Services
from core.errors import (
    CastielError,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    QuotaExceeded,
    RateLimited,
    StoreUnavailable,
    TransientError,
)
from core.observability.logging import bound_from
from jobs import metrics as job_metrics
from jobs import tasks

log = logging.getLogger("castiel.worker")
_PERMANENT = (Invalid, Forbidden, NotFound, QuotaExceeded)


class Worker:
    def __init__(
        self,
        services: Services,
        consumers: int = 2,
        queues: list[str] | None = None,
        poll_seconds: float | None = None,
        with_scheduler: bool = True,
    ) -> None:
        self.services = services
        self.consumers = consumers
        self.queues = queues
        self.poll = poll_seconds if poll_seconds is not None else services.settings.worker_poll_seconds
        self.with_scheduler = with_scheduler
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.scheduler: BackgroundScheduler | None = None
        self.processed = 0
        tasks.load_all()

    # scheduled jobs ----------------------------------------------------------------------
    def _record_run(self, job_id: str, fn: Any) -> None:
        started = clock.iso()
        run = {
            "id": f"{started}-{job_id}",
            "tenantId": "_platform",
            "job": job_id,
            "startedAt": started,
            "endedAt": None,
            "status": "running",
            "error": None,
            "worker": self.worker_id,
        }
        try:
            self.services.store.create("job_runs", run)
        except StoreUnavailable:
            log.warning("store unavailable: running %s without recording the run", job_id)
        try:
            result = fn(self.services)
            run.update(status="succeeded", result=result if isinstance(result, dict) else None)
        except Exception as e:  # a scheduled job's failure is recorded, the scheduler keeps going
            log.exception("scheduled job %s failed", job_id)
            run.update(status="failed", error=f"{type(e).__name__}: {e}")
        run["endedAt"] = clock.iso()
        try:
            self.services.store.upsert("job_runs", run)
        except StoreUnavailable:
            log.warning("store unavailable: could not record the end of %s (%s)", job_id, run["status"])

    def start_scheduler(self) -> BackgroundScheduler:
        sched = BackgroundScheduler(timezone="UTC")
        for s in tasks.SCHEDULES.values():
            sched.add_job(
                self._record_run,
                s.trigger,
                args=[s.id, s.func],
                id=s.id,
                name=s.id,
                replace_existing=True,
                coalesce=True,
                max_instances=1,
                misfire_grace_time=300,
                **s.trigger_args,
            )
        sched.start()
        self.scheduler = sched
        return sched

    # queue consumer ----------------------------------------------------------------------
    def run_one(self) -> bool:
        """Claim and run one item; False when there was nothing to do."""
        q = self.services.queue
        item = q.claim(self.worker_id, self.queues)
        if item is None:
            return False
        state = {"item": item}
        lock = threading.Lock()

        def beat(fraction: float | None = None, message: str | None = None) -> None:
            with lock:
                state["item"] = q.heartbeat(state["item"], self.worker_id, fraction, message)

        done = threading.Event()

        def keep_alive() -> None:
            while not done.wait(max(0.5, q.lease_seconds / 3)):
                try:
                    beat()
                except Conflict:
                    return

        pulse = threading.Thread(target=keep_alive, daemon=True)
        pulse.start()
        fn = tasks.HANDLERS.get(item["kind"])
        started = time.perf_counter()
        tenant = None if item["tenantId"] == "_platform" else item["tenantId"]
        correlation = bound_from(item.get("payload") or {}, tenant)
        correlation.__enter__()
        ok, final = False, True
        try:
            if fn is None:
                raise Invalid(f"no handler for job kind {item['kind']!r} in this worker")
            result = fn(tasks.TaskContext(self.services, item, self.worker_id, beat))
            done.set()
            with lock:
                if not q.is_cancelled(state["item"]):
                    q.complete(state["item"], self.worker_id, result or {})
            ok = True
        except Exception as e:
            done.set()
            retryable = not isinstance(e, _PERMANENT)
            retry_after = e.retry_after if isinstance(e, RateLimited) else None
            message = e.message if isinstance(e, CastielError) else f"{type(e).__name__}: {e}"
            if not isinstance(e, (CastielError, TransientError)):
                log.error("job %s (%s) failed: %s", item["id"], item["kind"], traceback.format_exc())
            try:
                with lock:
                    failed = q.fail(state["item"], self.worker_id, message, retryable, retry_after)
                final = failed["status"] != "queued"
            except Conflict:
                log.warning("job %s was taken over by another worker before its failure was recorded", item["id"])
        finally:
            done.set()
            pulse.join(timeout=5)
            job_metrics.job_finished(item["queue"], time.perf_counter() - started, ok, final=final)
            correlation.__exit__(None, None, None)
        self.processed += 1
        return True

    def _consume(self) -> None:
        while not self.stopping.is_set():
            try:
                worked = self.run_one()
            except Exception:
                log.exception("worker loop error; continuing")
                worked = False
            if not worked:
                self.stopping.wait(self.poll)

    def start(self) -> None:
        if self.with_scheduler:
            self.start_scheduler()
        for i in range(self.consumers):
            t = threading.Thread(target=self._consume, name=f"consumer-{i}", daemon=True)
            t.start()
            self.threads.append(t)
        log.info("worker %s started: %d consumers, %d schedules", self.worker_id, self.consumers, len(tasks.SCHEDULES))

    def stop(self, grace_seconds: float = 30.0) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=grace_seconds)
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=True)
        log.info("worker %s stopped after %d items", self.worker_id, self.processed)

    def run_forever(self) -> None:
        def on_signal(signum: int, _frame: Any) -> None:
            log.info("signal %s: finishing running items and stopping", signum)
            self.stopping.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start()
        self.stopping.wait()
        self.stop()
