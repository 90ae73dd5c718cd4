"""HubSpot connector (hubspot-api-client): companies, deals, contacts via the CRM search API by hs_lastmodifieddate.

Each stream searches ``hs_lastmodifieddate >= cursor`` sorted ascending and pages with
``after``; the search API stops at 10,000 results per query, so before reaching that the
connector starts a new search from the newest timestamp it has seen (boundary records repeat,
the engine's upsert absorbs them). Auth is OAuth (refresh token, rotated access tokens of 30
minutes, refreshed ahead of expiry) or a private-app token. Webhooks use the v3 signature
(HMAC-SHA256 of method, URL, body and timestamp with the app's client secret).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from hubspot import HubSpot
from urllib3.util.retry import Retry

from connectors.base import ConfigField, Connector, Page, Record, Stream, WebhookEvent
from connectors.http import httpx_client
from connectors.oauth2 import OAuth2Client, OAuth2Consent, StaticToken, TokenProvider
from connectors.pagination import CursorPaginator
from connectors.retry import error_for_status, is_transport_error, transport_error
from connectors.text import as_bool, as_date, as_float, as_timestamp, require
from connectors.webhooks import verify_hubspot_v3
from core import clock
from core.errors import CastielError, ConfigError, ConnectorError, DataError, Invalid, TransientError

VENDOR = "HubSpot"
SEARCH_LIMIT = 10_000  # the search API refuses ``after`` beyond this many results

PROPERTIES = {
    "companies": ("name", "domain", "industry", "website", "hubspot_owner_id", "hs_lastmodifieddate"),
    "deals": (
        "dealname",
        "amount",
        "dealstage",
        "closedate",
        "pipeline",
        "hs_deal_stage_probability",
        "hs_is_closed",
        "hs_is_closed_won",
        "hubspot_owner_id",
        "hs_lastmodifieddate",
    ),
    "contacts": (
        "firstname",
        "lastname",
        "email",
        "phone",
        "jobtitle",
        "associatedcompanyid",
        "hs_lastmodifieddate",
        "lastmodifieddate",
    ),
}
OBJECT_TYPES = {"companies": "account", "deals": "opportunity", "contacts": "contact"}
WRITE_FIELDS: dict[str, tuple[str, dict[str, str]]] = {
    "account": ("companies", {"name": "name", "domain": "domain", "industry": "industry", "website": "website"}),
    "opportunity": (
        "deals",
        {"name": "dealname", "amount": "amount", "stage": "dealstage", "closeDate": "closedate"},
    ),
    "contact": (
        "contacts",
        {"firstName": "firstname", "lastName": "lastname", "email": "email", "phone": "phone", "title": "jobtitle"},
    ),
}


def _normalise(stream: str, p: dict[str, Any]) -> dict[str, Any]:
    if stream == "companies":
        return {
            "name": require(p.get("name"), "name"),
            "domain": p.get("domain"),
            "industry": p.get("industry"),
            "website": p.get("website"),
            "ownerId": p.get("hubspot_owner_id"),
        }
    if stream == "deals":
        return {
            "name": require(p.get("dealname"), "dealname"),
            "amount": as_float(p.get("amount"), "amount"),
            "stage": p.get("dealstage"),
            "closeDate": as_date(p.get("closedate"), "closedate"),
            "accountId": None,
            "pipeline": p.get("pipeline"),
            "probability": as_float(p.get("hs_deal_stage_probability"), "hs_deal_stage_probability"),
            "isClosed": as_bool(p.get("hs_is_closed")),
            "isWon": as_bool(p.get("hs_is_closed_won")),
            "ownerId": p.get("hubspot_owner_id"),
        }
    first, last = p.get("firstname"), p.get("lastname")
    return {
        "firstName": first,
        "lastName": last,
        "name": " ".join(x for x in (first, last) if x) or p.get("email"),
        "email": p.get("email"),
        "phone": p.get("phone"),
        "title": p.get("jobtitle"),
        "accountId": p.get("associatedcompanyid"),
    }


def _hubspot_error_body(body: Any) -> tuple[str, str]:
    try:
        data = json.loads(body) if isinstance(body, bytes | str) else body
    except ValueError:
        return "", str(body)[:300]
    if isinstance(data, dict):
        return str(data.get("category") or data.get("status") or ""), str(data.get("message") or "")
    return "", str(data)[:300]


def _token_error(body: dict[str, Any]) -> tuple[str, str] | None:
    """HubSpot's token endpoint speaks ``{"status": "BAD_REFRESH_TOKEN", "message": ...}``, not RFC 6749."""
    status = str(body.get("status") or "")
    if status in ("BAD_REFRESH_TOKEN", "BAD_GRANT"):
        return "invalid_grant", str(body.get("message") or "")
    if status in ("BAD_AUTH_CODE", "BAD_REDIRECT_URI"):
        return "invalid_grant", str(body.get("message") or "")  # a consent's code that cannot be redeemed
    if status in ("BAD_CLIENT_ID", "BAD_CLIENT_SECRET"):
        return "invalid_client", str(body.get("message") or "")
    return None


class HubSpotConnector(Connector):
    name = "hubspot"
    label = "HubSpot"
    streams = tuple(
        Stream(stream, object_type, primary_key="id", cursor_field="hs_lastmodifieddate")
        for stream, object_type in OBJECT_TYPES.items()
    )
    config_fields = (
        ConfigField("base_url", "API base URL", required=False, default="https://api.hubapi.com"),
        ConfigField("page_size", "Records per page (max 200)", required=False, default=200),
        ConfigField("webhook_url", "Public webhook URL", required=False),
        ConfigField("authorize_url", "Consent page URL", required=False,
                    default="https://app.hubspot.com/oauth/authorize"),
        ConfigField("ca_bundle", "CA bundle path", required=False),
    )
    credential_fields = (
        ConfigField("client_id", "App client id", required=False, secret=True),
        ConfigField("client_secret", "App client secret", required=False, secret=True),
        ConfigField("refresh_token", "Refresh token", required=False, secret=True),
        ConfigField("access_token", "Private app token", required=False, secret=True),
    )
    supports_write = frozenset(WRITE_FIELDS)
    webhooks = True
    oauth_consent = True
    CONSENT_SCOPES = (
        "oauth",
        *(f"crm.objects.{o}.{mode}" for o in ("companies", "deals", "contacts") for mode in ("read", "write")),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.base_url = str(self.config.get("base_url") or "https://api.hubapi.com").rstrip("/")
        self.page_size = max(1, min(int(self.config.get("page_size") or 200), 200))
        self._token_http = httpx_client(self.config, self.http_timeout)
        self.auth: TokenProvider
        refresh = bool(self.credentials.get("refresh_token"))
        # An OAuth app's keys without a token yet: the account is connected by consent.
        awaiting_consent = bool(self.credentials.get("client_id")) and not self.credentials.get("access_token")
        if refresh or awaiting_consent:
            self.auth = OAuth2Client(
                VENDOR,
                f"{self.base_url}/oauth/v1/token",
                client_id=str(self.credentials.get("client_id") or ""),
                client_secret=str(self.credentials.get("client_secret") or ""),
                credentials=self.credentials,
                http=self._token_http,
                retry=self.retry,
                grant="refresh_token" if refresh else "authorization_code",
                token_store=self.token_store,
                response_error=_token_error,
            )
        else:
            self.auth = StaticToken(VENDOR, str(self.credentials.get("access_token") or ""))
        self._apis: dict[tuple[str, str], Any] = {}
        self._client = HubSpot(
            access_token=None,
            host=self.base_url,
            # One retry policy for every connector: urllib3's own retries are off.
            retry=Retry(total=0, connect=0, read=0, redirect=0, status=0, raise_on_status=False),
            ssl_ca_cert=self.config.get("ca_bundle") or None,
        )

    # -- plumbing ---------------------------------------------------------------------------
    def _api(self, object_name: str, api: str) -> Any:
        key = (object_name, api)
        if key not in self._apis:
            # The SDK builds a new client (and connection pool) per property access: keep one.
            group = (
                self._client.crm.associations.v4
                if object_name == "associations"
                else getattr(self._client.crm, object_name)
            )
            self._apis[key] = getattr(group, api)
        handle = self._apis[key]
        handle.api_client.configuration.access_token = self.auth.access_token()
        return handle

    def _map(self, exc: Exception, writing: bool) -> CastielError | None:
        status = getattr(exc, "status", None)
        if status is None:
            return None
        if status == 0:  # the SDK's wrapper around an SSL or connection failure
            return transport_error(VENDOR, exc)
        category, message = _hubspot_error_body(getattr(exc, "body", None))
        headers = dict(getattr(exc, "headers", None) or {})
        text = f"{category}: {message}".strip(": ")
        if status == 400 and not writing and "10000" in message:
            return TransientError(f"HubSpot search paging limit hit: {text}")
        return error_for_status(VENDOR, int(status), text, headers, writing=writing)

    def _call(self, fn: Callable[[], Any], writing: bool = False) -> Any:
        def once() -> Any:
            refreshed = False
            while True:
                try:
                    return fn()
                except ConnectorError:
                    raise
                except Exception as exc:
                    status = getattr(exc, "status", None)
                    if status == 401 and self.auth.can_refresh and not refreshed:
                        self.auth.refresh()
                        refreshed = True
                        continue
                    mapped = self._map(exc, writing)
                    if mapped is not None:
                        raise mapped from exc
                    if is_transport_error(exc):
                        raise transport_error(VENDOR, exc) from exc
                    raise

        return self.retry.call(once)

    def consent(self) -> OAuth2Consent:
        """HubSpot's app install page; HubSpot documents no PKCE, so the code is bound by the client secret."""
        return OAuth2Consent(self.auth, str(self.config.get("authorize_url") or "https://app.hubspot.com/oauth/authorize"),
                             self.CONSENT_SCOPES, pkce=False)

    def test_connection(self) -> str:
        raw = self._call(
            lambda: self._api("companies", "basic_api").get_page(
                limit=1, _preload_content=False, _request_timeout=self.http_timeout
            )
        )
        body = json.loads(raw.data or b"{}")
        return f"Connected to HubSpot ({len(body.get('results') or [])} company visible on the first page)"

    def token_info(self) -> dict[str, Any] | None:
        return self.auth.info()

    # -- reading ----------------------------------------------------------------------------
    def _search(self, stream: str, since: str | None, after: str | None) -> dict[str, Any]:
        models = importlib.import_module(f"hubspot.crm.{stream}")
        filters = []
        if since:
            # Datetime filters take epoch milliseconds.
            millis = int(clock.parse(since).timestamp() * 1000)
            filters.append({"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": str(millis)})
        request = models.PublicObjectSearchRequest(
            filter_groups=[{"filters": filters}] if filters else [],
            sorts=[{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
            properties=list(PROPERTIES[stream]),
            limit=self.page_size,
            after=after,
        )
        raw = self._call(
            lambda: self._api(stream, "search_api").do_search(
                public_object_search_request=request, _preload_content=False, _request_timeout=self.http_timeout
            )
        )
        try:
            body = json.loads(raw.data)
        except ValueError as exc:
            raise TransientError(f"HubSpot sent an unreadable search page: {exc}") from exc
        return body if isinstance(body, dict) else {}

    def read_pages(self, stream_name: str, state: dict[str, Any] | None, full: bool = False) -> Iterator[Page]:
        stream = self.stream(stream_name)
        newest: str | None = None if full or not state else state.get("hs_lastmodifieddate")
        since = newest
        paginator = CursorPaginator("paging.next.after")
        while True:
            body = self._search(stream_name, since, paginator.current_value)
            paginator.advance(body)
            page = Page(has_more=not paginator.finished)
            for raw in body.get("results") or []:
                source_id = raw.get("id") if isinstance(raw, dict) else None
                try:
                    record = self._record(stream, raw)
                except DataError as exc:
                    page.skipped.append((source_id, f"{stream_name} {source_id or '(no id)'}: {exc.message}"))
                    continue
                page.records.append(record)
                if record.cursor_value and (newest is None or record.cursor_value > newest):
                    newest = record.cursor_value
            if stream_name == "deals":
                self._link_companies([r for r in page.records if not r.deleted])
            page.next_state = {"hs_lastmodifieddate": newest} if newest else None
            if not paginator.finished and int(paginator.current_value) + self.page_size > SEARCH_LIMIT:
                # Start a fresh search from the newest timestamp before the API's 10,000 cap.
                if newest == since:
                    raise ConfigError(
                        f"More than {SEARCH_LIMIT} HubSpot {stream_name} share one modification time; "
                        "the search API cannot page past them"
                    )
                since = newest
                paginator = CursorPaginator("paging.next.after")
            yield page
            if page.has_more is False:
                return

    def _link_companies(self, deals: list[Record]) -> None:
        """Deals carry no company property: read their primary company association, one batch per page."""
        if not deals:
            return
        from hubspot.crm.associations import v4

        request = v4.BatchInputPublicFetchAssociationsBatchRequest(
            inputs=[v4.PublicFetchAssociationsBatchRequest(id=r.source_id) for r in deals]
        )
        raw = self._call(
            lambda: self._api("associations", "batch_api").get_page(
                "deals", "companies", request, _preload_content=False, _request_timeout=self.http_timeout
            )
        )
        try:
            body = json.loads(raw.data or b"{}")
        except ValueError as exc:
            raise TransientError(f"HubSpot sent an unreadable association batch: {exc}") from exc
        companies: dict[str, str] = {}
        for result in body.get("results") or []:
            targets = result.get("to") or []
            if targets and (result.get("from") or {}).get("id") is not None:
                companies[str(result["from"]["id"])] = str(targets[0].get("toObjectId"))
        for deal in deals:
            deal.data["accountId"] = companies.get(deal.source_id)

    def _record(self, stream: Stream, raw: Any) -> Record:
        if not isinstance(raw, dict):
            raise DataError("result is not an object")
        source_id = require(raw.get("id"), "id")
        props = raw.get("properties") or {}
        if not isinstance(props, dict):
            raise DataError("properties is not an object")
        modified = as_timestamp(
            props.get("hs_lastmodifieddate") or props.get("lastmodifieddate") or raw.get("updatedAt"),
            "hs_lastmodifieddate",
        )
        modified = require(modified, "hs_lastmodifieddate")
        if raw.get("archived"):
            return Record(stream.name, str(source_id), stream.object_type, {"modifiedAt": modified}, modified, True)
        data = _normalise(stream.name, props)
        data["modifiedAt"] = modified
        return Record(stream.name, str(source_id), stream.object_type, data, modified)

    # -- outbound ---------------------------------------------------------------------------
    def write(self, object_type: str, source_id: str | None, fields: dict[str, Any]) -> str:
        self._require_writable(object_type)
        object_name, mapping = WRITE_FIELDS[object_type]
        unknown = sorted(set(fields) - set(mapping))
        if unknown:
            raise Invalid(f"HubSpot {object_name} writes accept {', '.join(sorted(mapping))}; not {', '.join(unknown)}")
        properties = {mapping[k]: ("" if v is None else str(v)) for k, v in fields.items()}
        models = importlib.import_module(f"hubspot.crm.{object_name}")
        if source_id:
            self._call(
                lambda: self._api(object_name, "basic_api").update(
                    source_id,
                    models.SimplePublicObjectInput(properties=properties),
                    _preload_content=False,
                    _request_timeout=self.http_timeout,
                ),
                writing=True,
            )
            return source_id
        raw = self._call(
            lambda: self._api(object_name, "basic_api").create(
                models.SimplePublicObjectInputForCreate(properties=properties, associations=[]),
                _preload_content=False,
                _request_timeout=self.http_timeout,
            ),
            writing=True,
        )
        return str(json.loads(raw.data)["id"])

    # -- webhooks ---------------------------------------------------------------------------
    def verify_webhook(
        self, headers: Mapping[str, str], body: bytes, *, method: str = "POST", url: str | None = None
    ) -> list[WebhookEvent]:
        verify_hubspot_v3(
            headers,
            body,
            str(self.credentials.get("client_secret") or self.credentials.get("webhook_secret") or ""),
            method=method,
            url=url or self.config.get("webhook_url"),
        )
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise Invalid("HubSpot webhook body is not JSON") from exc
        events = []
        for item in payload if isinstance(payload, list) else [payload]:
            kind = str(item.get("subscriptionType") or "")
            obj, _, action = kind.partition(".")
            stream = {"company": "companies", "deal": "deals", "contact": "contacts"}.get(obj)
            events.append(
                WebhookEvent(
                    event_id=str(item.get("eventId")),
                    stream=stream,
                    object_type=OBJECT_TYPES.get(stream or ""),
                    source_id=str(item.get("objectId")) if item.get("objectId") is not None else None,
                    action={"creation": "created", "deletion": "deleted", "propertyChange": "updated"}.get(
                        action, "changed"
                    ),
                    occurred_at=as_timestamp(item.get("occurredAt"), "occurredAt"),
                    payload=item,
                )
            )
        return events

    def close(self) -> None:
        self._token_http.close()
        for api in self._apis.values():
            pool = getattr(getattr(api.api_client, "rest_client", None), "pool_manager", None)
            if pool is not None:
                pool.clear()
