"""OAuth2 token providers: refresh-token and client-credentials grants, refreshed ahead of expiry.

A ``TokenProvider`` hands out a valid access token, refreshing it ``refresh_margin`` seconds
before it lapses (or at once when a vendor answers 401), and reports the token outlook for the
health model (``info()``). Every refresh is passed to the connection's ``TokenStore`` so the
caller persists the new tokens; a revoked or expired refresh token (``invalid_grant``) is a
ConfigError: a person must reconnect the account.

Token dict kept in ``credentials`` and saved to the store:
    access_token, refresh_token, expires_at (epoch s, None if the vendor gives no lifetime),
    refresh_token_issued_at (epoch s), token_type, scope, plus what the vendor added.

Consent (authorization-code grant, RFC 6749 4.1, with PKCE S256 per RFC 7636 where the vendor
takes it): a connector's ``consent()`` returns a ``ConsentFlow``. ``begin(redirect_uri, state)``
gives the vendor page to send the person to and a small secret (the PKCE verifier, or msal's
auth-code flow) that the caller keeps sealed until the vendor redirects back;
``complete(secret, redirect_uri, params)`` redeems the code through the same token client, retry
policy and error mapping the refresh uses and returns the new tokens for the caller to store.
A refused code or a declined consent is a ConfigError (a person has to try again).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
import urllib.parse
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

from connectors.retry import RetryPolicy, error_for_status, transport_error
from core.errors import ConfigError, ConnectorError, RateLimited, TransientError

if TYPE_CHECKING:
    from connectors.base import TokenStore

TOKEN_FIELDS = ("access_token", "refresh_token", "expires_at", "refresh_token_issued_at")
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


def stored_tokens(credentials: Mapping[str, Any]) -> dict[str, Any]:
    """The token fields a connection's stored credentials carry (the rest are app keys and settings)."""
    return {k: credentials[k] for k in TOKEN_FIELDS if credentials.get(k) is not None}


def oauth_error(vendor: str, code: str, description: str, grant: str = "refresh_token") -> ConnectorError:
    """Map an OAuth token-endpoint error code to the core error a person can act on."""
    code = (code or "").strip()
    text = f"{code}: {description}".strip(": ")
    if code in TRANSIENT_ERRORS:
        return TransientError(f"{vendor} token service is unavailable ({text})")
    if grant == "authorization_code" and code in ("invalid_grant", "invalid_request", "bad_verification_code",
                                                  "invalid_code", "code_already_used", "bad_redirect_uri"):
        return ConfigError(
            f"{vendor} refused the authorization code ({text}); it expired, was already used or does not match "
            "this consent. Start Connect again."
        )
    if code == "invalid_grant" or code in ("invalid_refresh_token", "token_revoked"):
        return ConfigError(
            f"{vendor} refused the refresh token ({text}); it was revoked or expired. Reconnect the account."
        )
    if code in ("invalid_client", "unauthorized_client", "invalid_client_id", "bad_client_secret"):
        return ConfigError(f"{vendor} rejected the app's client id/secret ({text}). Update the connection's app keys.")
    return ConfigError(f"{vendor} could not issue a token ({text}).")


def authorization_error(vendor: str, code: str, description: str = "") -> ConfigError:
    """The vendor redirected back with ``error=...`` instead of a code (RFC 6749 4.1.2.1)."""
    code = (code or "").strip() or "error"
    detail = f" ({description.strip()[:300]})" if description and description.strip() else ""
    if code == "access_denied":
        return ConfigError(
            f"{vendor} consent was declined (access_denied){detail}. Nothing changed; "
            "the connection keeps its previous credentials."
        )
    if code in ("invalid_scope", "unauthorized_client", "invalid_client", "invalid_request"):
        return ConfigError(f"{vendor} refused the consent request ({code}){detail}. Check the app's settings and "
                           "its registered redirect URI.")
    if code in TRANSIENT_ERRORS:
        return ConfigError(f"{vendor} sign-in was unavailable ({code}){detail}. Try Connect again.")
    return ConfigError(f"{vendor} did not grant access ({code}){detail}.")


# -- PKCE and the authorize URL (RFC 7636, RFC 6749 4.1.1) -------------------------------------
def pkce_pair() -> tuple[str, str]:
    """A fresh (code_verifier, S256 code_challenge): 86 unreserved characters and their hash."""
    verifier = secrets.token_urlsafe(64)
    return verifier, pkce_challenge(verifier)


def pkce_challenge(verifier: str) -> str:
    """BASE64URL(SHA256(ASCII(code_verifier))) without padding, as RFC 7636 4.2 defines S256."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def authorization_url(
    authorize_url: str,
    *,
    client_id: str,
    redirect_uri: str,
    state: str,
    scopes: Sequence[str] = (),
    scope_separator: str = " ",
    code_challenge: str | None = None,
    extra_params: Mapping[str, str] | None = None,
) -> str:
    """The vendor page that asks the person to consent; parameters already in ``authorize_url`` are kept."""
    parts = urllib.parse.urlsplit(authorize_url)
    params = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    params.update(response_type="code", client_id=client_id, redirect_uri=redirect_uri, state=state)
    if scopes:
        params["scope"] = scope_separator.join(scopes)
    if code_challenge:
        params.update(code_challenge=code_challenge, code_challenge_method="S256")
    params.update(extra_params or {})
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(params)))


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
    """Tokens from a standard OAuth2 token endpoint (``grant`` = refresh_token or client_credentials).

    ``grant="authorization_code"`` is a client that has no refresh token yet: it refuses to hand
    out tokens until ``exchange_code`` redeems a consent, then refreshes like a refresh-token client.
    """

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
        json_body: bool = False,
        extra_params: dict[str, str] | None = None,
        response_error: Callable[[dict[str, Any]], tuple[str, str] | None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if grant not in ("refresh_token", "client_credentials", "authorization_code"):
            raise ValueError(f"unsupported grant {grant}")
        if not client_id or not client_secret:
            raise ConfigError(f"{vendor} connection is missing the app's client id or client secret")
        if grant == "refresh_token" and not credentials.get("refresh_token"):
            raise ConfigError(f"{vendor} connection has no refresh token; connect the account (OAuth consent) first")
        self.vendor = vendor
        self.token_url = token_url
        self.client_id = client_id
        self.client_secret = client_secret
        self.tokens = stored_tokens(credentials)
        self.http = http
        self.retry = retry
        self.grant = grant
        self.scope = scope
        self.token_store = token_store
        self.refresh_margin = refresh_margin
        self.refresh_token_lifetime_days = refresh_token_lifetime_days
        self.basic_auth = basic_auth
        self.json_body = json_body  # the grant as a JSON object (Notion) instead of a form (RFC 6749)
        self.extra_params = extra_params or {}
        self.response_error = response_error
        self.clock = clock
        self.last_refresh_at: float | None = None
        self.last_refresh_error: str | None = None
        self._lock = threading.Lock()

    @property
    def auth_kind(self) -> str:  # type: ignore[override]
        return "client_credentials" if self.grant == "client_credentials" else "oauth2_refresh"

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

    def _post_once(self, form: dict[str, str] | None = None) -> dict[str, Any]:
        form = self._request_body() if form is None else form
        try:
            headers = {"Accept": "application/json"}
            payload: dict[str, Any] = {"json": form} if self.json_body else {"data": form}
            if self.basic_auth:
                basic = httpx.BasicAuth(self.client_id, self.client_secret)
                response = self.http.post(self.token_url, auth=basic, headers=headers, **payload)
            else:
                response = self.http.post(self.token_url, headers=headers, **payload)
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
                raise oauth_error(self.vendor, *found, grant=form["grant_type"])
        if response.status_code in (429,) or response.status_code >= 500:
            raise error_for_status(self.vendor, response.status_code, response.text[:300], response.headers)
        if isinstance(err, str):
            raise oauth_error(self.vendor, err, str(body.get("error_description") or ""), grant=form["grant_type"])
        if response.status_code >= 400:
            raise error_for_status(self.vendor, response.status_code, response.text[:300], response.headers)
        if not body.get("access_token"):
            raise ConfigError(f"{self.vendor} token service answered without an access token")
        return body

    def _refresh_locked(self) -> None:
        if self.grant == "authorization_code":
            self.last_refresh_error = (
                f"{self.vendor} connection has no refresh token; connect the account (OAuth consent) first"
            )
            raise ConfigError(self.last_refresh_error)
        try:
            body = self.retry.call(self._post_once)
        except (ConfigError, TransientError, RateLimited) as exc:
            self.last_refresh_error = exc.message
            raise
        self._accept(body)
        if self.token_store is not None:
            self.token_store.save(dict(self.tokens))

    def exchange_code(self, code: str, redirect_uri: str, code_verifier: str | None = None) -> dict[str, Any]:
        """Redeem a consent's authorization code for tokens (RFC 6749 4.1.3; PKCE RFC 7636 4.5).

        Same token endpoint, retry policy and error mapping as the refresh; a refused code is a
        ConfigError. The tokens replace whatever the client held and are returned for the caller
        to store (the token store is not called: the caller writes them with the consent's record).
        """
        if not code:
            raise ConfigError(f"{self.vendor} sent no authorization code back; start Connect again")
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, **self.extra_params}
        if code_verifier:
            form["code_verifier"] = code_verifier
        if not self.basic_auth:
            form["client_id"] = self.client_id
            form["client_secret"] = self.client_secret
        with self._lock:
            try:
                body = self.retry.call(self._post_once, form)
            except (ConfigError, TransientError, RateLimited) as exc:
                self.last_refresh_error = exc.message
                raise
            self.tokens = {}
            self._accept(body)
            if self.tokens.get("refresh_token"):
                self.grant = "refresh_token"
            return dict(self.tokens)

    def _accept(self, body: dict[str, Any]) -> None:
        """Take a token-endpoint answer into ``tokens``."""
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
        self.tokens = stored_tokens(credentials)
        self.session_factory = session_factory
        self.retry = retry
        self.token_store = token_store
        self.refresh_margin = refresh_margin
        self._delegated_lifetime = refresh_token_lifetime_days
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

    def _msal(self, call: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
        """Run one msal call, mapping its failures onto the error taxonomy."""
        try:
            return call(self._application())
        except ValueError as exc:  # msal raises ValueError when discovery or the answer is unreadable
            self._app = None
            raise TransientError(f"{self.vendor} sign-in service answered unexpectedly: {exc}") from exc
        except Exception as exc:
            from connectors.retry import is_transport_error

            self._app = None
            if is_transport_error(exc):
                raise transport_error(f"{self.vendor} sign-in service", exc) from exc
            raise

    def _check_result(self, result: dict[str, Any], grant: str = "refresh_token") -> dict[str, Any]:
        if "access_token" not in result:
            code = str(result.get("error") or "")
            desc = str(result.get("error_description") or "").split("\r\n")[0]
            if code == "invalid_client" or "AADSTS7000215" in desc or "AADSTS7000222" in desc:
                raise oauth_error(self.vendor, "invalid_client", desc)
            raise oauth_error(self.vendor, code, desc, grant=grant)
        return result

    def _acquire_once(self) -> dict[str, Any]:
        def acquire(app: Any) -> dict[str, Any]:
            if self.delegated:
                return app.acquire_token_by_refresh_token(str(self.tokens["refresh_token"]), scopes=self.scopes)
            # A fresh cache each time we are asked, so a 401-triggered refresh really fetches.
            import msal

            app.token_cache = msal.TokenCache()
            return app.acquire_token_for_client(scopes=self.scopes)

        return self._check_result(self._msal(acquire))

    def begin_consent(self, scopes: Sequence[str], redirect_uri: str, state: str) -> ConsentStart:
        """msal's auth-code flow (it adds PKCE S256 and a nonce); the flow dict is the secret to keep."""
        def initiate(app: Any) -> dict[str, Any]:
            # The console reads the answer from the redirect's query string (a page cannot take a
            # form POST), so msal's advice to use response_mode=form_post does not apply; the code
            # is still bound to this flow by PKCE and the one-time state.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="response_mode='form_post' is recommended")
                return app.initiate_auth_code_flow(list(scopes), redirect_uri=redirect_uri, state=state)

        flow = self.retry.call(self._msal, initiate)
        return ConsentStart(str(flow["auth_uri"]), {"msal_flow": flow})

    def complete_consent(self, secret: Mapping[str, Any], params: Mapping[str, str]) -> dict[str, Any]:
        """Redeem the code with ``acquire_token_by_auth_code_flow``; the provider then refreshes delegated."""
        flow = dict(secret.get("msal_flow") or {})
        if not flow:
            raise ConfigError(f"{self.vendor} consent lost its sign-in flow; start Connect again")
        # msal checks the state and redirect URI of the answer against the flow it started.
        answer = {k: v for k, v in params.items() if k in ("code", "state", "client_info", "session_state")}

        def redeem(app: Any) -> dict[str, Any]:
            import msal

            app.token_cache = msal.TokenCache()
            try:
                return app.acquire_token_by_auth_code_flow(dict(flow), answer)
            except ValueError as exc:  # msal's check of the answer against the flow (state, nonce)
                raise ConfigError(f"{self.vendor} consent answer does not match its request ({exc}); "
                                  "start Connect again") from exc

        with self._lock:
            try:
                result = self._check_result(self.retry.call(self._msal, redeem), grant="authorization_code")
            except (ConfigError, TransientError) as exc:
                self.last_refresh_error = exc.message
                raise
            now = self.clock()
            self.tokens = {
                "access_token": result["access_token"],
                "expires_at": now + float(result.get("expires_in") or 3600),
            }
            if result.get("refresh_token"):
                self.tokens.update(refresh_token=result["refresh_token"], refresh_token_issued_at=now)
                self.delegated = True
                self.refresh_token_lifetime_days = self.refresh_token_lifetime_days or self._delegated_lifetime
            self.last_refresh_at = now
            self.last_refresh_error = None
            return dict(self.tokens)

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


# -- consent (authorization-code grant) --------------------------------------------------------
@dataclass(frozen=True)
class ConsentStart:
    """Where to send the person, and what to keep (sealed) until the vendor redirects back."""

    url: str
    secret: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ConsentResult:
    """The tokens a consent produced (to merge into the credentials) and their outlook (``info()``)."""

    tokens: dict[str, Any]
    token_info: dict[str, Any]


class ConsentFlow(ABC):
    """One vendor's consent: ``begin`` builds the authorize URL, ``complete`` redeems what comes back."""

    vendor: str = ""

    @abstractmethod
    def begin(self, redirect_uri: str, state: str) -> ConsentStart: ...

    @abstractmethod
    def complete(self, secret: Mapping[str, Any], redirect_uri: str, params: Mapping[str, str]) -> ConsentResult:
        """``params`` is the query the vendor redirected back with (``code`` and ``state``, or ``error``)."""

    def _refused(self, params: Mapping[str, str]) -> None:
        if params.get("error"):
            raise authorization_error(self.vendor, str(params["error"]), str(params.get("error_description") or ""))
        if not params.get("code"):
            raise ConfigError(f"{self.vendor} redirected back without an authorization code; start Connect again")


class OAuth2Consent(ConsentFlow):
    """Consent against a standard authorize endpoint; the code is redeemed by the connector's ``OAuth2Client``."""

    def __init__(
        self,
        client: TokenProvider,
        authorize_url: str,
        scopes: Sequence[str] = (),
        *,
        pkce: bool = True,
        scope_separator: str = " ",
        extra_params: Mapping[str, str] | None = None,
    ) -> None:
        if not isinstance(client, OAuth2Client) or client.grant == "client_credentials":
            vendor = getattr(client, "vendor", "this vendor")
            raise ConfigError(
                f"{vendor} consent needs the app's client id and client secret; enter them in the credentials first"
            )
        self.client = client
        self.vendor = client.vendor
        self.authorize_url = authorize_url
        self.scopes = tuple(scopes)
        self.pkce = pkce
        self.scope_separator = scope_separator
        self.extra_params = dict(extra_params or {})

    def begin(self, redirect_uri: str, state: str) -> ConsentStart:
        verifier, challenge = pkce_pair() if self.pkce else (None, None)
        url = authorization_url(
            self.authorize_url, client_id=self.client.client_id, redirect_uri=redirect_uri, state=state,
            scopes=self.scopes, scope_separator=self.scope_separator, code_challenge=challenge,
            extra_params=self.extra_params,
        )
        return ConsentStart(url, {"code_verifier": verifier} if verifier else {})

    def complete(self, secret: Mapping[str, Any], redirect_uri: str, params: Mapping[str, str]) -> ConsentResult:
        self._refused(params)
        tokens = self.client.exchange_code(str(params["code"]), redirect_uri, secret.get("code_verifier"))
        return ConsentResult(tokens, self.client.info())


class MsalConsent(ConsentFlow):
    """Azure AD consent through msal's auth-code flow helpers (msal builds the URL and PKCE itself)."""

    def __init__(self, provider: MsalTokenProvider, scopes: Sequence[str]) -> None:
        self.provider = provider
        self.vendor = provider.vendor
        self.scopes = tuple(scopes)

    def begin(self, redirect_uri: str, state: str) -> ConsentStart:
        return self.provider.begin_consent(self.scopes, redirect_uri, state)

    def complete(self, secret: Mapping[str, Any], redirect_uri: str, params: Mapping[str, str]) -> ConsentResult:
        self._refused(params)
        tokens = self.provider.complete_consent(secret, params)
        return ConsentResult(tokens, self.provider.info())
