"""Plain text out of a synced document's bytes (txt, md, csv, html, json, docx, pptx), and field normalisers.

Connectors call ``extract_text`` for file content and the small ``as_*`` helpers to normalise
vendor values; each raises DataError on a value that cannot be what it claims to be, which the
connector records in ``Page.skipped``.
"""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, date, datetime
from typing import Any

from core.errors import DataError

TEXT_TYPES = {
    "text/plain",
    "text/markdown",
    "text/x-markdown",
    "text/csv",
    "text/tab-separated-values",
    "application/json",
}
HTML_TYPES = {"text/html", "application/xhtml+xml"}
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
EXTENSION_TYPES = {
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
    ".json": "application/json",
    ".html": "text/html",
    ".htm": "text/html",
    ".docx": DOCX,
    ".pptx": PPTX,
}


def mime_for_name(name: str, default: str = "application/octet-stream") -> str:
    lower = name.lower()
    for ext, mime in EXTENSION_TYPES.items():
        if lower.endswith(ext):
            return mime
    return default


def can_extract(mime_type: str) -> bool:
    base = (mime_type or "").split(";")[0].strip().lower()
    return base in TEXT_TYPES or base in HTML_TYPES or base in (DOCX, PPTX) or base.startswith("text/")


def _decode(data: bytes, name: str) -> str:
    for encoding in ("utf-8-sig", "utf-16") if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ("utf-8-sig",):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError as exc:
        raise DataError(f"{name or 'document'} is not readable text ({exc.reason})") from exc


def extract_text(data: bytes, mime_type: str, name: str = "") -> str:
    """Readable text of a document; '' for types we do not read (their metadata still syncs)."""
    base = (mime_type or "").split(";")[0].strip().lower()
    if base in HTML_TYPES:
        import lxml.html

        try:
            tree = lxml.html.fromstring(data)
        except Exception as exc:  # lxml raises several parser errors for broken markup
            raise DataError(f"{name or 'document'} is not parseable HTML: {exc}") from exc
        for bad in tree.xpath("//script|//style"):
            bad.drop_tree()
        return re.sub(r"\n\s*\n+", "\n\n", tree.text_content()).strip()
    if base == DOCX:
        import docx

        try:
            document = docx.Document(io.BytesIO(data))
        except Exception as exc:  # a corrupt zip or missing part
            raise DataError(f"{name or 'document'} is not a readable .docx file: {exc}") from exc
        return "\n".join(p.text for p in document.paragraphs if p.text.strip())
    if base == PPTX:
        import pptx

        try:
            deck = pptx.Presentation(io.BytesIO(data))
        except Exception as exc:
            raise DataError(f"{name or 'document'} is not a readable .pptx file: {exc}") from exc
        lines = []
        for slide in deck.slides:
            for shape in slide.shapes:
                if getattr(shape, "has_text_frame", False) and shape.text_frame.text.strip():
                    lines.append(shape.text_frame.text)
        return "\n".join(lines)
    if base == "application/json":
        text = _decode(data, name)
        try:
            json.loads(text)
        except ValueError as exc:
            raise DataError(f"{name or 'document'} is not valid JSON: {exc}") from exc
        return text
    if base in TEXT_TYPES or base.startswith("text/"):
        return _decode(data, name)
    return ""


def title_from_text(text: str, fallback: str, markdown: bool = True) -> str:
    """A markdown document's first heading, or a plain note's short first line, else ``fallback``."""
    for line in text.splitlines()[:20]:
        stripped = line.strip()
        if not stripped:
            continue
        if markdown and stripped.startswith("#"):
            return stripped.lstrip("#").strip() or fallback
        if not markdown:
            return stripped if len(stripped) <= 150 else fallback
    return fallback


# -- value normalisers ---------------------------------------------------------------------------


def as_float(value: Any, field: str) -> float | None:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if isinstance(value, bool):
        raise DataError(f"{field} is a boolean, not a number")
    try:
        return float(str(value).replace(",", "")) if isinstance(value, str) else float(value)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{field} {value!r} is not a number") from exc


def as_int(value: Any, field: str) -> int | None:
    number = as_float(value, field)
    return None if number is None else int(number)


def as_bool(value: Any) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "y", "t")


def as_date(value: Any, field: str) -> str | None:
    """YYYY-MM-DD from a date or timestamp string."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    text = str(value).strip()
    try:
        return date.fromisoformat(text[:10]).isoformat()
    except ValueError as exc:
        raise DataError(f"{field} {value!r} is not a date (expected YYYY-MM-DD)") from exc


_NUMBER = re.compile(r"\d+(\.\d+)?")
_OFFSET = re.compile(r"([+-]\d{2})(\d{2})$")


def as_timestamp(value: Any, field: str) -> str | None:
    """ISO-8601 UTC with microseconds (the core clock format) from the many vendor spellings.

    Accepts ``2024-05-01T10:00:00Z``, ``...+0000`` (Salesforce), ``...+00:00``, fractional
    seconds, epoch milliseconds (HubSpot webhooks) and epoch seconds with a fraction (Slack ts).
    """
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value) / 1000.0 if float(value) > 1e11 else float(value)
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    text = str(value).strip()
    if _NUMBER.fullmatch(text):
        return as_timestamp(float(text), field)
    try:
        # Python 3.11 reads Z, +0000 and 7-digit fractions itself: the fast path for every vendor.
        parsed = datetime.fromisoformat(text)
    except ValueError:
        norm = _OFFSET.sub(r"\1:\2", text.replace("Z", "+00:00"))
        try:
            parsed = datetime.fromisoformat(norm)
        except ValueError as exc:
            raise DataError(f"{field} {value!r} is not a timestamp") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    elif parsed.utcoffset():
        parsed = parsed.astimezone(UTC)
    return parsed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def require(value: Any, field: str) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{field} is missing")
    return value
