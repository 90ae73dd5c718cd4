"""Upload preflight for .docx / .pptx templates: a structured report shown before a template is accepted.

Checks, in the order a hostile or broken file would trip them:

1. name and size: macro-enabled extensions refused, upload size capped;
2. the bytes are really a ZIP package (a PDF or legacy .doc renamed to .docx is named as such);
3. zip-bomb defence: every member is inflated while counting the bytes actually produced, with a cap
   on the total and on the inflation ratio (declared sizes in the ZIP headers are not trusted);
4. the package is the kind its extension claims (an .xlsx renamed to .docx is refused);
5. macros: ``vbaProject.bin`` (or any macro content type) anywhere in the package is refused;
6. XML safety: any DOCTYPE or entity declaration is refused (defusedxml), as are external links
   other than hyperlinks (the LibreOffice preview would fetch them);
7. placeholders: ``{{ name }}`` in body, tables, headers/footers, text boxes, slide shapes, groups,
   slide tables, speaker notes, chart titles and picture alt text; placeholders split across runs
   are merged into their first run; malformed tags are reported with their location.

The report carries the normalised package (split placeholders merged) that is stored as the
template version when the admin accepts it.
"""

from __future__ import annotations

import abc
import hashlib
import io
import posixpath
import zipfile
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import defusedxml.ElementTree as safe_et
from defusedxml import DefusedXmlException
from lxml import etree

from core.templates.ooxml import (
    A_P,
    A_T,
    HYPERLINK_REL,
    KIND_LABELS,
    MAIN_CONTENT_TYPES,
    OFFICE_DOCUMENT_REL,
    W_P,
    W_T,
    XML_PARSER,
    Tag,
    merge_split_tags,
    nearest,
    paragraph_text_nodes,
    qn,
    read_rels,
    rels_name,
    resolve_target,
    scan_tags,
)

Severity = Literal["error", "warning"]
MACRO_EXTENSIONS = {".docm", ".dotm", ".pptm", ".potm", ".ppsm", ".xlsm"}
LEGACY_EXTENSIONS = {".doc": ".docx", ".ppt": ".pptx", ".dot": ".docx", ".pot": ".pptx"}
SUPPORTED = {".docx": "docx", ".pptx": "pptx"}

CT_PREFIX = "application/vnd.openxmlformats-officedocument."
DOCX_TEXT_PARTS = {
    CT_PREFIX + "wordprocessingml.header+xml": "header",
    CT_PREFIX + "wordprocessingml.footer+xml": "footer",
    CT_PREFIX + "wordprocessingml.footnotes+xml": "footnotes",
    CT_PREFIX + "wordprocessingml.endnotes+xml": "endnotes",
    CT_PREFIX + "drawingml.chart+xml": "chart",
}
PPTX_TEXT_PARTS = {
    CT_PREFIX + "presentationml.slide+xml": "slide",
    CT_PREFIX + "presentationml.notesSlide+xml": "notes",
    CT_PREFIX + "drawingml.chart+xml": "chart",
    CT_PREFIX + "presentationml.slideLayout+xml": "layout",
    CT_PREFIX + "presentationml.slideMaster+xml": "master",
}


@dataclass(frozen=True)
class PreflightLimits:
    max_upload_bytes: int = 25 * 1024 * 1024
    max_inflated_bytes: int = 200 * 1024 * 1024
    # Office XML compresses 5-30x; 100x over a megabyte is a bomb, not a document.
    max_ratio: float = 100.0
    ratio_floor_bytes: int = 1024 * 1024
    max_members: int = 5000


@dataclass
class Issue:
    severity: Severity
    code: str
    message: str
    location: str = ""


@dataclass
class PlaceholderUse:
    """One occurrence of a placeholder; ``context`` tells the editor what the spot can hold."""

    name: str
    raw: str
    location: str
    part: str
    where: str  # body, table, header, footer, textbox, slide, group, slide_table, notes, chart, alt_text ...
    context: Literal["inline", "paragraph", "table_row", "picture", "chart", "shape"]


@dataclass
class PreflightReport:
    filename: str
    size: int
    kind: str | None = None
    inflated_bytes: int = 0
    ratio: float = 0.0
    issues: list[Issue] = field(default_factory=list)
    uses: list[PlaceholderUse] = field(default_factory=list)
    merged_splits: int = 0
    sha256: str = ""
    normalised: bytes | None = field(default=None, repr=False)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def accepted(self) -> bool:
        return not self.errors and self.normalised is not None

    @property
    def placeholders(self) -> list[str]:
        return sorted({u.name for u in self.uses})

    def error(self, code: str, message: str, location: str = "") -> None:
        self.issues.append(Issue("error", code, message, location))

    def warn(self, code: str, message: str, location: str = "") -> None:
        self.issues.append(Issue("warning", code, message, location))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report (without the package bytes) for the store and the screen."""
        return {
            "filename": self.filename,
            "size": self.size,
            "kind": self.kind,
            "inflatedBytes": self.inflated_bytes,
            "ratio": round(self.ratio, 2),
            "accepted": self.accepted,
            "sha256": self.sha256,
            "mergedSplits": self.merged_splits,
            "placeholders": self.placeholders,
            "issues": [asdict(i) for i in self.issues],
            "uses": [asdict(u) for u in self.uses],
        }


class _Refused(Exception):
    """Stops preflight early once an error makes further checks meaningless."""


def preflight(data: bytes, filename: str, limits: PreflightLimits | None = None) -> PreflightReport:
    """Check an uploaded template and return the report (never raises for bad input)."""
    limits = limits or PreflightLimits()
    report = PreflightReport(filename=filename, size=len(data), sha256=hashlib.sha256(data).hexdigest())
    try:
        _run(data, filename, limits, report)
    except _Refused:
        report.normalised = None
    return report


def _run(data: bytes, filename: str, limits: PreflightLimits, report: PreflightReport) -> None:
    ext = posixpath.splitext(filename.lower())[1]
    if ext in MACRO_EXTENSIONS:
        report.error("macro_enabled", f"{ext} files can carry macros and are refused; save the file as "
                     f"{'.pptx' if ext.startswith('.p') else '.docx'} without macros and upload that")
        raise _Refused
    if ext in LEGACY_EXTENSIONS:
        report.error("legacy_format", f"{ext} is the Office 97-2003 format; open it in Word or PowerPoint, "
                     f"save it as {LEGACY_EXTENSIONS[ext]} and upload that")
        raise _Refused
    if ext not in SUPPORTED:
        report.error("unsupported_type", f"{filename!r} is not a .docx or .pptx file; upload a Word (.docx) or "
                     "PowerPoint (.pptx) template, or link a Google Doc or Slides deck by its file id")
        raise _Refused
    expected = SUPPORTED[ext]
    report.kind = expected
    if len(data) > limits.max_upload_bytes:
        report.error("too_large", f"the file is {_mb(len(data))}; the limit is {_mb(limits.max_upload_bytes)}. "
                     "Compress its pictures (File > Compress Pictures) and upload it again")
        raise _Refused
    if not data.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        report.error("not_a_package", f"the file is named {ext} but it is {_sniff(data)}, not "
                     f"{KIND_LABELS[expected]}; open it in Office and save it as {ext}")
        raise _Refused
    members = _inflate(data, limits, report)
    content_types = _content_types(members, report)
    kind = _main_kind(members, content_types, report)
    if kind != expected:
        what = KIND_LABELS.get(kind or "", "not an Office document")
        report.error("wrong_kind", f"the file is named {ext} but the package is {what}")
        if kind in {"docm", "pptm", "dotm", "ppsm", "xlsm"}:
            report.error("macro_enabled", "the package is macro-enabled and is refused")
        raise _Refused
    _macros_and_xml(members, content_types, report)
    if report.errors:
        raise _Refused
    changed = _scan_placeholders(members, content_types, kind, report)
    if not report.uses and not any(i.code == "malformed_tag" for i in report.issues):
        report.error("no_placeholders", "no {{ placeholder }} was found, so every generated document would be "
                     "identical; type placeholders such as {{ opportunity.name }} where values should go")
    if report.errors:
        raise _Refused
    normalised = _rezip(data, members, changed) if changed else data
    _check_opens(normalised, kind, report)
    if report.errors:
        raise _Refused
    report.normalised = normalised


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB"


def _sniff(data: bytes) -> str:
    head = data[:16]
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        return "an Office 97-2003 file or a password-protected document (remove the password and save as .docx/.pptx)"
    if head.startswith(b"\x89PNG"):
        return "a PNG image"
    if head.startswith(b"\xff\xd8\xff"):
        return "a JPEG image"
    if head.startswith(b"{\\rtf"):
        return "an RTF document"
    if head.lstrip().startswith(b"<"):
        return "an XML or HTML text file"
    if head.startswith(b"PK"):
        return "a damaged ZIP file"
    return "not an Office package (no ZIP signature)"


def _inflate(data: bytes, limits: PreflightLimits, report: PreflightReport) -> dict[str, bytes]:
    """Read every member, counting bytes actually inflated against compressed bytes actually consumed;
    refuse bombs and corrupt archives. The ZIP headers' sizes are not trusted: the ratio is measured
    while inflating, and a member that inflates to other than its declared size or CRC is corrupt."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as e:
        report.error("corrupt_zip", f"the file is damaged and cannot be opened as a ZIP package ({e}); "
                     "open it in Office, save a new copy and upload that")
        raise _Refused from e
    if len(infos) > limits.max_members:
        report.error("zip_bomb", f"the package has {len(infos)} entries; the limit is {limits.max_members}")
        raise _Refused
    members: dict[str, bytes] = {}
    total_in = 0
    for info in infos:
        if info.flag_bits & 0x1:
            report.error("encrypted", f"{info.filename} is encrypted; remove the password and upload again")
            raise _Refused
        if info.filename in members:
            report.error("corrupt_zip", f"the package lists {info.filename} twice")
            raise _Refused
        raw = _raw_member(data, info, report)
        members[info.filename] = _inflate_member(info, raw, limits, report)
        total_in += len(raw)
    report.ratio = report.inflated_bytes / max(total_in, 1)
    if report.inflated_bytes > limits.ratio_floor_bytes and report.ratio > limits.max_ratio:
        report.error("zip_bomb", f"the package inflates {report.ratio:.0f}x overall (limit {limits.max_ratio:.0f}x)")
        raise _Refused
    return members


def _raw_member(data: bytes, info: zipfile.ZipInfo, report: PreflightReport) -> bytes:
    """The compressed bytes of one member, located through its local header."""
    off = info.header_offset
    header = data[off : off + 30]
    if len(header) < 30 or header[:4] != b"PK\x03\x04":
        report.error("corrupt_zip", f"{info.filename}: the package's directory points at a damaged entry; "
                     "open the file in Office, save a new copy and upload that")
        raise _Refused
    start = off + 30 + int.from_bytes(header[26:28], "little") + int.from_bytes(header[28:30], "little")
    raw = data[start : start + info.compress_size]
    if len(raw) < info.compress_size:
        report.error("corrupt_zip", f"{info.filename} is cut short: the file was truncated; upload it again")
        raise _Refused
    return raw


def _inflate_member(info: zipfile.ZipInfo, raw: bytes, limits: PreflightLimits, report: PreflightReport) -> bytes:
    name = info.filename
    if info.compress_type == zipfile.ZIP_STORED:
        out = raw
        report.inflated_bytes += len(out)
    elif info.compress_type == zipfile.ZIP_DEFLATED:
        inflater = zlib.decompressobj(-15)
        chunks: list[bytes] = []
        produced = pos = 0
        pending = b""
        try:
            while True:
                if not pending:
                    if pos >= len(raw):
                        break
                    pending = raw[pos : pos + 16 * 1024]
                    pos += len(pending)
                chunk = inflater.decompress(pending, 256 * 1024)  # bounded output per step
                pending = inflater.unconsumed_tail
                produced += len(chunk)
                report.inflated_bytes += len(chunk)
                chunks.append(chunk)
                _check_bomb(name, produced, pos - len(pending), limits, report)
                if inflater.eof:
                    break
            tail = inflater.flush()
            chunks.append(tail)
            report.inflated_bytes += len(tail)
        except zlib.error as e:
            report.error("corrupt_zip", f"{name} inside the package is damaged ({e}); open the file in Office, "
                         "save a new copy and upload that")
            raise _Refused from e
        out = b"".join(chunks)
    else:
        report.error("corrupt_zip", f"{name} uses a compression Office does not write ({info.compress_type}); "
                     "save the file again from Office")
        raise _Refused
    if len(out) != info.file_size or zlib.crc32(out) != info.CRC:
        report.error("corrupt_zip", f"{name} inflates to {len(out)} bytes (CRC {zlib.crc32(out):08x}) but the "
                     f"package declares {info.file_size} bytes (CRC {info.CRC:08x}); the file is damaged or forged")
        raise _Refused
    return out


def _check_bomb(name: str, produced: int, consumed: int, limits: PreflightLimits, report: PreflightReport) -> None:
    if report.inflated_bytes > limits.max_inflated_bytes:
        report.error("zip_bomb", f"the package inflates past {_mb(limits.max_inflated_bytes)} (stopped at "
                     f"{name}); this is not a normal document")
        raise _Refused
    ratio = produced / max(consumed, 1)
    if produced > limits.ratio_floor_bytes and ratio > limits.max_ratio:
        report.ratio = ratio
        report.error("zip_bomb", f"{name} inflates {ratio:.0f}x (limit {limits.max_ratio:.0f}x): {consumed} "
                     f"compressed bytes became {_mb(produced)} and counting; this looks like a zip bomb")
        raise _Refused


def _safe_parse(name: str, xml: bytes, report: PreflightReport) -> bool:
    try:
        safe_et.fromstring(xml, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as e:
        report.error("xml_doctype", f"{name} declares a DOCTYPE or entities ({type(e).__name__}); Office never "
                     "writes these and they are how XXE attacks work, so the file is refused", name)
        return False
    except safe_et.ParseError as e:
        report.error("corrupt_xml", f"{name} is not well-formed XML ({e})", name)
        return False
    return True


def _content_types(members: dict[str, bytes], report: PreflightReport) -> dict[str, str]:
    raw = members.get("[Content_Types].xml")
    if raw is None:
        report.error("not_a_package", "the file is a ZIP archive but not an Office document "
                     "([Content_Types].xml is missing); open it in Office and save it again")
        raise _Refused
    if not _safe_parse("[Content_Types].xml", raw, report):
        raise _Refused
    root = etree.fromstring(raw, XML_PARSER)
    defaults = {d.get("Extension", "").lower(): d.get("ContentType", "") for d in root.iter(qn("ct:Default"))}
    overrides = {o.get("PartName", "").lstrip("/"): o.get("ContentType", "") for o in root.iter(qn("ct:Override"))}
    out = {}
    for name in members:
        ext = posixpath.splitext(name)[1].lstrip(".").lower()
        ct = overrides.get(name) or defaults.get(ext)
        if ct:
            out[name] = ct
    return out


def _main_kind(members: dict[str, bytes], cts: dict[str, str], report: PreflightReport) -> str | None:
    raw = members.get("_rels/.rels")
    if raw is None or not _safe_parse("_rels/.rels", raw, report):
        return None
    for typ, target, _mode in read_rels(raw).values():
        if typ == OFFICE_DOCUMENT_REL:
            return MAIN_CONTENT_TYPES.get(cts.get(resolve_target("", target), ""))
    return None


def _macros_and_xml(members: dict[str, bytes], cts: dict[str, str], report: PreflightReport) -> None:
    for name, blob in members.items():
        base = posixpath.basename(name).lower()
        ct = cts.get(name, "")
        if base in {"vbaproject.bin", "vbadata.xml"} or "vbaProject" in ct or "macroEnabled" in ct:
            report.error("macro_enabled", f"the package contains macros ({name}); save it as a macro-free "
                         "file and upload that", name)
        if name.endswith((".xml", ".rels")) or ct.endswith("+xml") or ct.endswith("/xml"):
            if not _safe_parse(name, blob, report):
                continue
        if name.endswith(".rels"):
            for typ, target, mode in read_rels(blob).values():
                if mode == "External" and typ != HYPERLINK_REL:
                    report.error("external_link", f"{name} links to an outside resource {target[:120]!r} "
                                 f"({typ.rsplit('/', 1)[-1]}); the preview would fetch it. Embed the item "
                                 "instead of linking it", name)


# placeholders ---------------------------------------------------------------------------------------


def _scan_placeholders(members: dict[str, bytes], cts: dict[str, str], kind: str, report: PreflightReport
                       ) -> dict[str, etree._Element]:
    """Scan every text-bearing part; return the parts whose XML changed (split tags merged)."""
    locator = _DocxLocator(members, cts) if kind == "docx" else _PptxLocator(members, cts)
    changed: dict[str, etree._Element] = {}
    for part in locator.parts():
        root = etree.fromstring(members[part], XML_PARSER)
        p_tag, t_tag = (W_P, W_T) if root.tag.startswith("{" + _W) else (A_P, A_T)
        merged_here = 0
        for p, nodes in paragraph_text_nodes(root, p_tag, t_tag):
            text = "".join(t.text or "" for t in nodes)
            if "{" not in text and "}" not in text:
                continue
            tags = scan_tags(text)
            if not tags:
                continue
            merged_here += merge_split_tags(nodes, tags)
            if nearest(p, qn("mc:Fallback")) is not None:
                continue  # the legacy copy of a text box: rendered too, reported once
            loc, where = locator.locate(part, p)
            for tag in tags:
                _record(report, tag, text, loc, part, where, p, locator)
        _scan_alt_text(root, part, locator, report)
        if merged_here:
            report.merged_splits += merged_here
            changed[part] = root
    return changed


def _record(report: PreflightReport, tag: Tag, text: str, loc: str, part: str, where: str,
            p: etree._Element, locator: _Locator) -> None:
    if tag.name is None:
        report.error("malformed_tag", f"{tag.problem}", loc)
        return
    if where in {"layout", "master"}:
        report.warn("placeholder_in_layout", f"{tag.raw} sits in a slide {where}, which is not filled when "
                    "generating; move it onto a slide", loc)
        return
    if nearest(p, locator.row_tags) is not None:
        context = "table_row"
    elif text.strip() == tag.raw:
        context = "paragraph"
    else:
        context = "inline"
    report.uses.append(PlaceholderUse(tag.name, tag.raw, loc, part, where, context))  # type: ignore[arg-type]


def _scan_alt_text(root: etree._Element, part: str, locator: _Locator, report: PreflightReport) -> None:
    """Pictures and charts are placeholders through their alt text (``{{ logo }}``), keeping their box."""
    for el in root.iter(qn("wp:docPr"), qn("p:cNvPr")):
        for attr in ("descr", "title"):
            value = el.get(attr) or ""
            if "{" not in value and "}" not in value:
                continue
            holder = el.getparent()
            graphic = holder.getparent() if holder is not None else None
            if graphic is not None and graphic.find(".//" + qn("c:chart")) is not None:
                context = "chart"
            elif graphic is not None and graphic.find(".//" + qn("a:blip")) is not None:
                context = "picture"
            else:
                context = "shape"
            loc = f"{locator.shape_location(part, el)}, alt text of {el.get('name') or 'an object'!r}"
            for tag in scan_tags(value):
                if tag.name is None:
                    report.error("malformed_tag", f"{tag.problem}", loc)
                else:
                    report.uses.append(PlaceholderUse(tag.name, tag.raw, loc, part, "alt_text", context))  # type: ignore[arg-type]


_W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


class _Locator(abc.ABC):
    row_tags: set[str] = set()

    @abc.abstractmethod
    def parts(self) -> list[str]:
        """Text-bearing parts in reading order."""

    @abc.abstractmethod
    def locate(self, part: str, p: etree._Element) -> tuple[str, str]:
        """A person-readable location of a paragraph and the kind of spot it is in."""

    @abc.abstractmethod
    def shape_location(self, part: str, el: etree._Element) -> str:
        """A person-readable location of a drawing object."""


class _DocxLocator(_Locator):
    """Word locations: page (when the file records page breaks), paragraph, table/row/cell, text box."""

    row_tags = {qn("w:tr")}

    def __init__(self, members: dict[str, bytes], cts: dict[str, str]) -> None:
        self.members, self.cts = members, cts
        main = ""
        for typ, target, _m in read_rels(members.get("_rels/.rels")).values():
            if typ == OFFICE_DOCUMENT_REL:
                main = resolve_target("", target)
        self.main = main
        self.kinds = {main: "body"}
        counters: dict[str, int] = {}
        for name in sorted(members):
            label = DOCX_TEXT_PARTS.get(cts.get(name, ""))
            if label:
                counters[label] = counters.get(label, 0) + 1
                self.kinds[name] = label
        self._blocks: dict[etree._Element, tuple[str, int, int]] = {}
        self._body_root: etree._Element | None = None

    def parts(self) -> list[str]:
        return [p for p in self.kinds if p in self.members]

    def _index_body(self, p: etree._Element) -> None:
        root = p.getroottree().getroot()
        if self._body_root is root:
            return
        self._body_root = root
        self._blocks = {}
        body = root.find(qn("w:body"))
        if body is None:
            return
        rendered = root.find(".//" + qn("w:lastRenderedPageBreak")) is not None
        page, para_no, table_no = 1, 0, 0
        for child in body:
            if child.tag == W_P:
                para_no += 1
                self._blocks[child] = ("paragraph", para_no, page)
            elif child.tag == qn("w:tbl"):
                table_no += 1
                self._blocks[child] = ("table", table_no, page)
            if rendered:
                page += len(child.findall(".//" + qn("w:lastRenderedPageBreak")))
            else:
                page += sum(1 for br in child.iter(qn("w:br")) if br.get(qn("w:type")) == "page")
                page += len(child.findall(".//" + qn("w:pageBreakBefore")))
                page += len(child.findall(".//" + qn("w:sectPr")))
        self._has_pages = rendered or page > 1

    def locate(self, part: str, p: etree._Element) -> tuple[str, str]:
        kind = self.kinds.get(part, "body")
        bits: list[str] = []
        where = kind
        if kind == "body":
            self._index_body(p)
            top = p
            while top.getparent() is not None and top.getparent().tag != qn("w:body"):
                top = top.getparent()
            block = self._blocks.get(top)
            if block and self._has_pages:
                bits.append(f"page {block[2]}")
            if block and block[0] == "paragraph":
                bits.append(f"paragraph {block[1]}")
            elif block:
                bits.append(f"table {block[1]}")
        else:
            bits.append(f"{kind} ({posixpath.basename(part)})")
            if kind != "chart":
                ps = list(p.getroottree().getroot().iter(W_P))
                bits.append(f"paragraph {ps.index(p) + 1}")
            else:
                where = "chart"
                bits.append("title" if nearest(p, qn("c:title")) is not None else "text")
        tr = nearest(p, qn("w:tr"))
        if tr is not None:
            rows = [r for r in tr.getparent() if r.tag == qn("w:tr")]
            tc = nearest(p, qn("w:tc"))
            cells = [c for c in tr if c.tag == qn("w:tc")]
            bits.append(f"row {rows.index(tr) + 1}, cell {cells.index(tc) + 1 if tc in cells else '?'}")
            where = "table" if kind == "body" else where
        if nearest(p, qn("w:txbxContent")) is not None:
            bits.append("text box")
            where = "textbox"
        return ", ".join(bits), where

    def shape_location(self, part: str, el: etree._Element) -> str:
        kind = self.kinds.get(part, "body")
        if kind != "body":
            return f"{kind} ({posixpath.basename(part)})"
        p = nearest(el, W_P)
        if p is None:
            return "body"
        return self.locate(part, p)[0]


class _PptxLocator(_Locator):
    """PowerPoint locations: slide number, shape (and group) names, table row/column, notes, charts."""

    row_tags = {qn("a:tr")}
    _SHAPES = {qn("p:sp"), qn("p:graphicFrame"), qn("p:grpSp"), qn("p:pic"), qn("p:cxnSp")}

    def __init__(self, members: dict[str, bytes], cts: dict[str, str]) -> None:
        self.members, self.cts = members, cts
        self.kinds = {n: PPTX_TEXT_PARTS[ct] for n, ct in cts.items() if ct in PPTX_TEXT_PARTS and n in members}
        self.slide_no: dict[str, int] = {}
        main = ""
        for typ, target, _m in read_rels(members.get("_rels/.rels")).values():
            if typ == OFFICE_DOCUMENT_REL:
                main = resolve_target("", target)
        rels = read_rels(members.get(rels_name(main)))
        pres = etree.fromstring(members[main], XML_PARSER)
        for n, sld in enumerate(pres.iter(qn("p:sldId")), start=1):
            rel = rels.get(sld.get(qn("r:id"), ""))
            if rel:
                self.slide_no[resolve_target(main, rel[1])] = n
        self.owner: dict[str, tuple[str, str]] = {}  # notes/chart part -> (slide part, shape name)
        for slide in self.slide_no:
            srels = read_rels(members.get(rels_name(slide)))
            sroot = etree.fromstring(members[slide], XML_PARSER)
            for rid, (typ, target, _m) in srels.items():
                if typ.endswith("/notesSlide"):
                    self.owner[resolve_target(slide, target)] = (slide, "")
                elif typ.endswith("/chart"):
                    name = ""
                    for ch in sroot.iter(qn("c:chart")):
                        if ch.get(qn("r:id")) == rid:
                            frame = nearest(ch, qn("p:graphicFrame"))
                            name = self._name(frame) if frame is not None else ""
                    self.owner[resolve_target(slide, target)] = (slide, name)

    def parts(self) -> list[str]:
        order = {"slide": 0, "notes": 1, "chart": 2, "layout": 3, "master": 4}
        return sorted(self.kinds, key=lambda n: (self._slide_of(n), order[self.kinds[n]], n))

    def _slide_of(self, part: str) -> int:
        if part in self.slide_no:
            return self.slide_no[part]
        if part in self.owner:
            return self.slide_no.get(self.owner[part][0], 10_000)
        return 10_000

    @staticmethod
    def _name(shape: etree._Element) -> str:
        nv = shape[0] if len(shape) else None
        c = nv.find(qn("p:cNvPr")) if nv is not None else None
        return (c.get("name") if c is not None else None) or "unnamed"

    def _shape_path(self, el: etree._Element) -> list[str]:
        names = []
        cur = el.getparent()
        while cur is not None:
            if cur.tag in self._SHAPES:
                label = "group" if cur.tag == qn("p:grpSp") else "table" if cur.find(
                    ".//" + qn("a:tbl")) is not None and cur.tag == qn("p:graphicFrame") else "shape"
                names.append(f"{label} {self._name(cur)!r}")
            cur = cur.getparent()
        return list(reversed(names))

    def _prefix(self, part: str) -> tuple[str, str]:
        kind = self.kinds.get(part, "slide")
        if kind == "slide":
            return f"slide {self.slide_no.get(part, '?')}", "slide"
        if kind == "notes":
            owner = self.owner.get(part)
            n = self.slide_no.get(owner[0], "?") if owner else "?"
            return f"slide {n} speaker notes", "notes"
        if kind == "chart":
            owner = self.owner.get(part)
            if owner:
                return f"slide {self.slide_no.get(owner[0], '?')}, chart {owner[1]!r}", "chart"
            return f"chart ({posixpath.basename(part)})", "chart"
        return f"slide {kind} ({posixpath.basename(part)})", kind

    def locate(self, part: str, p: etree._Element) -> tuple[str, str]:
        prefix, where = self._prefix(part)
        bits = [prefix]
        path = self._shape_path(p)
        if where == "slide":
            if any(s.startswith("group") for s in path):
                where = "group"
            bits.extend(path)
        tr = nearest(p, qn("a:tr"))
        if tr is not None:
            rows = [r for r in tr.getparent() if r.tag == qn("a:tr")]
            tc = nearest(p, qn("a:tc"))
            cells = [c for c in tr if c.tag == qn("a:tc")]
            bits.append(f"row {rows.index(tr) + 1}, column {cells.index(tc) + 1 if tc in cells else '?'}")
            where = "slide_table" if where in {"slide", "group"} else where
        if where == "chart":
            bits.append("title" if nearest(p, qn("c:title")) is not None else "text")
        else:
            body = p.getparent()
            siblings = [x for x in body if x.tag == A_P] if body is not None else [p]
            bits.append(f"paragraph {siblings.index(p) + 1}")
        return ", ".join(bits), where

    def shape_location(self, part: str, el: etree._Element) -> str:
        prefix, _ = self._prefix(part)
        return ", ".join([prefix, *self._shape_path(el)])


def _rezip(original: bytes, members: dict[str, bytes], changed: dict[str, etree._Element]) -> bytes:
    """Write the package again with the changed parts, keeping member order."""
    src = zipfile.ZipFile(io.BytesIO(original))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            blob = members[info.filename]
            if info.filename in changed:
                blob = etree.tostring(changed[info.filename], xml_declaration=True, encoding="UTF-8", standalone=True)
            dst.writestr(info.filename, blob)
    return out.getvalue()


def _check_opens(data: bytes, kind: str, report: PreflightReport) -> None:
    """The renderer's own library must open the package, or generation would fail later."""
    try:
        if kind == "docx":
            import docx

            docx.Document(io.BytesIO(data))
        else:
            import pptx

            pptx.Presentation(io.BytesIO(data))
    except Exception as e:  # noqa: BLE001 - any failure here means the package is unusable
        lib = "python-docx" if kind == "docx" else "python-pptx"
        report.error("unreadable", f"{lib} cannot open the package ({type(e).__name__}: {e}); open it in Office, "
                     "save a new copy and upload that")
