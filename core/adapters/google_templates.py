"""Google Docs and Google Slides templates through google-api-python-client (Drive v3, Docs v1, Slides v1).

Generation never edits the template: Drive ``files.copy`` makes a new file per document, then one
``batchUpdate`` fills it — ``replaceAllText`` for text, lists and tables (as tab-separated lines),
``replaceAllShapesWithImage`` for images and charts in Slides, and ``deleteContentRange`` +
``insertInlineImage`` at each placeholder in Docs (Docs has no replace-shape-with-image). Charts are
drawn as PNG (matplotlib) and, like images, handed to Google as a URL it can fetch (a short-lived
SAS URL in Azure), because the APIs only take images by URL.

The clients are built from discovery documents shipped in ``data/templates/google_discovery`` with
``build_from_document``: no discovery fetch at run time. ``api_endpoint`` points them at a local fake
in tests. The SDK is imported lazily so core stays importable without it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ConfigError, Invalid, NotFound, RateLimited, TransientError
from core.templates.charts import chart_png
from core.templates.ooxml import PLACEHOLDER_RE, scan_tags
from core.templates.values import ChartValue, ImageValue, RenderValue, TableValue

DISCOVERY_DIR = Path(__file__).resolve().parents[2] / "data" / "templates" / "google_discovery"
DOC_MIME = "application/vnd.google-apps.document"
SLIDES_MIME = "application/vnd.google-apps.presentation"
KINDS = {DOC_MIME: "gdoc", SLIDES_MIME: "gslides"}
SCOPES = (
    "https://www.googleapis.com/auth/drive",
    "https://www.googleapis.com/auth/documents",
    "https://www.googleapis.com/auth/presentations",
)


@dataclass(frozen=True)
class GoogleFile:
    id: str
    name: str
    mime_type: str
    url: str = ""

    @property
    def kind(self) -> str:
        return KINDS.get(self.mime_type, "other")


@dataclass
class GoogleScan:
    """Placeholders found in a Google file, with malformed tags and where they are."""

    file: GoogleFile
    uses: list[tuple[str, str, str]] = field(default_factory=list)  # (name, raw, location)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (message, location)

    @property
    def placeholders(self) -> list[str]:
        return sorted({u[0] for u in self.uses})


@dataclass
class GoogleOutput:
    file: GoogleFile
    replies: list[dict[str, Any]]
    occurrences: int


ImageUrlFn = Callable[[str, ImageValue], str]


class GoogleTemplates:
    """Inspect and fill Google Docs/Slides templates; one instance per credential set."""

    def __init__(
        self,
        *,
        credentials: Any = None,
        http: Any = None,
        api_endpoint: str | None = None,
        discovery_dir: Path = DISCOVERY_DIR,
        timeout: float = 60.0,
    ) -> None:
        self._credentials = credentials
        self._http = http
        self._endpoint = api_endpoint.rstrip("/") + "/" if api_endpoint else None
        self._dir = discovery_dir
        self._timeout = timeout
        self._clients: dict[str, Any] = {}

    @classmethod
    def from_service_account(cls, info: Mapping[str, Any], subject: str | None = None) -> GoogleTemplates:
        """Production credentials: a service account key (JSON dict), optionally impersonating a user."""
        from google.oauth2 import service_account

        creds = service_account.Credentials.from_service_account_info(dict(info), scopes=list(SCOPES))
        if subject:
            creds = creds.with_subject(subject)
        return cls(credentials=creds)

    # clients --------------------------------------------------------------------------------------------
    def _client(self, api: str) -> Any:
        if api not in self._clients:
            from googleapiclient.discovery import build_from_document

            doc = json.loads((self._dir / f"{api}.json").read_text(encoding="utf-8"))
            options = None
            if self._endpoint:
                base = self._endpoint + (doc.get("servicePath") or "")
                options = {"api_endpoint": base}
            http = self._http
            if http is None and self._credentials is None:
                import httplib2

                http = httplib2.Http(timeout=self._timeout)
            self._clients[api] = build_from_document(
                doc, http=http, credentials=None if http else self._credentials, client_options=options
            )
        return self._clients[api]

    @property
    def drive(self) -> Any:
        return self._client("drive.v3")

    @property
    def docs(self) -> Any:
        return self._client("docs.v1")

    @property
    def slides(self) -> Any:
        return self._client("slides.v1")

    @staticmethod
    def _execute(request: Any, what: str) -> Any:
        from googleapiclient.errors import HttpError

        try:
            return request.execute(num_retries=2)
        except HttpError as e:
            status = int(getattr(e.resp, "status", 0) or 0)
            reason = e.reason if hasattr(e, "reason") else str(e)
            if status == 404:
                raise NotFound(
                    f"{what}: Google says the file does not exist or is not shared with the console ({reason})"
                ) from e
            if status in {401, 403}:
                raise ConfigError(
                    f"{what}: Google refused access ({reason}); share the file with the console's "
                    "service account or renew the connection"
                ) from e
            if status == 429:
                raise RateLimited(f"{what}: Google rate limit ({reason})") from e
            if status >= 500:
                raise TransientError(f"{what}: Google error {status} ({reason})") from e
            raise Invalid(f"{what}: Google rejected the request ({reason})") from e
        except (OSError, TimeoutError) as e:
            raise TransientError(f"{what}: cannot reach Google ({e})") from e

    # inspection ---------------------------------------------------------------------------------------------
    def get_file(self, file_id: str) -> GoogleFile:
        meta = self._execute(
            self.drive.files().get(fileId=file_id, fields="id,name,mimeType,webViewLink", supportsAllDrives=True),
            "read file",
        )
        return GoogleFile(meta["id"], meta.get("name", ""), meta.get("mimeType", ""), meta.get("webViewLink", ""))

    def scan(self, file_id: str) -> GoogleScan:
        """Placeholders and malformed tags in a Google Doc or Slides deck (the preflight of the Google path)."""
        f = self.get_file(file_id)
        if f.kind == "other":
            raise Invalid(f"{f.name!r} is {f.mime_type}; link a Google Doc or Google Slides file")
        scan = GoogleScan(f)
        for text, location in self._paragraphs(f):
            if "{" not in text and "}" not in text:
                continue
            for tag in scan_tags(text):
                if tag.name is None:
                    scan.problems.append((tag.problem or "malformed tag", location))
                else:
                    scan.uses.append((tag.name, tag.raw, location))
        return scan

    def _paragraphs(self, f: GoogleFile) -> Iterator[tuple[str, str]]:
        if f.kind == "gdoc":
            doc = self._execute(self.docs.documents().get(documentId=f.id), "read document")
            yield from _doc_paragraphs(doc)
        else:
            pres = self._execute(self.slides.presentations().get(presentationId=f.id), "read presentation")
            yield from _slide_paragraphs(pres)

    # generation ---------------------------------------------------------------------------------------------
    def generate(
        self,
        file_id: str,
        values: Mapping[str, RenderValue],
        *,
        title: str,
        image_url: ImageUrlFn,
        folder_id: str | None = None,
    ) -> GoogleOutput:
        """Copy the template and fill the copy. On failure the copy is deleted, so nothing half-filled stays."""
        template = self.get_file(file_id)
        if template.kind == "other":
            raise Invalid(f"{template.name!r} is not a Google Doc or Slides file")
        body: dict[str, Any] = {"name": title}
        if folder_id:
            body["parents"] = [folder_id]
        meta = self._execute(
            self.drive.files().copy(
                fileId=file_id, body=body, supportsAllDrives=True, fields="id,name,mimeType,webViewLink"
            ),
            "copy template",
        )
        copy = GoogleFile(
            meta["id"], meta.get("name", title), meta.get("mimeType", template.mime_type), meta.get("webViewLink", "")
        )
        try:
            requests = self._requests(copy, values, image_url)
            replies: list[dict[str, Any]] = []
            if requests:
                if copy.kind == "gdoc":
                    call = self.docs.documents().batchUpdate(documentId=copy.id, body={"requests": requests})
                else:
                    call = self.slides.presentations().batchUpdate(presentationId=copy.id, body={"requests": requests})
                replies = self._execute(call, "fill copy").get("replies", [])
            left = [n for n, _raw, _loc in self.scan(copy.id).uses]
            if left:
                raise Invalid(f"placeholders still in the generated file after filling: {', '.join(sorted(set(left)))}")
        except Exception:
            self.delete(copy.id)
            raise
        occurrences = 0
        for reply in replies:
            for body in reply.values():
                occurrences += int((body or {}).get("occurrencesChanged") or 0)
        return GoogleOutput(copy, replies, occurrences)

    def _requests(self, f: GoogleFile, values: Mapping[str, RenderValue], image_url: ImageUrlFn) -> list[dict]:
        raws: dict[str, set[str]] = {}
        located: list[tuple[str, str, int, int]] = []  # (name, raw, start, end) for Docs images
        if f.kind == "gdoc":
            doc = self._execute(self.docs.documents().get(documentId=f.id), "read copy")
            for text, start, _loc in _doc_runs(doc):
                for m in PLACEHOLDER_RE.finditer(text):
                    raws.setdefault(m.group(1), set()).add(m.group(0))
                    located.append((m.group(1), m.group(0), start + m.start(), start + m.end()))
        else:
            for text, _loc in self._paragraphs(f):
                for m in PLACEHOLDER_RE.finditer(text):
                    raws.setdefault(m.group(1), set()).add(m.group(0))
        missing = sorted(n for n in raws if n not in values)
        if missing:
            raise Invalid(f"no value for placeholder(s) {', '.join(missing)}; configure them before generating")
        urls: dict[str, str] = {}
        for name in raws:
            v = values[name]
            if isinstance(v, ChartValue):
                urls[name] = image_url(name, chart_png(v))
            elif isinstance(v, ImageValue):
                urls[name] = image_url(name, v)
        requests: list[dict[str, Any]] = []
        if f.kind == "gdoc":
            # images first, from the end of the document backwards so earlier indexes stay valid
            for name, _raw, start, end in sorted((x for x in located if x[0] in urls), key=lambda x: -x[2]):
                requests.append({"deleteContentRange": {"range": {"startIndex": start, "endIndex": end}}})
                requests.append({"insertInlineImage": {"location": {"index": start}, "uri": urls[name]}})
        for name, spellings in sorted(raws.items()):
            for raw in sorted(spellings):
                if name in urls:
                    if f.kind == "gslides":
                        requests.append(
                            {
                                "replaceAllShapesWithImage": {
                                    "imageUrl": urls[name],
                                    "imageReplaceMethod": "CENTER_INSIDE",
                                    "containsText": {"text": raw, "matchCase": True},
                                }
                            }
                        )
                    continue
                requests.append(
                    {
                        "replaceAllText": {
                            "containsText": {"text": raw, "matchCase": True},
                            "replaceText": _as_text(values[name]),
                        }
                    }
                )
        return requests

    def export_pdf(self, file_id: str) -> bytes:
        data = self._execute(self.drive.files().export(fileId=file_id, mimeType="application/pdf"), "export PDF")
        return data if isinstance(data, bytes) else bytes(data)

    def delete(self, file_id: str) -> None:
        try:
            self._execute(self.drive.files().delete(fileId=file_id, supportsAllDrives=True), "delete copy")
        except NotFound:
            pass  # already gone


def _as_text(v: RenderValue) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, list):
        return "\n".join(v)  # Docs and Slides start a new paragraph (same list style) per line
    if isinstance(v, TableValue):
        lines = ["\t".join(v.columns)] if v.columns else []
        return "\n".join(lines + ["\t".join(r) for r in v.rows])
    raise Invalid(f"a {type(v).__name__} cannot be written as text")


def _doc_runs(doc: Mapping[str, Any]) -> Iterator[tuple[str, int, str]]:
    """(paragraph text, start index, location) for the body and its tables (indexes for image placement)."""

    def walk(content: list[Mapping[str, Any]], where: str) -> Iterator[tuple[str, int, str]]:
        para_no = 0
        for el in content:
            if "paragraph" in el:
                para_no += 1
                elements = el["paragraph"].get("elements", [])
                text = "".join(e.get("textRun", {}).get("content", "") for e in elements)
                start = elements[0].get("startIndex", 0) if elements else el.get("startIndex", 0)
                yield text, start, f"{where}paragraph {para_no}"
            elif "table" in el:
                for r, row in enumerate(el["table"].get("tableRows", []), start=1):
                    for c, cell in enumerate(row.get("tableCells", []), start=1):
                        yield from walk(cell.get("content", []), f"{where}table row {r}, cell {c}, ")

    yield from walk(doc.get("body", {}).get("content", []), "")


def _doc_paragraphs(doc: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    for text, _start, loc in _doc_runs(doc):
        yield text, loc
    for kind in ("headers", "footers"):
        for hid, seg in (doc.get(kind) or {}).items():
            for n, el in enumerate(seg.get("content", []), start=1):
                if "paragraph" in el:
                    text = "".join(e.get("textRun", {}).get("content", "") for e in el["paragraph"].get("elements", []))
                    yield text, f"{kind[:-1]} {hid}, paragraph {n}"


def _text_paragraphs(text: Mapping[str, Any]) -> list[str]:
    out, cur = [], ""
    for el in text.get("textElements", []):
        if "paragraphMarker" in el and cur:
            out.append(cur)
            cur = ""
        cur += el.get("textRun", {}).get("content", "")
    if cur:
        out.append(cur)
    return out


def _slide_paragraphs(pres: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    def elements(items: list[Mapping[str, Any]], where: str) -> Iterator[tuple[str, str]]:
        for pe in items:
            name = pe.get("title") or pe.get("objectId", "")
            if "shape" in pe and "text" in pe["shape"]:
                for n, p in enumerate(_text_paragraphs(pe["shape"]["text"]), start=1):
                    yield p, f"{where}shape {name!r}, paragraph {n}"
            elif "table" in pe:
                for r, row in enumerate(pe["table"].get("tableRows", []), start=1):
                    for c, cell in enumerate(row.get("tableCells", []), start=1):
                        for p in _text_paragraphs(cell.get("text", {})):
                            yield p, f"{where}table {name!r}, row {r}, column {c}"
            elif "elementGroup" in pe:
                yield from elements(pe["elementGroup"].get("children", []), f"{where}group {name!r}, ")

    for n, slide in enumerate(pres.get("slides", []), start=1):
        yield from elements(slide.get("pageElements", []), f"slide {n}, ")
