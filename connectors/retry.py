"""The one retry policy of every connector (tenacity) and the mapping of HTTP outcomes onto core.errors.

Retried: TransientError (5xx, 408, timeouts, dropped connections) and RateLimited (429), with
exponential backoff and full jitter; a RateLimited's ``retry_after`` (from the Retry-After header)
is honoured as the wait instead. A Retry-After longer than ``max_retry_after`` is not slept
through: the RateLimited is raised at once so the engine can reschedule the run for later.
Everything else (ConfigError for 401/403, Invalid for a rejected write, DataError) fails fast
with the vendor's own message.
"""

from __future__ import annotations

import email.utils
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import tenacity

from core.errors import CastielError, ConfigError, DataError, Invalid, RateLimited, TransientError

T = TypeVar("T")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None when absent or unreadable."""
    if value is None or str(value).strip() == "":
        return None
    text = str(value).strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _header(headers: Mapping[str, Any] | None, name: str) -> str | None:
    if not headers:
        return None
    for k, v in headers.items():
        if str(k).lower() == name.lower():
            return str(v)
    return None


def _error_for_status(
    vendor: str,
    status: int,
    message: str,
    headers: Mapping[str, Any] | None = None,
    *,
    writing: bool = False,
) -> CastielError:
    """See ``error_for_status``."""
    message = (message or "").strip()[:500] or f"HTTP {status}"
    if status == 429:
        retry_after = parse_retry_after(_header(headers, "Retry-After"))
        wait = f"; retry after {retry_after:g}s" if retry_after is not None else ""
        return RateLimited(f"{vendor} rate limit reached{wait}: {message}", retry_after=retry_after)
    if status >= 500 or status == 408:
        return TransientError(f"{vendor} answered {status} (temporary): {message}")
    if status == 401:
        return ConfigError(f"{vendor} rejected the credentials (401): {message}. Reconnect the account.")
    if status == 403:
        return ConfigError(f"{vendor} denied access (403): {message}. Check the app's permissions/scopes.")
    if writing and status in (400, 409, 422):
        return Invalid(f"{vendor} rejected the change ({status}): {message}")
    if status == 404:
        return ConfigError(f"{vendor} could not find the resource (404): {message}. Check the configured ids.")
    return ConfigError(f"{vendor} refused the request ({status}): {message}")


def error_for_status(
    vendor: str,
    status: int,
    message: str,
    headers: Mapping[str, Any] | None = None,
    *,
    writing: bool = False,
) -> CastielError:
    """The core error for a non-2xx answer, carrying the vendor's message; ``.status`` keeps the HTTP status."""
    error = _error_for_status(vendor, status, message, headers, writing=writing)
    error.status = status  # type: ignore[attr-defined]
    return error


def http_status(exc: BaseException) -> int | None:
    """The HTTP status an error was made from (``error_for_status``), if any."""
    return getattr(exc, "status", None)


_TRANSPORT_TYPES: tuple[type[BaseException], ...] | None = None


def _transport_types() -> tuple[type[BaseException], ...]:
    """Timeout and connection exception classes of the HTTP stacks the vendor SDKs use."""
    global _TRANSPORT_TYPES
    if _TRANSPORT_TYPES is None:
        types: list[type[BaseException]] = [TimeoutError, ConnectionError, socket.timeout, socket.gaierror]
        try:
            import httpx

            types.append(httpx.TransportError)
        except ImportError:  # pragma: no cover - httpx is a hard dependency
            pass
        try:
            import requests

            types += [requests.ConnectionError, requests.Timeout]
            from requests.exceptions import ChunkedEncodingError

            types.append(ChunkedEncodingError)
        except ImportError:  # pragma: no cover
            pass
        try:
            import urllib3.exceptions

            types += [urllib3.exceptions.ProtocolError, urllib3.exceptions.TimeoutError, urllib3.exceptions.HTTPError]
        except ImportError:  # pragma: no cover
            pass
        try:
            import http.client

            types += [http.client.RemoteDisconnected, http.client.IncompleteRead, http.client.BadStatusLine]
        except ImportError:  # pragma: no cover
            pass
        try:
            import urllib.error

            types.append(urllib.error.URLError)
        except ImportError:  # pragma: no cover
            pass
        try:
            import httplib2

            types.append(httplib2.HttpLib2Error)
        except ImportError:  # pragma: no cover
            pass
        _TRANSPORT_TYPES = tuple(types)
    return _TRANSPORT_TYPES


def is_transport_error(exc: BaseException) -> bool:
    """True for timeouts and connection failures of any HTTP stack (worth retrying)."""
    import urllib.error

    if isinstance(exc, urllib.error.HTTPError):  # an answer, not a transport failure
        return False
    return isinstance(exc, _transport_types())


def transport_error(vendor: str, exc: BaseException) -> TransientError | ConfigError:
    """TransientError for a timeout or dropped connection; ConfigError when TLS verification failed."""
    text = f"{type(exc).__name__}: {exc}"
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        # Retrying cannot fix an untrusted certificate: a person must set the CA bundle or fix the URL.
        return ConfigError(f"{vendor} TLS certificate is not trusted ({text[:300]}); check the URL or the CA bundle")
    kind = "timed out" if "timeout" in type(exc).__name__.lower() or isinstance(exc, TimeoutError) else "failed"
    return TransientError(f"Connection to {vendor} {kind}: {text[:500]}")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter for TransientError, honouring RateLimited.retry_after.

    ``sleep`` is injectable so tests can record the waits instead of sleeping them.
    """

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 300.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            return min(float(exc.retry_after), self.max_retry_after)
        backoff = tenacity.wait_exponential_jitter(initial=self.base_delay, max=self.max_delay, jitter=self.base_delay)
        return backoff(state)

    def _stop(self, state: tenacity.RetryCallState) -> bool:
        if state.attempt_number >= self.max_attempts:
            return True
        exc = state.outcome.exception() if state.outcome else None
        # A long vendor-imposed pause is the scheduler's job, not a blocked worker's.
        return isinstance(exc, RateLimited) and exc.retry_after is not None and exc.retry_after > self.max_retry_after

    def retrying(self) -> tenacity.Retrying:
        return tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TransientError),
            wait=self._wait,
            stop=self._stop,
            sleep=self.sleep,
            reraise=True,
        )

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` under the policy; ``fn`` must raise core.errors types (see ``error_for_status``)."""
        return self.retrying()(fn, *args, **kwargs)


def fast_policy(max_attempts: int = 4, sleep: Callable[[float], None] | None = None) -> RetryPolicy:
    """A policy with millisecond waits, for tests and benchmarks against local fakes."""
    return RetryPolicy(
        max_attempts=max_attempts, base_delay=0.001, max_delay=0.01, max_retry_after=60.0, sleep=sleep or time.sleep
    )


__all__ = [
    "RetryPolicy",
    "fast_policy",
    "error_for_status",
    "parse_retry_after",
    "is_transport_error",
    "transport_error",
    "ConfigError",
    "DataError",
    "Invalid",
    "RateLimited",
    "TransientError",
]
