"""Microsoft Graph connector (msal + HTTP): OneDrive/SharePoint drive items and their text, by delta query.

``GET /drives/{id}/root/delta`` pages through ``@odata.nextLink`` and ends with an
``@odata.deltaLink``; the next run calls that link for changes only (deleted items carry a
``deleted`` facet). Files of readable types (txt, md, csv, html, json, docx, pptx) up to
``max_content_mb`` have their content downloaded (``/content`` answers a redirect to a
pre-authenticated URL) and turned into text. Mid-run state is the next link, so a run that
dies resumes from the page after the last stored one; a 410 ``resyncRequired`` restarts the
enumeration. Change notifications: ``manage_subscriptions`` creates the drive subscription and
renews it before it lapses; notifications are checked against the ``clientState`` secret.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from connectors.base import ConfigField, Connector, Page, Record, Stream, WebhookEvent
from connectors.http import JsonApi, httpx_client, parse_json, requests_session
from connectors.oauth2 import MsalConsent, MsalTokenProvider
from connectors.pagination import NextLinkPaginator
from connectors.retry import http_status
from connectors.text import as_timestamp, can_extract, extract_text, mime_for_name, require
from connectors.webhooks import verify_shared_secret
from core import clock
from core.errors import ConfigError, DataError, Invalid, NotFound, TransientError

VENDOR = "Microsoft Graph"
# Graph caps driveItem subscriptions at 42,300 minutes; ask for a little less.
SUBSCRIPTION_MINUTES = 42_000


def project_of(parent_path: str | None) -> str | None:
    """``/drive/root:/Contoso/Notes`` -> ``Contoso`` (the top-level folder is the project)."""
    if not parent_path or ":" not in parent_path:
        return None
    inner = parent_path.split(":", 1)[1].strip("/")
    return inner.split("/")[0] if inner else None


class MsGraphConnector(Connector):
    name = "msgraph"
    label = "Microsoft Graph (OneDrive/SharePoint)"
    streams = (Stream("drive_items", "document", primary_key="id", cursor_field=None),)
    config_fields = (
        ConfigField("drive_id", "Drive id", help="A OneDrive or SharePoint document library id"),
        ConfigField("tenant_id", "Azure AD tenant id"),
        ConfigField("graph_url", "Graph URL", required=False, default="https://graph.microsoft.com"),
        ConfigField("authority_host", "Authority host", required=False, default="https://login.microsoftonline.com"),
        ConfigField("max_content_mb", "Largest file to read (MB)", required=False, default=20),
        ConfigField("renew_before_hours", "Renew subscriptions this early (hours)", required=False, default=24),
        ConfigField("ca_bundle", "CA bundle path", required=False),
    )
    credential_fields = (
        ConfigField("client_id", "Application (client) id", secret=True),
        ConfigField("client_secret", "Client secret", secret=True),
        ConfigField("refresh_token", "Delegated refresh token", required=False, secret=True),
        ConfigField("webhook_secret", "Subscription clientState", required=False, secret=True),
    )
    webhooks = True
    oauth_consent = True
    # Delegated (a person's consent) tokens name Graph permissions; app-only ones take ``/.default``.
    DELEGATED_SCOPES = ("Files.Read.All", "Sites.Read.All")

    def __init__(self, config: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        config = dict(config or {})
        if not config.get("graph_url") and config.get("base_url"):
            config["graph_url"] = config["base_url"]
        super().__init__(config, *args, **kwargs)
        self.graph = f"{str(self.config['graph_url']).rstrip('/')}/v1.0"
        self.drive_id = str(self.config["drive_id"])
        delegated = bool(self.credentials.get("refresh_token"))
        self.auth = MsalTokenProvider(
            VENDOR,
            authority=f"{str(self.config['authority_host']).rstrip('/')}/{self.config['tenant_id']}",
            client_id=str(self.credentials.get("client_id") or ""),
            client_secret=str(self.credentials.get("client_secret") or ""),
            # App-only tokens take the resource's .default scope; delegated ones name permissions.
            scopes=list(self.DELEGATED_SCOPES)
            if delegated
            else [f"{str(self.config['graph_url']).rstrip('/')}/.default"],
            credentials=self.credentials,
            session_factory=lambda: requests_session(self.config, self.http_timeout),
            retry=self.retry,
            token_store=self.token_store,
        )
        self.http = httpx_client(self.config, self.http_timeout, headers={"Accept": "application/json"})
        self.api = JsonApi(VENDOR, self.http, self.retry, auth=self.auth)
        self.max_bytes = int(float(self.config.get("max_content_mb") or 20) * 1024 * 1024)

    def consent(self) -> MsalConsent:
        """Delegated consent for the signed-in user's files (msal's auth-code flow, PKCE included)."""
        return MsalConsent(self.auth, self.DELEGATED_SCOPES)

    def _drive(self) -> str:
        return f"{self.graph}/drives/{quote(self.drive_id, safe='')}"

    def test_connection(self) -> str:
        drive = self.api.get_json(self._drive())
        return f"Connected to drive '{drive.get('name')}' ({drive.get('driveType')}) in {self.graph}"

    def token_info(self) -> dict[str, Any] | None:
        return self.auth.info()

    # -- reading ----------------------------------------------------------------------------
    def read_pages(self, stream_name: str, state: dict[str, Any] | None, full: bool = False) -> Iterator[Page]:
        stream = self.stream(stream_name)
        state = None if full else state
        start = f"{self._drive()}/root/delta"
        url = (state or {}).get("nextLink") or (state or {}).get("deltaLink") or start
        paginator = NextLinkPaginator("@odata.nextLink", start_value=url)
        while not paginator.finished:
            try:
                body = parse_json(VENDOR, self.api.request("GET", paginator.current_value))
            except ConfigError as exc:
                if http_status(exc) == 410 or "resyncRequired" in exc.message:
                    # Graph dropped the delta token: enumerate again; upserts make it idempotent.
                    paginator = NextLinkPaginator("@odata.nextLink", start_value=start)
                    continue
                raise
            paginator.advance(body)
            page = Page(has_more=not paginator.finished)
            for raw in body.get("value") or []:
                source_id = raw.get("id") if isinstance(raw, dict) else None
                try:
                    record = self._record(stream, raw)
                except DataError as exc:
                    page.skipped.append((source_id, f"drive item {source_id or '(no id)'}: {exc.message}"))
                    continue
                if record is not None:
                    page.records.append(record)
            if paginator.finished:
                delta = body.get("@odata.deltaLink")
                if not delta:
                    raise TransientError("Microsoft Graph ended a delta enumeration without a delta link")
                page.next_state = {"deltaLink": delta}
            else:
                page.next_state = {"nextLink": paginator.current_value}
            yield page

    def _record(self, stream: Stream, raw: Any) -> Record | None:
        if not isinstance(raw, dict):
            raise DataError("item is not an object")
        source_id = str(require(raw.get("id"), "id"))
        if raw.get("deleted") is not None:
            return Record(stream.name, source_id, "document", {"modifiedAt": None}, None, deleted=True)
        if "file" not in raw:
            return None  # folders, the root, notebooks: structure, not documents
        name = str(require(raw.get("name"), "name"))
        modified = require(as_timestamp(raw.get("lastModifiedDateTime"), "lastModifiedDateTime"), "modified")
        mime = (raw.get("file") or {}).get("mimeType") or mime_for_name(name)
        size = raw.get("size")
        if size is not None and not isinstance(size, int):
            raise DataError(f"size {size!r} is not a number")
        parent = raw.get("parentReference") or {}
        text = ""
        if can_extract(mime) or can_extract(mime_for_name(name, "")):
            if size is None or size <= self.max_bytes:
                text = self._content(source_id, name, mime if can_extract(mime) else mime_for_name(name))
        path = f"{str(parent.get('path') or '').split(':', 1)[-1].strip('/')}/{name}".lstrip("/")
        return Record(
            stream.name,
            source_id,
            "document",
            {
                "title": name.rsplit(".", 1)[0],
                "text": text,
                "mimeType": mime,
                "project": project_of(parent.get("path")),
                "url": raw.get("webUrl"),
                "path": path,
                "size": size,
                "modifiedAt": modified,
                "etag": raw.get("eTag"),
            },
            modified,
        )

    def _content(self, item_id: str, name: str, mime: str) -> str:
        url = f"{self._drive()}/items/{quote(item_id, safe='')}/content"
        try:
            response = self.api.request("GET", url, follow_redirects=True)
        except ConfigError as exc:
            if http_status(exc) == 404:
                raise DataError(f"{name}: the file vanished before its content was read") from exc
            raise
        return extract_text(response.content, mime, name)

    # -- subscriptions and notifications ----------------------------------------------------
    def manage_subscriptions(self, subscriptions: list[dict[str, Any]], notification_url: str) -> list[dict[str, Any]]:
        secret = str(self.credentials.get("webhook_secret") or "")
        if not secret:
            raise ConfigError("Set the subscription clientState secret before subscribing to Graph notifications")
        resource = f"drives/{self.drive_id}/root"
        renew_before = timedelta(hours=float(self.config.get("renew_before_hours") or 24))
        now = clock.now()
        expires = clock.iso(now + timedelta(minutes=SUBSCRIPTION_MINUTES)).replace(".000000Z", "Z")
        kept: list[dict[str, Any]] = []
        for sub in subscriptions:
            if sub.get("resource") != resource:
                continue
            expires_at = sub.get("expiresAt")
            if expires_at and clock.parse(str(expires_at)) - now > renew_before:
                kept.append(sub)
                continue
            try:
                body = parse_json(
                    VENDOR,
                    self.api.request(
                        "PATCH", f"{self.graph}/subscriptions/{sub['id']}", json={"expirationDateTime": expires}
                    ),
                )
                kept.append(self._subscription(body))
            except ConfigError as exc:
                if http_status(exc) != 404:
                    raise
                # Expired and gone: fall through to create a fresh one.
        if not kept:
            body = parse_json(
                VENDOR,
                self.api.request(
                    "POST",
                    f"{self.graph}/subscriptions",
                    json={
                        "changeType": "updated",
                        "notificationUrl": notification_url,
                        "resource": resource,
                        "expirationDateTime": expires,
                        "clientState": secret,
                    },
                ),
            )
            kept.append(self._subscription(body))
        return kept

    @staticmethod
    def _subscription(body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": body["id"],
            "resource": body.get("resource"),
            "changeType": body.get("changeType"),
            "expiresAt": as_timestamp(body.get("expirationDateTime"), "expirationDateTime"),
        }

    def webhook_handshake(self, query: Mapping[str, str], headers: Mapping[str, str], body: bytes) -> str | None:
        # Graph validates a notification URL by POSTing validationToken and expecting it echoed as text.
        token = query.get("validationToken")
        return str(token) if token else None

    def verify_webhook(
        self, headers: Mapping[str, str], body: bytes, *, method: str = "POST", url: str | None = None
    ) -> list[WebhookEvent]:
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise Invalid("Microsoft Graph notification body is not JSON") from exc
        items = payload.get("value") if isinstance(payload, dict) else None
        if not isinstance(items, list) or not items:
            raise Invalid("Microsoft Graph notification has no 'value' list")
        events = []
        for item in items:
            verify_shared_secret(VENDOR, str(self.credentials.get("webhook_secret") or ""), item.get("clientState"))
            # Graph gives drive notifications no id; identical redeliveries hash alike.
            digest = hashlib.sha256(json.dumps(item, sort_keys=True).encode()).hexdigest()[:32]
            events.append(
                WebhookEvent(
                    event_id=f"{item.get('subscriptionId')}:{digest}",
                    stream="drive_items",
                    object_type="document",
                    source_id=None,
                    action=str(item.get("changeType") or "changed"),
                    occurred_at=None,
                    payload={k: item.get(k) for k in ("subscriptionId", "resource", "changeType", "tenantId")},
                )
            )
        return events

    def delete_subscription(self, subscription_id: str) -> None:
        try:
            self.api.request("DELETE", f"{self.graph}/subscriptions/{subscription_id}")
        except ConfigError as exc:
            if http_status(exc) != 404:
                raise
            raise NotFound(f"Graph subscription {subscription_id} no longer exists") from exc

    def close(self) -> None:
        self.http.close()
