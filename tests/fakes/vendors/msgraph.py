"""Fake Microsoft Graph (HTTPS) with Azure AD token routes: drive, root delta, item content, subscriptions.

Drive items live in folders named after projects (``/drive/root:/<project>``). ``/root/delta``
pages with ``@odata.nextLink`` (``$skiptoken``) and ends with ``@odata.deltaLink`` (``token`` =
change sequence); deleted items carry the ``deleted`` facet. ``/items/{id}/content`` answers 302 to
a pre-authenticated ``/download`` URL. ``expire_delta_tokens()`` makes old tokens answer 410.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from typing import Any
from urllib.parse import quote

from tests.fakes.vendors.azuread import AzureAdMixin
from tests.fakes.vendors.server import Request, Response, iso_z, route

DRIVE_ID = "b!fakeDriveId0123456789"
PROJECTS = ("contoso-expansion", "fabrikam-pilot", "northwind-renewal")


class FakeGraph(AzureAdMixin):
    vendor = "msgraph"
    default_tls = True

    def __init__(self, *, files: int = 30, page_size: int = 50, **kwargs: Any) -> None:
        super().__init__(page_size=page_size, **kwargs)
        self.drive_id = DRIVE_ID
        self.delta_floor = 0
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.downloads = 0
        items = self.table("items")
        for p in PROJECTS:
            items.put({"id": f"folder-{p}", "name": p, "folder": True, "path": "/drive/root:"})
        for i in range(files):
            project = PROJECTS[i % len(PROJECTS)]
            ext = ("txt", "md", "pdf")[i % 3] if i % 10 == 9 else ("txt", "md")[i % 2]
            text = f"# Note {i}\n\nMeeting notes for {project}, item {i}. Budget {1000 + i} EUR."
            items.put(
                {
                    "id": f"01ITEM{i:08d}",
                    "name": f"note-{i}.{ext}",
                    "path": f"/drive/root:/{project}",
                    "content": text.encode(),
                    "mime": {"txt": "text/plain", "md": "text/markdown", "pdf": "application/pdf"}[ext],
                }
            )

    def connector_config(self) -> dict[str, Any]:
        config = super().connector_config()
        config.update(graph_url=self.url, tenant_id=self.tenant, authority_host=self.url, drive_id=self.drive_id)
        return config

    def connector_credentials(self) -> dict[str, Any]:
        return {
            "client_id": self.oauth.client_id,
            "client_secret": self.oauth.client_secret,
            "webhook_secret": "graph-client-state-secret",
        }

    def expire_delta_tokens(self) -> None:
        self.delta_floor = self.table("items").max_seq

    def error_response(self, status: int, retry_after: float | None, req: Request) -> Response:
        code = {429: "TooManyRequests", 503: "serviceNotAvailable", 500: "generalException"}.get(status, "error")
        return Response(status, {"error": {"code": code, "message": f"Injected fault {status}"}})

    def _unauthorized(self) -> Response:
        return Response(
            401,
            {
                "error": {
                    "code": "InvalidAuthenticationToken",
                    "message": "Access token has expired or is not yet valid.",
                }
            },
        )

    def _item(self, row_id: str) -> dict[str, Any]:
        table = self.table("items")
        row = table.rows.get(row_id)
        if row is None:
            return {"id": row_id, "deleted": {"state": "deleted"}, "parentReference": {"driveId": self.drive_id}}
        item: dict[str, Any] = {
            "id": row_id,
            "name": row["name"],
            "eTag": f'"{{{row_id}}},{row["seq"]}"',
            "lastModifiedDateTime": iso_z(row["modified"], millis=False),
            "createdDateTime": iso_z(row["created"], millis=False),
            "webUrl": f"https://contoso.sharepoint.com/Shared%20Documents/{quote(row['name'])}",
            "parentReference": {"driveId": self.drive_id, "driveType": "documentLibrary", "path": row["path"]},
        }
        if row.get("folder"):
            item["folder"] = {"childCount": 0}
        else:
            item["size"] = len(row["content"])
            item["file"] = {"mimeType": row["mime"], "hashes": {}}
        if row_id in table.malformed:
            item["lastModifiedDateTime"] = "31/02/2024 25:61"
        return item

    @route("GET", r"/v1\.0/drives/(?P<drive>[^/]+)")
    def drive(self, req: Request) -> Response:
        if not self.oauth.valid(req.bearer):
            return self._unauthorized()
        if req.params["drive"] != self.drive_id:
            return Response(404, {"error": {"code": "itemNotFound", "message": "The drive does not exist"}})
        return Response(200, {"id": self.drive_id, "name": "Documents", "driveType": "documentLibrary"})

    @route("GET", r"/v1\.0/drives/(?P<drive>[^/]+)/root/delta")
    def delta(self, req: Request) -> Response:
        if not self.oauth.valid(req.bearer):
            return self._unauthorized()
        token = req.query.get("token")
        skip = req.query.get("$skiptoken")
        since = int(token) if token else 0
        if token and self.delta_floor and since <= self.delta_floor:
            return Response(
                410,
                {
                    "error": {
                        "code": "resyncRequired",
                        "message": "Resync required. Replace any local items with the server's version.",
                    }
                },
            )
        after = int(skip) if skip else since
        entries, more = self.table("items").changes_after(after, self.page_size, include_deleted=bool(token))
        base = f"{self.url}/v1.0/drives/{quote(self.drive_id)}/root/delta"
        body: dict[str, Any] = {
            "@odata.context": f"{self.url}/v1.0/$metadata#Collection(driveItem)",
            "value": [self._item(rid) for _, rid in entries],
        }
        tok = f"token={since}&" if token else ""
        if more:
            body["@odata.nextLink"] = f"{base}?{tok}$skiptoken={entries[-1][0]}"
        else:
            body["@odata.deltaLink"] = f"{base}?token={max(self.table('items').max_seq, since)}"
        self.data_page_served()
        return Response(200, body)

    @route("GET", r"/v1\.0/drives/(?P<drive>[^/]+)/items/(?P<item>[^/]+)/content")
    def content(self, req: Request) -> Response:
        if not self.oauth.valid(req.bearer):
            return self._unauthorized()
        if req.params["item"] not in self.table("items").rows:
            return Response(404, {"error": {"code": "itemNotFound", "message": "Item not found"}})
        return Response(302, None, headers={"Location": f"{self.url}/download/{req.params['item']}?tempauth=xyz"})

    @route("GET", r"/download/(?P<item>[^/]+)")
    def download(self, req: Request) -> Response:
        row = self.table("items").rows.get(req.params["item"])
        if row is None:
            return Response(404, {"error": {"code": "itemNotFound", "message": "Item not found"}})
        self.downloads += 1
        return Response(200, row["content"], content_type=row["mime"])

    # -- subscriptions --------------------------------------------------------------------------
    @route("POST", r"/v1\.0/subscriptions")
    def create_subscription(self, req: Request) -> Response:
        if not self.oauth.valid(req.bearer):
            return self._unauthorized()
        body = req.json()
        sub = {
            "id": secrets.token_hex(8),
            "resource": body["resource"],
            "changeType": body["changeType"],
            "clientState": body.get("clientState"),
            "notificationUrl": body["notificationUrl"],
            "expirationDateTime": body["expirationDateTime"],
        }
        self.subscriptions[sub["id"]] = sub
        return Response(201, sub)

    @route("PATCH", r"/v1\.0/subscriptions/(?P<id>\w+)")
    def renew_subscription(self, req: Request) -> Response:
        if not self.oauth.valid(req.bearer):
            return self._unauthorized()
        sub = self.subscriptions.get(req.params["id"])
        if sub is None:
            return Response(404, {"error": {"code": "ResourceNotFound", "message": "Subscription not found"}})
        sub["expirationDateTime"] = req.json()["expirationDateTime"]
        return Response(200, sub)

    @route("DELETE", r"/v1\.0/subscriptions/(?P<id>\w+)")
    def delete_subscription(self, req: Request) -> Response:
        if not self.oauth.valid(req.bearer):
            return self._unauthorized()
        if self.subscriptions.pop(req.params["id"], None) is None:
            return Response(404, {"error": {"code": "ResourceNotFound", "message": "Subscription not found"}})
        return Response(204)

    def notification(self, subscription_id: str, client_state: str | None = None) -> bytes:
        """A change-notification body as Graph would POST it."""
        sub = self.subscriptions.get(subscription_id, {})
        return json.dumps(
            {
                "value": [
                    {
                        "subscriptionId": subscription_id,
                        "clientState": client_state if client_state is not None else sub.get("clientState"),
                        "changeType": "updated",
                        "resource": sub.get("resource", f"drives/{self.drive_id}/root"),
                        "subscriptionExpirationDateTime": sub.get("expirationDateTime"),
                        "tenantId": "00000000-0000-0000-0000-000000000001",
                        "sentAt": dt.datetime.now(dt.UTC).isoformat(),
                    }
                ]
            }
        ).encode()
