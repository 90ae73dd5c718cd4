"""Fake HubSpot CRM v3 API: OAuth token refresh, object search with ``after`` paging (10,000 cap), basic CRUD.

Search understands one filter group with ``hs_lastmodifieddate`` GTE/GT (epoch ms or ISO), sorting
ascending by it, ``limit`` up to 200 and ``after``; beyond 10,000 results it answers 400 like the
real API. Webhook bodies are signed with ``sign_webhook`` (v3 signature).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from connectors.webhooks import sign_hubspot_v3
from tests.fakes.vendors.server import BASE_EPOCH, FakeVendor, Request, Response, iso_z, route

STAGES = ("appointmentscheduled", "qualifiedtobuy", "presentationscheduled", "contractsent", "closedwon", "closedlost")
OBJECTS = ("companies", "deals", "contacts")


def _epoch(value: str) -> float:
    text = str(value)
    if text.isdigit():
        return int(text) / 1000.0
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class FakeHubSpot(FakeVendor):
    vendor = "hubspot"

    def __init__(
        self, *, companies: int = 20, deals: int = 50, contacts: int = 30, page_size: int = 100, **kwargs: Any
    ) -> None:
        super().__init__(page_size=page_size, **kwargs)
        self.oauth.expires_in = 1800
        self.writes: list[tuple[str, str, str, dict[str, Any]]] = []
        self._next_id = 1_000_000
        for i in range(companies):
            self.table("companies").put(
                {"id": str(5000 + i), "name": f"Company {i}", "domain": f"company{i}.example", "industry": "SOFTWARE"}
            )
        for i in range(deals):
            stage = STAGES[i % len(STAGES)]
            self.table("deals").put(
                {
                    "id": str(9000 + i),
                    "dealname": f"Deal {i}",
                    "amount": str(1000 + 100 * (i % 50)),
                    "dealstage": stage,
                    "closedate": (dt.datetime(2024, 6, 1, tzinfo=dt.UTC) + dt.timedelta(days=i % 200)).isoformat(),
                    "pipeline": "default",
                    "company_id": str(5000 + i % max(companies, 1)) if companies else None,
                    "hs_is_closed": str(stage.startswith("closed")).lower(),
                    "hs_is_closed_won": str(stage == "closedwon").lower(),
                }
            )
        for i in range(contacts):
            self.table("contacts").put(
                {"id": str(100 + i), "firstname": f"First{i}", "lastname": f"Last{i}", "email": f"c{i}@example.com"}
            )

    def connector_config(self) -> dict[str, Any]:
        config = super().connector_config()
        config["page_size"] = self.page_size
        config["webhook_url"] = "https://console.example/webhooks/hubspot"
        config["authorize_url"] = f"{self.url}/oauth/authorize"  # app.hubspot.com in real life
        return config

    def connector_credentials(self) -> dict[str, Any]:
        return {
            "client_id": self.oauth.client_id,
            "client_secret": self.oauth.client_secret,
            "refresh_token": self.oauth.refresh_token,
        }

    def error_response(self, status: int, retry_after: float | None, req: Request) -> Response:
        category = {429: "RATE_LIMITS", 401: "INVALID_AUTHENTICATION"}.get(status, "INTERNAL_ERROR")
        return Response(status, {"status": "error", "message": f"Injected fault {status}", "category": category})

    def _unauthorized(self) -> Response:
        return Response(
            401,
            {
                "status": "error",
                "message": "The OAuth token used to make this call expired 0 second(s) ago.",
                "category": "EXPIRED_AUTHENTICATION",
            },
        )

    # -- OAuth ----------------------------------------------------------------------------------
    @route("GET", r"/oauth/authorize")
    def authorize(self, req: Request) -> Response:
        return self.consent_redirect(req)

    @route("POST", r"/oauth/v1/token")
    def token(self, req: Request) -> Response:
        form = req.form()
        if not self.oauth.client_ok(form.get("client_id"), form.get("client_secret")):
            return Response(400, {"status": "BAD_CLIENT_ID", "message": "missing or unknown client id"})
        if form.get("grant_type") == "authorization_code":
            redeemed = self.redeem_code(form)
            if isinstance(redeemed, str):
                status = {"redirect": "BAD_REDIRECT_URI", "client": "BAD_CLIENT_ID"}.get(redeemed, "BAD_AUTH_CODE")
                return Response(400, {"status": status, "message": f"missing or unknown auth code ({redeemed})"})
            issued: tuple[str, str] | None = redeemed
        else:
            issued = self.oauth.refresh(form.get("refresh_token"))
        if issued is None:
            return Response(400, {"status": "BAD_REFRESH_TOKEN", "message": "missing or unknown refresh token"})
        access, refresh = issued
        return Response(
            200,
            {
                "token_type": "bearer",
                "refresh_token": refresh,
                "access_token": access,
                "expires_in": self.oauth.expires_in,
            },
        )

    # -- objects --------------------------------------------------------------------------------
    def _render(self, object_name: str, row_id: str, properties: list[str]) -> dict[str, Any]:
        table = self.table(object_name)
        row = table.rows[row_id]
        props = {p: row.get(p) for p in properties if p in row or p == "hs_lastmodifieddate"}
        props["hs_lastmodifieddate"] = iso_z(row["modified"])
        props["hs_object_id"] = row_id
        if row_id in table.malformed:
            props["amount"] = "twelve thousand"
            props["dealname"] = props.get("dealname") or None
        return {
            "id": row_id,
            "properties": props,
            "createdAt": iso_z(row["created"]),
            "updatedAt": iso_z(row["modified"]),
            "archived": False,
        }

    @route("POST", r"/crm/v3/objects/(?P<object>\w+)/search")
    def search(self, req: Request) -> Response:
        if not self.oauth.valid(req.bearer):
            return self._unauthorized()
        object_name = req.params["object"]
        if object_name not in OBJECTS:
            return Response(404, {"status": "error", "message": f"Unknown object type {object_name}"})
        body = req.json() or {}
        limit = min(int(body.get("limit") or 10), 200)
        after = int(body.get("after") or 0)
        if after + limit > 10_000:
            return Response(
                400,
                {
                    "status": "error",
                    "message": "Cannot page beyond 10000 results",
                    "category": "VALIDATION_ERROR",
                },
            )
        after_seq = 0
        for group in body.get("filterGroups") or []:
            for f in group.get("filters") or []:
                if f.get("propertyName") == "hs_lastmodifieddate":
                    seq = int(round(_epoch(f["value"]) - BASE_EPOCH))
                    after_seq = seq - 1 if f.get("operator") == "GTE" else seq
        entries, _ = self.table(object_name).changes_after(max(after_seq, 0), after + limit + 1, include_deleted=False)
        chunk = entries[after : after + limit]
        props = list(body.get("properties") or [])
        out: dict[str, Any] = {
            "total": len(entries),
            "results": [self._render(object_name, rid, props) for _, rid in chunk],
        }
        if len(entries) > after + limit:
            out["paging"] = {"next": {"after": str(after + limit), "link": ""}}
        self.data_page_served()
        return Response(200, out)

    @route("GET", r"/crm/v3/objects/(?P<object>\w+)")
    def get_page(self, req: Request) -> Response:
        if not self.oauth.valid(req.bearer):
            return self._unauthorized()
        object_name = req.params["object"]
        limit = int(req.query.get("limit") or 10)
        rows = self.table(object_name).live()[:limit]
        return Response(200, {"results": [self._render(object_name, r["id"], []) for r in rows]})

    @route("PATCH", r"/crm/v3/objects/(?P<object>\w+)/(?P<id>\d+)")
    def update(self, req: Request) -> Response:
        if not self.oauth.valid(req.bearer):
            return self._unauthorized()
        object_name, rid = req.params["object"], req.params["id"]
        if rid not in self.table(object_name).rows:
            return Response(404, {"status": "error", "message": "resource not found", "category": "OBJECT_NOT_FOUND"})
        props = (req.json() or {}).get("properties") or {}
        if "amount" in props and props["amount"] not in ("", None):
            try:
                float(props["amount"])
            except ValueError:
                return Response(
                    400,
                    {
                        "status": "error",
                        "message": f"Property values were not valid: amount {props['amount']!r}",
                        "category": "VALIDATION_ERROR",
                    },
                )
        self.table(object_name).update(rid, **props)
        self.writes.append(("update", object_name, rid, props))
        return Response(200, self._render(object_name, rid, list(props)))

    @route("POST", r"/crm/v3/objects/(?P<object>\w+)")
    def create(self, req: Request) -> Response:
        if not self.oauth.valid(req.bearer):
            return self._unauthorized()
        object_name = req.params["object"]
        props = (req.json() or {}).get("properties") or {}
        self._next_id += 1
        rid = str(self._next_id)
        self.table(object_name).put({"id": rid, **props})
        self.writes.append(("create", object_name, rid, props))
        return Response(201, self._render(object_name, rid, list(props)))

    @route("POST", r"/crm/v4/associations/(?P<from>\w+)/(?P<to>\w+)/batch/read")
    def associations(self, req: Request) -> Response:
        if not self.oauth.valid(req.bearer):
            return self._unauthorized()
        if (req.params["from"], req.params["to"]) != ("deals", "companies"):
            return Response(
                400, {"status": "error", "message": "unsupported association", "category": "VALIDATION_ERROR"}
            )
        results = []
        for item in (req.json() or {}).get("inputs") or []:
            row = self.table("deals").rows.get(str(item.get("id")))
            if row is None or not row.get("company_id"):
                continue
            results.append(
                {
                    "from": {"id": row["id"]},
                    "to": [
                        {
                            "toObjectId": int(row["company_id"]),
                            "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 5, "label": None}],
                        }
                    ],
                }
            )
        return Response(200, {"status": "COMPLETE", "results": results, "startedAt": "", "completedAt": ""})

    # -- webhooks -------------------------------------------------------------------------------
    def webhook(
        self, events: list[dict[str, Any]], url: str | None = None, secret: str | None = None
    ) -> tuple[dict[str, str], bytes]:
        """(headers, body) of a signed webhook delivery for ``events``."""
        body = json.dumps(events).encode()
        target = url or self.connector_config()["webhook_url"]
        return sign_hubspot_v3(secret or self.oauth.client_secret, body, target), body

    def deal_event(self, event_id: int, deal_id: str, kind: str = "propertyChange") -> dict[str, Any]:
        return {
            "eventId": event_id,
            "subscriptionId": 42,
            "portalId": 62515,
            "appId": 1,
            "occurredAt": int(dt.datetime.now(dt.UTC).timestamp() * 1000),
            "subscriptionType": f"deal.{kind}",
            "attemptNumber": 0,
            "objectId": int(deal_id),
            "propertyName": "amount",
            "propertyValue": "1234",
            "changeSource": "CRM_UI",
        }
