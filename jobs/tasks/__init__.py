"""Task functions the worker runs: queue handlers by kind, and scheduled jobs by id.

A feature adds a module here (``jobs/tasks/<feature>.py``) that registers its handlers with
``@handler("kind")`` and its schedules with ``schedule(...)``, and lists the module in
``TASK_MODULES``. Handlers take plain arguments: a ``TaskContext`` (services, the job item,
``progress()`` to heartbeat and report, ``cancelled()``) and return a small result dict.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.adapters.store import Doc
from core.bootstrap import Services

TASK_MODULES: tuple[str, ...] = ("jobs.tasks.system", "jobs.tasks.sync", "jobs.tasks.alerts", "jobs.tasks.templates",
                                "jobs.tasks.embeddings", "jobs.tasks.experiments", "jobs.tasks.models")


@dataclass
class TaskContext:
    services: Services
    job: Doc
    worker_id: str
    _beat: Callable[[float | None, str | None], None] = field(repr=False, default=lambda p, m: None)

    @property
    def payload(self) -> dict[str, Any]:
        return dict(self.job.get("payload") or {})

    @property
    def tenant_id(self) -> str | None:
        t = self.job.get("tenantId")
        return None if t == "_platform" else t

    def progress(self, fraction: float | None = None, message: str | None = None) -> None:
        """Report progress; also renews the lease, so long work calls it at least every lease/3."""
        self._beat(fraction, message)

    def cancelled(self) -> bool:
        return self.services.queue.is_cancelled(self.job)


Handler = Callable[[TaskContext], "dict[str, Any] | None"]


@dataclass(frozen=True)
class Schedule:
    """A scheduled job: explicit id, a function of ``services``, and APScheduler trigger arguments."""

    id: str
    func: Callable[[Services], Any]
    trigger: str
    trigger_args: dict[str, Any]


HANDLERS: dict[str, Handler] = {}
SCHEDULES: dict[str, Schedule] = {}


def handler(kind: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        if kind in HANDLERS and HANDLERS[kind] is not fn:
            raise ValueError(f"two handlers for job kind {kind!r}")
        HANDLERS[kind] = fn
        return fn

    return register


ScheduledFn = Callable[[Services], Any]


def schedule(job_id: str, trigger: str = "interval", **trigger_args: Any) -> Callable[[ScheduledFn], ScheduledFn]:
    def register(fn: ScheduledFn) -> ScheduledFn:
        SCHEDULES[job_id] = Schedule(job_id, fn, trigger, trigger_args)
        return fn

    return register


def load_all() -> None:
    for name in TASK_MODULES:
        importlib.import_module(name)
