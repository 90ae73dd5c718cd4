"""Dynamics 365 / Dataverse Web API connector: accounts, opportunities, contacts via OData with change tracking.

Tokens come from Azure AD through msal (client credentials for an application user, or a
delegated refresh token). The first sync of a stream sends ``Prefer: odata.track-changes`` and
follows ``@odata.nextLink``; its last page carries an ``@odata.deltaLink``, which the next run
calls to get only the rows changed or deleted since (deleted rows arrive as ``$deletedEntity``
with ``reason: deleted``). Mid-run state is the next link, so a run that dies resumes from the
page after the last stored one. An expired change-tracking token restarts a full read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from connectors.base import ConfigField, Connector, Page, Record, Stream, WebhookEvent
from connectors.http import JsonApi, httpx_client, parse_json, requests_session
from connectors.oauth2 import MsalConsent, MsalTokenProvider
from connectors.pagination import NextLinkPaginator
from connectors.text import as_date, as_float, as_timestamp, require
from connectors.webhooks import header, verify_shared_secret
from core.errors import ConfigError, DataError, Invalid

VENDOR = "Dynamics 365"
FORMATTED = "@OData.Community.Display.V1.FormattedValue"

# stream -> (entity set, object type, primary key, $select)
ENTITIES: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "accounts": (
        "accounts",
        "account",
        "accountid",
        ("accountid", "name", "websiteurl", "industrycode", "_ownerid_value", "modifiedon"),
    ),
    "opportunities": (
        "opportunities",
        "opportunity",
        "opportunityid",
        (
            "opportunityid",
            "name",
            "estimatedvalue",
            "estimatedclosedate",
            "stepname",
            "closeprobability",
            "statecode",
            "_parentaccountid_value",
            "_ownerid_value",
            "modifiedon",
        ),
    ),
    "contacts": (
        "contacts",
        "contact",
        "contactid",
        (
            "contactid",
            "firstname",
            "lastname",
            "emailaddress1",
            "telephone1",
            "jobtitle",
            "_parentcustomerid_value",
            "modifiedon",
        ),
    ),
}
WRITE_FIELDS: dict[str, tuple[str, dict[str, str]]] = {
    "account": ("accounts", {"name": "name", "website": "websiteurl"}),
    "opportunity": (
        "opportunities",
        {"name": "name", "amount": "estimatedvalue", "closeDate": "estimatedclosedate", "stage": "stepname"},
    ),
    "contact": (
        "contacts",
        {"firstName": "firstname", "lastName": "lastname", "email": "emailaddress1", "title": "jobtitle"},
    ),
}


def _normalise(stream: str, r: dict[str, Any]) -> dict[str, Any]:
    if stream == "accounts":
        website = r.get("websiteurl")
        return {
            "name": require(r.get("name"), "name"),
            "website": website,
            "domain": str(website).split("://")[-1].split("/")[0].removeprefix("www.") if website else None,
            "industry": r.get("industrycode" + FORMATTED) or r.get("industrycode"),
            "ownerId": r.get("_ownerid_value"),
        }
    if stream == "opportunities":
        state = r.get("statecode")
        return {
            "name": require(r.get("name"), "name"),
            "amount": as_float(r.get("estimatedvalue"), "estimatedvalue"),
            "stage": r.get("stepname"),
            "closeDate": as_date(r.get("estimatedclosedate"), "estimatedclosedate"),
            "accountId": r.get("_parentaccountid_value"),
            "probability": as_float(r.get("closeprobability"), "closeprobability"),
            # statecode: 0 open, 1 won, 2 lost
            "isClosed": state in (1, 2) if state is not None else None,
            "isWon": state == 1 if state is not None else None,
            "ownerId": r.get("_ownerid_value"),
        }
    first, last = r.get("firstname"), r.get("lastname")
    return {
        "firstName": first,
        "lastName": last,
        "name": " ".join(x for x in (first, last) if x) or r.get("emailaddress1"),
        "email": r.get("emailaddress1"),
        "phone": r.get("telephone1"),
        "title": r.get("jobtitle"),
        "accountId": r.get("_parentcustomerid_value"),
    }


class Dynamics365Connector(Connector):
    name = "dynamics365"
    label = "Dynamics 365"
    streams = tuple(
        Stream(stream, object_type, primary_key=pk, cursor_field=None)
        for stream, (_, object_type, pk, _) in ENTITIES.items()
    )
    config_fields = (
        ConfigField("environment_url", "Environment URL", help="https://yourorg.crm.dynamics.com"),
        ConfigField("tenant_id", "Azure AD tenant id"),
        ConfigField("authority_host", "Authority host", required=False, default="https://login.microsoftonline.com"),
        ConfigField("api_version", "Web API version", required=False, default="9.2"),
        ConfigField("page_size", "Records per page", required=False, default=1000),
        ConfigField("webhook_header", "Webhook key header", required=False, default="x-dataverse-key"),
        ConfigField("ca_bundle", "CA bundle path", required=False),
    )
    credential_fields = (
        ConfigField("client_id", "Application (client) id", secret=True),
        ConfigField("client_secret", "Client secret", secret=True),
        ConfigField("refresh_token", "Delegated refresh token", required=False, secret=True),
        ConfigField("webhook_secret", "Webhook key", required=False, secret=True),
    )
    supports_write = frozenset(WRITE_FIELDS)
    webhooks = True
    oauth_consent = True

    def __init__(self, config: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        config = dict(config or {})
        if not config.get("environment_url") and config.get("base_url"):
            config["environment_url"] = config["base_url"]
        super().__init__(config, *args, **kwargs)
        self.environment_url = str(self.config["environment_url"]).rstrip("/")
        self.api_root = f"{self.environment_url}/api/data/v{self.config.get('api_version') or '9.2'}"
        self.page_size = int(self.config.get("page_size") or 1000)
        self.auth = MsalTokenProvider(
            VENDOR,
            authority=f"{str(self.config['authority_host']).rstrip('/')}/{self.config['tenant_id']}",
            client_id=str(self.credentials.get("client_id") or ""),
            client_secret=str(self.credentials.get("client_secret") or ""),
            scopes=[f"{self.environment_url}/.default"],
            credentials=self.credentials,
            session_factory=lambda: requests_session(self.config, self.http_timeout),
            retry=self.retry,
            token_store=self.token_store,
        )
        self.http = httpx_client(
            self.config,
            self.http_timeout,
            headers={"OData-MaxVersion": "4.0", "OData-Version": "4.0", "Accept": "application/json"},
        )
        self.api = JsonApi(VENDOR, self.http, self.retry, auth=self.auth)

    def consent(self) -> MsalConsent:
        """Delegated consent to act as the signed-in user in this environment (msal's auth-code flow)."""
        return MsalConsent(self.auth, [f"{self.environment_url}/user_impersonation"])

    def test_connection(self) -> str:
        who = self.api.get_json(f"{self.api_root}/WhoAmI")
        user, org = who.get("UserId"), who.get("OrganizationId")
        return f"Connected to {self.environment_url} as user {user} (organisation {org})"

    def token_info(self) -> dict[str, Any] | None:
        return self.auth.info()

    # -- reading ----------------------------------------------------------------------------
    def _first_url(self, stream_name: str) -> str:
        entity_set, _, _, select = ENTITIES[stream_name]
        return f"{self.api_root}/{entity_set}?$select={','.join(select)}"

    def _prefer(self) -> dict[str, str]:
        return {
            "Prefer": f"odata.track-changes,odata.maxpagesize={self.page_size},"
            'odata.include-annotations="OData.Community.Display.V1.FormattedValue"'
        }

    def read_pages(self, stream_name: str, state: dict[str, Any] | None, full: bool = False) -> Iterator[Page]:
        stream = self.stream(stream_name)
        state = None if full else state
        url = (state or {}).get("nextLink") or (state or {}).get("deltaLink") or self._first_url(stream_name)
        paginator = NextLinkPaginator("@odata.nextLink", start_value=url)
        while not paginator.finished:
            try:
                body = parse_json(VENDOR, self.api.request("GET", paginator.current_value, headers=self._prefer()))
            except ConfigError as exc:
                if "$deltatoken" in str(paginator.current_value) and "expired" in exc.message.lower():
                    # The change-tracking token outlived its retention: read everything again.
                    paginator = NextLinkPaginator("@odata.nextLink", start_value=self._first_url(stream_name))
                    continue
                raise
            paginator.advance(body)
            page = Page(has_more=not paginator.finished)
            for raw in body.get("value") or []:
                source_id = raw.get(stream.primary_key) or raw.get("id") if isinstance(raw, dict) else None
                try:
                    page.records.append(self._record(stream, raw))
                except DataError as exc:
                    page.skipped.append((source_id, f"{stream_name} {source_id or '(no id)'}: {exc.message}"))
            if paginator.finished:
                delta = body.get("@odata.deltaLink")
                if not delta:
                    raise ConfigError(
                        f"Dynamics 365 did not return a delta link for {stream_name}; enable change tracking "
                        "on the table (Advanced options > Track changes)"
                    )
                page.next_state = {"deltaLink": delta}
            else:
                page.next_state = {"nextLink": paginator.current_value}
            yield page

    def _record(self, stream: Stream, raw: Any) -> Record:
        if not isinstance(raw, dict):
            raise DataError("row is not an object")
        if raw.get("reason") == "deleted" or "$deletedEntity" in str(raw.get("@odata.context", "")):
            source_id = require(raw.get("id"), "id")
            return Record(stream.name, str(source_id), stream.object_type, {"modifiedAt": None}, None, deleted=True)
        source_id = require(raw.get(stream.primary_key), stream.primary_key)
        modified = require(as_timestamp(raw.get("modifiedon"), "modifiedon"), "modifiedon")
        data = _normalise(stream.name, raw)
        data["modifiedAt"] = modified
        return Record(stream.name, str(source_id), stream.object_type, data, modified)

    # -- outbound ---------------------------------------------------------------------------
    def write(self, object_type: str, source_id: str | None, fields: dict[str, Any]) -> str:
        self._require_writable(object_type)
        entity_set, mapping = WRITE_FIELDS[object_type]
        unknown = sorted(set(fields) - set(mapping))
        if unknown:
            raise Invalid(
                f"Dynamics 365 {entity_set} writes accept {', '.join(sorted(mapping))}; not {', '.join(unknown)}"
            )
        payload = {mapping[k]: v for k, v in fields.items()}
        if source_id:
            # If-Match: * makes PATCH an update only; without it Dataverse would create a missing row.
            self.api.request(
                "PATCH",
                f"{self.api_root}/{entity_set}({source_id})",
                json=payload,
                headers={"If-Match": "*"},
                writing=True,
            )
            return source_id
        response = self.api.request("POST", f"{self.api_root}/{entity_set}", json=payload, writing=True)
        entity_id = response.headers.get("OData-EntityId", "")
        if "(" not in entity_id:
            raise ConfigError("Dynamics 365 created the row but did not say its id (no OData-EntityId header)")
        return entity_id.rsplit("(", 1)[1].rstrip(")")

    # -- webhooks ---------------------------------------------------------------------------
    def verify_webhook(
        self, headers: Mapping[str, str], body: bytes, *, method: str = "POST", url: str | None = None
    ) -> list[WebhookEvent]:
        verify_shared_secret(
            VENDOR,
            str(self.credentials.get("webhook_secret") or ""),
            header(headers, str(self.config.get("webhook_header") or "x-dataverse-key")),
        )
        try:
            context = json.loads(body)
        except ValueError as exc:
            raise Invalid("Dynamics 365 webhook body is not JSON") from exc
        entity = str(context.get("PrimaryEntityName") or "")
        stream = {"account": "accounts", "opportunity": "opportunities", "contact": "contacts"}.get(entity)
        message = str(context.get("MessageName") or "")
        return [
            WebhookEvent(
                event_id=str(context.get("OperationId") or context.get("RequestId") or context.get("CorrelationId")),
                stream=stream,
                object_type=entity or None,
                source_id=context.get("PrimaryEntityId"),
                action={"Create": "created", "Update": "updated", "Delete": "deleted"}.get(message, "changed"),
                occurred_at=None,
                payload={k: context.get(k) for k in ("MessageName", "PrimaryEntityName", "PrimaryEntityId")},
            )
        ]

    def close(self) -> None:
        self.http.close()
