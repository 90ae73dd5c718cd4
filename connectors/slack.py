"""Slack connector (slack_sdk WebClient): channel messages via conversations.history cursors.

For every channel the bot is in (or the configured ones) it reads ``conversations.history`` with
``oldest`` = the newest message ts already stored, following ``response_metadata.next_cursor``.
Slack returns newest first, so a channel's watermark advances only when its pass ends; mid-pass
state keeps the channel and cursor, so a run that dies resumes on the page after the last one
stored. State: ``{"channels": {channel_id: newest_ts}, "current": {"channel", "cursor", "newest"}}``.
Auth: a bot token, optionally with token rotation (refresh token, ``oauth.v2.access``). Events API
requests are checked with the signing secret (``v0`` HMAC) and carry ``event_id`` for de-duplication.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from connectors.base import ConfigField, Connector, Page, Record, Stream, WebhookEvent
from connectors.http import httpx_client, ssl_context
from connectors.oauth2 import OAuth2Client, OAuth2Consent, TokenProvider
from connectors.pagination import CursorPaginator
from connectors.retry import error_for_status, is_transport_error, parse_retry_after, transport_error
from connectors.text import as_timestamp, require
from connectors.webhooks import verify_slack
from core.errors import CastielError, ConfigError, ConnectorError, DataError, Invalid, RateLimited, TransientError

VENDOR = "Slack"
REAUTH = {"invalid_auth", "not_authed", "token_revoked", "account_inactive", "no_permission", "missing_scope"}
CONFIG = {"channel_not_found", "not_in_channel", "is_archived", "invalid_channel"}
TRANSIENT = {"internal_error", "fatal_error", "service_unavailable", "request_timeout", "ratelimited"}


def ts_key(ts: str) -> tuple[int, int]:
    """Slack timestamps compared exactly (a float loses the microsecond part at today's epochs)."""
    seconds, _, micros = ts.partition(".")
    return int(seconds), int(micros or 0)


def _slack_token_error(body: dict[str, Any]) -> tuple[str, str] | None:
    """Slack's token service answers 200 with ``ok: false`` and an error code instead of an OAuth error."""
    if body.get("ok") is False:
        return str(body.get("error") or "unknown_error"), "oauth.v2.access refused the request"
    return None


class SlackConnector(Connector):
    name = "slack"
    label = "Slack"
    streams = (Stream("messages", "message", primary_key="channel:ts", cursor_field="ts"),)
    config_fields = (
        ConfigField("base_url", "API base URL", required=False, default="https://slack.com"),
        ConfigField("channels", "Channel ids (comma separated; empty = all the bot is in)", required=False),
        ConfigField("page_size", "Messages per page (max 999)", required=False, default=200),
        ConfigField("authorize_url", "Consent page URL", required=False,
                    default="https://slack.com/oauth/v2/authorize"),
        ConfigField("ca_bundle", "CA bundle path", required=False),
    )
    credential_fields = (
        ConfigField("access_token", "Bot token (xoxb-...; empty to connect by consent)", required=False,
                    secret=True),
        ConfigField("refresh_token", "Refresh token (token rotation)", required=False, secret=True),
        ConfigField("client_id", "App client id", required=False, secret=True),
        ConfigField("client_secret", "App client secret", required=False, secret=True),
        ConfigField("signing_secret", "Signing secret", required=False, secret=True),
    )
    supports_write = frozenset({"message"})
    webhooks = True
    oauth_consent = True
    # What the connector calls: conversations.list/history (public and private channels) and chat.postMessage.
    CONSENT_SCOPES = ("channels:read", "channels:history", "groups:read", "groups:history", "chat:write")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        base = str(self.config.get("base_url") or "https://slack.com").rstrip("/")
        self.page_size = max(1, min(int(self.config.get("page_size") or 200), 999))
        self._token_http = httpx_client(self.config, self.http_timeout)
        self._token_url = f"{base}/api/oauth.v2.access"
        self.auth: TokenProvider = self.token_or_consent(self._oauth_client)
        self.client = WebClient(
            token=None,
            base_url=f"{base}/api/",
            timeout=int(max(1, round(self.http_timeout))),
            ssl=ssl_context(self.config),
            retry_handlers=[],  # one retry policy for every connector: ours
        )
        self.client.timeout = self.http_timeout  # type: ignore[assignment]  # urllib takes fractional seconds

    # -- plumbing ---------------------------------------------------------------------------
    def _map(self, exc: SlackApiError, writing: bool) -> CastielError:
        response = exc.response
        status = int(getattr(response, "status_code", 200) or 200)
        data = response.data if isinstance(response.data, dict) else {}
        error = str(data.get("error") or "")
        headers = dict(response.headers or {})
        if status == 429 or error == "ratelimited":
            retry_after = parse_retry_after(headers.get("Retry-After") or headers.get("retry-after"))
            return RateLimited(f"Slack rate limit reached ({error or status})", retry_after=retry_after)
        if status >= 500 or error in TRANSIENT:
            return TransientError(f"Slack answered {status} {error}".strip())
        if error in REAUTH or error == "token_expired":
            return ConfigError(f"Slack rejected the token ({error}); reinstall the app or update the bot token")
        if error in CONFIG:
            return ConfigError(f"Slack cannot read a configured channel ({error}); invite the bot or fix the list")
        if writing and error:
            return Invalid(f"Slack rejected the message ({error})")
        if status >= 400:
            return error_for_status(VENDOR, status, error or str(data)[:200], headers, writing=writing)
        return ConfigError(f"Slack refused the call ({error or 'unknown error'})")

    def _call(self, fn: Callable[[WebClient], Any], writing: bool = False) -> dict[str, Any]:
        def once() -> dict[str, Any]:
            refreshed = False
            while True:
                self.client.token = self.auth.access_token()
                try:
                    response = fn(self.client)
                    return response.data if isinstance(response.data, dict) else {}
                except SlackApiError as exc:
                    data = exc.response.data if isinstance(exc.response.data, dict) else {}
                    if (
                        data.get("error") in ("token_expired", "invalid_auth")
                        and self.auth.can_refresh
                        and not refreshed
                    ):
                        self.auth.refresh()
                        refreshed = True
                        continue
                    raise self._map(exc, writing) from exc
                except ConnectorError:
                    raise
                except json.JSONDecodeError as exc:
                    raise TransientError(f"Slack sent an unreadable response: {exc}") from exc
                except Exception as exc:
                    if is_transport_error(exc):
                        raise transport_error(VENDOR, exc) from exc
                    raise

        return self.retry.call(once)

    def test_connection(self) -> str:
        me = self._call(lambda c: c.auth_test())
        return f"Connected to Slack workspace {me.get('team')} as {me.get('user')}"

    def token_info(self) -> dict[str, Any] | None:
        return self.auth.info()

    def _oauth_client(self, grant: str, credentials: dict[str, Any]) -> OAuth2Client:
        return self.app_token_client(self._token_url, grant, credentials, self._token_http,
                                     response_error=_slack_token_error)

    def consent(self) -> OAuth2Consent:
        """Slack's app install page (OAuth v2, comma-separated bot scopes); the code is bound by the client secret.

        A bot token without rotation never expires, so the connection may hold one already: installing
        again (after the app was removed, or for new scopes) redeems the code with the app's keys.
        """
        url = str(self.config.get("authorize_url") or "https://slack.com/oauth/v2/authorize")
        return OAuth2Consent(self.consent_client(self.auth, self._oauth_client), url, self.CONSENT_SCOPES,
                             pkce=False, scope_separator=",")

    # -- reading ----------------------------------------------------------------------------
    def _channels(self) -> list[str]:
        configured = self.config.get("channels")
        if configured:
            items = configured if isinstance(configured, list) else str(configured).split(",")
            return [str(c).strip() for c in items if str(c).strip()]
        ids: list[str] = []
        paginator = CursorPaginator("response_metadata.next_cursor")
        while not paginator.finished:
            cursor = paginator.current_value
            body = self._call(
                partial(
                    WebClient.conversations_list,
                    cursor=cursor,
                    limit=200,
                    exclude_archived=True,
                    types="public_channel,private_channel",
                )
            )
            paginator.advance(body)
            ids += [ch["id"] for ch in body.get("channels") or [] if ch.get("is_member", True) and ch.get("id")]
        return ids

    def read_pages(self, stream_name: str, state: dict[str, Any] | None, full: bool = False) -> Iterator[Page]:
        stream = self.stream(stream_name)
        state = {} if full or not state else json.loads(json.dumps(state))
        done: dict[str, str] = dict(state.get("channels") or {})
        current = state.get("current") or None
        channels = self._channels()
        if current and current.get("channel") not in channels:
            channels.insert(0, current["channel"])
        if current:  # finish the interrupted channel first
            channels = [current["channel"]] + [c for c in channels if c != current["channel"]]
        for index, channel in enumerate(channels):
            resume = current if current and current.get("channel") == channel else None
            current = None
            oldest = done.get(channel)
            newest = (resume or {}).get("newest") or oldest
            paginator = CursorPaginator("response_metadata.next_cursor", start_value=(resume or {}).get("cursor"))
            while not paginator.finished:
                cursor = paginator.current_value
                try:
                    body = self._call(
                        partial(
                            WebClient.conversations_history,
                            channel=channel,
                            cursor=cursor,
                            limit=self.page_size,
                            oldest=oldest or "0",
                            inclusive=False,
                        )
                    )
                except ConfigError as exc:
                    if cursor and "invalid_cursor" in exc.message:
                        paginator = CursorPaginator("response_metadata.next_cursor")
                        continue
                    raise
                paginator.advance(body)
                page = Page()
                for raw in body.get("messages") or []:
                    try:
                        record = self._record(stream, channel, raw)
                    except DataError as exc:
                        ts = raw.get("ts") if isinstance(raw, dict) else None
                        page.skipped.append((f"{channel}:{ts}" if ts else None, f"{channel}: {exc.message}"))
                        continue
                    page.records.append(record)
                    if newest is None or ts_key(str(record.cursor_value)) > ts_key(str(newest)):
                        newest = record.cursor_value
                last_channel = index == len(channels) - 1
                if paginator.finished:
                    if newest:
                        done[channel] = str(newest)
                    page.next_state = {"channels": dict(done)}
                    page.has_more = not last_channel
                else:
                    page.next_state = {
                        "channels": dict(done),
                        "current": {"channel": channel, "cursor": paginator.current_value, "newest": newest},
                    }
                    page.has_more = True
                yield page
        if not channels:
            yield Page(next_state={"channels": done}, has_more=False)

    def _record(self, stream: Stream, channel: str, raw: Any) -> Record:
        if not isinstance(raw, dict):
            raise DataError("message is not an object")
        ts = str(require(raw.get("ts"), "ts"))
        try:
            ts_key(ts)
        except ValueError as exc:
            raise DataError(f"ts {ts!r} is not a Slack timestamp") from exc
        edited = (raw.get("edited") or {}).get("ts")
        modified = as_timestamp(edited or ts, "ts")
        return Record(
            stream.name,
            f"{channel}:{ts}",
            "message",
            {
                "text": raw.get("text") or "",
                "channel": channel,
                "user": raw.get("user") or raw.get("bot_id"),
                "ts": ts,
                "threadTs": raw.get("thread_ts"),
                "subtype": raw.get("subtype"),
                "modifiedAt": modified,
            },
            ts,
        )

    # -- outbound ---------------------------------------------------------------------------
    def write(self, object_type: str, source_id: str | None, fields: dict[str, Any]) -> str:
        self._require_writable(object_type)
        channel, text = fields.get("channel"), fields.get("text")
        if not channel or not text:
            raise Invalid("A Slack message needs a channel and text")
        if source_id:
            ts = source_id.split(":", 1)[1] if ":" in source_id else source_id
            self._call(lambda c: c.chat_update(channel=channel, ts=ts, text=text), writing=True)
            return f"{channel}:{ts}"
        body = self._call(
            lambda c: c.chat_postMessage(channel=channel, text=text, thread_ts=fields.get("threadTs")), writing=True
        )
        return f"{body.get('channel') or channel}:{body['ts']}"

    # -- Events API -------------------------------------------------------------------------
    def _verify(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        verify_slack(headers, body, str(self.credentials.get("signing_secret") or ""))
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise Invalid("Slack event body is not JSON") from exc
        if not isinstance(payload, dict):
            raise Invalid("Slack event body is not an object")
        return payload

    def webhook_handshake(self, query: Mapping[str, str], headers: Mapping[str, str], body: bytes) -> str | None:
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            return None
        if isinstance(payload, dict) and payload.get("type") == "url_verification":
            self._verify(headers, body)
            return str(payload.get("challenge") or "")
        return None

    def verify_webhook(
        self, headers: Mapping[str, str], body: bytes, *, method: str = "POST", url: str | None = None
    ) -> list[WebhookEvent]:
        payload = self._verify(headers, body)
        if payload.get("type") != "event_callback":
            return []
        event = payload.get("event") or {}
        channel, ts = event.get("channel"), event.get("ts") or event.get("event_ts")
        subtype = event.get("subtype")
        return [
            WebhookEvent(
                event_id=str(require(payload.get("event_id"), "event_id")),
                stream="messages" if event.get("type") == "message" else None,
                object_type="message",
                source_id=f"{channel}:{ts}" if channel and ts else None,
                action="deleted" if subtype == "message_deleted" else "updated" if subtype else "created",
                occurred_at=as_timestamp(payload.get("event_time"), "event_time"),
                payload={"type": event.get("type"), "channel": channel, "ts": ts},
            )
        ]

    def close(self) -> None:
        self._token_http.close()
