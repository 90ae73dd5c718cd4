"""OAuth2 token providers: refresh-token and client-credentials grants, refreshed ahead of expiry.

A ``TokenProvider`` hands out a valid access token, refreshing it ``refresh_margin`` seconds
before it lapses (or at once when a vendor answers 401), and reports the token outlook for the
health model (``info()``). Every refresh is passed to the connection's ``TokenStore`` so the
caller persists the new tokens; a revoked or expired refresh token (``invalid_grant``) is a
ConfigError: a person must reconnect the account.

Token dict kept in ``credentials`` and saved to the store:
    access_token, refresh_token, expires_at (epoch s, None if the vendor gives no lifetime),
    refresh_token_issued_at (epoch s), token_type, scope, plus what the vendor added.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

from connectors.retry import RetryPolicy, error_for_status, transport_error
from core.errors import ConfigError, ConnectorError, RateLimited, TransientError

if TYPE_CHECKING:
    from connectors.base import TokenStore

# OAuth error codes (RFC 6749 5.2 and vendor variants) that mean a person has to reconnect.
REAUTH_ERRORS = frozenset(
    {
        "invalid_grant",
        "invalid_client",
        "unauthorized_client",
        "invalid_scope",
        "access_denied",
        "invalid_refresh_token",
        "token_revoked",
        "invalid_client_id",
        "bad_client_secret",
        "interaction_required",
        "consent_required",
    }
)
TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error", "service_unavailable"})


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(float(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def oauth_error(vendor: str, code: str, description: str) -> ConnectorError:
    """Map an OAuth token-endpoint error code to the core error a person can act on."""
    code = (code or "").strip()
    text = f"{code}: {description}".strip(": ")
    if code in TRANSIENT_ERRORS:
        return TransientError(f"{vendor} token service is unavailable ({text})")
    if code == "invalid_grant" or code in ("invalid_refresh_token", "token_revoked"):
        return ConfigError(
            f"{vendor} refused the refresh token ({text}); it was revoked or expired. Reconnect the account."
        )
    if code in ("invalid_client", "unauthorized_client", "invalid_client_id", "bad_client_secret"):
        return ConfigError(f"{vendor} rejected the app's client id/secret ({text}). Update the connection's app keys.")
    return ConfigError(f"{vendor} could not issue a token ({text}).")


class TokenProvider(ABC):
    """Hands out a valid access token and says what it knows about token lifetimes."""

    auth_kind = "oauth2"

    @abstractmethod
    def access_token(self) -> str: ...

    @abstractmethod
    def refresh(self) -> str:
        """Get a new access token now (after a 401), whatever the recorded expiry says."""

    @property
    def can_refresh(self) -> bool:
        return True

    def info(self) -> dict[str, Any] | None:
        return None


class StaticToken(TokenProvider):
    """A long-lived API token (Slack bot token, Notion integration token): nothing to refresh."""

    auth_kind = "api_token"

    def __init__(self, vendor: str, token: str) -> None:
        if not token:
            raise ConfigError(f"{vendor} connection has no API token; paste one in the connection's credentials")
        self.vendor = vendor
        self.token = token

    def access_token(self) -> str:
        return self.token

    def refresh(self) -> str:
        raise ConfigError(f"{self.vendor} rejected the API token; it was revoked or is wrong. Paste a new one.")

    @property
    def can_refresh(self) -> bool:
        return False


class OAuth2Client(TokenProvider):
    """Tokens from a standard OAuth2 token endpoint (``grant`` = refresh_token or client_credentials)."""

    def __init__(
        self,
        vendor: str,
        token_url: str,
        *,
        client_id: str,
        client_secret: str,
        credentials: dict[str, Any],
        http: httpx.Client,
        retry: RetryPolicy,
        grant: str = "refresh_token",
        scope: str | None = None,
        token_store: TokenStore | None = None,
        refresh_margin: float = 300.0,
        refresh_token_lifetime_days: float | None = None,
        basic_auth: bool = False,
        extra_params: dict[str, str] | None = None,
        response_error: Callable[[dict[str, Any]], tuple[str, str] | None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if grant not in ("refresh_token", "client_credentials"):
            raise ValueError(f"unsupported grant {grant}")
        if not client_id or not client_secret:
            raise ConfigError(f"{vendor} connection is missing the app's client id or client secret")
        if grant == "refresh_token" and not credentials.get("refresh_token"):
            raise ConfigError(f"{vendor} connection has no refresh token; connect the account (OAuth consent) first")
        self.vendor = vendor
        self.token_url = token_url
        self.client_id = client_id
        self.client_secret = client_secret
        self.tokens = {
            k: credentials.get(k)
            for k in ("access_token", "refresh_token", "expires_at", "refresh_token_issued_at")
            if credentials.get(k) is not None
        }
        self.http = http
        self.retry = retry
        self.grant = grant
        self.scope = scope
        self.token_store = token_store
        self.refresh_margin = refresh_margin
        self.refresh_token_lifetime_days = refresh_token_lifetime_days
        self.basic_auth = basic_auth
        self.extra_params = extra_params or {}
        self.response_error = response_error
        self.clock = clock
        self.last_refresh_at: float | None = None
        self.last_refresh_error: str | None = None
        self._lock = threading.Lock()

    @property
    def auth_kind(self) -> str:  # type: ignore[override]
        return "oauth2_refresh" if self.grant == "refresh_token" else "client_credentials"

    def _fresh_enough(self) -> bool:
        if not self.tokens.get("access_token"):
            return False
        expires_at = self.tokens.get("expires_at")
        # No advertised lifetime (Salesforce): use it until the vendor answers 401.
        return expires_at is None or float(expires_at) - self.refresh_margin > self.clock()

    def access_token(self) -> str:
        with self._lock:
            if not self._fresh_enough():
                self._refresh_locked()
            return str(self.tokens["access_token"])

    def refresh(self) -> str:
        with self._lock:
            self._refresh_locked()
            return str(self.tokens["access_token"])

    def _request_body(self) -> dict[str, str]:
        body = {"grant_type": self.grant, **self.extra_params}
        if self.grant == "refresh_token":
            body["refresh_token"] = str(self.tokens["refresh_token"])
        if self.scope:
            body["scope"] = self.scope
        if not self.basic_auth:
            body["client_id"] = self.client_id
            body["client_secret"] = self.client_secret
        return body

    def _post_once(self) -> dict[str, Any]:
        try:
            headers = {"Accept": "application/json"}
            if self.basic_auth:
                basic = httpx.BasicAuth(self.client_id, self.client_secret)
                response = self.http.post(self.token_url, data=self._request_body(), auth=basic, headers=headers)
            else:
                response = self.http.post(self.token_url, data=self._request_body(), headers=headers)
        except httpx.TransportError as exc:
            raise transport_error(f"{self.vendor} token service", exc) from exc
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        err = body.get("error") if response.status_code >= 400 else None
        if self.response_error is not None and err is None:
            found = self.response_error(body)
            if found is not None:
                raise oauth_error(self.vendor, *found)
        if response.status_code in (429,) or response.status_code >= 500:
            raise error_for_status(self.vendor, response.status_code, response.text[:300], response.headers)
        if isinstance(err, str):
            raise oauth_error(self.vendor, err, str(body.get("error_description") or ""))
        if response.status_code >= 400:
            raise error_for_status(self.vendor, response.status_code, response.text[:300], response.headers)
        if not body.get("access_token"):
            raise ConfigError(f"{self.vendor} token service answered without an access token")
        return body

    def _refresh_locked(self) -> None:
        try:
            body = self.retry.call(self._post_once)
        except (ConfigError, TransientError, RateLimited) as exc:
            self.last_refresh_error = exc.message
            raise
        now = self.clock()
        self.tokens["access_token"] = body["access_token"]
        expires_in = body.get("expires_in")
        self.tokens["expires_at"] = now + float(expires_in) if expires_in not in (None, "") else None
        if body.get("refresh_token") and body["refresh_token"] != self.tokens.get("refresh_token"):
            # Rotating refresh tokens (HubSpot, Slack, Microsoft): the new one restarts the lifetime clock.
            self.tokens["refresh_token"] = body["refresh_token"]
            self.tokens["refresh_token_issued_at"] = now
        elif self.grant == "refresh_token" and "refresh_token_issued_at" not in self.tokens:
            self.tokens["refresh_token_issued_at"] = None
        for key in ("token_type", "scope", "instance_url", "id_token"):
            if key in body:
                self.tokens[key] = body[key]
        self.last_refresh_at = now
        self.last_refresh_error = None
        if self.token_store is not None:
            self.token_store.save(dict(self.tokens))

    def info(self) -> dict[str, Any]:
        return {
            "auth": self.auth_kind,
            "access_token_expires_at": _iso(self.tokens.get("expires_at")),
            "refresh_token_issued_at": _iso(self.tokens.get("refresh_token_issued_at")),
            "refresh_token_lifetime_days": self.refresh_token_lifetime_days,
            "last_refresh_at": _iso(self.last_refresh_at),
            "last_refresh_error": self.last_refresh_error,
        }


class MsalTokenProvider(TokenProvider):
    """Azure AD tokens through msal: client credentials (app-only) or a delegated refresh token."""

    def __init__(
        self,
        vendor: str,
        *,
        authority: str,
        client_id: str,
        client_secret: str,
        scopes: list[str],
        credentials: dict[str, Any],
        session_factory: Callable[[], Any],
        retry: RetryPolicy,
        token_store: TokenStore | None = None,
        refresh_margin: float = 300.0,
        refresh_token_lifetime_days: float | None = 90.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not client_id or not client_secret:
            raise ConfigError(f"{vendor} connection is missing the Azure AD app's client id or client secret")
        self.vendor = vendor
        self.authority = authority.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.scopes = scopes
        self.delegated = bool(credentials.get("refresh_token"))
        self.tokens = {
            k: credentials.get(k)
            for k in ("access_token", "refresh_token", "expires_at", "refresh_token_issued_at")
            if credentials.get(k) is not None
        }
        self.session_factory = session_factory
        self.retry = retry
        self.token_store = token_store
        self.refresh_margin = refresh_margin
        self.refresh_token_lifetime_days = refresh_token_lifetime_days if self.delegated else None
        self.clock = clock
        self.last_refresh_at: float | None = None
        self.last_refresh_error: str | None = None
        self._app: Any = None
        self._lock = threading.Lock()

    @property
    def auth_kind(self) -> str:  # type: ignore[override]
        return "oauth2_refresh" if self.delegated else "client_credentials"

    def _application(self) -> Any:
        if self._app is None:
            import msal

            # Built lazily: msal reads the tenant's OpenID configuration in its constructor.
            self._app = msal.ConfidentialClientApplication(
                self.client_id,
                client_credential=self.client_secret,
                authority=self.authority,
                http_client=self.session_factory(),
                instance_discovery=False,
                validate_authority=False,
                token_cache=msal.TokenCache(),
            )
        return self._app

    def _acquire_once(self) -> dict[str, Any]:
        try:
            app = self._application()
            if self.delegated:
                result = app.acquire_token_by_refresh_token(str(self.tokens["refresh_token"]), scopes=self.scopes)
            else:
                # A fresh cache each time we are asked, so a 401-triggered refresh really fetches.
                import msal

                app.token_cache = msal.TokenCache()
                result = app.acquire_token_for_client(scopes=self.scopes)
        except ValueError as exc:  # msal raises ValueError when discovery or the answer is unreadable
            self._app = None
            raise TransientError(f"{self.vendor} sign-in service answered unexpectedly: {exc}") from exc
        except Exception as exc:
            from connectors.retry import is_transport_error

            self._app = None
            if is_transport_error(exc):
                raise transport_error(f"{self.vendor} sign-in service", exc) from exc
            raise
        if "access_token" not in result:
            code = str(result.get("error") or "")
            desc = str(result.get("error_description") or "").split("\r\n")[0]
            if code == "invalid_client" or "AADSTS7000215" in desc or "AADSTS7000222" in desc:
                raise oauth_error(self.vendor, "invalid_client", desc)
            raise oauth_error(self.vendor, code, desc)
        return result

    def _refresh_locked(self) -> None:
        try:
            result = self.retry.call(self._acquire_once)
        except (ConfigError, TransientError) as exc:
            self.last_refresh_error = exc.message
            raise
        now = self.clock()
        self.tokens["access_token"] = result["access_token"]
        self.tokens["expires_at"] = now + float(result.get("expires_in") or 3600)
        if result.get("refresh_token") and result["refresh_token"] != self.tokens.get("refresh_token"):
            self.tokens["refresh_token"] = result["refresh_token"]
            self.tokens["refresh_token_issued_at"] = now
        self.last_refresh_at = now
        self.last_refresh_error = None
        if self.token_store is not None:
            self.token_store.save(dict(self.tokens))

    def access_token(self) -> str:
        with self._lock:
            expires_at = self.tokens.get("expires_at")
            if not self.tokens.get("access_token") or (
                expires_at is not None and float(expires_at) - self.refresh_margin <= self.clock()
            ):
                self._refresh_locked()
            return str(self.tokens["access_token"])

    def refresh(self) -> str:
        with self._lock:
            self._refresh_locked()
            return str(self.tokens["access_token"])

    def info(self) -> dict[str, Any]:
        return {
            "auth": self.auth_kind,
            "access_token_expires_at": _iso(self.tokens.get("expires_at")),
            "refresh_token_issued_at": _iso(self.tokens.get("refresh_token_issued_at")),
            "refresh_token_lifetime_days": self.refresh_token_lifetime_days,
            "last_refresh_at": _iso(self.last_refresh_at),
            "last_refresh_error": self.last_refresh_error,
        }
