"""Webhook receipt: signature checks in each vendor's style, and de-duplication by event id.

Signature styles (all compared in constant time):
    slack     ``X-Slack-Signature: v0=hex(HMAC-SHA256(secret, "v0:{ts}:{body}"))`` with
              ``X-Slack-Request-Timestamp`` within the tolerance window
    hubspot   ``X-HubSpot-Signature-v3: b64(HMAC-SHA256(client_secret, method+url+body+ts))`` with
              ``X-HubSpot-Request-Timestamp`` (ms) within the window
    notion    ``X-Notion-Signature: sha256=hex(HMAC-SHA256(verification_token, body))``
    hmac      generic ``X-Signature: sha256=hex(HMAC-SHA256(secret, body))`` (Salesforce/Dataverse
              callouts configured to sign) -- header name configurable
    shared    a shared secret in a header or body field (Graph ``clientState``, Drive channel
              token, Dataverse ``WebhookKey``)

A ``SeenIdStore`` remembers event ids so a redelivered event is processed once; the engine can
back it with the document store, tests use ``MemorySeenIdStore``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol, runtime_checkable

from connectors.base import WebhookEvent
from core.errors import ConfigError, Invalid

DEFAULT_TOLERANCE_SECONDS = 300.0


def header(headers: Mapping[str, str], name: str) -> str | None:
    lname = name.lower()
    for k, v in headers.items():
        if k.lower() == lname:
            return v
    return None


def hmac_sha256(secret: str | bytes, message: bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, message, hashlib.sha256).digest()


def _require_secret(vendor: str, secret: str | None) -> str:
    if not secret:
        raise ConfigError(f"{vendor} webhooks arrive but no signing secret is configured for this connection")
    return secret


def _fresh(vendor: str, ts: float, tolerance: float, now: float) -> None:
    if abs(now - ts) > tolerance:
        raise Invalid(f"{vendor} webhook timestamp is {abs(now - ts):.0f}s off (replay window {tolerance:.0f}s)")


def _compare(vendor: str, expected: str, given: str | None) -> None:
    if not given or not hmac.compare_digest(expected.encode(), given.strip().encode()):
        raise Invalid(f"{vendor} webhook signature does not match; the request was rejected")


def verify_slack(
    headers: Mapping[str, str],
    body: bytes,
    secret: str | None,
    *,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
    clock: Callable[[], float] = time.time,
) -> None:
    secret = _require_secret("Slack", secret)
    ts = header(headers, "X-Slack-Request-Timestamp")
    try:
        ts_value = float(ts or "")
    except ValueError as exc:
        raise Invalid("Slack webhook has no valid X-Slack-Request-Timestamp") from exc
    _fresh("Slack", ts_value, tolerance, clock())
    expected = "v0=" + hmac_sha256(secret, b"v0:" + (ts or "").encode() + b":" + body).hex()
    _compare("Slack", expected, header(headers, "X-Slack-Signature"))


def sign_slack(secret: str, body: bytes, ts: float | None = None) -> dict[str, str]:
    stamp = str(int(ts if ts is not None else time.time()))
    sig = "v0=" + hmac_sha256(secret, b"v0:" + stamp.encode() + b":" + body).hex()
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": sig}


def verify_hubspot_v3(
    headers: Mapping[str, str],
    body: bytes,
    secret: str | None,
    *,
    method: str,
    url: str | None,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
    clock: Callable[[], float] = time.time,
) -> None:
    secret = _require_secret("HubSpot", secret)
    if not url:
        raise ConfigError("HubSpot webhook signatures cover the public URL; set the connection's webhook URL")
    ts = header(headers, "X-HubSpot-Request-Timestamp")
    try:
        ts_ms = float(ts or "")
    except ValueError as exc:
        raise Invalid("HubSpot webhook has no valid X-HubSpot-Request-Timestamp") from exc
    _fresh("HubSpot", ts_ms / 1000.0, tolerance, clock())
    message = method.upper().encode() + url.encode() + body + (ts or "").encode()
    expected = base64.b64encode(hmac_sha256(secret, message)).decode()
    _compare("HubSpot", expected, header(headers, "X-HubSpot-Signature-v3"))


def sign_hubspot_v3(
    secret: str, body: bytes, url: str, method: str = "POST", ts_ms: int | None = None
) -> dict[str, str]:
    stamp = str(ts_ms if ts_ms is not None else int(time.time() * 1000))
    message = method.upper().encode() + url.encode() + body + stamp.encode()
    return {
        "X-HubSpot-Request-Timestamp": stamp,
        "X-HubSpot-Signature-v3": base64.b64encode(hmac_sha256(secret, message)).decode(),
    }


def verify_prefixed_hmac(
    vendor: str, headers: Mapping[str, str], body: bytes, secret: str | None, header_name: str, prefix: str = "sha256="
) -> None:
    """``{header_name}: sha256=<hex HMAC-SHA256(secret, body)>`` (Notion, generic signed callouts)."""
    secret = _require_secret(vendor, secret)
    expected = prefix + hmac_sha256(secret, body).hex()
    _compare(vendor, expected, header(headers, header_name))


def sign_prefixed_hmac(secret: str, body: bytes, header_name: str, prefix: str = "sha256=") -> dict[str, str]:
    return {header_name: prefix + hmac_sha256(secret, body).hex()}


def verify_shared_secret(vendor: str, expected: str | None, given: str | None) -> None:
    """A shared value the vendor echoes back (Graph clientState, Drive channel token, Dataverse key)."""
    expected = _require_secret(vendor, expected)
    _compare(vendor, expected, given)


@runtime_checkable
class SeenIdStore(Protocol):
    """Remembers processed webhook event ids; ``add_if_new`` is an atomic check-and-set."""

    def add_if_new(self, key: str) -> bool: ...


class MemorySeenIdStore:
    """A bounded in-process SeenIdStore (oldest ids forgotten first)."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def add_if_new(self, key: str) -> bool:
        with self._lock:
            if key in self._ids:
                self._ids.move_to_end(key)
                return False
            self._ids[key] = None
            if len(self._ids) > self.capacity:
                self._ids.popitem(last=False)
            return True


def dedupe(events: Iterable[WebhookEvent], seen: SeenIdStore, scope: str = "") -> list[WebhookEvent]:
    """The events not processed before; ``scope`` (e.g. the connection id) keeps ids of vendors apart."""
    fresh: list[WebhookEvent] = []
    for event in events:
        if seen.add_if_new(f"{scope}:{event.event_id}" if scope else event.event_id):
            fresh.append(event)
    return fresh
