"""Fake Google Drive v3 API + OAuth token endpoint: files.list, files.get (alt=media), files.export, changes, watch.

Page tokens are stateless sequence numbers like Drive's numeric change tokens: ``files.list``
tokens are the last change sequence served, ``changes.getStartPageToken`` is the current
sequence, ``changes.list`` returns ``nextPageToken`` or ``newStartPageToken``. Files sit in
project folders; every third file is a Google Doc (exported as text/plain).
"""

from __future__ import annotations

import time
from typing import Any

from tests.fakes.vendors.server import FakeVendor, Request, Response, iso_z, route

FOLDER = "application/vnd.google-apps.folder"
DOC = "application/vnd.google-apps.document"
ROOT_ID = "0AROOTfolderID"
PROJECTS = ("contoso-expansion", "fabrikam-pilot", "woodgrove-rfp")


class FakeGoogleDrive(FakeVendor):
    vendor = "gdrive"

    def __init__(self, *, files: int = 30, page_size: int = 50, **kwargs: Any) -> None:
        super().__init__(page_size=page_size, **kwargs)
        self.channels: dict[str, dict[str, Any]] = {}
        self.exports = 0
        table = self.table("files")
        for p in PROJECTS:
            table.put({"id": f"folder-{p}", "name": p, "mimeType": FOLDER, "parents": [ROOT_ID], "content": b""})
        for i in range(files):
            project = PROJECTS[i % len(PROJECTS)]
            is_doc = i % 3 == 0
            text = f"Proposal notes {i} for {project}. Pricing and timeline discussed."
            table.put(
                {
                    "id": f"1FILE{i:06d}",
                    "name": f"Proposal {i}" if is_doc else f"notes-{i}.txt",
                    "mimeType": DOC if is_doc else "text/plain",
                    "parents": [f"folder-{project}" if i % 5 else ROOT_ID],
                    "content": text.encode(),
                }
            )

    def connector_config(self) -> dict[str, Any]:
        config = super().connector_config()
        config.update(api_url=self.url, token_uri=f"{self.url}/token", auth_uri=f"{self.url}/o/oauth2/v2/auth",
                      page_size=self.page_size)
        return config

    def connector_credentials(self) -> dict[str, Any]:
        return {
            "client_id": self.oauth.client_id,
            "client_secret": self.oauth.client_secret,
            "refresh_token": self.oauth.refresh_token,
            "webhook_secret": "drive-channel-token",
        }

    def error_response(self, status: int, retry_after: float | None, req: Request) -> Response:
        status_text = {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}.get(status, "UNKNOWN")
        reason = {429: "rateLimitExceeded", 500: "backendError", 503: "backendError"}.get(status, "unknown")
        return Response(
            status,
            {
                "error": {
                    "code": status,
                    "message": f"Injected fault {status}",
                    "errors": [{"domain": "usageLimits" if status == 429 else "global", "reason": reason}],
                    "status": status_text,
                }
            },
        )

    def _unauthorized(self) -> Response:
        return Response(
            401,
            {
                "error": {
                    "code": 401,
                    "message": "Request had invalid authentication credentials. Expected OAuth 2 access token.",
                    "errors": [{"domain": "global", "reason": "authError", "location": "Authorization"}],
                    "status": "UNAUTHENTICATED",
                }
            },
        )

    # -- OAuth ----------------------------------------------------------------------------------
    @route("GET", r"/o/oauth2/v2/auth")
    def authorize(self, req: Request) -> Response:
        return self.consent_redirect(req)

    @route("POST", r"/token")
    def token(self, req: Request) -> Response:
        form = req.form()
        if not self.oauth.client_ok(form.get("client_id"), form.get("client_secret")):
            return Response(401, {"error": "invalid_client", "error_description": "The OAuth client was not found."})
        if form.get("grant_type") == "authorization_code":
            redeemed = self.redeem_code(form)
            if isinstance(redeemed, str):
                return Response(400, {"error": "invalid_grant", "error_description": f"Bad Request ({redeemed})"})
            return Response(200, {"access_token": redeemed[0], "refresh_token": redeemed[1],
                                  "expires_in": self.oauth.expires_in, "token_type": "Bearer",
                                  "scope": "https://www.googleapis.com/auth/drive.readonly"})
        issued = self.oauth.refresh(form.get("refresh_token"))
        if issued is None:
            return Response(400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."})
        return Response(
            200,
            {
                "access_token": issued[0],
                "expires_in": self.oauth.expires_in,
                "scope": "https://www.googleapis.com/auth/drive.readonly",
                "token_type": "Bearer",
            },
        )

    # -- Drive ----------------------------------------------------------------------------------
    def _file(self, row_id: str) -> dict[str, Any]:
        table = self.table("files")
        row = table.rows[row_id]
        out = {
            "kind": "drive#file",
            "id": row_id,
            "name": row["name"],
            "mimeType": row["mimeType"],
            "modifiedTime": iso_z(row["modified"]),
            "webViewLink": f"https://docs.google.com/document/d/{row_id}/edit",
            "parents": row["parents"],
            "trashed": False,
        }
        if row["mimeType"] not in (FOLDER, DOC):
            out["size"] = str(len(row["content"]))
        if row_id in table.malformed:
            out["modifiedTime"] = "sometime last week"
        return out

    def _auth(self, req: Request) -> Response | None:
        return None if self.oauth.valid(req.bearer) else self._unauthorized()

    @route("GET", r"/drive/v3/about")
    def about(self, req: Request) -> Response:
        return self._auth(req) or Response(
            200, {"user": {"displayName": "Ops Robot", "emailAddress": "robot@example.com", "kind": "drive#user"}}
        )

    @route("GET", r"/drive/v3/changes/startPageToken")
    def start_page_token(self, req: Request) -> Response:
        return self._auth(req) or Response(
            200, {"kind": "drive#startPageToken", "startPageToken": str(self.table("files").max_seq)}
        )

    @route("GET", r"/drive/v3/files")
    def list_files(self, req: Request) -> Response:
        if (denied := self._auth(req)) is not None:
            return denied
        size = min(int(req.query.get("pageSize") or 100), self.page_size)
        after = int(req.query.get("pageToken") or 0)
        entries, more = self.table("files").changes_after(after, size, include_deleted=False)
        skip_folders = FOLDER in req.query.get("q", "")
        files = [self._file(rid) for _, rid in entries]
        if skip_folders:
            files = [f for f in files if f["mimeType"] != FOLDER]
        body: dict[str, Any] = {"kind": "drive#fileList", "incompleteSearch": False, "files": files}
        if more:
            body["nextPageToken"] = str(entries[-1][0])
        self.data_page_served()
        return Response(200, body)

    @route("GET", r"/drive/v3/files/(?P<id>[^/]+)")
    def get_file(self, req: Request) -> Response:
        if (denied := self._auth(req)) is not None:
            return denied
        file_id = ROOT_ID if req.params["id"] == "root" else req.params["id"]
        if file_id == ROOT_ID:
            return Response(200, {"id": ROOT_ID, "name": "My Drive", "mimeType": FOLDER})
        row = self.table("files").rows.get(file_id)
        if row is None:
            return Response(
                404, {"error": {"code": 404, "message": f"File not found: {file_id}.", "status": "NOT_FOUND"}}
            )
        if req.query.get("alt") == "media":
            if row["mimeType"] == DOC:
                return Response(
                    403,
                    {"error": {"code": 403, "message": "Only files with binary content can be downloaded."}},
                )
            return Response(200, row["content"], content_type=row["mimeType"])
        return Response(200, self._file(file_id))

    @route("GET", r"/drive/v3/files/(?P<id>[^/]+)/export")
    def export(self, req: Request) -> Response:
        if (denied := self._auth(req)) is not None:
            return denied
        row = self.table("files").rows.get(req.params["id"])
        if row is None:
            return Response(404, {"error": {"code": 404, "message": "File not found.", "status": "NOT_FOUND"}})
        self.exports += 1
        return Response(200, row["content"], content_type=req.query.get("mimeType", "text/plain"))

    @route("GET", r"/drive/v3/changes")
    def changes(self, req: Request) -> Response:
        if (denied := self._auth(req)) is not None:
            return denied
        token = req.query.get("pageToken")
        if token is None or not token.isdigit():
            return Response(400, {"error": {"code": 400, "message": "Invalid Value", "status": "INVALID_ARGUMENT"}})
        size = min(int(req.query.get("pageSize") or 100), self.page_size)
        table = self.table("files")
        entries, more = table.changes_after(int(token), size, include_deleted=True)
        changes = []
        for seq, rid in entries:
            change: dict[str, Any] = {
                "kind": "drive#change",
                "changeType": "file",
                "fileId": rid,
                "time": iso_z(1_704_067_200 + seq),
                "removed": rid not in table.rows,
            }
            if rid in table.rows:
                change["file"] = self._file(rid)
            changes.append(change)
        body: dict[str, Any] = {"kind": "drive#changeList", "changes": changes}
        if more:
            body["nextPageToken"] = str(entries[-1][0])
        else:
            body["newStartPageToken"] = str(max(table.max_seq, int(token)))
        self.data_page_served()
        return Response(200, body)

    @route("POST", r"/drive/v3/changes/watch")
    def watch(self, req: Request) -> Response:
        if (denied := self._auth(req)) is not None:
            return denied
        body = req.json()
        channel = {
            "kind": "api#channel",
            "id": body["id"],
            "resourceId": f"res-{body['id'][:8]}",
            "resourceUri": f"{self.url}/drive/v3/changes?pageToken={req.query.get('pageToken')}",
            "token": body.get("token"),
            "expiration": body.get("expiration") or str(int((time.time() + 3600) * 1000)),
            "address": body["address"],
        }
        self.channels[channel["id"]] = channel
        return Response(200, channel)

    @route("POST", r"/drive/v3/channels/stop")
    def stop_channel(self, req: Request) -> Response:
        if (denied := self._auth(req)) is not None:
            return denied
        self.channels.pop(req.json().get("id"), None)
        return Response(204)

    def notification_headers(self, channel_id: str, number: int, token: str | None = None) -> dict[str, str]:
        channel = self.channels.get(channel_id, {})
        return {
            "X-Goog-Channel-ID": channel_id,
            "X-Goog-Channel-Token": token if token is not None else str(channel.get("token")),
            "X-Goog-Message-Number": str(number),
            "X-Goog-Resource-ID": str(channel.get("resourceId")),
            "X-Goog-Resource-State": "change",
            "X-Goog-Resource-URI": str(channel.get("resourceUri")),
        }
