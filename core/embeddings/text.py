"""Turn a stored document body into text the chunker can use, or say plainly why it cannot be embedded.

Connectors hand over text, but exports arrive as UTF-16 with a BOM, Latin-1 or Shift-JIS, and
sometimes a PDF or ZIP lands in a text field. Binary content is refused with a reason (recorded on
the failed item) instead of being embedded as noise.
"""

from __future__ import annotations

import codecs
import re

from core.errors import Invalid

_SAMPLE = 65_536
# Control characters other than tab, newline, carriage return and form feed.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_CONTROL_BYTES = bytes([*range(0x00, 0x09), 0x0B, *range(0x0E, 0x20), 0x7F])  # the same characters, as bytes
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_BINARY_MAGIC = {
    b"%PDF": "a PDF file",
    b"PK\x03\x04": "a ZIP archive (docx/xlsx/pptx?)",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"\x7fELF": "an executable",
    b"\xd0\xcf\x11\xe0": "an old Office file",
}


def _binary_reason(sample: bytes) -> str | None:
    for magic, what in _BINARY_MAGIC.items():
        if sample.startswith(magic):
            return what
    if b"\x00" in sample[:8192]:
        return "binary data (NUL bytes)"
    return None


def _looks_binary(text: str) -> bool:
    sample = text[:_SAMPLE]
    if not sample:
        return False
    if sample.isascii():  # most documents: count by deleting them from the bytes, four times the regex's speed
        controls = len(sample) - len(sample.encode("ascii").translate(None, _CONTROL_BYTES))
    else:
        controls = len(_CONTROL.findall(sample))
    return controls / len(sample) > 0.05


def _decode_bytes(raw: bytes) -> str:
    for bom, enc in _BOMS:
        if raw.startswith(bom):
            return raw.decode(enc)
    reason = _binary_reason(raw[:_SAMPLE])
    if reason:
        raise Invalid(f"binary content: the document is {reason}, not text; convert it to text before syncing")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(raw[: 4 * _SAMPLE] if len(raw) > 4 * _SAMPLE else raw).best()
    if best is None or best.encoding is None:
        raise Invalid("binary content: no text encoding fits these bytes; convert the document to text first")
    return raw.decode(best.encoding, errors="replace")


def decode_document_text(raw: str | bytes | None) -> str:
    """Text of a document body; ``Invalid`` (starting "binary content") when it is not text."""
    if raw is None:
        return ""
    text = _decode_bytes(raw) if isinstance(raw, bytes | bytearray) else str(raw)
    if _looks_binary(text):
        raise Invalid(
            "binary content: more than 5% of the text are control characters; the source probably stored a "
            "binary file as text"
        )
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.replace("\x00", "")
