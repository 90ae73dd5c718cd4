"""Fake Slack Web API: auth.test, conversations.list/history with cursors, chat.postMessage/update, token rotation.

Errors follow Slack: most are HTTP 200 with ``{"ok": false, "error": ...}``; rate limits are HTTP
429 with Retry-After. History is newest first, ``oldest`` exclusive unless ``inclusive``, and
cursors are stateless (``next_ts:<ts>`` base64), as Slack's are. Expiring tokens (token rotation)
answer ``token_expired`` until refreshed through ``oauth.v2.access``. Installing the app by consent:
``/oauth/v2/authorize`` consents at once and redirects back with a code, which ``oauth.v2.access``
redeems for a bot token (plus a refresh token and a lifetime when token rotation is on, as Slack does).
"""

from __future__ import annotations

import base64
import bisect
import json
import threading
from typing import Any

from connectors.webhooks import sign_slack
from tests.fakes.vendors.server import BASE_EPOCH, FakeVendor, Request, Response, route


def _ts(n: int) -> str:
    return f"{int(BASE_EPOCH) + n}.{n % 1_000_000:06d}"


class FakeSlack(FakeVendor):
    vendor = "slack"

    def __init__(self, *, channels: int = 3, messages: int = 60, page_size: int = 50, **kwargs: Any) -> None:
        super().__init__(page_size=page_size, **kwargs)
        self.signing_secret = "slack-signing-secret"
        self.rotation = False
        self.channels: dict[str, dict[str, Any]] = {}
        self.messages: dict[str, list[dict[str, Any]]] = {}
        self.malformed: set[str] = set()
        self._lock = threading.Lock()
        self._n = 0
        self.posted: list[dict[str, Any]] = []
        for c in range(channels):
            cid = f"C{c:08d}"
            self.channels[cid] = {"id": cid, "name": f"deal-room-{c}", "is_member": True, "is_archived": False}
            self.messages[cid] = []
        ids = list(self.channels)
        for i in range(messages):
            self.post(ids[i % len(ids)], f"Message {i}: customer asked about pricing", user=f"U{i % 7:08d}")

    # -- data -----------------------------------------------------------------------------------
    def post(self, channel: str, text: str, user: str = "U00000001") -> dict[str, Any]:
        with self._lock:
            self._n += 1
            message = {"type": "message", "user": user, "text": text, "ts": _ts(self._n)}
            self.messages[channel].append(message)
            return message

    def malform(self, channel: str, ts: str) -> None:
        self.malformed.add(f"{channel}:{ts}")

    def expected_ids(self, table: str = "messages") -> set[str]:
        return {f"{c}:{m['ts']}" for c, msgs in self.messages.items() for m in msgs} - self.malformed

    def connector_config(self) -> dict[str, Any]:
        config = super().connector_config()
        config["page_size"] = self.page_size
        config["authorize_url"] = f"{self.url}/oauth/v2/authorize"  # slack.com in real life
        return config

    def connector_credentials(self) -> dict[str, Any]:
        creds = {"access_token": self.oauth.initial_access_token, "signing_secret": self.signing_secret}
        if self.rotation:
            creds.update(
                refresh_token=self.oauth.refresh_token,
                client_id=self.oauth.client_id,
                client_secret=self.oauth.client_secret,
            )
        return creds

    def enable_rotation(self) -> None:
        """Token rotation on: refresh tokens rotate and access tokens can expire."""
        self.rotation = True
        self.oauth.rotate = True

    # -- plumbing -------------------------------------------------------------------------------
    def error_response(self, status: int, retry_after: float | None, req: Request) -> Response:
        error = "ratelimited" if status == 429 else "internal_error"
        return Response(status, {"ok": False, "error": error})

    def _args(self, req: Request) -> dict[str, str]:
        args = dict(req.query)
        ctype = req.header("content-type") or ""
        if req.body and "json" in ctype:
            args.update({k: str(v) for k, v in (req.json() or {}).items() if v is not None})
        elif req.body:
            args.update(req.form())
        return args

    def _auth_error(self, req: Request) -> Response | None:
        token = req.bearer
        if token and self.oauth.valid(token):
            return None
        if self.rotation and token:
            # With token rotation an old access token reports expiry; the refresh then tells revoked apart.
            return Response(200, {"ok": False, "error": "token_expired"})
        if self.oauth.revoked:
            return Response(200, {"ok": False, "error": "token_revoked"})
        return Response(200, {"ok": False, "error": "invalid_auth"})

    # -- methods --------------------------------------------------------------------------------
    @route("GET", r"/oauth/v2/authorize")
    def authorize(self, req: Request) -> Response:
        return self.consent_redirect(req)

    @route("POST", r"/api/oauth\.v2\.access")
    def oauth_access(self, req: Request) -> Response:
        form = self._args(req)
        if not self.oauth.client_ok(form.get("client_id"), form.get("client_secret")):
            return Response(200, {"ok": False, "error": "invalid_client_id"})
        answer: dict[str, Any] = {"ok": True, "token_type": "bot", "team": {"id": "T0001", "name": "Castiel"}}
        if form.get("grant_type") == "authorization_code":
            redeemed = self.redeem_code(form)
            if isinstance(redeemed, str):
                error = {"redirect": "bad_redirect_uri", "client": "invalid_client_id"}.get(redeemed, "invalid_code")
                return Response(200, {"ok": False, "error": error})
            answer["access_token"] = redeemed[0]
            if self.rotation:  # without token rotation Slack answers a bot token that never expires
                answer.update(refresh_token=redeemed[1], expires_in=self.oauth.expires_in)
            return Response(200, answer)
        issued = self.oauth.refresh(form.get("refresh_token"))
        if issued is None:
            return Response(200, {"ok": False, "error": "invalid_refresh_token"})
        answer.update(access_token=issued[0], refresh_token=issued[1], expires_in=self.oauth.expires_in)
        return Response(200, answer)

    @route("GET|POST", r"/api/auth\.test")
    def auth_test(self, req: Request) -> Response:
        return self._auth_error(req) or Response(
            200,
            {
                "ok": True,
                "url": "https://castiel.slack.com/",
                "team": "Castiel",
                "user": "castiel-bot",
                "team_id": "T0001",
            },
        )

    @route("GET|POST", r"/api/conversations\.list")
    def conversations_list(self, req: Request) -> Response:
        if (denied := self._auth_error(req)) is not None:
            return denied
        args = self._args(req)
        ids = sorted(self.channels)
        start = int(base64.b64decode(args["cursor"]).decode().split(":")[1]) if args.get("cursor") else 0
        limit = int(args.get("limit") or 100)
        chunk = ids[start : start + limit]
        nxt = base64.b64encode(f"offset:{start + limit}".encode()).decode() if start + limit < len(ids) else ""
        return Response(
            200,
            {"ok": True, "channels": [self.channels[c] for c in chunk], "response_metadata": {"next_cursor": nxt}},
        )

    @route("GET|POST", r"/api/conversations\.history")
    def conversations_history(self, req: Request) -> Response:
        if (denied := self._auth_error(req)) is not None:
            return denied
        args = self._args(req)
        channel = args.get("channel", "")
        if channel not in self.messages:
            return Response(200, {"ok": False, "error": "channel_not_found"})
        limit = min(int(args.get("limit") or 100), self.page_size)
        oldest = float(args.get("oldest") or 0)
        inclusive = args.get("inclusive") in ("1", "true", "True")
        latest = float("inf")
        if args.get("cursor"):
            try:
                kind, value = base64.b64decode(args["cursor"]).decode().split(":", 1)
                latest = float(value)
            except (ValueError, UnicodeDecodeError):
                return Response(200, {"ok": False, "error": "invalid_cursor"})
        with self._lock:
            msgs = list(self.messages[channel])
        stamps = [float(m["ts"]) for m in msgs]
        lo = bisect.bisect_left(stamps, oldest) if inclusive else bisect.bisect_right(stamps, oldest)
        hi = bisect.bisect_left(stamps, latest)
        window = msgs[lo:hi][::-1]  # newest first
        chunk = window[:limit]
        out = []
        for m in chunk:
            item = dict(m)
            if f"{channel}:{m['ts']}" in self.malformed:
                item.pop("ts")
                item["text"] = None
            out.append(item)
        has_more = len(window) > limit
        body: dict[str, Any] = {"ok": True, "messages": out, "has_more": has_more, "pin_count": 0}
        body["response_metadata"] = {
            "next_cursor": base64.b64encode(f"next_ts:{chunk[-1]['ts']}".encode()).decode() if has_more else ""
        }
        self.data_page_served()
        return Response(200, body)

    @route("POST", r"/api/chat\.postMessage")
    def chat_post(self, req: Request) -> Response:
        if (denied := self._auth_error(req)) is not None:
            return denied
        args = self._args(req)
        channel = args.get("channel", "")
        if channel not in self.messages:
            return Response(200, {"ok": False, "error": "channel_not_found"})
        if not args.get("text"):
            return Response(200, {"ok": False, "error": "no_text"})
        message = self.post(channel, args["text"], user="UBOT")
        self.posted.append({"channel": channel, **message})
        return Response(200, {"ok": True, "channel": channel, "ts": message["ts"], "message": message})

    @route("POST", r"/api/chat\.update")
    def chat_update(self, req: Request) -> Response:
        if (denied := self._auth_error(req)) is not None:
            return denied
        args = self._args(req)
        for m in self.messages.get(args.get("channel", ""), []):
            if m["ts"] == args.get("ts"):
                m["text"] = args.get("text")
                m["edited"] = {"user": "UBOT", "ts": _ts(self._n + 1)}
                return Response(200, {"ok": True, "channel": args["channel"], "ts": m["ts"], "text": m["text"]})
        return Response(200, {"ok": False, "error": "message_not_found"})

    # -- Events API -----------------------------------------------------------------------------
    def event(self, event_id: str, channel: str, ts: str, secret: str | None = None) -> tuple[dict[str, str], bytes]:
        body = json.dumps(
            {
                "token": "legacy",
                "team_id": "T0001",
                "api_app_id": "A0001",
                "type": "event_callback",
                "event_id": event_id,
                "event_time": int(float(ts)),
                "event": {"type": "message", "channel": channel, "user": "U00000001", "text": "hi", "ts": ts},
            }
        ).encode()
        return sign_slack(secret or self.signing_secret, body), body
