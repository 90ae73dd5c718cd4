"""Shared HTTP plumbing for connectors: TLS settings, httpx/requests clients and one JSON call path.

``JsonApi.request`` is the one way a plain-HTTP connector talks to its vendor: it adds the bearer
token, refreshes it once on a 401, maps the answer onto core.errors (``retry.error_for_status``)
and runs everything under the connection's RetryPolicy.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import httpx
import requests

from connectors.retry import RetryPolicy, error_for_status, is_transport_error, transport_error
from core.errors import ConfigError, ConnectorError

if TYPE_CHECKING:
    from connectors.oauth2 import TokenProvider

USER_AGENT = "castiel-admin-console/1.0"


def tls_verify(config: Mapping[str, Any]) -> str | bool:
    """``ca_bundle`` from the connection config (a private CA or a TLS-inspecting proxy), else system CAs."""
    bundle = config.get("ca_bundle")
    return str(bundle) if bundle else True


def ssl_context(config: Mapping[str, Any]) -> ssl.SSLContext:
    bundle = config.get("ca_bundle")
    return ssl.create_default_context(cafile=str(bundle)) if bundle else ssl.create_default_context()


def httpx_client(config: Mapping[str, Any], timeout: float, base_url: str = "", **kwargs: Any) -> httpx.Client:
    headers = {"User-Agent": USER_AGENT, **kwargs.pop("headers", {})}
    return httpx.Client(
        base_url=base_url,
        timeout=httpx.Timeout(timeout),
        verify=ssl_context(config),
        headers=headers,
        **kwargs,
    )


class RecordingSession(requests.Session):
    """A requests session with a default timeout that keeps the last response.

    SDKs built on requests (simple-salesforce, msal) turn error answers into their own
    exceptions and drop the headers; ``last_response`` keeps Retry-After within reach.
    """

    def __init__(self, timeout: float | None = None) -> None:
        super().__init__()
        self.default_timeout = timeout
        self.last_response: requests.Response | None = None

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if self.default_timeout is not None:
            kwargs.setdefault("timeout", self.default_timeout)
        if isinstance(self.verify, str):
            # A per-request value, because requests lets REQUESTS_CA_BUNDLE override session.verify.
            kwargs.setdefault("verify", self.verify)
        self.last_response = None
        response = super().request(method, url, *args, **kwargs)
        self.last_response = response
        return response


def requests_session(config: Mapping[str, Any], timeout: float | None = None) -> RecordingSession:
    session = RecordingSession(timeout)
    session.verify = tls_verify(config)
    session.headers["User-Agent"] = USER_AGENT
    return session


def default_error_message(response: httpx.Response) -> str:
    """The vendor's own words from a JSON error body (OAuth, OData, Graph, Google, HubSpot shapes)."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, list) and body and isinstance(body[0], dict):
        body = body[0]
    if not isinstance(body, dict):
        return str(body)[:300]
    err = body.get("error")
    if isinstance(err, dict):
        code = err.get("code") or err.get("status") or ""
        msg = err.get("message") or ""
        return f"{code}: {msg}".strip(": ")
    if isinstance(err, str):
        desc = body.get("error_description") or body.get("message") or ""
        return f"{err}: {desc}".strip(": ")
    for key in ("message", "errorMessage", "detail"):
        if body.get(key):
            return str(body[key])
    return response.text[:300]


class JsonApi:
    """Bearer-authenticated JSON calls with the retry policy, 401-refresh and error mapping."""

    def __init__(
        self,
        vendor: str,
        client: httpx.Client,
        retry: RetryPolicy,
        auth: TokenProvider | None = None,
        error_message: Callable[[httpx.Response], str] = default_error_message,
    ) -> None:
        self.vendor = vendor
        self.client = client
        self.retry = retry
        self.auth = auth
        self.error_message = error_message

    def _once(
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | None,
        json: Any,
        headers: Mapping[str, str] | None,
        writing: bool,
        follow_redirects: bool,
    ) -> httpx.Response:
        refreshed = False
        while True:
            hdrs = dict(headers or {})
            if self.auth is not None:
                hdrs["Authorization"] = f"Bearer {self.auth.access_token()}"
            try:
                response = self.client.request(
                    method, url, params=params, json=json, headers=hdrs, follow_redirects=follow_redirects
                )
            except httpx.TransportError as exc:
                raise transport_error(self.vendor, exc) from exc
            if response.status_code == 401 and self.auth is not None and self.auth.can_refresh and not refreshed:
                # An access token can lapse before its advertised expiry (revoked session, clock skew).
                self.auth.refresh()
                refreshed = True
                continue
            if response.status_code >= 400:
                raise error_for_status(
                    self.vendor, response.status_code, self.error_message(response), response.headers, writing=writing
                )
            return response

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        writing: bool = False,
        follow_redirects: bool = False,
    ) -> httpx.Response:
        return self.retry.call(self._once, method, url, params, json, headers, writing, follow_redirects)

    def get_json(self, url: str, **kwargs: Any) -> dict[str, Any]:
        response = self.request("GET", url, **kwargs)
        return parse_json(self.vendor, response)


def parse_json(vendor: str, response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as exc:
        # A truncated or non-JSON 2xx body is a broken transfer, worth another attempt.
        from core.errors import TransientError

        raise TransientError(f"{vendor} sent an unreadable response ({len(response.content)} bytes)") from exc
    if not isinstance(body, dict):
        raise ConfigError(f"{vendor} answered with an unexpected JSON shape ({type(body).__name__})")
    return body


def call_sdk(vendor: str, fn: Callable[[], Any], map_error: Callable[[BaseException], ConnectorError | None]) -> Any:
    """Run one SDK call, turning its exceptions into core errors (``map_error`` knows the SDK's types)."""
    try:
        return fn()
    except ConnectorError:
        raise
    except Exception as exc:
        mapped = map_error(exc)
        if mapped is not None:
            raise mapped from exc
        if is_transport_error(exc):
            raise transport_error(vendor, exc) from exc
        raise
