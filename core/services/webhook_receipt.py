"""Webhook receipt without HTTP: route one vendor notification to its connection and decide the answer.

The worker's listener (``jobs/webhooks.py``) hands every request here as plain values (method,
path with query, headers, body) and writes back the ``WebhookResponse``. The route is
``/webhooks/<tenant>/<connection id>``; the work itself (handshake, signature check with the
connection's decrypted secret, audit of rejections, durable de-duplication in ``webhook_events``,
webhook freshness on the connection, one ``sync-inbound-webhook`` item) is the Integrations
service's ``receive_webhook``, so the listener and any other caller share one implementation.

What this module adds is the transport contract vendors rely on:

==========================================  =======================================================
request                                     answer
==========================================  =======================================================
not ``/webhooks/<tenant>/<connection>``     404 (no such endpoint)
method other than POST                      405 with ``Allow: POST``
body over the cap (1 MB)                    413 before anything is parsed
unknown tenant or connection                404
subscription handshake                      200 ``text/plain`` with the vendor's challenge
bad / missing signature, stale timestamp    401, audited (``integration.webhook_rejected``)
no signing secret configured                401, audited here (the service does not audit these)
accepted or duplicate delivery              200 JSON ``{status, accepted, duplicates}``
store busy, vendor transient failure        503 with ``Retry-After`` so the vendor redelivers
anything else                               500, logged with its traceback, no details returned
==========================================  =======================================================

Vendors treat any 2xx as delivered and retry on 5xx (Slack, HubSpot, Graph), so a duplicate is
answered 200 and only faults on our side are 5xx.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

from core.errors import (
    ConfigError,
    Conflict,
    Invalid,
    NotFound,
    StoreUnavailable,
    TransientError,
)
from core.services.access import SYSTEM
from core.services.audit import AuditLog

log = logging.getLogger("castiel.webhooks")

MAX_BODY_BYTES = 1024 * 1024
PATH_PREFIX = "/webhooks/"
# The audit action for a refused delivery; the same one the Integrations service writes.
REJECTED_ACTION = "integration.webhook_rejected"
RETRY_AFTER_SECONDS = 30
# Tenant and connection ids are slugs / generated ids; anything else cannot name a connection.
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


class WebhookIntake(Protocol):
    """The part of ``IntegrationsService`` the receipt needs (``receive_webhook``)."""

    def receive_webhook(
        self,
        tenant_id: str,
        connection_id: str,
        headers: Mapping[str, str],
        body: bytes,
        query: Mapping[str, str] | None = None,
    ) -> Any: ...


@dataclass(frozen=True)
class WebhookResponse:
    """What to send back: status, body bytes, content type and any extra headers."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    def __iter__(self) -> Iterator[int | bytes]:
        # ``status, body = receiver.handle(...)`` reads naturally in callers and tests.
        yield self.status
        yield self.body


def _json(status: int, payload: dict[str, Any], **headers: str) -> WebhookResponse:
    return WebhookResponse(status, json.dumps(payload).encode(), "application/json", dict(headers))


def _error(status: int, message: str, **headers: str) -> WebhookResponse:
    return _json(status, {"error": message}, **headers)


def parse_route(path: str) -> tuple[str, str] | None:
    """``/webhooks/<tenant>/<connection>`` (a trailing slash allowed) -> (tenant, connection), else None."""
    raw = urlsplit(path).path
    if not raw.startswith(PATH_PREFIX):
        return None
    parts = [unquote(p) for p in raw[len(PATH_PREFIX) :].rstrip("/").split("/")]
    if len(parts) != 2 or not all(_SEGMENT.match(p) for p in parts):
        return None
    return parts[0], parts[1]


class WebhookReceiver:
    """Turns one HTTP-shaped request into a ``WebhookResponse`` by way of the Integrations service."""

    def __init__(self, intake: WebhookIntake, audit: AuditLog, *, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.intake = intake
        self.audit = audit
        self.max_body_bytes = max_body_bytes

    def too_large(self, content_length: int | None) -> WebhookResponse | None:
        """The 413 for a declared length over the cap, so the listener can refuse before reading the body."""
        if content_length is not None and content_length > self.max_body_bytes:
            return _error(413, f"webhook bodies are limited to {self.max_body_bytes} bytes; got {content_length}")
        return None

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> WebhookResponse:
        route = parse_route(path)
        if route is None:
            return _error(404, "no such endpoint; vendors deliver to /webhooks/<tenant>/<connection id>")
        if method.upper() != "POST":
            return _error(405, "webhooks are delivered with POST", Allow="POST")
        oversize = self.too_large(len(body))
        if oversize is not None:
            return oversize
        tenant_id, connection_id = route
        query = dict(parse_qsl(urlsplit(path).query, keep_blank_values=True))
        try:
            result = self.intake.receive_webhook(tenant_id, connection_id, headers, body, query)
        except NotFound:
            log.info("webhook for unknown connection %s/%s (%d bytes)", tenant_id, connection_id, len(body))
            return _error(404, f"no connection {connection_id} in tenant {tenant_id}")
        except Invalid as e:
            # The service audits signature failures itself; this only answers them.
            log.warning("webhook rejected for %s/%s: %s", tenant_id, connection_id, e.message)
            return _error(401, e.message)
        except ConfigError as e:
            # No signing secret (or no public URL for HubSpot): nothing can be verified, so refuse and
            # leave a trace a person will see; the service raises these without auditing them.
            self._audit_rejection(tenant_id, connection_id, e.message, len(body))
            log.warning("webhook refused for %s/%s: %s", tenant_id, connection_id, e.message)
            return _error(401, e.message)
        except (TransientError, StoreUnavailable, Conflict) as e:
            log.warning("webhook for %s/%s deferred: %s", tenant_id, connection_id, e.message)
            return _error(
                503,
                "temporarily unable to take this delivery; retry later",
                **{"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        except Exception:
            log.exception("webhook for %s/%s failed", tenant_id, connection_id)
            return _error(500, "internal error while receiving this webhook")
        if result.status == "handshake":
            return WebhookResponse(200, (result.response or "").encode(), "text/plain; charset=utf-8")
        status = result.status if (result.accepted or result.duplicates) else "ignored"
        return _json(200, {"status": status, "accepted": int(result.accepted), "duplicates": int(result.duplicates)})

    def _audit_rejection(self, tenant_id: str, connection_id: str, reason: str, size: int) -> None:
        try:
            self.audit.record(
                SYSTEM, tenant_id, REJECTED_ACTION, f"connection:{connection_id}", reason, after={"bytes": size}
            )
        except Exception:  # the refusal stands even if the audit store is down; the log keeps it
            log.exception("could not audit the refused webhook for %s/%s", tenant_id, connection_id)
