"""Google Drive connector (google-api-python-client): files and the exported text of Docs, incremental via changes.

The Drive v3 client is built offline from the discovery document shipped in
``connectors/discovery/drive.v3.json`` (``build_from_document``; no discovery fetch at run time).
A first sync takes ``changes.getStartPageToken`` *before* listing ``files.list`` page by page, so
edits made during the listing are picked up next time; later syncs call ``changes.list`` from
the stored token and end with ``newStartPageToken``. Google Docs/Slides export as text/plain,
Sheets as CSV, other readable files are downloaded (``alt=media``). Tokens: our OAuth2 refresh
flow behind a google-auth Credentials object, so AuthorizedHttp refreshes on 401 through it.
Push notifications: ``changes.watch`` channels (``manage_subscriptions``) checked by channel token.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import google.auth.credentials
import google_auth_httplib2
import httplib2
from googleapiclient.discovery import build_from_document
from googleapiclient.errors import HttpError

from connectors.base import ConfigField, Connector, Page, Record, Stream, WebhookEvent
from connectors.http import httpx_client
from connectors.oauth2 import OAuth2Client, OAuth2Consent, TokenProvider
from connectors.pagination import PageTokenPaginator
from connectors.retry import error_for_status, is_transport_error, transport_error
from connectors.text import as_timestamp, can_extract, extract_text, mime_for_name, require
from connectors.webhooks import header, verify_shared_secret
from core import clock
from core.errors import CastielError, ConfigError, ConnectorError, DataError, Invalid, RateLimited, TransientError

VENDOR = "Google Drive"
DISCOVERY = Path(__file__).with_name("discovery") / "drive.v3.json"
FOLDER = "application/vnd.google-apps.folder"
EXPORTS = {
    "application/vnd.google-apps.document": "text/plain",
    "application/vnd.google-apps.presentation": "text/plain",
    "application/vnd.google-apps.spreadsheet": "text/csv",
}
FILE_FIELDS = "id,name,mimeType,modifiedTime,webViewLink,size,parents,trashed"
CHANNEL_DAYS = 6  # changes.watch channels live at most a week


class _ManagedCredentials(google.auth.credentials.Credentials):
    """google-auth Credentials whose tokens come from our TokenProvider (refresh, persistence, health)."""

    def __init__(self, provider: TokenProvider) -> None:
        super().__init__()
        self.provider = provider

    @property
    def valid(self) -> bool:
        return True  # the provider refreshes ahead of expiry inside before_request

    def refresh(self, request: Any) -> None:
        self.token = self.provider.refresh()

    def before_request(self, request: Any, method: str, url: str, headers: dict[str, str]) -> None:
        self.token = self.provider.access_token()
        headers["authorization"] = f"Bearer {self.token}"


class GoogleDriveConnector(Connector):
    name = "gdrive"
    label = "Google Drive"
    streams = (Stream("files", "document", primary_key="id", cursor_field=None),)
    config_fields = (
        ConfigField("api_url", "API URL", required=False, default="https://www.googleapis.com"),
        ConfigField("token_uri", "Token URI", required=False, default="https://oauth2.googleapis.com/token"),
        ConfigField("auth_uri", "Consent page URI", required=False,
                    default="https://accounts.google.com/o/oauth2/v2/auth"),
        ConfigField("page_size", "Files per page", required=False, default=200),
        ConfigField("max_content_mb", "Largest file to read (MB)", required=False, default=20),
        ConfigField("refresh_token_lifetime_days", "Refresh token lifetime (days)", required=False),
        ConfigField("ca_bundle", "CA bundle path", required=False),
    )
    credential_fields = (
        ConfigField("client_id", "OAuth client id", secret=True),
        ConfigField("client_secret", "OAuth client secret", secret=True),
        ConfigField("refresh_token", "Refresh token", required=False, secret=True,
                    help="Or leave blank and use Connect with Google Drive"),
        ConfigField("webhook_secret", "Channel token", required=False, secret=True),
    )
    webhooks = True
    oauth_consent = True
    CONSENT_SCOPES = ("https://www.googleapis.com/auth/drive.readonly",)

    def __init__(self, config: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        config = dict(config or {})
        if not config.get("api_url") and config.get("base_url"):
            config["api_url"] = config["base_url"]
            config.setdefault("token_uri", f"{str(config['base_url']).rstrip('/')}/token")
        super().__init__(config, *args, **kwargs)
        self.api_url = str(self.config["api_url"]).rstrip("/")
        self.page_size = max(1, min(int(self.config.get("page_size") or 200), 1000))
        self.max_bytes = int(float(self.config.get("max_content_mb") or 20) * 1024 * 1024)
        self._token_http = httpx_client(self.config, self.http_timeout)
        lifetime = self.config.get("refresh_token_lifetime_days")
        self.auth = OAuth2Client(
            VENDOR,
            str(self.config["token_uri"]),
            client_id=str(self.credentials.get("client_id") or ""),
            client_secret=str(self.credentials.get("client_secret") or ""),
            credentials=self.credentials,
            http=self._token_http,
            retry=self.retry,
            grant="refresh_token" if self.credentials.get("refresh_token") else "authorization_code",
            token_store=self.token_store,
            refresh_token_lifetime_days=float(lifetime) if lifetime else None,
        )
        http = httplib2.Http(timeout=self.http_timeout, ca_certs=self.config.get("ca_bundle") or None)
        self._http = google_auth_httplib2.AuthorizedHttp(_ManagedCredentials(self.auth), http=http)
        self.service = build_from_document(
            DISCOVERY.read_text(),
            http=self._http,
            client_options={"api_endpoint": f"{self.api_url}/drive/v3/"},
        )
        # The client builds each resource's methods from the discovery document on every call
        # of files()/changes(): build them once.
        self._files = self.service.files()
        self._changes = self.service.changes()
        self._folder_names: dict[str, str | None] = {}
        self._root_id: str | None = None

    def consent(self) -> OAuth2Consent:
        """Google's web-server flow with PKCE; offline access + a consent prompt so a refresh token is issued."""
        return OAuth2Consent(
            self.auth, str(self.config.get("auth_uri") or "https://accounts.google.com/o/oauth2/v2/auth"),
            self.CONSENT_SCOPES, pkce=True, extra_params={"access_type": "offline", "prompt": "consent"},
        )

    # -- plumbing ---------------------------------------------------------------------------
    def _map(self, exc: HttpError) -> CastielError:
        status = int(exc.resp.status)
        reason = ""
        message = str(getattr(exc, "reason", "") or "")
        try:
            error = json.loads(exc.content or b"{}").get("error") or {}
            message = str(error.get("message") or message)
            details = error.get("errors") or []
            reason = str(details[0].get("reason") or "") if details else str(error.get("status") or "")
        except (ValueError, AttributeError):
            pass
        if status == 403 and reason in ("rateLimitExceeded", "userRateLimitExceeded"):
            retry_after = exc.resp.get("retry-after")
            return RateLimited(
                f"Google Drive rate limit ({reason}): {message}",
                retry_after=float(retry_after) if retry_after else None,
            )
        return error_for_status(VENDOR, status, f"{reason}: {message}".strip(": "), dict(exc.resp))

    def _execute(self, make_request: Callable[[], Any]) -> Any:
        def once() -> Any:
            try:
                return make_request().execute(num_retries=0)
            except HttpError as exc:
                raise self._map(exc) from exc
            except ConnectorError:
                raise
            except Exception as exc:
                if is_transport_error(exc):
                    raise transport_error(VENDOR, exc) from exc
                if isinstance(exc, ValueError | json.JSONDecodeError):
                    raise TransientError(f"Google Drive sent an unreadable response: {exc}") from exc
                raise

        return self.retry.call(once)

    def test_connection(self) -> str:
        about = self._execute(lambda: self.service.about().get(fields="user(displayName,emailAddress)"))
        user = about.get("user") or {}
        return f"Connected to Google Drive as {user.get('displayName')} <{user.get('emailAddress')}>"

    def token_info(self) -> dict[str, Any] | None:
        return self.auth.info()

    # -- reading ----------------------------------------------------------------------------
    def read_pages(self, stream_name: str, state: dict[str, Any] | None, full: bool = False) -> Iterator[Page]:
        stream = self.stream(stream_name)
        state = None if full else (state or None)
        if state and state.get("changesPageToken"):
            yield from self._read_changes(stream, str(state["changesPageToken"]))
            return
        start = (state or {}).get("startPageToken")
        if not start:
            start = self._execute(lambda: self._changes.getStartPageToken())["startPageToken"]
        paginator = PageTokenPaginator(start_value=(state or {}).get("filesPageToken"))
        while not paginator.finished:
            token = paginator.current_value
            body = self._execute(
                partial(
                    self._files.list,
                    q=f"trashed = false and mimeType != '{FOLDER}'",
                    fields=f"nextPageToken, files({FILE_FIELDS})",
                    pageSize=self.page_size,
                    pageToken=token,
                    orderBy="modifiedTime",
                )
            )
            paginator.advance(body)
            page = self._page(stream, body.get("files") or [], removed=lambda _item: False)
            page.has_more = not paginator.finished
            page.next_state = (
                {"changesPageToken": start}
                if paginator.finished
                else {"startPageToken": start, "filesPageToken": paginator.current_value}
            )
            yield page

    def _read_changes(self, stream: Stream, token: str) -> Iterator[Page]:
        paginator = PageTokenPaginator(start_value=token)
        while not paginator.finished:
            current = paginator.current_value
            body = self._execute(
                partial(
                    self._changes.list,
                    pageToken=current,
                    pageSize=self.page_size,
                    fields=f"nextPageToken, newStartPageToken, changes(fileId, removed, time, file({FILE_FIELDS}))",
                )
            )
            paginator.advance(body)
            items = []
            for change in body.get("changes") or []:
                item = dict(change.get("file") or {})
                item.setdefault("id", change.get("fileId"))
                item["_removed"] = bool(change.get("removed")) or bool(item.get("trashed"))
                items.append(item)
            page = self._page(stream, items, removed=lambda item: item.get("_removed", False))
            page.has_more = not paginator.finished
            if paginator.finished:
                new_start = body.get("newStartPageToken")
                if not new_start:
                    raise TransientError("Google Drive ended a change list without a newStartPageToken")
                page.next_state = {"changesPageToken": new_start}
            else:
                page.next_state = {"changesPageToken": paginator.current_value}
            yield page

    def _page(self, stream: Stream, items: list[Any], removed: Callable[[dict[str, Any]], bool]) -> Page:
        page = Page()
        for item in items:
            source_id = item.get("id") if isinstance(item, dict) else None
            try:
                if not isinstance(item, dict):
                    raise DataError("file entry is not an object")
                if removed(item):
                    page.records.append(
                        Record(stream.name, str(require(source_id, "id")), "document", {"modifiedAt": None}, None, True)
                    )
                    continue
                if item.get("mimeType") == FOLDER:
                    continue
                page.records.append(self._record(stream, item))
            except DataError as exc:
                page.skipped.append((source_id, f"file {source_id or '(no id)'}: {exc.message}"))
        return page

    def _record(self, stream: Stream, item: dict[str, Any]) -> Record:
        source_id = str(require(item.get("id"), "id"))
        name = str(require(item.get("name"), "name"))
        modified = require(as_timestamp(item.get("modifiedTime"), "modifiedTime"), "modifiedTime")
        mime = str(item.get("mimeType") or mime_for_name(name))
        try:
            size = int(item["size"]) if item.get("size") not in (None, "") else None
        except (TypeError, ValueError) as exc:
            raise DataError(f"size {item.get('size')!r} is not a number") from exc
        parents = item.get("parents") or []
        return Record(
            stream.name,
            source_id,
            "document",
            {
                "title": name.rsplit(".", 1)[0] if "." in name and mime not in EXPORTS else name,
                "text": self._text(source_id, name, mime, size),
                "mimeType": mime,
                "project": self._project(parents[0]) if parents else None,
                "url": item.get("webViewLink"),
                "path": name,
                "size": size,
                "modifiedAt": modified,
            },
            modified,
        )

    def _text(self, file_id: str, name: str, mime: str, size: int | None) -> str:
        if mime in EXPORTS:
            target = EXPORTS[mime]
            data = self._execute(lambda: self._files.export(fileId=file_id, mimeType=target))
            return extract_text(data if isinstance(data, bytes) else str(data).encode(), target, name)
        readable = mime if can_extract(mime) else mime_for_name(name, "")
        if not can_extract(readable) or (size is not None and size > self.max_bytes):
            return ""
        data = self._execute(lambda: self._files.get_media(fileId=file_id))
        return extract_text(data if isinstance(data, bytes) else str(data).encode(), readable, name)

    def _project(self, folder_id: str) -> str | None:
        """The parent folder's name (cached); files directly in My Drive have no project."""
        if self._root_id is None:
            self._root_id = self._execute(lambda: self._files.get(fileId="root", fields="id"))["id"]
        if folder_id == self._root_id:
            return None
        if folder_id not in self._folder_names:
            try:
                folder = self._execute(lambda: self._files.get(fileId=folder_id, fields="id,name"))
                self._folder_names[folder_id] = folder.get("name")
            except ConfigError:
                self._folder_names[folder_id] = None  # a folder we may not read: no project, not a failure
        return self._folder_names[folder_id]

    # -- push notifications -----------------------------------------------------------------
    def manage_subscriptions(self, subscriptions: list[dict[str, Any]], notification_url: str) -> list[dict[str, Any]]:
        secret = str(self.credentials.get("webhook_secret") or "")
        if not secret:
            raise ConfigError("Set the channel token secret before subscribing to Google Drive changes")
        now = clock.now()
        kept = [
            s
            for s in subscriptions
            if s.get("expiresAt") and clock.parse(str(s["expiresAt"])) - now > timedelta(days=1)
        ]
        if kept:
            return kept
        for old in subscriptions:
            # Channels cannot be renewed, only replaced: stop the old one so it stops sending.
            try:
                self._execute(
                    partial(self.service.channels().stop, body={"id": old["id"], "resourceId": old.get("resourceId")})
                )
            except ConfigError:
                pass
        start = self._execute(lambda: self._changes.getStartPageToken())["startPageToken"]
        expires_ms = int((now + timedelta(days=CHANNEL_DAYS)).timestamp() * 1000)
        channel = self._execute(
            lambda: self._changes.watch(
                pageToken=start,
                body={
                    "id": str(uuid.uuid4()),
                    "type": "web_hook",
                    "address": notification_url,
                    "token": secret,
                    "expiration": str(expires_ms),
                },
            )
        )
        return [
            {
                "id": channel["id"],
                "resourceId": channel.get("resourceId"),
                "resource": "changes",
                "expiresAt": as_timestamp(int(channel.get("expiration") or expires_ms), "expiration"),
            }
        ]

    def verify_webhook(
        self, headers: Mapping[str, str], body: bytes, *, method: str = "POST", url: str | None = None
    ) -> list[WebhookEvent]:
        verify_shared_secret(
            VENDOR, str(self.credentials.get("webhook_secret") or ""), header(headers, "X-Goog-Channel-Token")
        )
        state = header(headers, "X-Goog-Resource-State") or ""
        if state == "sync":
            return []  # the channel's hello message, not a change
        channel = header(headers, "X-Goog-Channel-ID") or ""
        number = header(headers, "X-Goog-Message-Number") or ""
        if not channel or not number:
            raise Invalid("Google Drive notification lacks X-Goog-Channel-ID or X-Goog-Message-Number")
        return [
            WebhookEvent(
                event_id=f"{channel}:{number}",
                stream="files",
                object_type="document",
                action=state or "changed",
                payload={"channel": channel, "resourceId": header(headers, "X-Goog-Resource-ID")},
            )
        ]

    def close(self) -> None:
        self._token_http.close()
        for conn in list(getattr(self._http.http, "connections", {}).values()):
            conn.close()
