"""Fake Salesforce REST API (HTTPS): OAuth token refresh, SOQL query/queryAll with queryMore, limits, sObject writes.

Understands the SOQL the connector sends: ``SELECT <fields> FROM <Object> [WHERE SystemModstamp >=
<datetime>] ORDER BY SystemModstamp ASC, Id ASC``; unknown fields answer 400 INVALID_FIELD like the
real API. Batches honour ``Sforce-Query-Options: batchSize=N`` (capped by ``page_size``).
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import threading
from typing import Any

from tests.fakes.vendors.server import BASE_EPOCH, FakeVendor, Request, Response, route

API = r"/services/data/v(?P<version>[\d.]+)"
PREFIX = {"Account": "001", "Opportunity": "006", "Contact": "003", "Task": "00T"}
STAGES = ("Prospecting", "Qualification", "Proposal/Price Quote", "Negotiation/Review", "Closed Won", "Closed Lost")
SOQL = re.compile(
    r"SELECT\s+(?P<fields>.+?)\s+FROM\s+(?P<object>\w+)"
    r"(?:\s+WHERE\s+SystemModstamp\s*>=\s*(?P<since>\S+))?"
    r"(?:\s+ORDER\s+BY\s+SystemModstamp(?:\s+ASC)?(?:\s*,\s*Id(?:\s+ASC)?)?)?"
    r"(?:\s+LIMIT\s+(?P<limit>\d+))?\s*$",
    re.IGNORECASE | re.DOTALL,
)


def sf_id(prefix: str, i: int) -> str:
    return f"{prefix}{i:012d}AAA"


def sf_datetime(epoch: float) -> str:
    t = dt.datetime.fromtimestamp(epoch, dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}+0000"


def parse_sf_datetime(text: str) -> float:
    text = text.replace("Z", "+00:00")
    text = re.sub(r"([+-]\d{2})(\d{2})$", r"\1:\2", text)
    return dt.datetime.fromisoformat(text).timestamp()


class FakeSalesforce(FakeVendor):
    vendor = "salesforce"
    default_tls = True  # simple-salesforce only speaks https

    def __init__(
        self,
        *,
        accounts: int = 20,
        opportunities: int = 50,
        contacts: int = 30,
        tasks: int = 10,
        page_size: int = 200,
        **kwargs: Any,
    ) -> None:
        super().__init__(page_size=page_size, **kwargs)
        self.oauth.expires_in = 7200
        self._cursors: dict[str, tuple[str, list[str], list[str]]] = {}
        self._cursor_lock = threading.Lock()
        self.writes: list[tuple[str, str, str, dict[str, Any]]] = []
        self.api_remaining = 14_000
        for i in range(accounts):
            self.table("Account").put(
                {
                    "id": sf_id("001", i),
                    "Name": f"Account {i}",
                    "Website": f"https://www.account{i}.example",
                    "Industry": ("Software", "Energy", "Retail")[i % 3],
                    "OwnerId": "005000000000001AAA",
                }
            )
        for i in range(opportunities):
            self.table("Opportunity").put(
                {
                    "id": sf_id("006", i),
                    "Name": f"Opportunity {i}",
                    "Amount": float(1000 + 250 * (i % 40)),
                    "StageName": STAGES[i % len(STAGES)],
                    "CloseDate": (dt.date(2024, 1, 1) + dt.timedelta(days=i % 365)).isoformat(),
                    "AccountId": sf_id("001", i % max(accounts, 1)),
                    "Probability": float((i * 10) % 100),
                    "IsClosed": STAGES[i % len(STAGES)].startswith("Closed"),
                    "IsWon": STAGES[i % len(STAGES)] == "Closed Won",
                    "OwnerId": "005000000000001AAA",
                }
            )
        for i in range(contacts):
            self.table("Contact").put(
                {
                    "id": sf_id("003", i),
                    "FirstName": f"First{i}",
                    "LastName": f"Last{i}",
                    "Email": f"person{i}@example.com",
                    "Phone": None,
                    "Title": "Buyer",
                    "AccountId": sf_id("001", i % max(accounts, 1)),
                }
            )
        for i in range(tasks):
            self.table("Task").put(
                {
                    "id": sf_id("00T", i),
                    "Subject": f"Call {i}",
                    "Status": "Completed" if i % 2 else "Not Started",
                    "ActivityDate": "2024-03-01",
                    "WhatId": sf_id("006", i),
                    "WhoId": None,
                }
            )

    def connector_config(self) -> dict[str, Any]:
        config = super().connector_config()
        config["instance_url"] = self.url
        config["page_size"] = self.page_size
        return config

    def connector_credentials(self) -> dict[str, Any]:
        return {
            "client_id": self.oauth.client_id,
            "client_secret": self.oauth.client_secret,
            "refresh_token": self.oauth.refresh_token,
        }

    # -- errors ---------------------------------------------------------------------------------
    def error_response(self, status: int, retry_after: float | None, req: Request) -> Response:
        codes = {429: "REQUEST_LIMIT_EXCEEDED", 500: "UNKNOWN_EXCEPTION", 503: "SERVER_UNAVAILABLE"}
        return Response(status, [{"message": f"Injected fault {status}", "errorCode": codes.get(status, "ERROR")}])

    def _unauthorized(self) -> Response:
        return Response(401, [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])

    # -- OAuth ----------------------------------------------------------------------------------
    @route("GET", r"/services/oauth2/authorize")
    def authorize(self, req: Request) -> Response:
        return self.consent_redirect(req)

    @route("POST", r"/services/oauth2/token")
    def token(self, req: Request) -> Response:
        form = req.form()
        if form.get("grant_type") == "authorization_code":
            return self._redeem(form)
        if form.get("grant_type") != "refresh_token":
            return Response(400, {"error": "unsupported_grant_type", "error_description": "grant type not supported"})
        if not self.oauth.client_ok(form.get("client_id"), form.get("client_secret")):
            return Response(400, {"error": "invalid_client_id", "error_description": "client identifier invalid"})
        issued = self.oauth.refresh(form.get("refresh_token"))
        if issued is None:
            return Response(400, {"error": "invalid_grant", "error_description": "expired access/refresh token"})
        access, _ = issued
        return self._token_body(access)

    def _redeem(self, form: dict[str, str]) -> Response:
        issued = self.redeem_code(form)
        if isinstance(issued, tuple):
            body = self._token_body(issued[0]).body
            assert isinstance(body, dict)
            body.update(refresh_token=issued[1], scope="refresh_token api")
            return Response(200, body)
        errors = {
            "client": ("invalid_client_id", "client identifier invalid"),
            "code": ("invalid_grant", "invalid authorization code"),
            "redirect": ("redirect_uri_mismatch", "redirect_uri must match configuration"),
            "pkce": ("invalid_grant", "invalid code verifier"),
        }
        error, description = errors[issued]
        return Response(400, {"error": error, "error_description": description})

    def _token_body(self, access: str) -> Response:
        return Response(
            200,
            {
                "access_token": access,
                "signature": secrets.token_urlsafe(16),
                "scope": "refresh_token api",
                "instance_url": self.url,
                "id": f"{self.url}/id/00D000000000001AAA/005000000000001AAA",
                "token_type": "Bearer",
                "issued_at": str(int(dt.datetime.now(dt.UTC).timestamp() * 1000)),
            },
        )

    # -- API ------------------------------------------------------------------------------------
    def _authorized(self, req: Request) -> bool:
        return self.oauth.valid(req.bearer)

    @route("GET", API + r"/limits/?")
    def limits(self, req: Request) -> Response:
        if not self._authorized(req):
            return self._unauthorized()
        return Response(200, {"DailyApiRequests": {"Max": 15_000, "Remaining": self.api_remaining}})

    def _render(self, obj: str, row_id: str, fields: list[str]) -> dict[str, Any]:
        table = self.table(obj)
        row = table.rows.get(row_id)
        out: dict[str, Any] = {"attributes": {"type": obj, "url": f"/services/data/v59.0/sobjects/{obj}/{row_id}"}}
        if row is None:  # deleted: queryAll returns it with IsDeleted = true
            seq = table.tombstones[row_id]
            for f in fields:
                out[f] = None
            out.update({"Id": row_id, "IsDeleted": True, "SystemModstamp": sf_datetime(BASE_EPOCH + seq)})
            return out
        for f in fields:
            if f == "Id":
                out[f] = row_id
            elif f == "SystemModstamp":
                out[f] = sf_datetime(row["modified"])
            elif f == "IsDeleted":
                out[f] = False
            else:
                out[f] = row.get(f)
        if row_id in table.malformed:
            # A corrupt row as an integration would meet it: a number field holding text, no timestamp.
            if "Amount" in out:
                out["Amount"] = "12,5O0.00 EUR"
            out["SystemModstamp"] = "not-a-date"
        return out

    def _page(self, locator: str, offset: int, batch: int) -> Response:
        with self._cursor_lock:
            obj, fields, ids = self._cursors[locator]
        chunk = ids[offset : offset + batch]
        done = offset + batch >= len(ids)
        body: dict[str, Any] = {
            "totalSize": len(ids),
            "done": done,
            "records": [self._render(obj, rid, fields) for rid in chunk if self.table(obj).current_seq(rid)],
        }
        if not done:
            body["nextRecordsUrl"] = f"/services/data/v59.0/query/{locator}-{offset + batch}"
        self.data_page_served()
        return Response(200, body)

    def _batch(self, req: Request) -> int:
        m = re.search(r"batchSize=(\d+)", req.header("sforce-query-options") or "")
        return min(int(m.group(1)), self.page_size) if m else self.page_size

    @route("GET", API + r"/(?P<endpoint>query|queryAll)/?")
    def query(self, req: Request) -> Response:
        if not self._authorized(req):
            return self._unauthorized()
        m = SOQL.match(req.query.get("q", "").strip())
        if not m:
            return Response(400, [{"message": "unexpected token", "errorCode": "MALFORMED_QUERY"}])
        obj = m.group("object")
        if obj not in PREFIX:
            return Response(400, [{"message": f"sObject type '{obj}' is not supported.", "errorCode": "INVALID_TYPE"}])
        fields = [f.strip() for f in m.group("fields").split(",")]
        known = {"Id", "SystemModstamp", "IsDeleted"} | {
            k for row in list(self.table(obj).rows.values())[:1] for k in row if k[0].isupper()
        }
        bad = [f for f in fields if f not in known and self.table(obj).rows]
        if bad:
            return Response(
                400, [{"message": f"No such column '{bad[0]}' on entity '{obj}'", "errorCode": "INVALID_FIELD"}]
            )
        since = m.group("since")
        after_seq = int(parse_sf_datetime(since) - BASE_EPOCH) - 1 if since else 0
        include_deleted = req.params["endpoint"] == "queryAll"
        entries, _ = self.table(obj).changes_after(max(after_seq, 0), 1 << 30, include_deleted=include_deleted)
        ids = [rid for _, rid in entries]
        if m.group("limit"):
            ids = ids[: int(m.group("limit"))]
        locator = "01g" + secrets.token_hex(6)
        with self._cursor_lock:
            self._cursors[locator] = (obj, fields, ids)
        return self._page(locator, 0, self._batch(req))

    @route("GET", API + r"/(?:query|queryAll)/(?P<locator>01g[0-9a-f]+)-(?P<offset>\d+)")
    def query_more(self, req: Request) -> Response:
        if not self._authorized(req):
            return self._unauthorized()
        if req.params["locator"] not in self._cursors:
            return Response(400, [{"message": "invalid query locator", "errorCode": "INVALID_QUERY_LOCATOR"}])
        return self._page(req.params["locator"], int(req.params["offset"]), self._batch(req))

    @route("PATCH", API + r"/sobjects/(?P<object>\w+)/(?P<id>\w+)")
    def update(self, req: Request) -> Response:
        if not self._authorized(req):
            return self._unauthorized()
        obj, rid = req.params["object"], req.params["id"]
        if rid not in self.table(obj).rows:
            return Response(404, [{"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}])
        fields = req.json()
        if "Amount" in fields and not isinstance(fields["Amount"], int | float | type(None)):
            return Response(400, [{"message": "Amount: value not of required type", "errorCode": "INVALID_TYPE"}])
        self.table(obj).update(rid, **fields)
        self.writes.append(("update", obj, rid, fields))
        return Response(204)

    @route("POST", API + r"/sobjects/(?P<object>\w+)/?")
    def create(self, req: Request) -> Response:
        if not self._authorized(req):
            return self._unauthorized()
        obj = req.params["object"]
        fields = req.json()
        rid = sf_id(PREFIX.get(obj, "a00"), 900_000 + len(self.table(obj).rows))
        self.table(obj).put({"id": rid, **fields})
        self.writes.append(("create", obj, rid, fields))
        return Response(201, {"id": rid, "success": True, "errors": []})
