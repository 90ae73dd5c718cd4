"""Fill a preflighted .docx template with python-docx.

Rules (after preflight every placeholder sits whole inside one ``w:t``):

- text: replaced inside its run, so the run's formatting is kept; lxml escapes XML; newlines become
  ``w:br`` in the same run.
- list: a placeholder alone in its paragraph repeats the paragraph (bullets and style kept) once per
  item; inline it is joined with ", ".
- table: a placeholder in a table row makes that row the template row, repeated once per data row
  (cells filled in order, each cell keeping its own first run's formatting); alone in a body
  paragraph it becomes a new table with a header row.
- image: a picture whose alt text is ``{{ name }}`` gets the new image fitted into its box (the
  placeholder's size); a text placeholder becomes an inline picture fitted to the column width.
- chart: drawn as a PNG (matplotlib) and placed like an image; a Word chart whose alt text is the
  placeholder is replaced by that picture at the same size.

Nothing is evaluated: names are looked up in the value map. A placeholder without a value raises
``Invalid`` so no document leaves with ``{{ }}`` in it.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Mapping

from lxml import etree

from core.errors import Invalid
from core.templates.charts import chart_png
from core.templates.ooxml import (
    NS,
    PLACEHOLDER_RE,
    W_P,
    W_R,
    W_T,
    W_TC,
    W_TR,
    XML_PARSER,
    expand_paragraph,
    expand_row,
    nearest,
    qn,
    set_text,
    strip_invalid_xml_chars,
)
from core.templates.values import ChartValue, ImageValue, RenderValue, TableValue

_T_WITH_TAG = etree.XPath("//w:t[contains(., '{{')]", namespaces=NS)
_DOCPR_WITH_TAG = etree.XPath("//wp:docPr[contains(@descr, '{{') or contains(@title, '{{')]", namespaces=NS)
_TEXT_CT = {
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.header+xml",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.footer+xml",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.footnotes+xml",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.endnotes+xml",
    "application/vnd.openxmlformats-officedocument.drawingml.chart+xml",
}
EMU_PER_TWIP = 635
DEFAULT_WIDTH_EMU = 6 * 914400


def render_docx(template: bytes, values: Mapping[str, RenderValue]) -> bytes:
    """Return the filled document; ``Invalid`` names any placeholder without a value."""
    import docx

    doc = docx.Document(io.BytesIO(template))
    r = _DocxRenderer(doc, values)
    for part in list(doc.part.package.iter_parts()):
        if part.content_type not in _TEXT_CT:
            continue
        element = getattr(part, "_element", None)
        if element is not None:
            r.fill(part, element)
        else:  # parts python-docx keeps as bytes (footnotes, charts)
            blob = part.blob
            if b"{{" not in blob:
                continue
            root = etree.fromstring(blob, XML_PARSER)
            r.fill(part, root)
            part._blob = etree.tostring(root, xml_declaration=True, encoding="UTF-8", standalone=True)
    if r.missing:
        names = ", ".join(sorted(r.missing))
        raise Invalid(f"no value for placeholder(s) {names}; configure them before generating")
    out = io.BytesIO()
    doc.save(out)
    return out.getvalue()


class _DocxRenderer:
    def __init__(self, doc: object, values: Mapping[str, RenderValue]) -> None:
        self.doc = doc
        self.values = values
        self.missing: set[str] = set()

    # entry ---------------------------------------------------------------------------------------
    def fill(self, part: object, root: etree._Element) -> None:
        for docpr in _DOCPR_WITH_TAG(root):
            self._alt_text(part, docpr)
        for t in _T_WITH_TAG(root):
            if t.getroottree().getroot() is not root:
                continue  # inside a row or paragraph already replaced by its expansion
            text = t.text or ""
            names = PLACEHOLDER_RE.findall(text)
            if not names:
                continue
            for n in names:
                if n not in self.values:
                    self.missing.add(n)
            structural = [n for n in names if n in self.values and not isinstance(self.values[n], str)]
            if not structural:
                self._set_run_text(t, PLACEHOLDER_RE.sub(self._text_of, text))
                continue
            # inline text placeholders in the same node first, then the one structural placeholder
            text = PLACEHOLDER_RE.sub(lambda m: self._text_of(m) if isinstance(self.values.get(m.group(1)), str)
                                      else m.group(0), text)
            t.text = text
            self._structural(part, t, structural[0])

    def _text_of(self, m: object) -> str:
        name = m.group(1)  # type: ignore[attr-defined]
        v = self.values.get(name)
        if v is None:
            return m.group(0)  # type: ignore[attr-defined]
        if isinstance(v, str):
            return v
        if isinstance(v, list):
            return ", ".join(v)
        return m.group(0)  # type: ignore[attr-defined]

    @staticmethod
    def _set_run_text(t: etree._Element, text: str) -> None:
        text = strip_invalid_xml_chars(text)
        if "\n" not in text:
            set_text(t, text)
            return
        lines = text.split("\n")
        set_text(t, lines[0])
        anchor = t
        for line in lines[1:]:
            br = etree.Element(qn("w:br"))
            anchor.addnext(br)
            nt = etree.Element(W_T)
            set_text(nt, line)
            br.addnext(nt)
            anchor = nt

    # structural placeholders -----------------------------------------------------------------------
    def _structural(self, part: object, t: etree._Element, name: str) -> None:
        value = self.values[name]
        p = nearest(t, W_P)
        assert p is not None
        raw_match = next(m for m in PLACEHOLDER_RE.finditer(t.text or "") if m.group(1) == name)
        alone = "".join(x.text or "" for x in p.iter(W_T)).strip() == raw_match.group(0)
        if isinstance(value, list):
            if alone:
                self._expand_paragraph(p, t, raw_match.group(0), value)
            else:
                self._set_run_text(t, (t.text or "").replace(raw_match.group(0), ", ".join(value)))
        elif isinstance(value, TableValue):
            tr = nearest(t, W_TR)
            if tr is not None:
                self._expand_row(tr, t, value)
            elif alone:
                self._new_table(part, p, value)
            else:
                raise Invalid(f"table placeholder {{{{ {name} }}}} must be alone in its paragraph or in a table row")
        elif isinstance(value, ImageValue | ChartValue):
            box_w = self._available_width(p)
            box_h = int(box_w * 0.6)
            image = value if isinstance(value, ImageValue) else chart_png(value, box_w / 914400, box_h / 914400)
            self._inline_picture(part, t, raw_match.group(0), image, box_w, box_h)

    def _expand_paragraph(self, p: etree._Element, t: etree._Element, raw: str, items: list[str]) -> None:
        expand_paragraph(p, t, raw, items, W_T, self._set_run_text)

    def _expand_row(self, tr: etree._Element, t: etree._Element, table: TableValue) -> None:
        expand_row(tr, t, table.rows, W_R, qn("w:rPr"), W_TC, self._fill_cell)

    def _fill_cell(self, tc: etree._Element, text: str, run_props: etree._Element | None) -> None:
        ts = list(tc.iter(W_T))
        if ts:
            self._set_run_text(ts[0], text)
            for extra in ts[1:]:
                extra.text = ""
            return
        p = tc.find(W_P)
        if p is None:
            p = etree.SubElement(tc, W_P)
        r = etree.SubElement(p, W_R)
        if run_props is not None:
            r.append(copy.deepcopy(run_props))
        nt = etree.SubElement(r, W_T)
        self._set_run_text(nt, text)

    def _new_table(self, part: object, p: etree._Element, value: TableValue) -> None:
        from docx.document import Document as DocxDocument

        doc = self.doc
        assert isinstance(doc, DocxDocument)
        if part is not doc.part:
            raise Invalid("a table placeholder outside a table row is only supported in the document body")
        cols = max([len(value.columns)] + [len(r) for r in value.rows] + [1])
        table = doc.add_table(rows=1 + len(value.rows), cols=cols)
        try:
            table.style = doc.styles["Table Grid"]
        except KeyError:
            pass  # the template has no grid style; the table keeps the default look
        for i, label in enumerate(value.columns):
            cell = table.rows[0].cells[i]
            cell.text = label
            for r in cell.paragraphs[0].runs:
                r.bold = True
        for ri, row in enumerate(value.rows, start=1):
            cells = table.rows[ri].cells
            for ci, text in enumerate(row[:cols]):
                cells[ci].text = strip_invalid_xml_chars(text)
        p.addnext(table._tbl)
        p.getparent().remove(p)

    # pictures ---------------------------------------------------------------------------------------
    def _available_width(self, p: etree._Element) -> int:
        tc = nearest(p, W_TC)
        if tc is not None:
            w = tc.find(f"{qn('w:tcPr')}/{qn('w:tcW')}")
            if w is not None and w.get(qn("w:type"), "dxa") == "dxa" and (w.get(qn("w:w")) or "").isdigit():
                return int(w.get(qn("w:w"))) * EMU_PER_TWIP
        body = p.getroottree().getroot().find(qn("w:body"))
        sect = body.find(qn("w:sectPr")) if body is not None else None
        if sect is not None:
            size, margins = sect.find(qn("w:pgSz")), sect.find(qn("w:pgMar"))
            try:
                width = int(size.get(qn("w:w"))) - int(margins.get(qn("w:left"))) - int(margins.get(qn("w:right")))
                return max(width, 1440) * EMU_PER_TWIP
            except (AttributeError, TypeError, ValueError):
                pass  # no usable page size: the default width applies
        return DEFAULT_WIDTH_EMU

    def _inline_picture(self, part: object, t: etree._Element, raw: str, image: ImageValue, box_w: int,
                        box_h: int) -> None:
        """Split the run around the placeholder and put the picture in a run of its own."""
        run = nearest(t, W_R)
        assert run is not None
        before, _, after = (t.text or "").partition(raw)
        cx, cy = image.fit(box_w, box_h)
        inline = part.new_pic_inline(io.BytesIO(image.data), cx, cy)  # type: ignore[attr-defined]
        pic_run = copy.deepcopy(run)
        for child in list(pic_run):
            if child.tag != qn("w:rPr"):
                pic_run.remove(child)
        drawing = etree.SubElement(pic_run, qn("w:drawing"))
        drawing.append(inline)
        run.addnext(pic_run)
        if after:
            tail_run = copy.deepcopy(run)
            for child in list(tail_run):
                if child.tag != qn("w:rPr"):
                    tail_run.remove(child)
            tail_t = etree.SubElement(tail_run, W_T)
            self._set_run_text(tail_t, after)
            pic_run.addnext(tail_run)
        set_text(t, before)

    def _alt_text(self, part: object, docpr: etree._Element) -> None:
        """A picture or Word chart whose alt text names a placeholder: new image at the same box."""
        label = (docpr.get("descr") or "") + " " + (docpr.get("title") or "")
        names = PLACEHOLDER_RE.findall(label)
        holder = docpr.getparent()  # wp:inline or wp:anchor
        for name in names:
            value = self.values.get(name)
            if value is None:
                self.missing.add(name)
                continue
            if isinstance(value, str):
                for attr in ("descr", "title"):
                    if docpr.get(attr):
                        docpr.set(attr, PLACEHOLDER_RE.sub(lambda m: self._text_of(m), docpr.get(attr)))
                continue
            extent = holder.find(qn("wp:extent"))
            box_w, box_h = int(extent.get("cx")), int(extent.get("cy"))
            if isinstance(value, ChartValue):
                image = chart_png(value, box_w / 914400, box_h / 914400)
            elif isinstance(value, ImageValue):
                image = value
            else:
                raise Invalid(f"{{{{ {name} }}}} is on a picture, so it needs an image or chart value")
            cx, cy = image.fit(box_w, box_h)
            graphic = holder.find(qn("a:graphic"))
            chart = graphic.find(f".//{qn('c:chart')}")
            if chart is not None:  # a Word chart becomes a picture of the chart
                new_inline = part.new_pic_inline(io.BytesIO(image.data), cx, cy)  # type: ignore[attr-defined]
                holder.replace(graphic, new_inline.find(qn("a:graphic")))
                part.drop_rel(chart.get(qn("r:id")))  # type: ignore[attr-defined]
            else:
                rid, _ = part.get_or_add_image(io.BytesIO(image.data))  # type: ignore[attr-defined]
                blip = graphic.find(f".//{qn('a:blip')}")
                blip.set(qn("r:embed"), rid)
                ext = graphic.find(f".//{qn('a:xfrm')}/{qn('a:ext')}")
                if ext is not None:
                    ext.set("cx", str(cx))
                    ext.set("cy", str(cy))
            extent.set("cx", str(cx))
            extent.set("cy", str(cy))
            for attr in ("descr", "title"):
                if docpr.get(attr):
                    docpr.set(attr, PLACEHOLDER_RE.sub(lambda m: m.group(1), docpr.get(attr)))


def docx_text(data: bytes) -> str:
    """All text of a .docx (body, tables, headers, footers), for tests and previews of what was written."""
    import zipfile

    out = []
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for name in z.namelist():
            if name.startswith("word/") and name.endswith(".xml"):
                root = etree.fromstring(z.read(name), XML_PARSER)
                for p in root.iter(W_P):
                    line = "".join(t.text or "" for t in p.iter(W_T) if nearest(t, W_P) is p)
                    if line:
                        out.append(line)
    return "\n".join(out)

