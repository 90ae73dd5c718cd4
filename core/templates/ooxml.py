"""Office Open XML helpers shared by preflight and the renderers: namespaces, the placeholder grammar,
a hardened XML parser, relationship reading and the merge of placeholders split across runs.

Word and PowerPoint split text into runs wherever formatting, spell-check marks or edit history
change, so ``{{ name }}`` often arrives as ``{{ na`` + ``me }}``. Preflight merges every split
placeholder into the first run it touches (that run's formatting wins), after which each
placeholder sits whole inside one text node and rendering is a plain text-node edit.
"""

from __future__ import annotations

import copy
import posixpath
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from lxml import etree

NS = {
    "w": "http://schemas.openxmlformats.org/wordprocessingml/2006/main",
    "a": "http://schemas.openxmlformats.org/drawingml/2006/main",
    "p": "http://schemas.openxmlformats.org/presentationml/2006/main",
    "r": "http://schemas.openxmlformats.org/officeDocument/2006/relationships",
    "wp": "http://schemas.openxmlformats.org/drawingml/2006/wordprocessingDrawing",
    "pic": "http://schemas.openxmlformats.org/drawingml/2006/picture",
    "c": "http://schemas.openxmlformats.org/drawingml/2006/chart",
    "mc": "http://schemas.openxmlformats.org/markup-compatibility/2006",
    "pr": "http://schemas.openxmlformats.org/package/2006/relationships",
    "ct": "http://schemas.openxmlformats.org/package/2006/content-types",
}
XML_NS = "http://www.w3.org/XML/1998/namespace"


def qn(tag: str) -> str:
    """``"w:t"`` -> ``"{namespace}t"``."""
    prefix, local = tag.split(":")
    return f"{{{NS[prefix]}}}{local}"


W_P, W_T, W_R, W_TBL, W_TR, W_TC = qn("w:p"), qn("w:t"), qn("w:r"), qn("w:tbl"), qn("w:tr"), qn("w:tc")
A_P, A_T, A_R = qn("a:p"), qn("a:t"), qn("a:r")

# A placeholder name: a letter or underscore, then letters, digits, underscores; dots join segments
# so names can mirror CRM paths (``opportunity.amount``).
NAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
NAME_RE = re.compile(NAME_PATTERN)
PLACEHOLDER_RE = re.compile(r"\{\{\s*(" + NAME_PATTERN + r")\s*\}\}")
MAX_NAME_LENGTH = 80

# Entities are never resolved and nothing is fetched; preflight has already refused any DOCTYPE.
XML_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)

MAIN_CONTENT_TYPES = {
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml": "docx",
    "application/vnd.ms-word.document.macroEnabled.main+xml": "docm",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.template.main+xml": "dotx",
    "application/vnd.ms-word.template.macroEnabledTemplate.main+xml": "dotm",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation.main+xml": "pptx",
    "application/vnd.ms-powerpoint.presentation.macroEnabled.main+xml": "pptm",
    "application/vnd.openxmlformats-officedocument.presentationml.slideshow.main+xml": "ppsx",
    "application/vnd.ms-powerpoint.slideshow.macroEnabled.main+xml": "ppsm",
    "application/vnd.openxmlformats-officedocument.presentationml.template.main+xml": "potx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml": "xlsx",
    "application/vnd.ms-excel.sheet.macroEnabled.main+xml": "xlsm",
}
KIND_LABELS = {
    "docx": "a Word document (.docx)",
    "docm": "a macro-enabled Word document (.docm)",
    "dotx": "a Word template (.dotx)",
    "dotm": "a macro-enabled Word template (.dotm)",
    "pptx": "a PowerPoint presentation (.pptx)",
    "pptm": "a macro-enabled PowerPoint presentation (.pptm)",
    "ppsx": "a PowerPoint slide show (.ppsx)",
    "ppsm": "a macro-enabled PowerPoint slide show (.ppsm)",
    "potx": "a PowerPoint template (.potx)",
    "xlsx": "an Excel workbook (.xlsx)",
    "xlsm": "a macro-enabled Excel workbook (.xlsm)",
}
OFFICE_DOCUMENT_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument"
HYPERLINK_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/hyperlink"


@dataclass(frozen=True)
class Tag:
    """One ``{{ ... }}`` found in a paragraph's text; ``problem`` is set when it is malformed."""

    start: int
    end: int
    raw: str
    name: str | None
    problem: str | None = None


def _excerpt(text: str, start: int, width: int = 40) -> str:
    piece = text[start : start + width]
    return piece + ("…" if len(text) > start + width else "")


def scan_tags(text: str) -> list[Tag]:
    """Find placeholders and malformed tags (unbalanced braces, empty names, bad characters, logic)."""
    tags: list[Tag] = []
    i = 0
    n = len(text)
    while i < n:
        open_at = text.find("{{", i)
        close_at = text.find("}}", i)
        logic_at = min((p for p in (text.find("{%", i), text.find("{#", i)) if p >= 0), default=-1)
        candidates = [p for p in (open_at, close_at, logic_at) if p >= 0]
        if not candidates:
            break
        pos = min(candidates)
        if pos == logic_at and pos != open_at:
            end = text.find("}", pos)
            end = n if end < 0 else end + 1
            tags.append(Tag(pos, end, text[pos:end], None,
                            f"template logic {_excerpt(text, pos, 30)!r} is not supported: use plain "
                            "{{ name }} placeholders and set lists, tables and conditions in the configuration"))
            i = end
            continue
        if pos == close_at and (open_at < 0 or close_at < open_at):
            tags.append(Tag(pos, pos + 2, "}}", None,
                            f"'}}}}' without an opening '{{{{' near {_excerpt(text, max(0, pos - 20))!r}"))
            i = pos + 2
            continue
        # an opening '{{'
        close = text.find("}}", pos + 2)
        reopen = text.find("{{", pos + 2)
        if close < 0 or (0 <= reopen < close):
            stop = reopen if reopen >= 0 else n
            tags.append(Tag(pos, stop, text[pos:stop], None,
                            f"'{{{{' is never closed with '}}}}' in {_excerpt(text, pos)!r}"))
            i = pos + 2
            continue
        end = close + 2
        while end < n and text[end] == "}":  # '{{ x }}}' -> the extra brace belongs to the tag
            end += 1
        raw = text[pos:end]
        inner = text[pos + 2 : close].strip()
        if end != close + 2 or inner.startswith("{"):
            tags.append(Tag(pos, end, raw, None, f"{raw!r} has extra braces: write {{{{ name }}}}"))
        elif not inner:
            tags.append(Tag(pos, end, raw, None, "empty placeholder '{{ }}': put a name between the braces"))
        elif len(inner) > MAX_NAME_LENGTH:
            tags.append(Tag(pos, end, raw, None,
                            f"placeholder name is {len(inner)} characters; the limit is {MAX_NAME_LENGTH}"))
        elif not NAME_RE.fullmatch(inner):
            tags.append(Tag(pos, end, raw, None,
                            f"placeholder name {inner!r} has characters that are not allowed: use letters, "
                            "digits, '_' and '.', starting with a letter (e.g. {{ opportunity.amount }})"))
        else:
            tags.append(Tag(pos, end, raw, inner))
        i = end
    return tags


def nearest(el: etree._Element, tags: set[str] | str) -> etree._Element | None:
    """The closest ancestor (not the element itself) whose tag is in ``tags``."""
    wanted = {tags} if isinstance(tags, str) else tags
    cur = el.getparent()
    while cur is not None:
        if cur.tag in wanted:
            return cur
        cur = cur.getparent()
    return None


def paragraph_text_nodes(root: etree._Element, p_tag: str, t_tag: str) -> Iterator[tuple[etree._Element, list]]:
    """Each paragraph under ``root`` with its own text nodes in order (text of nested text-box
    paragraphs belongs to those paragraphs, not to the paragraph holding the text box)."""
    groups: dict[etree._Element, list] = {}
    order: list[etree._Element] = []
    for t in root.iter(t_tag):
        p = nearest(t, p_tag)
        if p is None:
            continue
        if p not in groups:
            groups[p] = []
            order.append(p)
        groups[p].append(t)
    for p in order:
        yield p, groups[p]


def set_text(t: etree._Element, text: str) -> None:
    """Set a text node, keeping leading/trailing spaces in Word (xml:space)."""
    t.text = text
    if t.tag == W_T:
        if text[:1].isspace() or text[-1:].isspace():
            t.set(f"{{{XML_NS}}}space", "preserve")


def expand_paragraph(p: etree._Element, t: etree._Element, raw: str, items: Sequence[str], t_tag: str,
                     set_run_text: Callable[[etree._Element, str], None]) -> None:
    """Replace paragraph ``p`` by one copy per list item, the placeholder ``raw`` in text node ``t`` filled in."""
    idx = list(p.iter(t_tag)).index(t)
    for item in items:
        clone = copy.deepcopy(p)
        ct = list(clone.iter(t_tag))[idx]
        set_run_text(ct, (ct.text or "").replace(raw, item))
        p.addprevious(clone)
    p.getparent().remove(p)


def expand_row(tr: etree._Element, t: etree._Element, rows: Sequence[Sequence[str]], run_tag: str, rpr_tag: str,
               cell_tag: str, fill_cell: Callable[[etree._Element, str, etree._Element | None], None]) -> None:
    """Replace table row ``tr`` by one copy per data row, each cell filled with the placeholder run's formatting."""
    run = nearest(t, run_tag)
    run_props = run.find(rpr_tag) if run is not None else None
    for row in rows:
        clone = copy.deepcopy(tr)
        for i, tc in enumerate(c for c in clone if c.tag == cell_tag):
            fill_cell(tc, row[i] if i < len(row) else "", run_props)
        tr.addprevious(clone)
    tr.getparent().remove(tr)


def merge_split_tags(nodes: list[etree._Element], tags: list[Tag]) -> int:
    """Move each well-formed tag that spans several text nodes into the first one; return how many."""
    spans: list[tuple[int, int, int]] = []  # (node index, start offset, end offset) per node
    pos = 0
    for idx, t in enumerate(nodes):
        length = len(t.text or "")
        spans.append((idx, pos, pos + length))
        pos += length
    merged = 0
    for tag in reversed([t for t in tags if t.name is not None]):
        first = next(s for s in spans if s[1] <= tag.start < s[2])
        last = next(s for s in spans if s[1] < tag.end <= s[2])
        if first[0] == last[0]:
            continue
        head_node, tail_node = nodes[first[0]], nodes[last[0]]
        head = (head_node.text or "")[: tag.start - first[1]]
        tail = (tail_node.text or "")[tag.end - last[1] :]
        set_text(head_node, head + tag.raw)
        for k in range(first[0] + 1, last[0]):
            set_text(nodes[k], "")
        set_text(tail_node, tail)
        merged += 1
    return merged


def read_rels(xml: bytes | None) -> dict[str, tuple[str, str, str]]:
    """Relationship id -> (type, target, target mode) from a ``.rels`` part."""
    if not xml:
        return {}
    root = etree.fromstring(xml, XML_PARSER)
    out = {}
    for rel in root.iter(qn("pr:Relationship")):
        out[rel.get("Id", "")] = (rel.get("Type", ""), rel.get("Target", ""), rel.get("TargetMode", "Internal"))
    return out


def rels_name(part: str) -> str:
    """``word/document.xml`` -> ``word/_rels/document.xml.rels``."""
    folder, base = posixpath.split(part)
    return posixpath.join(folder, "_rels", base + ".rels")


def resolve_target(source_part: str, target: str) -> str:
    """A relationship target as a package member name (relative to the source part's folder)."""
    if target.startswith("/"):
        return target.lstrip("/")
    return posixpath.normpath(posixpath.join(posixpath.dirname(source_part), target))


def strip_invalid_xml_chars(text: str) -> str:
    """XML 1.0 forbids most control characters; a value carrying them would make an unreadable file."""
    return _INVALID_XML.sub("", text)


_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
