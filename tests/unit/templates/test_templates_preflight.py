"""Preflight: the demo templates pass with every placeholder located; each bad input is refused with a reason."""

from __future__ import annotations

import io
import zipfile

import pytest
from lxml import etree

from core.templates.ooxml import NS, scan_tags
from core.templates.preflight import PreflightLimits, preflight
from tests.unit.templates.tpl_builders import (
    demo,
    docx_paragraphs,
    docx_with,
    member_text,
    members,
    pptx_textbox,
    pptx_with,
    rezip,
)

VML_TEXTBOX = (
    '<w:p><w:r><w:pict><v:shape xmlns:v="urn:schemas-microsoft-com:vml" style="width:200pt;height:50pt">'
    "<v:textbox><w:txbxContent><w:p><w:r><w:t>Box: {{ box_value }}</w:t></w:r></w:p></w:txbxContent></v:textbox>"
    "</v:shape></w:pict></w:r></w:p>"
)


def codes(report) -> list[str]:  # type: ignore[no-untyped-def]
    return [i.code for i in report.errors]


def test_demo_proposal_is_accepted_with_every_location() -> None:
    r = preflight(demo("proposal.docx"), "proposal.docx")
    assert r.accepted, r.issues
    assert r.kind == "docx"
    wheres = {u.where for u in r.uses}
    assert {"body", "table", "header", "footer", "alt_text"} <= wheres
    logo = next(u for u in r.uses if u.name == "company_logo")
    assert logo.context == "picture"
    pipeline = next(u for u in r.uses if u.name == "account_pipeline")
    assert pipeline.context == "table_row" and "table 2, row 2, cell 1" in pipeline.location
    assert next(u for u in r.uses if u.name == "deliverables").context == "paragraph"
    # the title's placeholder was split over two runs in the file and is merged into the first (bold) one
    assert r.merged_splits == 1
    assert r.to_dict()["accepted"] is True and "normalised" not in r.to_dict()


def test_demo_deck_finds_notes_groups_tables_charts() -> None:
    r = preflight(demo("qbr.pptx"), "qbr.pptx")
    assert r.accepted, r.issues
    by_where = {(u.name, u.where) for u in r.uses}
    assert ("opportunity.owner", "notes") in by_where
    assert ("account.name", "chart") in by_where  # the chart title
    assert ("opportunity.name", "group") in by_where
    assert ("account_pipeline", "slide_table") in by_where
    chart = next(u for u in r.uses if u.name == "pipeline_chart")
    assert chart.context == "chart" and chart.location.startswith("slide 2")
    grouped = next(u for u in r.uses if u.name == "opportunity.name" and u.where == "group")
    assert "group 'Deal card'" in grouped.location and "slide 4" in grouped.location


def test_split_placeholder_is_merged_into_first_run_keeping_its_formatting() -> None:
    def build(doc: object) -> None:
        p = doc.add_paragraph("Dear ")  # type: ignore[attr-defined]
        a = p.add_run("{{ cust")
        a.bold = True
        p.add_run("omer.na")
        p.add_run("me }}, hello")

    r = preflight(docx_with(build), "split.docx")
    assert r.accepted and r.placeholders == ["customer.name"] and r.merged_splits == 1
    root = etree.fromstring(members(r.normalised)["word/document.xml"])  # type: ignore[arg-type]
    runs = root.findall(".//w:r", NS)
    bold_run = next(x for x in runs if x.find("w:rPr/w:b", NS) is not None)
    assert bold_run.findtext("w:t", namespaces=NS) == "{{ customer.name }}"
    texts = [x.findtext("w:t", namespaces=NS) for x in runs]
    assert texts == ["Dear ", "{{ customer.name }}", "", ", hello"]


def test_split_placeholder_in_a_slide_is_merged() -> None:
    from pptx.util import Inches

    def build(prs: object) -> None:
        slide = prs.slides.add_slide(prs.slide_layouts[6])  # type: ignore[attr-defined]
        p = slide.shapes.add_textbox(Inches(1), Inches(1), Inches(5), Inches(1)).text_frame.paragraphs[0]
        for piece in ("{{ acc", "ount.", "name }}"):
            p.add_run().text = piece

    r = preflight(pptx_with(build), "split.pptx")
    assert r.accepted and r.placeholders == ["account.name"] and r.merged_splits == 1
    assert "<a:t>{{ account.name }}</a:t>" in member_text(r.normalised, "ppt/slides/slide1.xml")  # type: ignore[arg-type]


def test_text_box_placeholder_is_found_with_location() -> None:
    base = docx_paragraphs("Intro {{ intro }}")
    data = rezip(base, transform={"word/document.xml": lambda s: s.replace("<w:sectPr", VML_TEXTBOX + "<w:sectPr", 1)})
    r = preflight(data, "box.docx")
    assert r.accepted, r.issues
    box = next(u for u in r.uses if u.name == "box_value")
    assert box.where == "textbox" and "paragraph 2" in box.location and "text box" in box.location


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("Hello {{ name", "never closed"),
        ("Hello name }} there", "without an opening"),
        ("Empty {{ }} here", "empty placeholder"),
        ("Bad {{ first name! }}", "not allowed"),
        ("Logic {% if x %}yes{% endif %}", "template logic"),
        ("Extra {{{ name }}}", "extra braces"),
    ],
)
def test_malformed_tags_are_reported_with_their_paragraph(text: str, needle: str) -> None:
    r = preflight(docx_paragraphs("Fine {{ ok }}", text), "bad.docx")
    assert not r.accepted and r.normalised is None
    bad = [i for i in r.errors if i.code == "malformed_tag"]
    assert bad and needle in bad[0].message
    assert bad[0].location == "paragraph 2"


def test_malformed_tag_in_a_slide_names_slide_and_shape() -> None:
    r = preflight(pptx_textbox("Fine {{ ok }}", "Broken {{ oops"), "bad.pptx")
    bad = next(i for i in r.errors if i.code == "malformed_tag")
    assert bad.location == "slide 1, shape 'Box 2', paragraph 1"


def test_scan_tags_handles_mixed_good_and_bad() -> None:
    tags = scan_tags("{{ a }} and {{ b.c }} but {{ d e }} and }}")
    assert [t.name for t in tags] == ["a", "b.c", None, None]


def test_no_placeholders_is_refused() -> None:
    r = preflight(docx_paragraphs("Just a letter", "with no fields"), "plain.docx")
    assert codes(r) == ["no_placeholders"]


def test_corrupt_zip_is_refused() -> None:
    data = demo("proposal.docx")
    r = preflight(data[: len(data) // 2], "truncated.docx")
    assert codes(r) == ["corrupt_zip"] and not r.accepted
    flipped = bytearray(data)
    # damage compressed bytes of the first member, past its local header
    for i in range(200, 260):
        flipped[i] ^= 0xFF
    r2 = preflight(bytes(flipped), "flipped.docx")
    assert not r2.accepted and codes(r2)[0] in {"corrupt_zip", "corrupt_xml"}


def test_zip_bomb_is_stopped_by_bytes_actually_inflated() -> None:
    base = docx_paragraphs("{{ x }}")
    bomb = rezip(base, add={"word/media/filler.bin": b"\0" * (64 * 1024 * 1024)})
    assert len(bomb) < 200_000
    r = preflight(bomb, "bomb.docx")
    assert codes(r) == ["zip_bomb"]
    assert "inflates" in r.errors[0].message
    # stopped as soon as the ratio passed the cap: far less than the 64 MB was inflated
    assert r.inflated_bytes < 4 * 1024 * 1024


def test_total_inflated_cap_applies_even_at_normal_ratios() -> None:
    base = docx_paragraphs("{{ x }}")
    r = preflight(base, "x.docx", PreflightLimits(max_inflated_bytes=10_000))
    assert codes(r) == ["zip_bomb"]


def test_lying_zip_header_is_corrupt_not_trusted() -> None:
    """A member whose header claims a small size but inflates to more is caught, not silently cut."""
    base = docx_paragraphs("{{ x }}")
    data = bytearray(rezip(base, add={"word/media/x.bin": b"A" * 50_000}))
    pos = data.find(b"PK\x01\x02")  # walk the central directory to the member's entry
    while pos >= 0:
        name_len = int.from_bytes(data[pos + 28 : pos + 30], "little")
        if data[pos + 46 : pos + 46 + name_len] == b"word/media/x.bin":
            data[pos + 24 : pos + 28] = (100).to_bytes(4, "little")  # claim 100 bytes uncompressed
        pos = data.find(b"PK\x01\x02", pos + 4)
    r = preflight(bytes(data), "liar.docx")
    assert not r.accepted and codes(r) == ["corrupt_zip"]


@pytest.mark.parametrize("name", ["report.docm", "deck.pptm"])
def test_macro_enabled_extensions_are_refused(name: str) -> None:
    r = preflight(demo("proposal.docx"), name)
    assert codes(r) == ["macro_enabled"]


def test_vba_project_inside_a_docx_is_refused() -> None:
    data = rezip(docx_paragraphs("{{ x }}"), add={"word/vbaProject.bin": b"\xd0\xcf\x11\xe0" + b"\0" * 100})
    r = preflight(data, "innocent.docx")
    assert "macro_enabled" in codes(r) and "vbaProject.bin" in r.errors[0].message


def test_macro_enabled_package_renamed_to_docx_is_refused() -> None:
    docx_ct = "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"
    docm_ct = "application/vnd.ms-word.document.macroEnabled.main+xml"
    data = rezip(docx_paragraphs("{{ x }}"), transform={"[Content_Types].xml": lambda s: s.replace(docx_ct, docm_ct)})
    r = preflight(data, "renamed.docx")
    assert "wrong_kind" in codes(r) and "macro_enabled" in codes(r)


@pytest.mark.parametrize(
    ("payload", "what"),
    [(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n", "PDF"),
     (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 200, "97-2003"),
     (b"\x89PNG\r\n\x1a\n" + b"\0" * 50, "PNG"),
     (b"hello, this is plain text", "not an Office package")],
)
def test_renamed_non_docx_is_named_for_what_it_is(payload: bytes, what: str) -> None:
    r = preflight(payload, "contract.docx")
    assert codes(r) == ["not_a_package"] and what in r.errors[0].message


def test_other_office_kind_renamed_is_refused() -> None:
    r = preflight(demo("qbr.pptx"), "qbr.docx")
    assert codes(r) == ["wrong_kind"] and "PowerPoint" in r.errors[0].message
    plain_zip = io.BytesIO()
    with zipfile.ZipFile(plain_zip, "w") as z:
        z.writestr("readme.txt", "hi")
    r2 = preflight(plain_zip.getvalue(), "x.docx")
    assert codes(r2) == ["not_a_package"]


@pytest.mark.parametrize(
    "doctype",
    [
        '<!DOCTYPE w:document [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
        '<!DOCTYPE w:document [<!ENTITY xxe SYSTEM "http://127.0.0.1:9/steal">]>',
        '<!DOCTYPE w:document [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]>',
    ],
)
def test_xxe_and_entity_payloads_are_refused(doctype: str) -> None:
    def inject(s: str) -> str:
        head, _, rest = s.partition("?>")
        return head + "?>" + doctype + rest.replace("{{ x }}", "{{ x }}&xxe;" if "xxe" in doctype else "&b;")

    data = rezip(docx_paragraphs("{{ x }}"), transform={"word/document.xml": inject})
    r = preflight(data, "xxe.docx")
    assert codes(r) == ["xml_doctype"] and r.errors[0].location == "word/document.xml"
    assert r.normalised is None


def test_external_linked_image_is_refused() -> None:
    def add_rel(s: str) -> str:
        return s.replace("</Relationships>", '<Relationship Id="rIdX" Type="http://schemas.openxmlformats.org/'
                         'officeDocument/2006/relationships/image" Target="http://169.254.169.254/latest" '
                         'TargetMode="External"/></Relationships>')

    data = rezip(docx_paragraphs("{{ x }}"), transform={"word/_rels/document.xml.rels": add_rel})
    r = preflight(data, "linked.docx")
    assert codes(r) == ["external_link"] and "169.254.169.254" in r.errors[0].message


def test_size_limit_is_enforced_before_unzipping() -> None:
    r = preflight(demo("proposal.docx"), "proposal.docx", PreflightLimits(max_upload_bytes=1000))
    assert codes(r) == ["too_large"] and r.inflated_bytes == 0


def test_legacy_and_unknown_extensions() -> None:
    assert codes(preflight(b"x", "old.doc")) == ["legacy_format"]
    assert codes(preflight(b"x", "notes.txt")) == ["unsupported_type"]


def test_placeholder_only_in_a_layout_is_a_warning() -> None:
    data = pptx_textbox("{{ title }}")

    def add_to_layout(s: str) -> str:
        return s.replace("</p:spTree>", '<p:sp><p:nvSpPr><p:cNvPr id="99" name="Footer text"/><p:cNvSpPr/><p:nvPr/>'
                         '</p:nvSpPr><p:spPr/><p:txBody><a:bodyPr/><a:p><a:r><a:t>{{ layout_only }}</a:t></a:r>'
                         "</a:p></p:txBody></p:sp></p:spTree>", 1)

    data = rezip(data, transform={"ppt/slideLayouts/slideLayout7.xml": add_to_layout})
    r = preflight(data, "layout.pptx")
    assert r.accepted and r.placeholders == ["title"]
    warn = next(i for i in r.warnings if i.code == "placeholder_in_layout")
    assert "{{ layout_only }}" in warn.message and "slideLayout7.xml" in warn.location
