"""A local fake of the Google Drive v3, Docs v1 and Slides v1 endpoints the template path uses.

It speaks the documented request and response shapes so google-api-python-client, built from the
shipped discovery documents with ``api_endpoint`` pointed here, drives it unchanged:

- Drive:  GET/DELETE ``/drive/v3/files/{id}``, POST ``/drive/v3/files/{id}/copy``,
          GET ``/drive/v3/files/{id}/export?mimeType=application/pdf``
- Docs:   GET ``/v1/documents/{id}``, POST ``/v1/documents/{id}:batchUpdate`` with ``replaceAllText``,
          ``deleteContentRange`` and ``insertInlineImage``; body indexes as the API computes them
          (body starts at 1, every paragraph ends with a newline, tables/rows/cells take one index)
- Slides: GET ``/v1/presentations/{id}``, POST ``/v1/presentations/{id}:batchUpdate`` with
          ``replaceAllText`` and ``replaceAllShapesWithImage``

Like Google, image requests fetch the URL and fail the whole batch (HTTP 400, nothing applied) when
it is not a PNG/JPEG/GIF. Errors use Google's JSON error shape. ``/_images/{name}`` serves test
images (standing in for SAS URLs).
"""

from __future__ import annotations

import copy
import io
import json
import re
import threading
import urllib.request
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

DOC_MIME = "application/vnd.google-apps.document"
SLIDES_MIME = "application/vnd.google-apps.presentation"
OBJ_BASE = 0xE000  # each inline object is one private-use character (one index), as in the API


class ApiError(Exception):
    def __init__(self, status: int, message: str, reason: str = "INVALID_ARGUMENT") -> None:
        super().__init__(message)
        self.status, self.message, self.reason = status, message, reason


@dataclass
class FakeDoc:
    """Body is a list of blocks: a paragraph (str) or a table (rows of cells of paragraph strings)."""

    name: str
    body: list[Any]
    headers: dict[str, list[str]] = field(default_factory=dict)
    inline: dict[str, str] = field(default_factory=dict)  # objectId -> image URL
    marks: dict[str, str] = field(default_factory=dict)  # private-use character -> objectId


@dataclass
class FakeDeck:
    """Slides: each a list of page elements {objectId, kind: shape|table|image|group, ...}."""

    name: str
    slides: list[list[dict[str, Any]]]


class GoogleFake:
    def __init__(self) -> None:
        self.files: dict[str, dict[str, Any]] = {}
        self.images: dict[str, tuple[str, bytes]] = {}
        self.requests: list[tuple[str, str]] = []
        self.fail_next: list[tuple[int, str]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.url = ""

    # seeding ---------------------------------------------------------------------------------------
    def add_document(self, file_id: str, name: str, body: list[Any],
                     headers: dict[str, list[str]] | None = None) -> None:
        self.files[file_id] = {"mimeType": DOC_MIME, "item": FakeDoc(name, copy.deepcopy(body), dict(headers or {}))}

    def add_presentation(self, file_id: str, name: str, slides: list[list[dict[str, Any]]]) -> None:
        self.files[file_id] = {"mimeType": SLIDES_MIME, "item": FakeDeck(name, copy.deepcopy(slides))}

    def add_other(self, file_id: str, name: str, mime: str) -> None:
        self.files[file_id] = {"mimeType": mime, "item": FakeDoc(name, [])}

    def put_image(self, name: str, data: bytes, content_type: str = "image/png") -> str:
        self.images[name] = (content_type, data)
        return f"{self.url}/_images/{name}"

    # server -------------------------------------------------------------------------------------------
    def start(self) -> GoogleFake:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, payload: Any, ctype: str = "application/json") -> None:
                body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                fake.requests.append((method, parts.path))
                try:
                    if fake.fail_next:
                        status, message = fake.fail_next.pop(0)
                        raise ApiError(status, message, "RATE_LIMIT_EXCEEDED" if status == 429 else "ERROR")
                    status, payload, ctype = fake.route(method, parts.path, parse_qs(parts.query),
                                                        json.loads(raw) if raw else {})
                    self._send(status, payload, ctype)
                except ApiError as e:
                    self._send(e.status, {"error": {"code": e.status, "message": e.message, "status": e.reason}})

            def do_GET(self) -> None:  # noqa: N802
                self._handle("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._handle("POST")

            def do_DELETE(self) -> None:  # noqa: N802
                self._handle("DELETE")

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    # routing ---------------------------------------------------------------------------------------------
    def route(self, method: str, path: str, query: dict[str, list[str]], body: dict[str, Any]) -> tuple[int, Any, str]:
        if path.startswith("/_images/") and method == "GET":  # outside the lock: batches fetch these
            name = path.rsplit("/", 1)[1]
            if name not in self.images:
                raise ApiError(404, "no such image", "NOT_FOUND")
            ctype, data = self.images[name]
            return 200, data, ctype
        with self._lock:
            m = re.fullmatch(r"/drive/v3/files/([^/]+)(/copy|/export)?", path)
            if m:
                return self._drive(method, m.group(1), m.group(2), query, body)
            m = re.fullmatch(r"/v1/documents/([^/:]+)(:batchUpdate)?", path)
            if m:
                doc = self._item(m.group(1), DOC_MIME)
                if m.group(2):
                    return 200, self._doc_batch(m.group(1), doc, body.get("requests", [])), "application/json"
                return 200, self._doc_json(m.group(1), doc), "application/json"
            m = re.fullmatch(r"/v1/presentations/([^/:]+)(:batchUpdate)?", path)
            if m:
                deck = self._item(m.group(1), SLIDES_MIME)
                if m.group(2):
                    return 200, self._deck_batch(m.group(1), deck, body.get("requests", [])), "application/json"
                return 200, self._deck_json(m.group(1), deck), "application/json"
        raise ApiError(404, f"unknown path {path}", "NOT_FOUND")

    def _item(self, file_id: str, mime: str) -> Any:
        f = self.files.get(file_id)
        if f is None:
            raise ApiError(404, f"Requested entity was not found: {file_id}", "NOT_FOUND")
        if f["mimeType"] != mime:
            raise ApiError(400, "This operation is not supported for this document", "FAILED_PRECONDITION")
        return f["item"]

    def _meta(self, file_id: str) -> dict[str, Any]:
        f = self.files[file_id]
        kind = "document" if f["mimeType"] == DOC_MIME else "presentation"
        return {"id": file_id, "name": f["item"].name, "mimeType": f["mimeType"],
                "webViewLink": f"https://docs.google.com/{kind}/d/{file_id}/edit"}

    def _drive(self, method: str, file_id: str, action: str | None, query: dict[str, list[str]],
               body: dict[str, Any]) -> tuple[int, Any, str]:
        if file_id not in self.files:
            raise ApiError(404, f"File not found: {file_id}.", "notFound")
        if action == "/copy" and method == "POST":
            new_id = "copy-" + uuid.uuid4().hex[:12]
            src = self.files[file_id]
            item = copy.deepcopy(src["item"])
            item.name = body.get("name") or f"Copy of {item.name}"
            self.files[new_id] = {"mimeType": src["mimeType"], "item": item, "parents": body.get("parents", [])}
            return 200, self._meta(new_id), "application/json"
        if action == "/export" and method == "GET":
            if query.get("mimeType", [""])[0] != "application/pdf":
                raise ApiError(400, "Export only supports application/pdf in this fake")
            text = json.dumps(self._meta(file_id)).encode()
            return 200, b"%PDF-1.4\n% fake export\n" + text + b"\n%%EOF\n", "application/pdf"
        if method == "DELETE":
            del self.files[file_id]
            return 204, b"", "application/json"
        if method == "GET":
            return 200, self._meta(file_id), "application/json"
        raise ApiError(405, "method not allowed")

    # Docs ---------------------------------------------------------------------------------------------------
    @staticmethod
    def _paragraph_refs(doc: FakeDoc) -> list[tuple[list[Any], int | tuple[int, int, int]]]:
        """Every body paragraph as (container, key) so it can be edited in place."""
        refs: list[tuple[list[Any], Any]] = []
        for i, block in enumerate(doc.body):
            if isinstance(block, str):
                refs.append((doc.body, i))
            else:
                for row in block:
                    for cell in row:
                        for k in range(len(cell)):
                            refs.append((cell, k))
        return refs

    def _layout(self, doc: FakeDoc) -> list[tuple[int, list[Any], int]]:
        """(start index, container, key) per paragraph, counting table/row/cell markers as the API does."""
        out = []
        idx = 1
        for i, block in enumerate(doc.body):
            if isinstance(block, str):
                out.append((idx, doc.body, i))
                idx += len(block) + 1
            else:
                idx += 1  # table start
                for row in block:
                    idx += 1  # row start
                    for cell in row:
                        idx += 1  # cell start
                        for k, p in enumerate(cell):
                            out.append((idx, cell, k))
                            idx += len(p) + 1
                idx += 1  # table end
        return out

    def _paragraph_json(self, doc: FakeDoc, text: str, start: int) -> dict[str, Any]:
        elements = []
        pos = start
        buf = ""
        for ch in text + "\n":
            if ch in doc.marks:
                if buf:
                    elements.append({"startIndex": pos - len(buf), "endIndex": pos, "textRun": {"content": buf}})
                    buf = ""
                elements.append({"startIndex": pos, "endIndex": pos + 1,
                                 "inlineObjectElement": {"inlineObjectId": doc.marks[ch]}})
            else:
                buf += ch
            pos += 1
        if buf:
            elements.append({"startIndex": pos - len(buf), "endIndex": pos, "textRun": {"content": buf}})
        return {"startIndex": start, "endIndex": start + len(text) + 1, "paragraph": {"elements": elements}}

    def _doc_json(self, doc_id: str, doc: FakeDoc) -> dict[str, Any]:
        layout = {(id(c), k): s for s, c, k in self._layout(doc)}
        content: list[dict[str, Any]] = [{"endIndex": 1, "sectionBreak": {}}]
        idx = 1
        for i, block in enumerate(doc.body):
            if isinstance(block, str):
                content.append(self._paragraph_json(doc, block, layout[(id(doc.body), i)]))
                idx = layout[(id(doc.body), i)] + len(block) + 1
            else:
                start = idx
                rows = []
                for row in block:
                    cells = []
                    for cell in row:
                        cells.append({"content": [self._paragraph_json(doc, p, layout[(id(cell), k)])
                                                  for k, p in enumerate(cell)]})
                        idx = layout[(id(cell), len(cell) - 1)] + len(cell[-1]) + 1
                    rows.append({"tableCells": cells})
                idx += 1
                content.append({"startIndex": start, "endIndex": idx,
                                "table": {"rows": len(block), "columns": len(block[0]), "tableRows": rows}})
        headers = {hid: {"headerId": hid, "content": [self._paragraph_json(doc, p, 0) for p in paras]}
                   for hid, paras in doc.headers.items()}
        return {"documentId": doc_id, "title": doc.name, "body": {"content": content}, "headers": headers,
                "inlineObjects": {oid: {"objectId": oid, "inlineObjectProperties": {"embeddedObject": {
                    "imageProperties": {"sourceUri": url}}}} for oid, url in doc.inline.items()}}

    def _doc_batch(self, doc_id: str, doc: FakeDoc, requests: list[dict[str, Any]]) -> dict[str, Any]:
        work = copy.deepcopy(doc)  # all or nothing, like the API
        replies: list[dict[str, Any]] = []
        for n, req in enumerate(requests):
            (kind, spec), = req.items()
            if kind == "replaceAllText":
                needle = spec["containsText"]["text"]
                repl = spec.get("replaceText", "")
                count = 0
                for container, key in self._paragraph_refs(work):
                    count += container[key].count(needle)
                    container[key] = container[key].replace(needle, repl)
                for paras in work.headers.values():
                    for k, p in enumerate(paras):
                        count += p.count(needle)
                        paras[k] = p.replace(needle, repl)
                # a newline in the replacement splits the paragraph, as in Docs
                work.body = [piece for block in work.body for piece in
                             (block.split("\n") if isinstance(block, str) else [block])]
                replies.append({"replaceAllText": {"occurrencesChanged": count}})
            elif kind == "deleteContentRange":
                start, end = spec["range"]["startIndex"], spec["range"]["endIndex"]
                container, key, offset = self._locate(work, start)
                text = container[key]
                if offset + (end - start) > len(text):
                    raise ApiError(400, f"Invalid requests[{n}].deleteContentRange: range crosses a paragraph")
                container[key] = text[:offset] + text[offset + end - start:]
                replies.append({})
            elif kind == "insertInlineImage":
                self._fetch_image(spec.get("uri", ""), n, "insertInlineImage")
                index = spec["location"]["index"]
                container, key, offset = self._locate(work, index)
                text = container[key]
                oid = "kix." + uuid.uuid4().hex[:10]
                mark = chr(OBJ_BASE + len(work.marks))
                container[key] = text[:offset] + mark + text[offset:]
                work.inline[oid] = spec["uri"]
                work.marks[mark] = oid
                replies.append({"insertInlineImage": {"objectId": oid}})
            else:
                raise ApiError(400, f"Invalid requests[{n}]: {kind} is not supported by this fake")
        self.files[doc_id]["item"] = work
        return {"documentId": doc_id, "replies": replies, "writeControl": {"requiredRevisionId": uuid.uuid4().hex}}

    def _locate(self, doc: FakeDoc, index: int) -> tuple[list[Any], int, int]:
        for start, container, key in self._layout(doc):
            if start <= index <= start + len(container[key]):
                return container, key, index - start
        raise ApiError(400, f"Index {index} must be less than the end index of the referenced segment")

    def _fetch_image(self, url: str, n: int, kind: str) -> None:
        """Google fetches the image itself and refuses the batch when it is not an image."""
        problem = f"Invalid requests[{n}].{kind}: There was a problem retrieving the image. The provided image " \
                  "should be publicly accessible, within size limit, and in supported formats."
        if not url.startswith(self.url + "/_images/"):
            raise ApiError(400, problem)
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback only, checked above
                data = resp.read(50 * 1024 * 1024 + 1)
        except OSError as e:
            raise ApiError(400, problem) from e
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as img:
                if img.format not in {"PNG", "JPEG", "GIF"}:
                    raise ApiError(400, problem)
                img.verify()
        except ApiError:
            raise
        except Exception as e:  # noqa: BLE001 - any decode failure is "not an image"
            raise ApiError(400, problem) from e

    # Slides ---------------------------------------------------------------------------------------------------
    @staticmethod
    def _text_json(paragraphs: list[str]) -> dict[str, Any]:
        els: list[dict[str, Any]] = []
        idx = 0
        for p in paragraphs:
            els.append({"startIndex": idx, "endIndex": idx + len(p) + 1, "paragraphMarker": {"style": {}}})
            els.append({"startIndex": idx, "endIndex": idx + len(p) + 1, "textRun": {"content": p + "\n"}})
            idx += len(p) + 1
        return {"textElements": els}

    def _element_json(self, el: dict[str, Any]) -> dict[str, Any]:
        base = {"objectId": el["objectId"], "title": el.get("title", el["objectId"]),
                "size": {"width": {"magnitude": 3000000, "unit": "EMU"},
                         "height": {"magnitude": 1000000, "unit": "EMU"}},
                "transform": {"scaleX": 1, "scaleY": 1, "unit": "EMU"}}
        if el["kind"] == "shape":
            base["shape"] = {"shapeType": "TEXT_BOX", "text": self._text_json(el["text"])}
        elif el["kind"] == "table":
            base["table"] = {"rows": len(el["rows"]), "columns": len(el["rows"][0]), "tableRows": [
                {"tableCells": [{"text": self._text_json(cell)} for cell in row]} for row in el["rows"]]}
        elif el["kind"] == "image":
            base["image"] = {"contentUrl": el["url"], "sourceUrl": el["url"]}
        elif el["kind"] == "group":
            base["elementGroup"] = {"children": [self._element_json(c) for c in el["children"]]}
        return base

    def _deck_json(self, deck_id: str, deck: FakeDeck) -> dict[str, Any]:
        return {"presentationId": deck_id, "title": deck.name, "slides": [
            {"objectId": f"slide{i + 1}", "pageElements": [self._element_json(e) for e in els]}
            for i, els in enumerate(deck.slides)]}

    @staticmethod
    def _walk(elements: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for el in elements:
            out.append(el)
            if el["kind"] == "group":
                out.extend(GoogleFake._walk(el["children"]))
        return out

    def _deck_batch(self, deck_id: str, deck: FakeDeck, requests: list[dict[str, Any]]) -> dict[str, Any]:
        work = copy.deepcopy(deck)
        replies: list[dict[str, Any]] = []
        for n, req in enumerate(requests):
            (kind, spec), = req.items()
            needle = spec.get("containsText", {}).get("text", "")
            if kind == "replaceAllText":
                repl = spec.get("replaceText", "")
                count = 0
                for slide in work.slides:
                    for el in self._walk(slide):
                        groups = [el["text"]] if el["kind"] == "shape" else \
                            [cell for row in el["rows"] for cell in row] if el["kind"] == "table" else []
                        for paras in groups:
                            for k, p in enumerate(paras):
                                count += p.count(needle)
                                paras[k] = p.replace(needle, repl)
                            joined = "\n".join(paras).split("\n")
                            paras[:] = joined
                replies.append({"replaceAllText": {"occurrencesChanged": count}})
            elif kind == "replaceAllShapesWithImage":
                self._fetch_image(spec.get("imageUrl", ""), n, kind)
                count = 0
                for slide in work.slides:
                    for el in self._walk(slide):
                        if el["kind"] == "shape" and any(needle in p for p in el["text"]):
                            el.clear()
                            el.update({"objectId": "img-" + uuid.uuid4().hex[:8], "kind": "image",
                                       "url": spec["imageUrl"]})
                            count += 1
                replies.append({"replaceAllShapesWithImage": {"occurrencesChanged": count}})
            else:
                raise ApiError(400, f"Invalid requests[{n}]: {kind} is not supported by this fake")
        self.files[deck_id]["item"] = work
        return {"presentationId": deck_id, "replies": replies}
