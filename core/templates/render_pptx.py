"""Fill a preflighted .pptx template with python-pptx; charts stay native (editable) charts.

Where placeholders are filled: slide shapes, grouped shapes, slide tables, speaker notes and chart
titles (every ``a:t`` of slides, their notes and their charts), plus the alt text of pictures and
charts. Slide layouts and masters are left alone (preflight warns about placeholders there).

- text: replaced inside its run (formatting kept); newlines become ``a:br`` in the paragraph.
- list: alone in its paragraph, the paragraph repeats per item (bullet level kept); inline, ", ".
- table: in a table row, the row repeats per data row and the frame grows; alone in a text shape,
  the shape is replaced by a native table in the same box.
- chart: a chart whose alt text is ``{{ name }}`` gets ``replace_data`` (formatting and the
  embedded workbook follow, so it stays editable); alone in a text shape, a new native chart
  takes the shape's box.
- image: a picture whose alt text is ``{{ name }}`` gets the new image fitted and centred in its
  box; alone in a text shape, a picture takes the shape's box.
"""

from __future__ import annotations

import copy
import functools
import io
from collections.abc import Mapping
from typing import Any

from lxml import etree

from core.errors import Invalid
from core.templates.ooxml import (
    A_P,
    A_R,
    A_T,
    NS,
    PLACEHOLDER_RE,
    expand_paragraph,
    expand_row,
    nearest,
    qn,
    strip_invalid_xml_chars,
)
from core.templates.values import ChartValue, ImageValue, RenderValue, TableValue

_T_WITH_TAG = etree.XPath("//a:t[contains(., '{{')]", namespaces=NS)
_CNVPR_WITH_TAG = etree.XPath("//p:cNvPr[contains(@descr, '{{') or contains(@title, '{{')]", namespaces=NS)
_CHART_RT = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/chart"
P_SP, P_PIC, P_GF, P_GRP = qn("p:sp"), qn("p:pic"), qn("p:graphicFrame"), qn("p:grpSp")


@functools.lru_cache(maxsize=16)
def _pristine(template: bytes) -> Any:
    """The template parsed once; every render works on a deep copy (a third of the cost of parsing again).
    Nothing ever reads or changes the cached object itself, so the copies are all alike."""
    import pptx

    return pptx.Presentation(io.BytesIO(template))


def render_pptx(template: bytes, values: Mapping[str, RenderValue]) -> bytes:
    """Return the filled presentation; ``Invalid`` names any placeholder without a value."""
    prs = copy.deepcopy(_pristine(template))
    r = _PptxRenderer(values)
    for slide in prs.slides:
        r.fill_slide(slide)
    if r.missing:
        raise Invalid(f"no value for placeholder(s) {', '.join(sorted(r.missing))}; configure them before generating")
    out = io.BytesIO()
    prs.save(out)
    return out.getvalue()


def chart_data_for(value: ChartValue) -> Any:
    from pptx.chart.data import CategoryChartData

    data = CategoryChartData()
    data.categories = value.categories
    for name, vals in value.series:
        data.add_series(name, vals)
    return data


def _chart_type(kind: str) -> Any:
    from pptx.enum.chart import XL_CHART_TYPE

    return {
        "column": XL_CHART_TYPE.COLUMN_CLUSTERED,
        "bar": XL_CHART_TYPE.BAR_CLUSTERED,
        "line": XL_CHART_TYPE.LINE_MARKERS,
        "pie": XL_CHART_TYPE.PIE,
    }.get(kind, XL_CHART_TYPE.COLUMN_CLUSTERED)


class _PptxRenderer:
    def __init__(self, values: Mapping[str, RenderValue]) -> None:
        self.values = values
        self.missing: set[str] = set()

    def fill_slide(self, slide: Any) -> None:
        root = slide.part._element
        for cnvpr in _CNVPR_WITH_TAG(root):
            self._alt_text(slide, cnvpr)
        self._fill_text(slide, root)
        if slide.has_notes_slide:
            self._fill_text(None, slide.notes_slide.part._element)
        for rel in list(slide.part.rels.values()):
            if rel.reltype == _CHART_RT and not rel.is_external:
                self._fill_text(None, rel.target_part._element)

    def _fill_text(self, slide: Any, root: etree._Element) -> None:
        for t in _T_WITH_TAG(root):
            if t.getroottree().getroot() is not root:
                continue  # inside a paragraph, row or shape already replaced
            text = t.text or ""
            names = PLACEHOLDER_RE.findall(text)
            for n in names:
                if n not in self.values:
                    self.missing.add(n)
            structural = [n for n in names if n in self.values and not isinstance(self.values[n], str)]
            text = PLACEHOLDER_RE.sub(self._text_of, text)
            if not structural:
                self._set_run_text(t, text)
                continue
            t.text = text
            self._structural(slide, t, structural[0])

    def _text_of(self, m: Any) -> str:
        v = self.values.get(m.group(1))
        if isinstance(v, str):
            return v
        return m.group(0)

    @staticmethod
    def _set_run_text(t: etree._Element, text: str) -> None:
        text = strip_invalid_xml_chars(text)
        if "\n" not in text:
            t.text = text
            return
        run = t.getparent()
        lines = text.split("\n")
        t.text = lines[0]
        if run is None or run.tag != A_R:
            t.text = " ".join(lines)
            return
        anchor = run
        rpr = run.find(qn("a:rPr"))
        for line in lines[1:]:
            br = etree.Element(qn("a:br"))
            if rpr is not None:
                br.append(copy.deepcopy(rpr))
            anchor.addnext(br)
            new_run = copy.deepcopy(run)
            new_run.find(A_T).text = line
            br.addnext(new_run)
            anchor = new_run

    # structural ---------------------------------------------------------------------------------
    def _structural(self, slide: Any, t: etree._Element, name: str) -> None:
        value = self.values[name]
        p = nearest(t, A_P)
        assert p is not None
        raw = next(m.group(0) for m in PLACEHOLDER_RE.finditer(t.text or "") if m.group(1) == name)
        alone_in_paragraph = "".join(x.text or "" for x in p.iter(A_T)).strip() == raw
        sp = nearest(t, P_SP)
        alone_in_shape = alone_in_paragraph and sp is not None and len(sp.findall(f".//{A_P}")) == 1
        if isinstance(value, list):
            if alone_in_paragraph:
                self._expand_paragraph(p, t, raw, value)
            else:
                self._set_run_text(t, (t.text or "").replace(raw, ", ".join(value)))
            return
        tr = nearest(t, qn("a:tr"))
        if isinstance(value, TableValue) and tr is not None:
            self._expand_row(tr, t, value)
            return
        if slide is None or not alone_in_shape:
            kind = type(value).__name__.replace("Value", "").lower()
            raise Invalid(f"{kind} placeholder {raw} must be the only text of a slide shape (or, for a table, "
                          "sit in a table row; for a picture or chart, be its alt text)")
        assert sp is not None
        shapes = self._shapes_for(slide, sp)
        x, y, cx, cy = self._box(sp)
        if isinstance(value, TableValue):
            cols = max([len(value.columns)] + [len(r) for r in value.rows] + [1])
            rows = len(value.rows) + (1 if value.columns else 0)
            frame = shapes.add_table(max(rows, 1), cols, x, y, cx, cy)
            table = frame.table
            offset = 0
            if value.columns:
                for i, label in enumerate(value.columns):
                    table.cell(0, i).text = label
                offset = 1
            for ri, row in enumerate(value.rows):
                for ci, text in enumerate(row[:cols]):
                    table.cell(ri + offset, ci).text = strip_invalid_xml_chars(text)
            new = frame._element
        elif isinstance(value, ChartValue):
            frame = shapes.add_chart(_chart_type(value.kind), x, y, cx, cy, chart_data_for(value))
            if value.title:
                frame.chart.has_title = True
                frame.chart.chart_title.text_frame.text = value.title
            new = frame._element
        else:
            assert isinstance(value, ImageValue)
            w, h = value.fit(cx, cy)
            pic = shapes.add_picture(io.BytesIO(value.data), x + (cx - w) // 2, y + (cy - h) // 2, w, h)
            new = pic._element
        sp.addprevious(new)  # keep the z-order of the shape it replaces
        sp.getparent().remove(sp)

    def _expand_paragraph(self, p: etree._Element, t: etree._Element, raw: str, items: list[str]) -> None:
        expand_paragraph(p, t, raw, items, A_T, self._set_run_text)

    def _expand_row(self, tr: etree._Element, t: etree._Element, table: TableValue) -> None:
        frame = nearest(tr, P_GF)
        height = int(tr.get("h") or 0)
        expand_row(tr, t, table.rows, A_R, qn("a:rPr"), qn("a:tc"), self._fill_cell)
        if frame is not None and height:  # grow the table's frame by the rows added
            ext = frame.find(f"{qn('p:xfrm')}/{qn('a:ext')}")
            if ext is not None:
                ext.set("cy", str(max(int(ext.get("cy")) + height * (len(table.rows) - 1), height)))

    def _fill_cell(self, tc: etree._Element, text: str, rpr: etree._Element | None) -> None:
        ts = list(tc.iter(A_T))
        if ts:
            self._set_run_text(ts[0], text)
            for extra in ts[1:]:
                extra.text = ""
            return
        body = tc.find(qn("a:txBody"))
        if body is None:
            body = etree.SubElement(tc, qn("a:txBody"))
            etree.SubElement(body, qn("a:bodyPr"))
            etree.SubElement(body, qn("a:lstStyle"))
        p = body.find(A_P)
        if p is None:
            p = etree.SubElement(body, A_P)
        r = etree.Element(A_R)
        if rpr is not None:
            r.append(copy.deepcopy(rpr))
        nt = etree.SubElement(r, A_T)
        nt.text = strip_invalid_xml_chars(text)
        end = p.find(qn("a:endParaRPr"))
        if end is not None:
            end.addprevious(r)
        else:
            p.append(r)

    @staticmethod
    def _shapes_for(slide: Any, el: etree._Element) -> Any:
        from pptx.shapes.shapetree import GroupShapes

        container = el.getparent()
        if container is not None and container.tag == P_GRP:
            return GroupShapes(container, slide.shapes)
        return slide.shapes

    @staticmethod
    def _box(el: etree._Element) -> tuple[int, int, int, int]:
        xfrm = el.find(f".//{qn('a:xfrm')}") if el.tag != P_GF else el.find(qn("p:xfrm"))
        if xfrm is None:
            raise Invalid("the placeholder's shape has no position (it inherits one from the layout); "
                          "move or resize it once in PowerPoint so it has its own box")
        off, ext = xfrm.find(qn("a:off")), xfrm.find(qn("a:ext"))
        return int(off.get("x")), int(off.get("y")), int(ext.get("cx")), int(ext.get("cy"))

    # alt text: pictures and charts -------------------------------------------------------------
    def _alt_text(self, slide: Any, cnvpr: etree._Element) -> None:
        label = (cnvpr.get("descr") or "") + " " + (cnvpr.get("title") or "")
        shape = cnvpr.getparent().getparent() if cnvpr.getparent() is not None else None
        for name in PLACEHOLDER_RE.findall(label):
            value = self.values.get(name)
            if value is None:
                self.missing.add(name)
                continue
            if isinstance(value, str):
                for attr in ("descr", "title"):
                    if cnvpr.get(attr):
                        cnvpr.set(attr, PLACEHOLDER_RE.sub(self._text_of, cnvpr.get(attr)))
                continue
            if shape is None:
                continue
            if isinstance(value, ChartValue) and shape.tag == P_GF and shape.find(f".//{qn('c:chart')}") is not None:
                from pptx.shapes.shapetree import SlideShapeFactory

                proxy: Any = SlideShapeFactory(shape, self._shapes_for(slide, shape))  # a GraphicFrame
                proxy.chart.replace_data(chart_data_for(value))
                if value.title and not proxy.chart.has_title:  # the template's own title wins
                    proxy.chart.has_title = True
                    proxy.chart.chart_title.text_frame.text = value.title
            elif isinstance(value, ImageValue) and shape.tag == P_PIC:
                _, rid = slide.part.get_or_add_image_part(io.BytesIO(value.data))
                shape.find(f".//{qn('a:blip')}").set(qn("r:embed"), rid)
                x, y, cx, cy = self._box(shape)
                w, h = value.fit(cx, cy)
                xfrm = shape.find(f".//{qn('a:xfrm')}")
                xfrm.find(qn("a:off")).set("x", str(x + (cx - w) // 2))
                xfrm.find(qn("a:off")).set("y", str(y + (cy - h) // 2))
                xfrm.find(qn("a:ext")).set("cx", str(w))
                xfrm.find(qn("a:ext")).set("cy", str(h))
            else:
                kind = "a chart" if shape.tag == P_GF else "a picture" if shape.tag == P_PIC else "this shape"
                raise Invalid(f"{{{{ {name} }}}} is the alt text of {kind}, which cannot show a "
                              f"{type(value).__name__.replace('Value', '').lower()} value")
            for attr in ("descr", "title"):
                if cnvpr.get(attr):
                    cnvpr.set(attr, PLACEHOLDER_RE.sub(lambda m: m.group(1), cnvpr.get(attr)))


def pptx_text(data: bytes) -> str:
    """All text of slides, notes and charts in a .pptx, for tests."""
    import zipfile

    from core.templates.ooxml import XML_PARSER

    out = []
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for name in sorted(z.namelist()):
            if name.startswith(("ppt/slides/slide", "ppt/notesSlides/", "ppt/charts/chart")) and name.endswith(".xml"):
                root = etree.fromstring(z.read(name), XML_PARSER)
                for p in root.iter(A_P):
                    line = "".join(t.text or "" for t in p.iter(A_T))
                    if line:
                        out.append(line)
    return "\n".join(out)
