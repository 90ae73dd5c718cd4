"""Notion connector (notion-client): pages with their block text, and database rows, paged by start_cursor.

``pages``: ``search`` for pages sorted by ``last_edited_time`` descending, stopping at the stored
watermark; the watermark moves only when the pass ends (newest first), and mid-pass state keeps
the ``start_cursor`` so a run that dies resumes on the next page. Each page's text is its blocks
(``blocks.children.list``, paged) flattened to plain text.
``rows``: for each configured data source, ``data_sources.query`` filtered by ``last_edited_time
on_or_after`` the source's watermark and sorted ascending, so the watermark advances page by page.
Auth: an integration token (internal integrations; it does not expire), or a public integration
connected by consent (OAuth: the authorize page, then ``/v1/oauth/token`` with HTTP Basic client
authentication and a JSON body; a refresh token when Notion answers one). Webhooks: ``X-Notion-Signature``
(HMAC-SHA256 of the body with the verification token); events carry an ``id`` for de-duplication.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any

import httpx
from notion_client import Client
from notion_client.errors import APIResponseError, HTTPResponseError, RequestTimeoutError

from connectors.base import ConfigField, Connector, Page, Record, Stream, WebhookEvent
from connectors.http import httpx_client, ssl_context
from connectors.oauth2 import OAuth2Client, OAuth2Consent, TokenProvider
from connectors.pagination import CursorPaginator
from connectors.retry import error_for_status, is_transport_error, transport_error
from connectors.text import as_timestamp, require
from connectors.webhooks import verify_prefixed_hmac
from core.errors import ConfigError, ConnectorError, DataError, Invalid, TransientError

VENDOR = "Notion"
TEXT_BLOCKS = {
    "paragraph",
    "heading_1",
    "heading_2",
    "heading_3",
    "bulleted_list_item",
    "numbered_list_item",
    "to_do",
    "toggle",
    "quote",
    "callout",
    "code",
}


def plain_text(rich: Any) -> str:
    if not isinstance(rich, list):
        return ""
    return "".join(str(part.get("plain_text") or "") for part in rich if isinstance(part, dict))


def property_value(prop: dict[str, Any]) -> Any:
    """A Notion property as a plain JSON value (text, number, date start, names of selections...)."""
    kind = prop.get("type")
    value = prop.get(kind) if kind else None
    if kind in ("title", "rich_text"):
        return plain_text(value)
    if kind in ("number", "checkbox", "url", "email", "phone_number", "created_time", "last_edited_time"):
        return value
    if kind in ("select", "status"):
        return (value or {}).get("name")
    if kind == "multi_select":
        return [v.get("name") for v in value or []]
    if kind == "date":
        return (value or {}).get("start")
    if kind == "people":
        return [p.get("id") for p in value or []]
    if kind == "relation":
        return [r.get("id") for r in value or []]
    if kind == "formula":
        inner = value or {}
        return inner.get(inner.get("type")) if inner else None
    return None


def page_title(properties: dict[str, Any]) -> str:
    for prop in properties.values():
        if isinstance(prop, dict) and prop.get("type") == "title":
            return plain_text(prop.get("title"))
    return ""


class _TokenRejected(Exception):
    """Notion answered 401 to a token that a refresh may replace."""


class NotionConnector(Connector):
    name = "notion"
    label = "Notion"
    streams = (
        Stream("pages", "document", primary_key="id", cursor_field="last_edited_time"),
        Stream("rows", "row", primary_key="id", cursor_field="last_edited_time"),
    )
    config_fields = (
        ConfigField("base_url", "API base URL", required=False, default="https://api.notion.com"),
        ConfigField("data_source_ids", "Data source ids for rows (comma separated)", required=False),
        ConfigField("page_size", "Results per page (max 100)", required=False, default=100),
        ConfigField("authorize_url", "Consent page URL (public integrations)", required=False,
                    default="https://api.notion.com/v1/oauth/authorize"),
        ConfigField("ca_bundle", "CA bundle path", required=False),
    )
    credential_fields = (
        ConfigField("access_token", "Integration token (empty to connect a public integration by consent)",
                    required=False, secret=True),
        ConfigField("client_id", "Public integration OAuth client id", required=False, secret=True),
        ConfigField("client_secret", "Public integration OAuth client secret", required=False, secret=True),
        ConfigField("refresh_token", "Refresh token", required=False, secret=True),
        ConfigField("webhook_secret", "Webhook verification token", required=False, secret=True),
    )
    supports_write = frozenset({"row"})
    webhooks = True
    oauth_consent = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.page_size = max(1, min(int(self.config.get("page_size") or 100), 100))
        base = str(self.config.get("base_url") or "https://api.notion.com").rstrip("/")
        self._token_url = f"{base}/v1/oauth/token"
        self._token_http = httpx_client(self.config, self.http_timeout)
        self.auth: TokenProvider = self.token_or_consent(self._oauth_client)
        self._http = httpx.Client(verify=ssl_context(self.config))
        self.client = Client(
            client=self._http,
            base_url=base,
            timeout_ms=int(self.http_timeout * 1000),
            retry=False,  # one retry policy for every connector: ours
        )

    def _oauth_client(self, grant: str, credentials: dict[str, Any]) -> OAuth2Client:
        return self.app_token_client(self._token_url, grant, credentials, self._token_http,
                                     basic_auth=True, json_body=True)

    def consent(self) -> OAuth2Consent:
        """Notion's authorize page for a public integration (``owner=user``; no scopes, no PKCE: the code is
        bound by the client secret). A connection holding a token may connect again with the keys."""
        url = str(self.config.get("authorize_url") or "https://api.notion.com/v1/oauth/authorize")
        return OAuth2Consent(self.consent_client(self.auth, self._oauth_client), url, (), pkce=False,
                             extra_params={"owner": "user"})

    # -- plumbing ---------------------------------------------------------------------------
    def _call(self, fn: Callable[[], Any], writing: bool = False) -> dict[str, Any]:
        def once() -> dict[str, Any]:
            refreshable = isinstance(self.auth, OAuth2Client) and bool(self.auth.tokens.get("refresh_token"))
            try:
                return attempt(refreshable)
            except _TokenRejected:
                self.auth.refresh()  # a 401 with a refresh token at hand: one new access token, then once more
                return attempt(False)

        def attempt(refreshable: bool) -> dict[str, Any]:
            self._http.headers["Authorization"] = f"Bearer {self.auth.access_token()}"
            try:
                result = fn()
            except APIResponseError as exc:
                if refreshable and int(exc.status) == 401:
                    raise _TokenRejected from exc
                code = str(getattr(exc, "code", "") or "")
                raise error_for_status(
                    VENDOR, int(exc.status), f"{code}: {exc}".strip(": "), dict(exc.headers or {}), writing=writing
                ) from exc
            except HTTPResponseError as exc:
                raise error_for_status(
                    VENDOR, int(exc.status), str(exc), dict(exc.headers or {}), writing=writing
                ) from exc
            except RequestTimeoutError as exc:
                raise TransientError(f"Connection to Notion timed out: {exc}") from exc
            except ConnectorError:
                raise
            except json.JSONDecodeError as exc:
                raise TransientError(f"Notion sent an unreadable response: {exc}") from exc
            except Exception as exc:
                if is_transport_error(exc):
                    raise transport_error(VENDOR, exc) from exc
                raise
            return result if isinstance(result, dict) else {}

        return self.retry.call(once)

    def test_connection(self) -> str:
        me = self._call(lambda: self.client.users.me())
        workspace = (me.get("bot") or {}).get("workspace_name")
        return f"Connected to Notion as {me.get('name')}" + (f" (workspace {workspace})" if workspace else "")

    def token_info(self) -> dict[str, Any] | None:
        return self.auth.info()

    # -- reading ----------------------------------------------------------------------------
    def read_pages(self, stream_name: str, state: dict[str, Any] | None, full: bool = False) -> Iterator[Page]:
        stream = self.stream(stream_name)
        state = None if full else state
        if stream_name == "pages":
            yield from self._read_pages(stream, state or {})
        else:
            yield from self._read_rows(stream, state or {})

    def _read_pages(self, stream: Stream, state: dict[str, Any]) -> Iterator[Page]:
        watermark = state.get("last_edited_time")
        pending = state.get("pending") or watermark
        paginator = CursorPaginator("next_cursor", has_more_path="has_more", start_value=state.get("start_cursor"))
        while not paginator.finished:
            cursor = paginator.current_value
            body = self._call(
                partial(
                    self.client.search,
                    filter={"property": "object", "value": "page"},
                    sort={"timestamp": "last_edited_time", "direction": "descending"},
                    start_cursor=cursor,
                    page_size=self.page_size,
                )
            )
            paginator.advance(body)
            page = Page()
            reached_old = False
            for raw in body.get("results") or []:
                source_id = raw.get("id") if isinstance(raw, dict) else None
                try:
                    edited = require(as_timestamp(raw.get("last_edited_time"), "last_edited_time"), "last_edited_time")
                    if watermark and edited < watermark:
                        reached_old = True  # newest first: everything after this is already stored
                        break
                    record = self._page_record(stream, raw, edited)
                except DataError as exc:
                    page.skipped.append((source_id, f"page {source_id or '(no id)'}: {exc.message}"))
                    continue
                page.records.append(record)
                if pending is None or edited > pending:
                    pending = edited
            finished = paginator.finished or reached_old
            if finished:
                page.next_state = {"last_edited_time": pending} if pending else None
                page.has_more = False
            else:
                page.next_state = {
                    "last_edited_time": watermark,
                    "pending": pending,
                    "start_cursor": paginator.current_value,
                }
                page.has_more = True
            yield page
            if finished:
                return

    def _page_record(self, stream: Stream, raw: dict[str, Any], edited: str) -> Record:
        source_id = str(require(raw.get("id"), "id"))
        if raw.get("in_trash") or raw.get("archived"):
            return Record(stream.name, source_id, "document", {"modifiedAt": edited}, edited, deleted=True)
        properties = raw.get("properties") or {}
        parent = raw.get("parent") or {}
        return Record(
            stream.name,
            source_id,
            "document",
            {
                "title": page_title(properties) or "Untitled",
                "text": self._blocks_text(source_id),
                "mimeType": "text/markdown",
                "project": parent.get("page_id") or parent.get("data_source_id") or parent.get("database_id"),
                "url": raw.get("url"),
                "path": None,
                "size": None,
                "modifiedAt": edited,
            },
            edited,
        )

    def _blocks_text(self, block_id: str) -> str:
        lines: list[str] = []
        paginator = CursorPaginator("next_cursor", has_more_path="has_more")
        while not paginator.finished:
            cursor = paginator.current_value
            body = self._call(
                partial(self.client.blocks.children.list, block_id=block_id, start_cursor=cursor, page_size=100)
            )
            paginator.advance(body)
            for block in body.get("results") or []:
                kind = block.get("type")
                if kind in TEXT_BLOCKS:
                    text = plain_text((block.get(kind) or {}).get("rich_text"))
                    prefix = {"heading_1": "# ", "heading_2": "## ", "heading_3": "### "}.get(kind, "")
                    prefix = prefix or ("- " if kind in ("bulleted_list_item", "to_do") else "")
                    lines.append(prefix + text)
        return "\n".join(lines)

    def _sources(self) -> list[str]:
        configured = self.config.get("data_source_ids") or ""
        items = configured if isinstance(configured, list) else str(configured).split(",")
        return [s.strip() for s in items if s and s.strip()]

    def _read_rows(self, stream: Stream, state: dict[str, Any]) -> Iterator[Page]:
        sources = self._sources()
        if not sources:
            raise ConfigError("Notion rows need at least one data source id in the connection settings")
        done: dict[str, str] = dict(state.get("sources") or {})
        current = state.get("current") or {}
        if current.get("source") in sources:
            sources = [current["source"]] + [s for s in sources if s != current["source"]]
        for index, source in enumerate(sources):
            resume = current if current.get("source") == source else {}
            current = {}
            since = resume.get("since", done.get(source))
            newest = done.get(source)
            paginator = CursorPaginator("next_cursor", has_more_path="has_more", start_value=resume.get("start_cursor"))
            while not paginator.finished:
                cursor = paginator.current_value
                query: dict[str, Any] = {
                    "sorts": [{"timestamp": "last_edited_time", "direction": "ascending"}],
                    "start_cursor": cursor,
                    "page_size": self.page_size,
                }
                if since:
                    query["filter"] = {"timestamp": "last_edited_time", "last_edited_time": {"on_or_after": since}}
                body = self._call(partial(self.client.data_sources.query, data_source_id=source, **query))
                paginator.advance(body)
                page = Page()
                for raw in body.get("results") or []:
                    source_id = raw.get("id") if isinstance(raw, dict) else None
                    try:
                        record = self._row_record(stream, source, raw)
                    except DataError as exc:
                        page.skipped.append((source_id, f"row {source_id or '(no id)'}: {exc.message}"))
                        continue
                    page.records.append(record)
                    if record.cursor_value and (newest is None or record.cursor_value > newest):
                        newest = record.cursor_value
                if newest:
                    done[source] = newest
                if paginator.finished:
                    page.next_state = {"sources": dict(done)}
                    page.has_more = index < len(sources) - 1
                else:
                    page.next_state = {
                        "sources": dict(done),
                        "current": {"source": source, "since": since, "start_cursor": paginator.current_value},
                    }
                    page.has_more = True
                yield page

    def _row_record(self, stream: Stream, source: str, raw: Any) -> Record:
        if not isinstance(raw, dict):
            raise DataError("row is not an object")
        source_id = str(require(raw.get("id"), "id"))
        edited = require(as_timestamp(raw.get("last_edited_time"), "last_edited_time"), "last_edited_time")
        if raw.get("in_trash") or raw.get("archived"):
            return Record(stream.name, source_id, "row", {"modifiedAt": edited}, edited, deleted=True)
        properties = raw.get("properties") or {}
        if not isinstance(properties, dict):
            raise DataError("properties is not an object")
        values = {name: property_value(prop) for name, prop in properties.items() if isinstance(prop, dict)}
        return Record(
            stream.name,
            source_id,
            "row",
            {
                "title": page_title(properties),
                "properties": values,
                "database": source,
                "url": raw.get("url"),
                "modifiedAt": edited,
            },
            edited,
        )

    # -- outbound ---------------------------------------------------------------------------
    def write(self, object_type: str, source_id: str | None, fields: dict[str, Any]) -> str:
        """Update a database row's properties; ``fields`` are Notion property payloads by name."""
        self._require_writable(object_type)
        if not source_id:
            raise Invalid("Notion rows are created in Notion; outbound writes update existing rows only")
        self._call(lambda: self.client.pages.update(page_id=source_id, properties=fields), writing=True)
        return source_id

    # -- webhooks ---------------------------------------------------------------------------
    def verify_webhook(
        self, headers: Mapping[str, str], body: bytes, *, method: str = "POST", url: str | None = None
    ) -> list[WebhookEvent]:
        verify_prefixed_hmac(
            VENDOR, headers, body, str(self.credentials.get("webhook_secret") or ""), "X-Notion-Signature"
        )
        try:
            event = json.loads(body)
        except ValueError as exc:
            raise Invalid("Notion webhook body is not JSON") from exc
        if "verification_token" in event:
            return []  # the subscription's one-time verification request
        kind = str(event.get("type") or "")
        entity = event.get("entity") or {}
        return [
            WebhookEvent(
                event_id=str(require(event.get("id"), "id")),
                stream="pages" if entity.get("type") == "page" else None,
                object_type="document" if entity.get("type") == "page" else None,
                source_id=entity.get("id"),
                action="deleted" if kind.endswith("deleted") else "created" if kind.endswith("created") else "updated",
                occurred_at=as_timestamp(event.get("timestamp"), "timestamp"),
                payload={"type": kind, "entity": entity},
            )
        ]

    def close(self) -> None:
        self._http.close()
        self._token_http.close()
