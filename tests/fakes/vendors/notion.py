"""Fake Notion API (version 2025-09-03): search, blocks children, data source query, users/me, page update.

``search`` returns pages newest-edited first with ``next_cursor`` = the id of the next result,
like Notion's; ``data_sources/{id}/query`` honours the ``last_edited_time`` ``on_or_after`` filter
and ascending sort. Errors use Notion's ``{"object": "error", "status", "code", "message"}``.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from connectors.webhooks import sign_prefixed_hmac
from tests.fakes.vendors.server import FakeVendor, Request, Response, iso_z, route

DATA_SOURCE = "248104cd-477e-80af-bc30-000bc6e6f1aa"


def nid(kind: int, i: int) -> str:
    return str(uuid.UUID(int=(0x2481 << 112) | (kind << 64) | i))


class FakeNotion(FakeVendor):
    vendor = "notion"

    def __init__(self, *, pages: int = 25, rows: int = 40, page_size: int = 20, **kwargs: Any) -> None:
        super().__init__(page_size=page_size, **kwargs)
        self.webhook_secret = "notion-verification-token"
        self.data_source_id = DATA_SOURCE
        for i in range(pages):
            self.table("pages").put(
                {
                    "id": nid(1, i),
                    "title": f"Account plan {i}",
                    "blocks": [
                        ("heading_1", f"Plan {i}"),
                        ("paragraph", f"Goals for quarter {i % 4 + 1}."),
                        ("bulleted_list_item", "Expand seats"),
                        ("image", ""),
                    ],
                }
            )
        for i in range(rows):
            self.table("rows").put(
                {"id": nid(2, i), "Name": f"Deal {i}", "Amount": 1000 + i, "Stage": ("Open", "Won", "Lost")[i % 3]}
            )

    def connector_config(self) -> dict[str, Any]:
        config = super().connector_config()
        config.update(page_size=self.page_size, data_source_ids=self.data_source_id,
                      authorize_url=f"{self.url}/v1/oauth/authorize")  # api.notion.com in real life
        return config

    def connector_credentials(self) -> dict[str, Any]:
        # a public integration's keys along with its token (without the token, a connection connects by consent)
        return {"access_token": self.oauth.initial_access_token, "webhook_secret": self.webhook_secret,
                "client_id": self.oauth.client_id, "client_secret": self.oauth.client_secret}

    def _error(self, status: int, code: str, message: str) -> Response:
        return Response(status, {"object": "error", "status": status, "code": code, "message": message})

    def error_response(self, status: int, retry_after: float | None, req: Request) -> Response:
        code = {429: "rate_limited", 500: "internal_server_error", 502: "bad_gateway", 503: "service_unavailable"}
        return self._error(status, code.get(status, "internal_server_error"), f"Injected fault {status}")

    def _auth(self, req: Request) -> Response | None:
        if self.oauth.valid(req.bearer):
            return None
        return self._error(401, "unauthorized", "API token is invalid.")

    def _page(self, row: dict[str, Any]) -> dict[str, Any]:
        malformed = row["id"] in self.table("pages").malformed
        return {
            "object": "page",
            "id": row["id"],
            "created_time": iso_z(row["created"]),
            "last_edited_time": "last tuesday" if malformed else iso_z(row["modified"]),
            "in_trash": False,
            "parent": {"type": "workspace", "workspace": True},
            "url": f"https://www.notion.so/{row['id'].replace('-', '')}",
            "properties": {
                "title": {"id": "title", "type": "title", "title": [{"type": "text", "plain_text": row["title"]}]}
            },
        }

    def _row(self, row: dict[str, Any]) -> dict[str, Any]:
        malformed = row["id"] in self.table("rows").malformed
        return {
            "object": "page",
            "id": None if malformed else row["id"],
            "created_time": iso_z(row["created"]),
            "last_edited_time": iso_z(row["modified"]),
            "in_trash": False,
            "parent": {"type": "data_source_id", "data_source_id": self.data_source_id},
            "url": f"https://www.notion.so/{row['id'].replace('-', '')}",
            "properties": {
                "Name": {"id": "title", "type": "title", "title": [{"type": "text", "plain_text": row["Name"]}]},
                "Amount": {"id": "a1", "type": "number", "number": row["Amount"]},
                "Stage": {"id": "s1", "type": "select", "select": {"name": row["Stage"], "color": "blue"}},
            },
        }

    @staticmethod
    def _list(results: list[dict[str, Any]], next_cursor: str | None, kind: str) -> dict[str, Any]:
        return {
            "object": "list",
            "results": results,
            "next_cursor": next_cursor,
            "has_more": next_cursor is not None,
            "type": kind,
            kind: {},
        }

    # -- OAuth (public integrations) -------------------------------------------------------------
    @route("GET", r"/v1/oauth/authorize")
    def authorize(self, req: Request) -> Response:
        return self.consent_redirect(req)

    @route("POST", r"/v1/oauth/token")
    def token(self, req: Request) -> Response:
        """Notion's token endpoint: client by HTTP Basic, the grant as a JSON body, RFC 6749 error codes."""
        basic = req.basic
        body = req.json() if "json" in (req.header("content-type") or "") else None
        if not isinstance(body, dict):
            return Response(400, {"error": "invalid_request", "error_description": "body must be a JSON object"})
        if basic is None or not self.oauth.client_ok(*basic):
            return Response(401, {"error": "invalid_client", "error_description": "bad client credentials"})
        form = {k: str(v) for k, v in body.items() if v is not None}
        if form.get("grant_type") == "authorization_code":
            redeemed = self.redeem_code(form, basic)
            if isinstance(redeemed, str):
                return Response(400, {"error": "invalid_grant", "error_description": f"bad code ({redeemed})"})
            issued: tuple[str, str] | None = redeemed
        elif form.get("grant_type") == "refresh_token":
            issued = self.oauth.refresh(form.get("refresh_token"))
        else:
            return Response(400, {"error": "unsupported_grant_type", "error_description": form.get("grant_type")})
        if issued is None:
            return Response(400, {"error": "invalid_grant", "error_description": "unknown refresh token"})
        return Response(200, {"access_token": issued[0], "token_type": "bearer", "refresh_token": issued[1],
                              "bot_id": "bot-0001", "workspace_id": "ws-0001", "workspace_name": "Castiel",
                              "owner": {"type": "workspace", "workspace": True}})

    @route("GET", r"/v1/users/me")
    def me(self, req: Request) -> Response:
        return self._auth(req) or Response(
            200,
            {
                "object": "user",
                "id": nid(9, 1),
                "type": "bot",
                "name": "Castiel sync",
                "bot": {"workspace_name": "Acme"},
            },
        )

    @route("POST", r"/v1/search")
    def search(self, req: Request) -> Response:
        if (denied := self._auth(req)) is not None:
            return denied
        body = req.json() or {}
        size = min(int(body.get("page_size") or 100), self.page_size)
        rows = self.table("pages").live()
        if (body.get("sort") or {}).get("direction", "descending") == "descending":
            rows = rows[::-1]
        start = 0
        if body.get("start_cursor"):
            ids = [r["id"] for r in rows]
            if body["start_cursor"] not in ids:
                return self._error(400, "validation_error", "start_cursor provided is invalid")
            start = ids.index(body["start_cursor"])
        chunk = rows[start : start + size]
        nxt = rows[start + size]["id"] if start + size < len(rows) else None
        self.data_page_served()
        return Response(200, self._list([self._page(r) for r in chunk], nxt, "page_or_data_source"))

    @route("GET", r"/v1/blocks/(?P<id>[0-9a-f-]+)/children")
    def children(self, req: Request) -> Response:
        if (denied := self._auth(req)) is not None:
            return denied
        row = self.table("pages").rows.get(req.params["id"])
        if row is None:
            return self._error(404, "object_not_found", f"Could not find block with ID: {req.params['id']}.")
        blocks = []
        for n, (kind, text) in enumerate(row["blocks"]):
            block: dict[str, Any] = {
                "object": "block",
                "id": f"{row['id'][:-4]}{n:04d}",
                "type": kind,
                "has_children": False,
            }
            block[kind] = {"rich_text": [{"type": "text", "plain_text": text}]} if kind != "image" else {"type": "file"}
            blocks.append(block)
        start = int(req.query.get("start_cursor") or 0)
        size = int(req.query.get("page_size") or 100)
        nxt = str(start + size) if start + size < len(blocks) else None
        return Response(200, self._list(blocks[start : start + size], nxt, "block"))

    @route("POST", r"/v1/data_sources/(?P<id>[0-9a-f-]+)/query")
    def query(self, req: Request) -> Response:
        if (denied := self._auth(req)) is not None:
            return denied
        if req.params["id"] != self.data_source_id:
            return self._error(404, "object_not_found", f"Could not find data_source with ID: {req.params['id']}.")
        body = req.json() or {}
        size = min(int(body.get("page_size") or 100), self.page_size)
        rows = self.table("rows").live()
        flt = body.get("filter") or {}
        since = (flt.get("last_edited_time") or {}).get("on_or_after")
        if since:
            floor = dt.datetime.fromisoformat(since.replace("Z", "+00:00")).timestamp()
            rows = [r for r in rows if r["modified"] >= floor]
        start = 0
        if body.get("start_cursor"):
            ids = [r["id"] for r in rows]
            if body["start_cursor"] not in ids:
                return self._error(400, "validation_error", "start_cursor provided is invalid")
            start = ids.index(body["start_cursor"])
        chunk = rows[start : start + size]
        nxt = rows[start + size]["id"] if start + size < len(rows) else None
        self.data_page_served()
        return Response(200, self._list([self._row(r) for r in chunk], nxt, "page_or_data_source"))

    @route("PATCH", r"/v1/pages/(?P<id>[0-9a-f-]+)")
    def update_page(self, req: Request) -> Response:
        if (denied := self._auth(req)) is not None:
            return denied
        table = self.table("rows")
        if req.params["id"] not in table.rows:
            return self._error(404, "object_not_found", "Could not find page.")
        props = (req.json() or {}).get("properties") or {}
        changes: dict[str, Any] = {}
        for name, value in props.items():
            if name == "Amount":
                if not isinstance(value.get("number"), int | float):
                    return self._error(400, "validation_error", "body.properties.Amount.number should be a number")
                changes["Amount"] = value["number"]
            elif name == "Stage":
                changes["Stage"] = (value.get("select") or {}).get("name")
        row = table.update(req.params["id"], **changes)
        return Response(200, self._row(row))

    def webhook(self, event_id: str, page_id: str, secret: str | None = None) -> tuple[dict[str, str], bytes]:
        body = json.dumps(
            {
                "id": event_id,
                "timestamp": "2025-01-01T10:00:00.000Z",
                "workspace_id": nid(9, 2),
                "subscription_id": nid(9, 3),
                "integration_id": nid(9, 4),
                "type": "page.content_updated",
                "entity": {"id": page_id, "type": "page"},
                "attempt_number": 1,
            }
        ).encode()
        return sign_prefixed_hmac(secret or self.webhook_secret, body, "X-Notion-Signature"), body
