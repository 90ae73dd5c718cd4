"""Salesforce connector (simple-salesforce): Account, Opportunity, Contact, Task by SystemModstamp with queryMore.

Each stream runs ``SELECT ... FROM <Object> WHERE SystemModstamp >= <cursor> ORDER BY SystemModstamp,
Id`` through ``queryAll`` (so deletions arrive as ``IsDeleted`` rows) and follows
``nextRecordsUrl`` with ``query_more``. After each page the state is the newest SystemModstamp
seen; ``>=`` re-reads the boundary second on the next run, which the engine's upsert absorbs,
and never misses a record that shared the boundary second. Tokens come from the OAuth2
refresh-token flow (``/services/oauth2/token``); Salesforce gives no access-token lifetime, so
the token is refreshed when the API answers 401 INVALID_SESSION_ID.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceError, SalesforceExpiredSession

from connectors.base import ConfigField, Connector, Page, Record, Stream
from connectors.http import httpx_client, requests_session
from connectors.oauth2 import OAuth2Client, OAuth2Consent
from connectors.pagination import NextLinkPaginator, paginate
from connectors.retry import error_for_status, is_transport_error, transport_error
from connectors.text import as_bool, as_date, as_float, as_timestamp, require
from core.errors import ConfigError, ConnectorError, DataError, RateLimited

VENDOR = "Salesforce"

# stream -> (sObject, object type, SOQL fields, normaliser of one record)
Normaliser = Callable[[dict[str, Any]], dict[str, Any]]


def _account(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": require(r.get("Name"), "Name"),
        "website": r.get("Website"),
        "domain": _domain(r.get("Website")),
        "industry": r.get("Industry"),
        "ownerId": r.get("OwnerId"),
    }


def _opportunity(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": require(r.get("Name"), "Name"),
        "amount": as_float(r.get("Amount"), "Amount"),
        "stage": r.get("StageName"),
        "closeDate": as_date(r.get("CloseDate"), "CloseDate"),
        "accountId": r.get("AccountId"),
        "probability": as_float(r.get("Probability"), "Probability"),
        "isClosed": as_bool(r.get("IsClosed")),
        "isWon": as_bool(r.get("IsWon")),
        "ownerId": r.get("OwnerId"),
    }


def _contact(r: dict[str, Any]) -> dict[str, Any]:
    first, last = r.get("FirstName"), r.get("LastName")
    return {
        "firstName": first,
        "lastName": require(last, "LastName"),
        "name": " ".join(p for p in (first, last) if p),
        "email": r.get("Email"),
        "phone": r.get("Phone"),
        "title": r.get("Title"),
        "accountId": r.get("AccountId"),
    }


def _task(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "subject": r.get("Subject"),
        "status": r.get("Status"),
        "dueDate": as_date(r.get("ActivityDate"), "ActivityDate"),
        "whatId": r.get("WhatId"),
        "whoId": r.get("WhoId"),
    }


def _domain(website: Any) -> str | None:
    if not website:
        return None
    host = str(website).split("://")[-1].split("/")[0]
    return host[4:] if host.startswith("www.") else host or None


SOBJECTS: dict[str, tuple[str, str, tuple[str, ...], Normaliser]] = {
    "accounts": ("Account", "account", ("Id", "Name", "Website", "Industry", "OwnerId"), _account),
    "opportunities": (
        "Opportunity",
        "opportunity",
        ("Id", "Name", "Amount", "StageName", "CloseDate", "AccountId", "Probability", "IsClosed", "IsWon", "OwnerId"),
        _opportunity,
    ),
    "contacts": (
        "Contact",
        "contact",
        ("Id", "FirstName", "LastName", "Email", "Phone", "Title", "AccountId"),
        _contact,
    ),
    "tasks": ("Task", "task", ("Id", "Subject", "Status", "ActivityDate", "WhatId", "WhoId"), _task),
}

# Normalised field -> Salesforce field, per object type, for outbound writes.
WRITE_FIELDS: dict[str, tuple[str, dict[str, str]]] = {
    "account": ("Account", {"name": "Name", "website": "Website", "industry": "Industry"}),
    "opportunity": (
        "Opportunity",
        {"name": "Name", "amount": "Amount", "stage": "StageName", "closeDate": "CloseDate", "accountId": "AccountId"},
    ),
    "contact": (
        "Contact",
        {
            "firstName": "FirstName",
            "lastName": "LastName",
            "email": "Email",
            "phone": "Phone",
            "title": "Title",
            "accountId": "AccountId",
        },
    ),
    "task": ("Task", {"subject": "Subject", "status": "Status", "dueDate": "ActivityDate", "whatId": "WhatId"}),
}


def soql_datetime(cursor: str) -> str:
    """A SOQL datetime literal (whole seconds, UTC) not after ``cursor``, so ``>=`` never skips."""
    iso = as_timestamp(cursor, "SystemModstamp") or ""
    return iso[:19] + "Z"


def _error_text(content: Any) -> tuple[str, str]:
    if isinstance(content, list) and content and isinstance(content[0], dict):
        return str(content[0].get("errorCode") or ""), str(content[0].get("message") or "")
    if isinstance(content, dict):
        return str(content.get("errorCode") or content.get("error") or ""), str(
            content.get("message") or content.get("error_description") or ""
        )
    return "", str(content)[:300]


class SalesforceConnector(Connector):
    name = "salesforce"
    label = "Salesforce"
    streams = tuple(
        Stream(stream, object_type, primary_key="Id", cursor_field="SystemModstamp")
        for stream, (_, object_type, _, _) in SOBJECTS.items()
    )
    config_fields = (
        ConfigField("instance_url", "Instance URL", help="https://yourorg.my.salesforce.com"),
        ConfigField("login_url", "Login URL", required=False, help="Token endpoint host; defaults to the instance"),
        ConfigField("api_version", "API version", required=False, default="59.0"),
        ConfigField("page_size", "Records per page (200-2000)", required=False, default=2000),
        ConfigField("refresh_token_lifetime_days", "Refresh token lifetime (days)", required=False),
        ConfigField("ca_bundle", "CA bundle path", required=False),
    )
    credential_fields = (
        ConfigField("client_id", "Consumer key", secret=True),
        ConfigField("client_secret", "Consumer secret", secret=True),
        ConfigField("refresh_token", "Refresh token", required=False, secret=True,
                    help="Or leave blank and use Connect with Salesforce"),
    )
    supports_write = frozenset(WRITE_FIELDS)
    oauth_consent = True
    # "refresh_token" is what makes Salesforce issue a refresh token; "api" is the REST API.
    CONSENT_SCOPES = ("api", "refresh_token")

    def __init__(self, config: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        config = dict(config or {})
        if not config.get("instance_url") and config.get("base_url"):
            config["instance_url"] = config["base_url"]
        super().__init__(config, *args, **kwargs)
        self.instance_url = str(self.config["instance_url"]).rstrip("/")
        self.session = requests_session(self.config, self.http_timeout)
        self._token_http = httpx_client(self.config, self.http_timeout)
        lifetime = self.config.get("refresh_token_lifetime_days")
        self.login_url = str(self.config.get("login_url") or self.instance_url).rstrip("/")
        self.auth = OAuth2Client(
            VENDOR,
            f"{self.login_url}/services/oauth2/token",
            client_id=str(self.credentials.get("client_id") or ""),
            client_secret=str(self.credentials.get("client_secret") or ""),
            credentials=self.credentials,
            http=self._token_http,
            retry=self.retry,
            # Without a refresh token the client waits for a consent (Connect with Salesforce).
            grant="refresh_token" if self.credentials.get("refresh_token") else "authorization_code",
            token_store=self.token_store,
            refresh_token_lifetime_days=float(lifetime) if lifetime else None,
        )
        self._sf: Salesforce | None = None
        self._sf_token: str | None = None

    def consent(self) -> OAuth2Consent:
        """Web server flow with PKCE: ``/services/oauth2/authorize`` on the login host."""
        return OAuth2Consent(self.auth, f"{self.login_url}/services/oauth2/authorize", self.CONSENT_SCOPES, pkce=True)

    # -- plumbing ---------------------------------------------------------------------------
    def _client(self) -> Salesforce:
        token = self.auth.access_token()
        if self._sf is None or token != self._sf_token:
            instance = str(self.auth.tokens.get("instance_url") or self.instance_url)
            self._sf = Salesforce(
                instance_url=instance,
                session_id=token,
                session=self.session,
                version=str(self.config.get("api_version") or "59.0"),
                object_pairs_hook=dict,  # plain dicts parse faster than the default OrderedDict
            )
            self._sf_token = token
        return self._sf

    def _map_error(self, exc: SalesforceError, writing: bool) -> ConnectorError | Exception:
        code, message = _error_text(exc.content)
        text = f"{code}: {message}".strip(": ")
        if exc.status == 403 and code == "REQUEST_LIMIT_EXCEEDED":
            # The org's rolling 24-hour API allowance is spent: come back in an hour, not in a second.
            return RateLimited(f"Salesforce API request limit reached ({text})", retry_after=3600.0)
        headers = self.session.last_response.headers if self.session.last_response is not None else None
        if exc.status == 400 and code in ("INVALID_FIELD", "INVALID_TYPE") and not writing:
            return ConfigError(f"Salesforce rejected the query ({text}); check the integration user's field access")
        return error_for_status(VENDOR, int(exc.status), text, headers, writing=writing)

    def _call(self, fn: Callable[[Salesforce], Any], writing: bool = False) -> Any:
        def once() -> Any:
            refreshed = False
            while True:
                sf = self._client()
                try:
                    return fn(sf)
                except SalesforceExpiredSession:
                    if refreshed:
                        raise ConfigError(
                            "Salesforce keeps rejecting fresh sessions (401); reconnect the account"
                        ) from None
                    self.auth.refresh()
                    refreshed = True
                except SalesforceError as exc:
                    raise self._map_error(exc, writing) from exc
                except ConnectorError:
                    raise
                except Exception as exc:
                    if is_transport_error(exc):
                        raise transport_error(VENDOR, exc) from exc
                    if isinstance(exc, ValueError):  # a 2xx body that is not JSON: a broken transfer
                        from core.errors import TransientError

                        raise TransientError(f"Salesforce sent an unreadable response: {exc}") from exc
                    raise

        return self.retry.call(once)

    def test_connection(self) -> str:
        limits = self._call(lambda sf: sf.limits())
        daily = limits.get("DailyApiRequests") or {}
        if daily:
            return (
                f"Connected to {self.instance_url}: {daily.get('Remaining', '?')} of {daily.get('Max', '?')} "
                "daily API requests left"
            )
        return f"Connected to {self.instance_url}"

    def token_info(self) -> dict[str, Any] | None:
        return self.auth.info()

    # -- reading ----------------------------------------------------------------------------
    def read_pages(self, stream_name: str, state: dict[str, Any] | None, full: bool = False) -> Iterator[Page]:
        stream = self.stream(stream_name)
        sobject, object_type, fields, normalise = SOBJECTS[stream_name]
        cursor = None if full or not state else state.get("SystemModstamp")
        select = ", ".join((*fields, "SystemModstamp", "IsDeleted"))
        soql = f"SELECT {select} FROM {sobject}"
        if cursor:
            soql += f" WHERE SystemModstamp >= {soql_datetime(str(cursor))}"
        soql += " ORDER BY SystemModstamp ASC, Id ASC"
        batch = int(self.config.get("page_size") or 2000)
        headers = {"Sforce-Query-Options": f"batchSize={max(200, min(batch, 2000))}"}

        def fetch(next_url: str | None) -> dict[str, Any]:
            if next_url is None:
                return self._call(lambda sf: sf.query(soql, include_deleted=True, headers=headers))
            return self._call(lambda sf: sf.query_more(next_url, identifier_is_url=True, headers=headers))

        paginator = NextLinkPaginator(key="nextRecordsUrl", done_key="done")
        newest = cursor
        for body in paginate(fetch, paginator):
            page = Page(has_more=not paginator.finished)
            for raw in body.get("records") or []:
                source_id = raw.get("Id") if isinstance(raw, dict) else None
                try:
                    record = self._record(stream, object_type, normalise, raw)
                except DataError as exc:
                    page.skipped.append((source_id, f"{sobject} {source_id or '(no Id)'}: {exc.message}"))
                    continue
                page.records.append(record)
                if record.cursor_value and (newest is None or record.cursor_value > str(newest)):
                    newest = record.cursor_value
            page.next_state = {"SystemModstamp": newest} if newest else None
            yield page

    def _record(self, stream: Stream, object_type: str, normalise: Normaliser, raw: Any) -> Record:
        if not isinstance(raw, dict):
            raise DataError("record is not an object")
        source_id = require(raw.get("Id"), "Id")
        modstamp = require(as_timestamp(raw.get("SystemModstamp"), "SystemModstamp"), "SystemModstamp")
        if as_bool(raw.get("IsDeleted")):
            return Record(stream.name, str(source_id), object_type, {"modifiedAt": modstamp}, modstamp, deleted=True)
        data = normalise(raw)
        data["modifiedAt"] = modstamp
        return Record(stream.name, str(source_id), object_type, data, modstamp)

    # -- outbound ---------------------------------------------------------------------------
    def write(self, object_type: str, source_id: str | None, fields: dict[str, Any]) -> str:
        self._require_writable(object_type)
        sobject, mapping = WRITE_FIELDS[object_type]
        unknown = sorted(set(fields) - set(mapping))
        if unknown:
            from core.errors import Invalid

            raise Invalid(f"Salesforce {sobject} writes accept {', '.join(sorted(mapping))}; not {', '.join(unknown)}")
        payload = {mapping[k]: v for k, v in fields.items()}
        if source_id:
            self._call(lambda sf: getattr(sf, sobject).update(source_id, payload), writing=True)
            return source_id
        created = self._call(lambda sf: getattr(sf, sobject).create(payload), writing=True)
        return str(created["id"])

    def close(self) -> None:
        self.session.close()
        self._token_http.close()
