"""The one connector interface: streams, records, pages, and the Connector base every vendor module subclasses.

The sync engine (core) only ever talks to this module's types; it never imports a vendor SDK.

Shape
-----

``Stream``      one object type a connector can read: ``name`` (e.g. ``"opportunities"``),
                ``object_type`` (``account | opportunity | contact | task | document | message | row``),
                ``primary_key`` (vendor field holding the id) and ``cursor_field`` (vendor field the
                incremental cursor follows, or ``None`` for delta-link / page-token feeds).
``Record``      one normalised object: ``stream``, ``source_id`` (vendor id, string), ``object_type``,
                ``data`` (normalised dict, see below), ``cursor_value`` (the record's cursor-field value
                as a string, or ``None``), ``deleted`` (``True`` when a delta feed reports a removal:
                the engine should delete/tombstone (tenant, source, source_id)).
``Page``        one batch: ``records``, ``skipped`` (``[(source_id | None, reason)]`` for malformed
                records: counted as ``data`` errors, never fatal), ``next_state`` (the stream state to
                store AFTER this page's records are committed; JSON-serialisable, opaque to the engine),
                ``has_more`` (``False`` on the last page of this run).
``Connector``   ``Connector(config, credentials, token_store=None, http_timeout=30.0, retry=None)``

    class attrs  ``name`` (provider id), ``label``, ``streams`` (tuple of Stream),
                 ``config_fields`` / ``credential_fields`` (tuple of ConfigField, for the editor;
                 credential fields are secrets, never shown back),
                 ``supports_write`` (frozenset of object types ``write`` accepts),
                 ``webhooks`` (``True`` if ``verify_webhook`` is implemented)
    read_pages(stream_name, state, full=False) -> Iterator[Page]
                 incremental from ``state`` (``None`` = first sync); ``full=True`` ignores state.
                 Raises ConfigError / TransientError / RateLimited (after the retry policy gave up).
    test_connection() -> str          a one-line human summary; raises ConfigError / TransientError
    token_info() -> dict | None       ``None`` when the connector has no expiring tokens, else
                 ``{"auth": "oauth2_refresh" | "client_credentials",
                    "access_token_expires_at": iso | None, "refresh_token_issued_at": iso | None,
                    "refresh_token_lifetime_days": float | None, "last_refresh_at": iso | None,
                    "last_refresh_error": str | None}``
    write(object_type, source_id, fields) -> str
                 outbound create (``source_id=None``) or update; returns the vendor id.
                 Raises Invalid when the object type is not in ``supports_write``.
    verify_webhook(headers, body, *, method="POST", url=None) -> list[WebhookEvent]
                 checks the vendor signature (``url`` is the public URL the vendor called, needed by
                 HubSpot v3 signatures; defaults to config ``webhook_url``); raises Invalid on a
                 bad/missing signature or stale timestamp, ConfigError when no webhook secret is
                 configured. De-duplicate the returned events by ``event_id`` with
                 ``connectors.webhooks.dedupe(events, seen_store, scope=connection_id)``.
    webhook_handshake(query, headers, body) -> str | None
                 the text to answer a subscription handshake with (Graph ``validationToken``,
                 Slack ``url_verification``), else ``None``.
    manage_subscriptions(subscriptions, notification_url) -> list[dict]
                 creates missing / renews soon-expiring change-notification subscriptions
                 (Microsoft Graph); each dict has ``id``, ``resource``, ``expiresAt`` (iso). Others
                 return the list unchanged.
    consent() -> connectors.oauth2.ConsentFlow
                 the authorization-code consent of this vendor (class attr ``oauth_consent = True``):
                 ``begin(redirect_uri, state)`` -> authorize URL + secret to keep sealed,
                 ``complete(secret, redirect_uri, params)`` -> new tokens to merge into the credentials.
                 Raises Invalid for connectors without one, ConfigError when the app keys are missing.
    close()      releases HTTP sessions; connectors are also context managers.

``TokenStore``  ``save(tokens: dict) -> None``: called whenever a token is refreshed so the caller
                can persist the new tokens (encrypted) in the connection's credentials. The dict
                has ``access_token``, ``refresh_token``, ``expires_at`` (epoch seconds),
                ``refresh_token_issued_at`` (epoch seconds) and whatever else the vendor returned.
                Merge it into the stored credentials; pass the merged credentials next time.

``CONNECTORS``  read-only mapping provider id -> Connector class, imported lazily so that listing
                providers never imports a vendor SDK; ``get_connector_class(name)`` raises Invalid
                for an unknown provider; ``PROVIDER_LABELS`` maps id -> label without importing.

Normalised ``Record.data``
--------------------------
account:      name, domain, industry, website, ownerId, modifiedAt
opportunity:  name, amount (float|None), stage, closeDate (YYYY-MM-DD|None), accountId, probability,
              isClosed, isWon, ownerId, modifiedAt
contact:      firstName, lastName, name, email, phone, title, accountId, modifiedAt
task:         subject, status, dueDate, whatId, whoId, modifiedAt
document:     title, text, mimeType, project, url, modifiedAt, size, path
message:      text, channel, user, ts, threadTs, modifiedAt
row:          title, properties (dict), database, url, modifiedAt
``modifiedAt`` is always ISO-8601 UTC; every value is JSON-serialisable.

State is per stream and opaque; examples: ``{"SystemModstamp": "2024-05-01T10:00:00.000+0000"}``,
``{"deltaLink": "https://.../delta?$deltatoken=..."}``, ``{"changesPageToken": "123"}``.
The engine stores ``page.next_state`` only after the page's records are committed, so a run that
dies is resumed from the last committed page; a resumed page may repeat records already stored
(boundary records), which the engine's upsert by (tenant, source, source_id) absorbs.

Errors are the core tree (core.errors): ConfigError (needs a person), TransientError (retry),
RateLimited (retry after ``retry_after``), DataError (one malformed record; reported in
``Page.skipped`` rather than raised).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from connectors.retry import RetryPolicy
from core.errors import Invalid

if TYPE_CHECKING:
    from connectors.oauth2 import ConsentFlow, OAuth2Client, TokenProvider


@dataclass(frozen=True)
class Stream:
    """One readable object type of a connector."""

    name: str
    object_type: str
    primary_key: str = "id"
    cursor_field: str | None = None
    description: str = ""


@dataclass
class Record:
    """One normalised object read from a vendor."""

    stream: str
    source_id: str
    object_type: str
    data: dict[str, Any]
    cursor_value: str | None = None
    deleted: bool = False


@dataclass
class Page:
    """One batch of records and the state to store once they are committed."""

    records: list[Record] = field(default_factory=list)
    skipped: list[tuple[str | None, str]] = field(default_factory=list)
    next_state: dict[str, Any] | None = None
    has_more: bool = False


@dataclass(frozen=True)
class WebhookEvent:
    """One verified change notification; ``event_id`` is what de-duplication keys on."""

    event_id: str
    stream: str | None
    object_type: str | None = None
    source_id: str | None = None
    action: str = "changed"  # created | updated | deleted | changed
    occurred_at: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ConfigField:
    """One setting a person fills in for a connection (secret ones are never shown back)."""

    name: str
    label: str
    required: bool = True
    secret: bool = False
    default: Any = None
    help: str = ""


@runtime_checkable
class TokenStore(Protocol):
    """Where refreshed OAuth tokens go so the caller can persist them (encrypted)."""

    def save(self, tokens: dict[str, Any]) -> None: ...


class MemoryTokenStore:
    """A TokenStore that keeps the last saved tokens in memory (tests, one-off runs)."""

    def __init__(self) -> None:
        self.saved: list[dict[str, Any]] = []

    def save(self, tokens: dict[str, Any]) -> None:
        self.saved.append(dict(tokens))

    @property
    def latest(self) -> dict[str, Any] | None:
        return self.saved[-1] if self.saved else None


class Connector(ABC):
    """Base of every vendor connector; see the module docstring for the contract."""

    name: str = ""
    label: str = ""
    streams: tuple[Stream, ...] = ()
    config_fields: tuple[ConfigField, ...] = ()
    credential_fields: tuple[ConfigField, ...] = ()
    supports_write: frozenset[str] = frozenset()
    webhooks: bool = False
    oauth_consent: bool = False  # True when ``consent()`` can connect the account at the vendor

    def __init__(
        self,
        config: dict[str, Any],
        credentials: dict[str, Any] | None = None,
        token_store: TokenStore | None = None,
        http_timeout: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.config = dict(config or {})
        self.credentials = dict(credentials or {})
        self.token_store = token_store
        self.http_timeout = float(http_timeout)
        self.retry = retry or RetryPolicy()
        self._check_settings()

    def app_token_client(self, token_url: str, grant: str, credentials: Mapping[str, Any], http: Any,
                         **options: Any) -> OAuth2Client:
        """An OAuth2 token client with this connection's app keys (client id and secret in its credentials),
        holding the tokens in ``credentials`` and saving refreshed ones to the connection's token store."""
        from connectors.oauth2 import OAuth2Client

        return OAuth2Client(
            self.label, token_url, client_id=str(self.credentials.get("client_id") or ""),
            client_secret=str(self.credentials.get("client_secret") or ""), credentials=dict(credentials),
            http=http, retry=self.retry, grant=grant, token_store=self.token_store, **options,
        )

    def token_or_consent(self, make_client: Callable[[str, dict[str, Any]], OAuth2Client]) -> TokenProvider:
        """For vendors with long-lived tokens and an install (consent) page: a refresh-token client when the
        connection holds a refresh token, a client waiting for consent when it holds the app's keys and no
        token, else its API token. ``make_client(grant, credentials)`` builds the OAuth2 client."""
        from connectors.oauth2 import StaticToken

        refresh = bool(self.credentials.get("refresh_token"))
        awaiting_consent = bool(self.credentials.get("client_id")) and not self.credentials.get("access_token")
        if refresh or awaiting_consent:
            return make_client("refresh_token" if refresh else "authorization_code", self.credentials)
        return StaticToken(self.label, str(self.credentials.get("access_token") or ""))

    def consent_client(self, auth: TokenProvider,
                       make_client: Callable[[str, dict[str, Any]], OAuth2Client]) -> TokenProvider:
        """The client a consent redeems its code with: ``auth``, or one from the app's keys when ``auth`` is a
        long-lived API token (a connection holding one can connect again, e.g. after the app was removed)."""
        from connectors.oauth2 import StaticToken

        if isinstance(auth, StaticToken) and self.credentials.get("client_id"):
            return make_client("authorization_code", {})
        return auth

    # -- settings -----------------------------------------------------------------------------
    def _check_settings(self) -> None:
        missing = [f.label for f in self.config_fields if f.required and self.config.get(f.name) in (None, "")]
        missing += [f.label for f in self.credential_fields if f.required and not self.credentials.get(f.name)]
        if missing:
            from core.errors import ConfigError

            raise ConfigError(f"{self.label} connection is missing: {', '.join(missing)}")
        for f in self.config_fields:
            if f.name not in self.config and f.default is not None:
                self.config[f.name] = f.default

    @classmethod
    def stream(cls, stream_name: str) -> Stream:
        for s in cls.streams:
            if s.name == stream_name:
                return s
        names = ", ".join(s.name for s in cls.streams)
        raise Invalid(f"{cls.label} has no stream '{stream_name}'; its streams are: {names}")

    @classmethod
    def stream_names(cls) -> list[str]:
        return [s.name for s in cls.streams]

    # -- reading ------------------------------------------------------------------------------
    @abstractmethod
    def read_pages(self, stream_name: str, state: dict[str, Any] | None, full: bool = False) -> Iterator[Page]:
        """Yield pages of ``stream_name`` from ``state`` (or from the start when ``full``)."""

    @abstractmethod
    def test_connection(self) -> str:
        """Make one cheap authenticated call; return a summary or raise ConfigError/TransientError."""

    def token_info(self) -> dict[str, Any] | None:
        return None

    # -- outbound -----------------------------------------------------------------------------
    def write(self, object_type: str, source_id: str | None, fields: dict[str, Any]) -> str:
        raise Invalid(f"{self.label} does not accept outbound writes of {object_type} records")

    def _require_writable(self, object_type: str) -> None:
        if object_type not in self.supports_write:
            allowed = ", ".join(sorted(self.supports_write)) or "nothing"
            raise Invalid(f"{self.label} accepts outbound writes of {allowed}, not {object_type}")

    # -- webhooks -----------------------------------------------------------------------------
    def verify_webhook(
        self, headers: Mapping[str, str], body: bytes, *, method: str = "POST", url: str | None = None
    ) -> list[WebhookEvent]:
        raise Invalid(f"{self.label} connections do not receive webhooks")

    def webhook_handshake(self, query: Mapping[str, str], headers: Mapping[str, str], body: bytes) -> str | None:
        return None

    def manage_subscriptions(self, subscriptions: list[dict[str, Any]], notification_url: str) -> list[dict[str, Any]]:
        return list(subscriptions)

    # -- consent ------------------------------------------------------------------------------
    def consent(self) -> ConsentFlow:
        """The vendor's authorization-code consent (connectors with ``oauth_consent`` override this)."""
        raise Invalid(f"{self.label} accounts are not connected through a consent page; enter the token in the "
                      "connection's credentials instead")

    # -- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        """Release HTTP sessions; subclasses holding clients extend this."""
        return None

    def __enter__(self) -> Connector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Provider id -> (module, class name, label). Modules are imported on first use so that listing
# providers (the Integrations page, the credential editor) never loads a vendor SDK.
_REGISTRY: dict[str, tuple[str, str, str]] = {
    "salesforce": ("connectors.salesforce", "SalesforceConnector", "Salesforce"),
    "hubspot": ("connectors.hubspot", "HubSpotConnector", "HubSpot"),
    "dynamics365": ("connectors.dynamics365", "Dynamics365Connector", "Dynamics 365"),
    "msgraph": ("connectors.msgraph", "MsGraphConnector", "Microsoft Graph (OneDrive/SharePoint)"),
    "gdrive": ("connectors.gdrive", "GoogleDriveConnector", "Google Drive"),
    "slack": ("connectors.slack", "SlackConnector", "Slack"),
    "notion": ("connectors.notion", "NotionConnector", "Notion"),
    "localfiles": ("connectors.localfiles", "LocalFilesConnector", "Local files / CSV export"),
}

PROVIDER_LABELS: dict[str, str] = {k: v[2] for k, v in _REGISTRY.items()}


class _LazyRegistry(Mapping[str, type[Connector]]):
    """Read-only provider -> class mapping that imports a connector module when first asked."""

    def __init__(self, table: dict[str, tuple[str, str, str]]) -> None:
        self._table = table
        self._loaded: dict[str, type[Connector]] = {}

    def __getitem__(self, name: str) -> type[Connector]:
        if name not in self._loaded:
            module_name, class_name, _ = self._table[name]
            self._loaded[name] = getattr(importlib.import_module(module_name), class_name)
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)

    def __contains__(self, name: object) -> bool:
        return name in self._table


CONNECTORS: Mapping[str, type[Connector]] = _LazyRegistry(_REGISTRY)


def get_connector_class(name: str) -> type[Connector]:
    if name not in _REGISTRY:
        raise Invalid(f"Unknown provider '{name}'; known providers: {', '.join(sorted(_REGISTRY))}")
    return CONNECTORS[name]


def build_connector(
    name: str,
    config: dict[str, Any],
    credentials: dict[str, Any] | None = None,
    token_store: TokenStore | None = None,
    http_timeout: float = 30.0,
    retry: RetryPolicy | None = None,
) -> Connector:
    """Instantiate the connector for provider ``name`` (the engine's one entry point)."""
    cls = get_connector_class(name)
    return cls(config, credentials, token_store=token_store, http_timeout=http_timeout, retry=retry)
