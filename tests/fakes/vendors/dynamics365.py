"""Fake Dataverse Web API (HTTPS) with Azure AD token routes: OData paging, change tracking, delta links, writes.

``GET /api/data/v9.2/<set>?$select=..`` with ``Prefer: odata.track-changes`` pages by
``odata.maxpagesize`` through ``@odata.nextLink`` (``$skiptoken``) and ends with an
``@odata.deltaLink`` (``$deltatoken`` = the change sequence). Calling a delta link returns the
rows changed since, plus ``$deletedEntity`` entries for deleted rows. ``expire_delta_tokens()``
makes old delta tokens answer the "version stamp expired" error.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any
from urllib.parse import quote

from tests.fakes.vendors.azuread import AzureAdMixin
from tests.fakes.vendors.server import Request, Response, iso_z, route

API = r"/api/data/v9\.2"
SETS = {"accounts": "accountid", "opportunities": "opportunityid", "contacts": "contactid"}
INDUSTRY = {1: "Accounting", 6: "Consulting", 33: "Software"}


def guid(kind: int, i: int) -> str:
    return str(uuid.UUID(int=(kind << 96) | i))


class FakeDynamics(AzureAdMixin):
    vendor = "dynamics365"
    default_tls = True  # msal only accepts https authorities

    def __init__(
        self, *, accounts: int = 20, opportunities: int = 50, contacts: int = 20, page_size: int = 100, **kwargs: Any
    ) -> None:
        super().__init__(page_size=page_size, **kwargs)
        self.writes: list[tuple[str, str, str, dict[str, Any]]] = []
        self.delta_floor = 0  # delta tokens at or below this are "expired"
        for i in range(accounts):
            self.table("accounts").put(
                {"id": guid(1, i), "name": f"Account {i}", "websiteurl": f"https://a{i}.example", "industrycode": 33}
            )
        for i in range(opportunities):
            self.table("opportunities").put(
                {
                    "id": guid(2, i),
                    "name": f"Opportunity {i}",
                    "estimatedvalue": 1000.0 + i,
                    "estimatedclosedate": (dt.date(2024, 5, 1) + dt.timedelta(days=i)).isoformat(),
                    "stepname": ("1-Qualify", "2-Develop", "3-Propose", "4-Close")[i % 4],
                    "closeprobability": (i * 7) % 100,
                    "statecode": i % 3,
                    "_parentaccountid_value": guid(1, i % max(accounts, 1)),
                }
            )
        for i in range(contacts):
            self.table("contacts").put(
                {"id": guid(3, i), "firstname": f"F{i}", "lastname": f"L{i}", "emailaddress1": f"c{i}@example.com"}
            )

    def connector_config(self) -> dict[str, Any]:
        config = super().connector_config()
        config.update(
            environment_url=self.url, tenant_id=self.tenant, authority_host=self.url, page_size=self.page_size
        )
        return config

    def connector_credentials(self) -> dict[str, Any]:
        return {"client_id": self.oauth.client_id, "client_secret": self.oauth.client_secret}

    def expire_delta_tokens(self) -> None:
        self.delta_floor = max(t.max_seq for t in self.tables.values())

    def error_response(self, status: int, retry_after: float | None, req: Request) -> Response:
        if status == 429:
            msg = "Number of requests exceeded the limit of 6000 over time window of 300 seconds."
            return Response(429, {"error": {"code": "0x80072322", "message": msg}})
        return Response(status, {"error": {"code": "0x80040216", "message": f"Injected fault {status}"}})

    def _unauthorized(self) -> Response:
        return Response(
            401,
            {"error": {"code": "0x80072560", "message": "The user is not a member of the organization."}},
            headers={"WWW-Authenticate": 'Bearer error="invalid_token", error_description="The access token expired"'},
        )

    def _render(self, set_name: str, row_id: str, select: list[str]) -> dict[str, Any]:
        table = self.table(set_name)
        row = table.rows.get(row_id)
        if row is None:
            return {
                "@odata.context": f"{self.url}/api/data/v9.2/$metadata#{set_name}/$deletedEntity",
                "id": row_id,
                "reason": "deleted",
            }
        pk = SETS[set_name]
        out: dict[str, Any] = {"@odata.etag": f'W/"{row["seq"]}"'}
        for f in select:
            if f == pk:
                out[f] = row_id
            elif f == "modifiedon":
                out[f] = iso_z(row["modified"], millis=False)
            else:
                out[f] = row.get(f)
        if "industrycode" in out and out["industrycode"] in INDUSTRY:
            out["industrycode@OData.Community.Display.V1.FormattedValue"] = INDUSTRY[out["industrycode"]]
        if row_id in table.malformed:
            out["estimatedvalue"] = "n/a"
            out["modifiedon"] = "yesterday"
        return out

    @route("GET", API + r"/WhoAmI")
    def who_am_i(self, req: Request) -> Response:
        if not self.oauth.valid(req.bearer):
            return self._unauthorized()
        return Response(
            200,
            {
                "@odata.context": f"{self.url}/api/data/v9.2/$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse",
                "BusinessUnitId": guid(9, 1),
                "UserId": guid(9, 2),
                "OrganizationId": guid(9, 3),
            },
        )

    @route("GET", API + r"/(?P<set>accounts|opportunities|contacts)")
    def entity_set(self, req: Request) -> Response:
        if not self.oauth.valid(req.bearer):
            return self._unauthorized()
        set_name = req.params["set"]
        select = [s for s in req.query.get("$select", "").split(",") if s] or [SETS[set_name], "name", "modifiedon"]
        prefer = req.header("prefer") or ""
        size = self.page_size
        for part in prefer.split(","):
            if part.strip().startswith("odata.maxpagesize="):
                size = min(size, int(part.split("=", 1)[1]))
        delta = req.query.get("$deltatoken")
        skip = req.query.get("$skiptoken")
        if delta is not None:
            since = int(delta.split("!")[0])
            if since <= self.delta_floor and self.delta_floor:
                return Response(
                    400,
                    {
                        "error": {
                            "code": "0x80044352",
                            "message": "Version stamp associated with the client has expired. "
                            "Please perform a full sync.",
                        }
                    },
                )
            include_deleted = True
        else:
            since, include_deleted = 0, False
        # $skiptoken carries "<since>:<last seq served>" so paging is stateless, like Dataverse's paging cookie.
        after = int(skip.split(":")[1]) if skip else since
        base_since = int(skip.split(":")[0]) if skip else since
        entries, more = self.table(set_name).changes_after(after, size, include_deleted=include_deleted)
        body: dict[str, Any] = {
            "@odata.context": f"{self.url}/api/data/v9.2/$metadata#{set_name}({','.join(select)})",
            "value": [self._render(set_name, rid, select) for _, rid in entries],
        }
        select_q = "$select=" + ",".join(select)
        if more:
            last = entries[-1][0]
            token = quote(f"{base_since}:{last}")
            delta_q = f"&$deltatoken={quote(str(since))}" if delta is not None else ""
            body["@odata.nextLink"] = f"{self.url}/api/data/v9.2/{set_name}?{select_q}{delta_q}&$skiptoken={token}"
        elif "odata.track-changes" in prefer or delta is not None:
            watermark = max(self.table(set_name).max_seq, base_since)
            stamp = dt.datetime.now(dt.UTC).strftime("%m/%d/%Y %H:%M:%S")
            body["@odata.deltaLink"] = (
                f"{self.url}/api/data/v9.2/{set_name}?{select_q}&$deltatoken={quote(f'{watermark}!{stamp}')}"
            )
        self.data_page_served()
        headers = {"Preference-Applied": "odata.track-changes"} if "odata.track-changes" in prefer else {}
        return Response(200, body, headers=headers)

    @route("PATCH", API + r"/(?P<set>accounts|opportunities|contacts)\((?P<id>[0-9a-f-]+)\)")
    def update(self, req: Request) -> Response:
        if not self.oauth.valid(req.bearer):
            return self._unauthorized()
        set_name, rid = req.params["set"], req.params["id"]
        if rid not in self.table(set_name).rows:
            return Response(
                404, {"error": {"code": "0x80040217", "message": f"{set_name} With Id = {rid} Does Not Exist"}}
            )
        fields = req.json() or {}
        if "estimatedvalue" in fields and not isinstance(fields["estimatedvalue"], int | float):
            return Response(
                400, {"error": {"code": "0x80048d19", "message": "Cannot convert the literal to Edm.Decimal"}}
            )
        self.table(set_name).update(rid, **fields)
        self.writes.append(("update", set_name, rid, fields))
        return Response(204)

    @route("POST", API + r"/(?P<set>accounts|opportunities|contacts)")
    def create(self, req: Request) -> Response:
        if not self.oauth.valid(req.bearer):
            return self._unauthorized()
        set_name = req.params["set"]
        rid = str(uuid.uuid4())
        fields = req.json() or {}
        self.table(set_name).put({"id": rid, **fields})
        self.writes.append(("create", set_name, rid, fields))
        return Response(204, headers={"OData-EntityId": f"{self.url}/api/data/v9.2/{set_name}({rid})"})
