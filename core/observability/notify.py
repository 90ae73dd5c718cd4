"""Channel-agnostic alert notifications: targets, the message, and delivery with retries (tenacity).

Senders for each channel (SMTP email, Slack and Teams incoming webhooks) live in
``core.adapters.notify_channels``; here a ``Sender`` is anything with ``send(target, message)``
that raises ``TransientError`` for failures worth retrying and any other ``CastielError`` for
failures that need a person (bad address, revoked webhook). Every delivery is recorded in the
``notifications`` container; a delivery that still fails after its retries is marked ``failed``
and the caller keeps the alert open (a notification failing never resolves or hides an alert).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from core import clock
from core.adapters.store import DocumentStore
from core.errors import CastielError, Invalid, RateLimited, TransientError

log = logging.getLogger(__name__)

CONTAINER = "notifications"
CHANNEL_KINDS: tuple[str, ...] = ("email", "slack", "teams")
_EMAIL_RE = re.compile(r"^[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+$|^[^@\s,;]+@localhost$")
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class Target:
    """Where one notification goes: an email address or an incoming-webhook URL."""

    kind: str
    address: str

    @property
    def label(self) -> str:
        """Safe to show and store: webhook URLs carry their secret in the path, so keep only the host."""
        if self.kind == "email":
            return f"email:{self.address}"
        parts = urlsplit(self.address)
        return f"{self.kind}:{parts.scheme}://{parts.netloc}/…{self.address[-4:]}"

    def to_doc(self) -> dict[str, str]:
        return {"kind": self.kind, "address": self.address}


def parse_target(kind: str, address: str) -> Target:
    """Validate a channel target; ``Invalid`` says what is wrong with it."""
    kind = (kind or "").strip().lower()
    address = (address or "").strip()
    if kind not in CHANNEL_KINDS:
        raise Invalid(f"unknown notification channel {kind!r}; use one of {', '.join(CHANNEL_KINDS)}")
    if kind == "email":
        if not _EMAIL_RE.match(address):
            raise Invalid(f"{address!r} is not an email address (expected name@example.com)")
        return Target(kind, address)
    parts = urlsplit(address)
    if parts.scheme not in {"https", "http"} or not parts.hostname:
        raise Invalid(f"a {kind} webhook must be an https:// URL, got {address!r}")
    # Plain http only to this machine (tests, a local relay); webhook URLs carry a secret.
    if parts.scheme == "http" and parts.hostname not in _LOCAL_HOSTS:
        raise Invalid(f"a {kind} webhook must use https (plain http is allowed only to localhost), got {address!r}")
    return Target(kind, address)


def targets_from_docs(docs: Iterable[Mapping[str, Any]] | None) -> tuple[Target, ...]:
    return tuple(parse_target(str(d.get("kind", "")), str(d.get("address", ""))) for d in docs or ())


@dataclass(frozen=True)
class AlertMessage:
    """What a notification says, independent of the channel that formats it."""

    event: str  # opened | reminder | resolved | test
    tenant_id: str
    rule: str
    title: str
    severity: str
    summary: str
    subject: str = ""
    value: str = ""
    threshold: str = ""
    alert_id: str = ""
    at: str = field(default_factory=clock.iso)
    link: str | None = None

    @property
    def headline(self) -> str:
        labels = {"resolved": "RESOLVED", "reminder": "STILL OPEN", "test": "TEST"}
        prefix = labels.get(self.event, self.severity.upper())
        return f"[{prefix}] {self.title} - {self.tenant_id}"


class Sender(Protocol):
    def send(self, target: Target, message: AlertMessage) -> None:
        """Deliver or raise: ``TransientError`` (retried) or another ``CastielError`` (not retried)."""


@dataclass
class Delivery:
    target: str
    kind: str
    status: str  # sent | failed
    attempts: int
    error: str | None = None
    notification_id: str | None = None


class Notifier:
    """Delivers a message to targets through the matching senders, with retries and a record of each."""

    def __init__(
        self,
        senders: Mapping[str, Sender],
        store: DocumentStore | None = None,
        *,
        attempts: int = 4,
        initial_wait: float = 1.0,
        max_wait: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = clock.now,
    ) -> None:
        if attempts < 1:
            raise Invalid("notification attempts must be at least 1")
        self.senders = dict(senders)
        self.store = store
        self.attempts = attempts
        self.initial_wait = initial_wait
        self.max_wait = max_wait
        self._sleep = sleep
        self._now = now
        self._backoff = wait_exponential_jitter(initial=initial_wait, max=max_wait, jitter=initial_wait)

    def _wait(self, state: RetryCallState) -> float:
        # A rate limit says how long to wait; honour it (capped), else back off exponentially.
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            return float(min(max(exc.retry_after, 0.0), self.max_wait))
        return float(self._backoff(state))

    def send_one(self, target: Target, message: AlertMessage) -> Delivery:
        sender = self.senders.get(target.kind)
        if sender is None:
            return Delivery(target.label, target.kind, "failed", 0, f"no {target.kind} sender is configured")
        retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=self._wait,
            retry=retry_if_exception_type(TransientError),
            sleep=self._sleep,
            reraise=True,
        )
        attempts = 0
        try:
            for attempt in retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    sender.send(target, message)
        except CastielError as e:
            return Delivery(target.label, target.kind, "failed", attempts, e.message)
        except Exception as e:  # a sender bug must not take the evaluation cycle down
            log.exception("notification sender for %s raised unexpectedly", target.kind)
            return Delivery(target.label, target.kind, "failed", attempts, f"{type(e).__name__}: {e}")
        return Delivery(target.label, target.kind, "sent", attempts)

    def deliver(self, message: AlertMessage, targets: Sequence[Target], *, record: bool = True) -> list[Delivery]:
        """Send to every target (each with its own retries); record each outcome unless ``record=False``."""
        out: list[Delivery] = []
        seen: set[Target] = set()
        for target in targets:
            if target in seen:
                continue
            seen.add(target)
            d = self.send_one(target, message)
            if d.status == "failed":
                log.warning("notification to %s failed after %d attempts: %s", d.target, d.attempts, d.error)
            if record and self.store is not None:
                d.notification_id = self._record(message, d)
            out.append(d)
        return out

    def _record(self, message: AlertMessage, d: Delivery) -> str | None:
        assert self.store is not None
        doc = {
            "id": f"nt-{uuid.uuid4().hex[:20]}",
            "tenantId": message.tenant_id,
            "alertId": message.alert_id,
            "rule": message.rule,
            "event": message.event,
            "at": clock.iso(self._now()),
            **{k: v for k, v in asdict(d).items() if k != "notification_id"},
        }
        try:
            self.store.create(CONTAINER, doc)
            return str(doc["id"])
        except CastielError as e:
            # The store may be the thing that is down; the delivery itself already happened.
            log.warning("could not record a notification (%s): %s", d.status, e.message)
            return None
