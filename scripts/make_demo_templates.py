"""Build the demo templates under data/templates/ deterministically (same bytes on every run).

    .venv/bin/python scripts/make_demo_templates.py [--out data/templates]

Writes:
  proposal.docx         a proposal with a header/footer, a logo picture (alt text {{ company_logo }}),
                        a details table, a bullet list and a pipeline table that expands per record;
                        one placeholder is deliberately split across two runs, as Word often does
  qbr.pptx              a QBR deck: title slide with notes and logo, a native chart (alt text
                        {{ pipeline_chart }}) titled per account, a table, highlights and a group
  castiel-logo.png      the logo the demo configuration fills {{ company_logo }} with
  proposal.config.json  placeholder configuration against the demo CRM fields
  qbr.config.json       idem for the deck
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import re
import sys
import zipfile
from pathlib import Path

from PIL import Image, ImageDraw

FIXED_TIME = dt.datetime(2025, 1, 6, 9, 0, 0)
ZIP_TIME = (2025, 1, 6, 9, 0, 0)
OUT = Path(__file__).resolve().parent.parent / "data" / "templates"


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def placeholder_picture() -> bytes:
    """The grey box the template shows where the logo goes."""
    img = Image.new("RGB", (480, 160), (230, 232, 236))
    d = ImageDraw.Draw(img)
    d.rectangle([4, 4, 475, 155], outline=(150, 155, 165), width=4)
    d.line([4, 4, 475, 155], fill=(190, 194, 200), width=2)
    d.line([4, 155, 475, 4], fill=(190, 194, 200), width=2)
    d.text((200, 72), "LOGO", fill=(90, 95, 105))
    return _png(img)


def demo_logo() -> bytes:
    img = Image.new("RGB", (600, 200), (255, 255, 255))
    d = ImageDraw.Draw(img)
    d.ellipse([20, 30, 160, 170], fill=(36, 84, 166))
    d.polygon([(90, 50), (140, 150), (40, 150)], fill=(255, 255, 255))
    d.rectangle([190, 80, 570, 120], fill=(36, 84, 166))
    d.rectangle([190, 130, 460, 150], fill=(120, 150, 200))
    d.text((200, 40), "CASTIEL", fill=(36, 84, 166))
    return _png(img)


def deterministic_zip(data: bytes) -> bytes:
    """Fixed member timestamps and core-property dates, recursively for embedded workbooks."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            blob = src.read(info.filename)
            if info.filename.endswith((".xlsx", ".docx", ".pptx")):
                blob = deterministic_zip(blob)
            elif info.filename == "docProps/core.xml":
                stamp = FIXED_TIME.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
                blob = re.sub(rb"(<dcterms:(?:created|modified)[^>]*>)[^<]*(<)", rb"\g<1>" + stamp + rb"\2", blob)
            zi = zipfile.ZipInfo(info.filename, date_time=ZIP_TIME)
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.external_attr = 0o644 << 16
            dst.writestr(zi, blob)
    return out.getvalue()


def make_proposal() -> bytes:
    import docx
    from docx.enum.text import WD_ALIGN_PARAGRAPH
    from docx.shared import Inches, Pt, RGBColor

    doc = docx.Document()
    props = doc.core_properties
    props.title, props.author, props.last_modified_by = "Proposal template", "Castiel", "Castiel"
    props.created = props.modified = FIXED_TIME
    props.revision = 1

    section = doc.sections[0]
    hp = section.header.paragraphs[0]
    hp.text = "{{ account.name }} · Proposal"
    hp.alignment = WD_ALIGN_PARAGRAPH.RIGHT
    fp = section.footer.paragraphs[0]
    fp.text = "Prepared by {{ opportunity.owner }} · Confidential · {{ today }}"

    doc.add_picture(io.BytesIO(placeholder_picture()), width=Inches(1.8))
    docpr = doc.inline_shapes[0]._inline.docPr
    docpr.set("descr", "{{ company_logo }}")
    docpr.set("name", "Company logo")

    title = doc.add_heading(level=0)
    title.add_run("Proposal: ")
    # Split on purpose, as Word does after an edit: preflight merges it into the first (blue, bold) run.
    first = title.add_run("{{ opportu")
    first.bold = True
    first.font.color.rgb = RGBColor(0x24, 0x54, 0xA6)
    title.add_run("nity.name }}")

    doc.add_paragraph("Prepared for {{ account.name }} ({{ account.industry }}, {{ account.region }}) on {{ today }}.")

    doc.add_heading("Executive summary", level=1)
    doc.add_paragraph("{{ executive_summary }}")

    doc.add_heading("The opportunity", level=1)
    details = doc.add_table(rows=0, cols=2)
    details.style = doc.styles["Table Grid"]
    for label, value in (
        ("Opportunity", "{{ opportunity.name }}"),
        ("Stage", "{{ opportunity.stage }}"),
        ("Value", "{{ opportunity.amount }}"),
        ("Expected close", "{{ opportunity.close_date }}"),
        ("Account owner", "{{ opportunity.owner }}"),
    ):
        cells = details.add_row().cells
        cells[0].text = label
        cells[0].paragraphs[0].runs[0].bold = True
        cells[1].text = value

    doc.add_heading("What we will deliver", level=1)
    doc.add_paragraph("{{ deliverables }}", style="List Bullet")

    doc.add_heading("Pipeline with {{ account.name }}", level=1)
    pipeline = doc.add_table(rows=2, cols=4)
    pipeline.style = doc.styles["Table Grid"]
    for i, label in enumerate(("Opportunity", "Stage", "Amount", "Close date")):
        cell = pipeline.rows[0].cells[i]
        cell.text = label
        cell.paragraphs[0].runs[0].bold = True
    run = pipeline.rows[1].cells[0].paragraphs[0].add_run("{{ account_pipeline }}")
    run.font.size = Pt(10)

    doc.add_paragraph()
    doc.add_paragraph("Next step: {{ next_step }}")
    buf = io.BytesIO()
    doc.save(buf)
    return deterministic_zip(buf.getvalue())


def make_qbr() -> bytes:
    import pptx
    from pptx.chart.data import CategoryChartData
    from pptx.enum.chart import XL_CHART_TYPE, XL_LEGEND_POSITION
    from pptx.util import Emu, Inches, Pt

    prs = pptx.Presentation()
    prs.slide_width, prs.slide_height = Inches(13.333), Inches(7.5)
    props = prs.core_properties
    props.title, props.author, props.last_modified_by = "QBR template", "Castiel", "Castiel"
    props.created = props.modified = FIXED_TIME
    props.revision = 1

    def textbox(slide, text, x, y, w, h, size=18, bold=False, name=None):  # type: ignore[no-untyped-def]
        box = slide.shapes.add_textbox(Inches(x), Inches(y), Inches(w), Inches(h))
        if name:
            box.name = name
        box.text_frame.word_wrap = True
        run = box.text_frame.paragraphs[0].add_run()
        run.text = text
        run.font.size = Pt(size)
        run.font.bold = bold
        return box

    blank = prs.slide_layouts[6]

    s1 = prs.slides.add_slide(blank)
    textbox(s1, "Quarterly Business Review: {{ account.name }}", 0.7, 2.4, 11.5, 1.2, 36, True, "Title")
    textbox(s1, "{{ quarter }} · {{ account.industry }} · {{ account.region }}", 0.7, 3.7, 11.5, 0.8, 20,
            name="Subtitle")
    logo = s1.shapes.add_picture(io.BytesIO(placeholder_picture()), Inches(10.3), Inches(0.4), Inches(2.4))
    logo.name = "Logo"
    logo._element.nvPicPr.cNvPr.set("descr", "{{ company_logo }}")
    notes = "Open with {{ opportunity.owner }}: thank {{ account.name }} for the quarter."
    s1.notes_slide.notes_text_frame.text = notes

    s2 = prs.slides.add_slide(blank)
    textbox(s2, "Pipeline by stage", 0.7, 0.4, 11.5, 0.9, 30, True, "Title")
    data = CategoryChartData()
    data.categories = ["Prospecting", "Proposal", "Negotiation", "Closed Won"]
    data.add_series("amount", (100.0, 80.0, 60.0, 40.0))
    frame = s2.shapes.add_chart(XL_CHART_TYPE.COLUMN_CLUSTERED, Inches(0.7), Inches(1.4), Inches(11.5),
                                Inches(5.5), data)
    frame.name = "Pipeline chart"
    frame._element.nvGraphicFramePr.cNvPr.set("descr", "{{ pipeline_chart }}")
    chart = frame.chart
    chart.has_title = True
    chart.chart_title.text_frame.text = "Pipeline for {{ account.name }}"
    chart.has_legend = True
    chart.legend.position = XL_LEGEND_POSITION.BOTTOM
    chart.legend.include_in_layout = False

    s3 = prs.slides.add_slide(blank)
    textbox(s3, "Open opportunities", 0.7, 0.4, 11.5, 0.9, 30, True, "Title")
    tframe = s3.shapes.add_table(2, 4, Inches(0.7), Inches(1.5), Inches(11.5), Inches(0.8))
    tframe.name = "Pipeline table"
    table = tframe.table
    for i, label in enumerate(("Opportunity", "Stage", "Amount", "Close date")):
        table.cell(0, i).text = label
    table.cell(1, 0).text = "{{ account_pipeline }}"
    for i in range(4):
        for p in table.cell(1, i).text_frame.paragraphs:
            for r in p.runs:
                r.font.size = Pt(14)

    s4 = prs.slides.add_slide(blank)
    textbox(s4, "Highlights", 0.7, 0.4, 11.5, 0.9, 30, True, "Title")
    hl = textbox(s4, "{{ highlights }}", 0.7, 1.5, 7.0, 4.5, 20, name="Highlights")
    p = hl.text_frame.paragraphs[0]
    pPr = p._p.get_or_add_pPr()
    pPr.set("marL", str(Emu(Inches(0.3))))
    pPr.set("indent", str(-Emu(Inches(0.3))))
    bu = pPr.makeelement("{http://schemas.openxmlformats.org/drawingml/2006/main}buChar", {"char": "•"})
    pPr.append(bu)
    a = textbox(s4, "Largest deal: {{ opportunity.name }}", 8.2, 1.5, 4.4, 1.0, 18, True, "Deal name")
    b = textbox(s4, "Value: {{ opportunity.amount }} · closes {{ opportunity.close_date }}", 8.2, 2.6, 4.4, 1.2, 16,
                name="Deal value")
    group = s4.shapes.add_group_shape([a, b])
    group.name = "Deal card"

    buf = io.BytesIO()
    prs.save(buf)
    return deterministic_zip(buf.getvalue())


PROPOSAL_CONFIG = {
    "placeholders": {
        "company_logo": {"name": "company_logo", "type": "image",
                         "source": {"kind": "static", "value": "blob:templates/{tenant}/assets/castiel-logo.png"},
                         "description": "Our logo, from the template library assets"},
        "opportunity.name": {"name": "opportunity.name", "type": "text",
                             "source": {"kind": "crm", "path": "opportunity.name"},
                             "constraints": {"required": True, "max_length": 120}},
        "account.name": {"name": "account.name", "type": "text", "source": {"kind": "crm", "path": "account.name"},
                         "constraints": {"required": True, "max_length": 120}},
        "account.industry": {"name": "account.industry", "type": "text",
                             "source": {"kind": "crm", "path": "account.industry"}, "fallback": "your industry"},
        "account.region": {"name": "account.region", "type": "text",
                           "source": {"kind": "crm", "path": "account.region"}, "fallback": "all regions"},
        "today": {"name": "today", "type": "date", "source": {"kind": "crm", "path": "today"},
                  "constraints": {"date_format": "%d %B %Y"}},
        "executive_summary": {
            "name": "executive_summary", "type": "text",
            "source": {"kind": "llm", "prompt": "template_executive_summary",
                       "variables": {"account": "account.name", "industry": "account.industry",
                                     "opportunity": "opportunity.name", "amount": "opportunity.amount",
                                     "stage": "opportunity.stage"}},
            "constraints": {"max_length": 700},
            "fallback": "This proposal sets out how Castiel will help your team find the right content for every "
                        "deal, with answers grounded in your own documents and CRM.",
        },
        "opportunity.stage": {"name": "opportunity.stage", "type": "text",
                              "source": {"kind": "crm", "path": "opportunity.stage"}},
        "opportunity.amount": {"name": "opportunity.amount", "type": "currency",
                               "source": {"kind": "crm", "path": "opportunity.amount"},
                               "constraints": {"currency": "USD", "currency_path": "opportunity.currency",
                                               "number_format": ",.0f"},
                               "fallback": "to be agreed"},
        "opportunity.close_date": {"name": "opportunity.close_date", "type": "date",
                                   "source": {"kind": "crm", "path": "opportunity.close_date"},
                                   "constraints": {"date_format": "%d %B %Y"}, "fallback": "to be agreed"},
        "opportunity.owner": {"name": "opportunity.owner", "type": "text",
                              "source": {"kind": "crm", "path": "opportunity.owner"},
                              "fallback": "the Castiel account team"},
        "deliverables": {"name": "deliverables", "type": "list",
                         "source": {"kind": "static", "value": [
                             "Connectors to your CRM and document stores, synced every hour",
                             "Semantic search over proposals, case studies and call notes",
                             "Generated first drafts of proposals and QBR decks",
                             "An admin console with audit, quotas and usage"]}},
        "account_pipeline": {"name": "account_pipeline", "type": "table",
                             "source": {"kind": "crm", "path": "account.opportunities"},
                             "constraints": {"columns": ["name", "stage", "amount", "closeDate"],
                                             "headers": ["Opportunity", "Stage", "Amount", "Close date"],
                                             "number_format": ",.0f", "max_items": 25}},
        "next_step": {"name": "next_step", "type": "text",
                      "source": {"kind": "static", "value": "a 30-minute scoping call with your team"},
                      "constraints": {"max_length": 200}},
    }
}

QBR_CONFIG = {
    "placeholders": {
        "account.name": PROPOSAL_CONFIG["placeholders"]["account.name"],
        "account.industry": PROPOSAL_CONFIG["placeholders"]["account.industry"],
        "account.region": PROPOSAL_CONFIG["placeholders"]["account.region"],
        "company_logo": PROPOSAL_CONFIG["placeholders"]["company_logo"],
        "opportunity.owner": PROPOSAL_CONFIG["placeholders"]["opportunity.owner"],
        "opportunity.name": PROPOSAL_CONFIG["placeholders"]["opportunity.name"],
        "opportunity.amount": PROPOSAL_CONFIG["placeholders"]["opportunity.amount"],
        "opportunity.close_date": PROPOSAL_CONFIG["placeholders"]["opportunity.close_date"],
        "account_pipeline": PROPOSAL_CONFIG["placeholders"]["account_pipeline"],
        "quarter": {"name": "quarter", "type": "text", "source": {"kind": "crm", "path": "quarter"}},
        "pipeline_chart": {"name": "pipeline_chart", "type": "chart",
                           "source": {"kind": "crm", "path": "account.opportunities"},
                           "constraints": {"category_field": "stage", "value_fields": ["amount"],
                                           "aggregate": "sum", "chart_kind": "column"}},
        "highlights": {
            "name": "highlights", "type": "list",
            "source": {"kind": "llm", "prompt": "template_qbr_highlights",
                       "variables": {"account": "account.name", "opportunity": "opportunity.name",
                                     "stage": "opportunity.stage", "amount": "opportunity.amount"}},
            "constraints": {"max_length": 140, "max_items": 5},
            "fallback": ["Pipeline reviewed stage by stage", "Next steps agreed for the largest deal",
                         "Renewal and expansion plan for next quarter"],
        },
    }
}


def build(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "proposal.docx": make_proposal(),
        "qbr.pptx": make_qbr(),
        "castiel-logo.png": demo_logo(),
        "proposal.config.json": (json.dumps(PROPOSAL_CONFIG, indent=2, ensure_ascii=False) + "\n").encode(),
        "qbr.config.json": (json.dumps(QBR_CONFIG, indent=2, ensure_ascii=False) + "\n").encode(),
    }
    written = []
    for name, blob in files.items():
        path = out / name
        path.write_bytes(blob)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    for path in build(args.out):
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
