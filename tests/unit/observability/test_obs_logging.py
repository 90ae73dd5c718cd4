"""JSON logs carry the correlation id bound on the web side into the worker's job."""

from __future__ import annotations

import contextvars
import io
import json
import logging
import threading

from core.observability import logging as obs_logging


def _lines(buf: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


def test_logs_are_json_with_correlation_and_tenant() -> None:
    buf = io.StringIO()
    handler = obs_logging.configure_logging("INFO", service="web", stream=buf)
    try:
        log = logging.getLogger("castiel.test")
        with obs_logging.bind("abc123", tenant_id="acme"):
            log.info("resync requested", extra={"connection": "c1"})
        log.warning("outside")
        first, second = _lines(buf)
        assert first["message"] == "resync requested" and first["correlationId"] == "abc123"
        assert first["tenantId"] == "acme" and first["service"] == "web" and first["connection"] == "c1"
        assert first["level"] == "INFO" and first["logger"] == "castiel.test" and "time" in first
        assert second["correlationId"] is None
        # configuring again replaces the handler instead of doubling every line
        obs_logging.configure_logging("INFO", service="web", stream=buf)
        assert sum(1 for h in logging.getLogger().handlers if h.get_name() == "castiel-json") == 1
    finally:
        for h in list(logging.getLogger().handlers):
            if h.get_name() == "castiel-json":
                logging.getLogger().removeHandler(h)
        del handler


def test_correlation_id_travels_through_a_job_payload_to_a_worker_thread() -> None:
    buf = io.StringIO()
    obs_logging.configure_logging("INFO", service="worker", stream=buf)
    try:
        with obs_logging.bind() as cid:
            payload = obs_logging.inject({"connectionId": "c1"})
        assert payload["correlationId"] == cid

        def worker() -> None:  # a different thread with a fresh context, like the worker process
            assert obs_logging.get_correlation_id() is None
            with obs_logging.bound_from(payload, tenant_id="acme"):
                logging.getLogger("jobs").info("sync started")

        t = threading.Thread(target=contextvars.Context().run, args=(worker,))
        t.start()
        t.join()
        [line] = _lines(buf)
        assert line["correlationId"] == cid and line["service"] == "worker" and line["tenantId"] == "acme"
    finally:
        for h in list(logging.getLogger().handlers):
            if h.get_name() == "castiel-json":
                logging.getLogger().removeHandler(h)


def test_inject_without_binding_creates_an_id() -> None:
    p = obs_logging.inject({})
    assert len(p["correlationId"]) == 16
