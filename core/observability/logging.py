"""Structured JSON logs (python-json-logger) with a correlation id carried through contextvars.

One correlation id follows a piece of work from the page that started it to the worker that
runs it: the web side binds one per script run (``bind``), ``inject`` copies it into a job's
payload when enqueuing, and the worker restores it with ``bound_from`` before running the job,
so ``grep correlationId=...`` across both processes' logs shows the whole story.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import uuid
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter

CORRELATION_KEY = "correlationId"
_correlation: contextvars.ContextVar[str | None] = contextvars.ContextVar("castiel_correlation_id", default=None)
_tenant: contextvars.ContextVar[str | None] = contextvars.ContextVar("castiel_tenant_id", default=None)
_HANDLER_NAME = "castiel-json"


def new_correlation_id() -> str:
    return uuid.uuid4().hex[:16]


def get_correlation_id() -> str | None:
    return _correlation.get()


def get_tenant_id() -> str | None:
    return _tenant.get()


@contextlib.contextmanager
def bind(correlation_id: str | None = None, tenant_id: str | None = None) -> Iterator[str]:
    """Set the correlation id (a new one when not given) and tenant for the enclosed work."""
    cid = correlation_id or new_correlation_id()
    tok_c = _correlation.set(cid)
    tok_t = _tenant.set(tenant_id) if tenant_id is not None else None
    try:
        yield cid
    finally:
        _correlation.reset(tok_c)
        if tok_t is not None:
            _tenant.reset(tok_t)


def inject(payload: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Copy the current correlation id into a job payload (creating one when none is bound)."""
    payload.setdefault(CORRELATION_KEY, get_correlation_id() or new_correlation_id())
    return payload


@contextlib.contextmanager
def bound_from(payload: Mapping[str, Any], tenant_id: str | None = None) -> Iterator[str]:
    """Run a job under the correlation id its payload carries (or a fresh one)."""
    with bind(payload.get(CORRELATION_KEY) if payload else None, tenant_id) as cid:
        yield cid


class ContextFilter(logging.Filter):
    """Adds the bound correlation id, tenant and service name to every record."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, CORRELATION_KEY):
            setattr(record, CORRELATION_KEY, _correlation.get())
        if not hasattr(record, "tenantId"):
            record.tenantId = _tenant.get()
        record.service = self.service
        return True


def json_formatter() -> JsonFormatter:
    return JsonFormatter(
        "{asctime}{levelname}{name}{message}{correlationId}{tenantId}{service}",
        style="{",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        datefmt="%Y-%m-%dT%H:%M:%S%z",
    )


def configure_logging(level: str = "INFO", service: str = "web", stream: TextIO | None = None) -> logging.Handler:
    """Send the root logger's records as one JSON object per line to ``stream`` (stderr by default).

    Idempotent: calling it again (Streamlit reruns, tests) replaces the console's own handler
    instead of stacking another one.
    """
    root = logging.getLogger()
    for h in list(root.handlers):
        if h.get_name() == _HANDLER_NAME:
            root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(json_formatter())
    handler.addFilter(ContextFilter(service))
    root.addHandler(handler)
    root.setLevel(level)
    return handler
