"""Rendering .docx and .pptx: escaping, formatting kept, lists/tables expand, images at the placeholder's size,
native charts in PowerPoint, chart pictures in Word, and no placeholder left behind."""

from __future__ import annotations

import io

import pytest
from lxml import etree

from core.errors import Invalid
from core.templates.images import validate_image
from core.templates.ooxml import NS
from core.templates.preflight import preflight
from core.templates.render_docx import docx_text, render_docx
from core.templates.render_pptx import pptx_text, render_pptx
from core.templates.values import ChartValue, TableValue
from tests.unit.templates.tpl_builders import demo, docx_with, member_text, members, png, pptx_textbox, pptx_with

LOGO = validate_image(png(400, 100))
TABLE = TableValue(columns=["Deal", "Stage", "Amount"], rows=[["A & B", "Won", "10"], ["C", "Lost", "20"],
                                                              ["D", "Open", "30"]])
CHART = ChartValue(categories=["Q1", "Q2", "Q3", "Q4"],
                   series=[("North", [1.0, 2.0, 3.0, 4.0]), ("South", [2.0, 2.0, 2.0, 2.0]),
                           ("West", [4.0, 3.0, 2.0, 1.0])], title="Revenue")


def normalised(data: bytes, name: str) -> bytes:
    r = preflight(data, name)
    assert r.accepted, r.issues
    assert r.normalised is not None
    return r.normalised


def demo_values() -> dict:
    return {
        "company_logo": LOGO, "opportunity.name": "Deal <One> & \"Two\"", "account.name": "Acme",
        "account.industry": "Retail", "account.region": "EMEA", "today": "1 July 2025",
        "executive_summary": "Line one\nLine two", "opportunity.stage": "Proposal", "opportunity.amount": "$5",
        "opportunity.close_date": "30 Sep 2025", "opportunity.owner": "Dana", "deliverables": ["x", "y", "z"],
        "account_pipeline": TABLE, "next_step": "call", "quarter": "Q3", "pipeline_chart": CHART,
        "highlights": ["h1", "h2"],
    }


def doc_xml(data: bytes, name: str = "word/document.xml") -> etree._Element:
    return etree.fromstring(members(data)[name])


# Word ------------------------------------------------------------------------------------------------


def test_demo_proposal_renders_everything() -> None:
    out = render_docx(normalised(demo("proposal.docx"), "proposal.docx"), demo_values())
    text = docx_text(out)
    assert "{{" not in text and "}}" not in text
    assert "Proposal: Deal <One> & \"Two\"" in text  # escaped in XML, read back as text
    assert "&amp;" in member_text(out, "word/document.xml")  # lxml escaped the ampersand
    assert "Acme · Proposal" in text and "Prepared by Dana" in text  # header and footer
    root = doc_xml(out)
    # the merged title run kept its bold + colour formatting
    runs = list(root.iter(f"{{{NS['w']}}}r"))
    title_run = next(r for r in runs if (r.findtext("w:t", namespaces=NS) or "").startswith("Deal"))
    assert title_run.find("w:rPr/w:b", NS) is not None and title_run.find("w:rPr/w:color", NS) is not None
    # the bullet list repeated its paragraph, style included
    bullets = [p for p in root.iter(f"{{{NS['w']}}}p") if p.find("w:pPr/w:pStyle[@w:val='ListBullet']", NS) is not None]
    assert ["".join(p.itertext()) for p in bullets] == ["x", "y", "z"]
    # the pipeline table: header + one row per data row
    tables = root.findall(".//w:tbl", NS)
    rows = tables[1].findall("w:tr", NS)
    assert len(rows) == 1 + 3
    assert ["".join(tc.itertext()) for tc in rows[1].findall("w:tc", NS)] == ["A & B", "Won", "10", ""]
    # newline became a line break inside the same run
    assert any(r.find("w:br", NS) is not None and "Line one" in "".join(r.itertext()) for r in runs)


def test_alt_text_picture_gets_the_image_fitted_in_its_box() -> None:
    tpl = normalised(demo("proposal.docx"), "proposal.docx")
    before = doc_xml(tpl).find(".//wp:inline/wp:extent", NS)
    out = render_docx(tpl, demo_values())
    inline = doc_xml(out).find(".//wp:inline", NS)
    extent = inline.find("wp:extent", NS)
    bw, bh = int(before.get("cx")), int(before.get("cy"))
    w, h = int(extent.get("cx")), int(extent.get("cy"))
    assert w <= bw and h <= bh and (w == bw or h == bh)  # fills the box on one side
    assert abs(w / h - 4.0) < 0.01  # the new image's 400x100 aspect ratio
    assert inline.find("wp:docPr", NS).get("descr") == "company_logo"
    rid = inline.find(".//a:blip", NS).get(f"{{{NS['r']}}}embed")
    rels = member_text(out, "word/_rels/document.xml.rels")
    target = etree.fromstring(rels.encode()).xpath(f"//*[@Id='{rid}']/@Target")[0]
    assert members(out)["word/" + target] == LOGO.data


def test_inline_image_and_chart_placeholders_in_word() -> None:
    data = docx_with(lambda d: [d.add_paragraph("Logo: {{ logo }} end"), d.add_paragraph("{{ chart }}")])
    out = render_docx(normalised(data, "x.docx"), {"logo": LOGO, "chart": CHART})
    root = doc_xml(out)
    paras = root.findall(".//w:body/w:p", NS)
    assert "".join(paras[0].itertext()) == "Logo:  end"
    assert paras[0].find(".//wp:inline", NS) is not None and paras[1].find(".//wp:inline", NS) is not None
    media = [n for n in members(out) if n.startswith("word/media/")]
    assert len(media) == 2  # the logo and the chart picture
    chart_png = next(members(out)[n] for n in media if members(out)[n] != LOGO.data)
    assert validate_image(chart_png).format == "PNG"


def test_table_placeholder_alone_in_a_paragraph_makes_a_table() -> None:
    data = docx_with(lambda d: [d.add_paragraph("Before"), d.add_paragraph("{{ deals }}"), d.add_paragraph("After")])
    out = render_docx(normalised(data, "x.docx"), {"deals": TABLE})
    body = doc_xml(out).find("w:body", NS)
    kinds = [etree.QName(c).localname for c in body]
    assert kinds[:4] == ["p", "tbl", "p", "sectPr"] or kinds[:3] == ["p", "tbl", "p"]
    rows = body.find("w:tbl", NS).findall("w:tr", NS)
    assert len(rows) == 4 and "".join(rows[0].itertext()) == "DealStageAmount"


def test_text_box_and_split_placeholder_render() -> None:
    from tests.unit.templates.test_templates_preflight import VML_TEXTBOX
    from tests.unit.templates.tpl_builders import docx_paragraphs, rezip

    data = rezip(docx_paragraphs("Hi {{ who }}"),
                 transform={"word/document.xml": lambda s: s.replace("<w:sectPr", VML_TEXTBOX + "<w:sectPr", 1)})
    out = render_docx(normalised(data, "x.docx"), {"who": "you", "box_value": "inside"})
    assert "Box: inside" in docx_text(out) and "Hi you" in docx_text(out)


def test_missing_value_is_refused_not_left_in_the_document() -> None:
    tpl = normalised(demo("proposal.docx"), "proposal.docx")
    values = demo_values()
    del values["next_step"]
    with pytest.raises(Invalid, match="next_step"):
        render_docx(tpl, values)


def test_control_characters_are_dropped_not_written_as_invalid_xml() -> None:
    data = docx_with(lambda d: d.add_paragraph("{{ x }}"))
    out = render_docx(normalised(data, "x.docx"), {"x": "a\x00b\x0bc"})
    assert "abc" in docx_text(out)


# PowerPoint -------------------------------------------------------------------------------------------


def test_demo_deck_renders_with_a_native_editable_chart() -> None:
    import pptx

    out = render_pptx(normalised(demo("qbr.pptx"), "qbr.pptx"), demo_values())
    text = pptx_text(out)
    assert "{{" not in text and "}}" not in text
    assert "Quarterly Business Review: Acme" in text and "Open with Dana" in text  # slide + notes
    assert "Pipeline for Acme" in text  # chart title
    assert "Largest deal: Deal <One> & \"Two\"" in text  # grouped shape
    prs = pptx.Presentation(io.BytesIO(out))
    frame = next(s for s in prs.slides[1].shapes if s.has_chart)
    chart = frame.chart
    assert list(chart.plots[0].categories) == ["Q1", "Q2", "Q3", "Q4"]
    assert [s.name for s in chart.series] == ["North", "South", "West"]
    assert list(chart.series[2].values) == [4.0, 3.0, 2.0, 1.0]
    assert chart.part.chart_workbook.xlsx_part is not None  # embedded workbook: editable in PowerPoint
    table = next(s for s in prs.slides[2].shapes if s.has_table).table
    assert len(table.rows) == 4 and table.cell(1, 0).text == "A & B" and table.cell(3, 2).text == "30"
    highlights = next(s for s in prs.slides[3].shapes if s.name == "Highlights")
    assert [p.text for p in highlights.text_frame.paragraphs] == ["h1", "h2"]


def test_table_rows_grow_the_frame() -> None:
    import pptx

    tpl = normalised(demo("qbr.pptx"), "qbr.pptx")
    before = next(s for s in pptx.Presentation(io.BytesIO(tpl)).slides[2].shapes if s.has_table)
    out = render_pptx(tpl, demo_values())
    after = next(s for s in pptx.Presentation(io.BytesIO(out)).slides[2].shapes if s.has_table)
    assert after.height > before.height


def test_picture_alt_text_in_a_slide_is_replaced_and_centred() -> None:
    import pptx

    tpl = normalised(demo("qbr.pptx"), "qbr.pptx")
    old = next(s for s in pptx.Presentation(io.BytesIO(tpl)).slides[0].shapes if s.name == "Logo")
    out = render_pptx(tpl, demo_values())
    new = next(s for s in pptx.Presentation(io.BytesIO(out)).slides[0].shapes if s.name == "Logo")
    assert new.image.blob == LOGO.data
    assert new.width <= old.width and new.height <= old.height
    assert abs((new.left + new.width / 2) - (old.left + old.width / 2)) <= 1


def test_text_shape_placeholders_become_native_chart_table_and_picture() -> None:
    import pptx

    data = pptx_textbox("{{ chart }}", "{{ deals }}", "{{ logo }}", "Hello {{ who }}")
    out = render_pptx(normalised(data, "x.pptx"), {"chart": CHART, "deals": TABLE, "logo": LOGO, "who": "there"})
    shapes = list(pptx.Presentation(io.BytesIO(out)).slides[0].shapes)
    kinds = [("chart" if s.has_chart else "table" if s.has_table else s.shape_type) for s in shapes]
    assert kinds[:2] == ["chart", "table"]
    assert shapes[2].image.blob == LOGO.data
    assert shapes[3].text_frame.text == "Hello there"
    assert shapes[0].chart.chart_title.text_frame.text == "Revenue"
    assert len(shapes[0].chart.series) == 3


def test_structural_value_inline_with_text_is_refused_in_slides() -> None:
    data = pptx_textbox("See {{ chart }} here")
    with pytest.raises(Invalid, match="only text of a slide shape"):
        render_pptx(normalised(data, "x.pptx"), {"chart": CHART})


def test_split_runs_and_newlines_in_slides() -> None:
    from pptx.util import Inches

    def build(prs: object) -> None:
        slide = prs.slides.add_slide(prs.slide_layouts[6])  # type: ignore[attr-defined]
        p = slide.shapes.add_textbox(Inches(1), Inches(1), Inches(5), Inches(1)).text_frame.paragraphs[0]
        first = p.add_run()
        first.text = "{{ ti"
        first.font.bold = True
        p.add_run().text = "tle }}"

    out = render_pptx(normalised(pptx_with(build), "x.pptx"), {"title": "One\nTwo"})
    xml = member_text(out, "ppt/slides/slide1.xml")
    assert xml.count('b="1"') >= 2  # both lines kept the bold of the first run
    assert "<a:br>" in xml or "<a:br/>" in xml
    assert "One" in pptx_text(out) and "Two" in pptx_text(out)


def test_missing_value_in_a_deck_is_refused() -> None:
    with pytest.raises(Invalid, match="who"):
        render_pptx(normalised(pptx_textbox("Hi {{ who }}"), "x.pptx"), {})
