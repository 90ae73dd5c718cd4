"""The Google Docs/Slides path driven by google-api-python-client against the local Drive/Docs/Slides fake."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from core.adapters.google_templates import GoogleTemplates
from core.errors import Invalid, NotFound, RateLimited
from core.templates.images import validate_image
from core.templates.values import ChartValue, ImageValue, TableValue
from tests.fakes.google_docs_server import DOC_MIME, GoogleFake
from tests.unit.templates.tpl_builders import png

LOGO = validate_image(png(60, 20))


@pytest.fixture
def fake() -> Iterator[GoogleFake]:
    f = GoogleFake().start()
    f.add_document("doc-1", "Proposal template", [
        "Proposal for {{ account.name }}",
        "Value: {{opportunity.amount}} closing {{ opportunity.close_date }}",
        "{{ logo }}",
        [[["Owner"], ["{{ opportunity.owner }}"]], [["Stage"], ["{{ opportunity.stage }}"]]],
        "Deliverables:",
        "{{ deliverables }}",
    ], headers={"kix.h1": ["{{ account.name }} confidential"]})
    f.add_presentation("deck-1", "QBR template", [
        [{"objectId": "t1", "title": "Title", "kind": "shape", "text": ["QBR: {{ account.name }}"]}],
        [{"objectId": "c1", "title": "Chart box", "kind": "shape", "text": ["{{ pipeline_chart }}"]},
         {"objectId": "g1", "title": "Card", "kind": "group", "children": [
             {"objectId": "s9", "title": "Deal", "kind": "shape", "text": ["Deal: {{ opportunity.name }}"]}]},
         {"objectId": "tb", "title": "Grid", "kind": "table", "rows": [[["Stage"], ["{{ opportunity.stage }}"]]]}],
    ])
    yield f
    f.stop()


@pytest.fixture
def google(fake: GoogleFake) -> GoogleTemplates:
    return GoogleTemplates(api_endpoint=fake.url)


def serve(fake: GoogleFake):  # type: ignore[no-untyped-def]
    def image_url(name: str, image: ImageValue) -> str:
        return fake.put_image(f"{name}.png", image.data)

    return image_url


VALUES = {
    "account.name": "Acme & Co", "opportunity.amount": "$5,000", "opportunity.close_date": "30 Sep 2025",
    "opportunity.owner": "Dana", "opportunity.stage": "Proposal", "opportunity.name": "Expansion",
    "deliverables": ["Search", "Drafts"], "logo": LOGO,
    "pipeline_chart": ChartValue(categories=["A", "B"], series=[("Amount", [1.0, 2.0])]),
}


def test_scan_finds_placeholders_in_body_tables_headers(google: GoogleTemplates) -> None:
    scan = google.scan("doc-1")
    assert scan.file.kind == "gdoc"
    assert set(scan.placeholders) == {"account.name", "opportunity.amount", "opportunity.close_date", "logo",
                                      "opportunity.owner", "opportunity.stage", "deliverables"}
    locs = {(n, loc) for n, _raw, loc in scan.uses}
    assert ("opportunity.owner", "table row 1, cell 2, paragraph 1") in locs
    assert ("account.name", "header kix.h1, paragraph 1") in locs


def test_scan_reports_malformed_tags(fake: GoogleFake, google: GoogleTemplates) -> None:
    fake.add_document("bad", "Bad", ["Fine {{ ok }}", "Broken {{ nope"])
    scan = google.scan("bad")
    assert scan.placeholders == ["ok"]
    assert scan.problems and "never closed" in scan.problems[0][0] and scan.problems[0][1] == "paragraph 2"


def test_generate_doc_copies_then_fills_the_copy(fake: GoogleFake, google: GoogleTemplates) -> None:
    out = google.generate("doc-1", VALUES, title="Proposal - Acme", image_url=serve(fake))
    assert out.file.id != "doc-1" and out.file.name == "Proposal - Acme" and out.file.url.endswith("/edit")
    copy_doc = fake.files[out.file.id]["item"]
    body_text = [b for b in copy_doc.body if isinstance(b, str)]
    assert "Proposal for Acme & Co" in body_text
    assert "Value: $5,000 closing 30 Sep 2025" in body_text  # '{{opportunity.amount}}' spelling found too
    assert "Search" in body_text and "Drafts" in body_text  # the list became paragraphs
    assert copy_doc.body[3] == [[["Owner"], ["Dana"]], [["Stage"], ["Proposal"]]]
    assert copy_doc.headers["kix.h1"] == ["Acme & Co confidential"]
    assert list(copy_doc.inline.values()) == [fake.url + "/_images/logo.png"]  # the picture replaced the tag
    # the template itself is untouched
    assert "Proposal for {{ account.name }}" in fake.files["doc-1"]["item"].body
    assert ("POST", "/drive/v3/files/doc-1/copy") in fake.requests


def test_generate_slides_replaces_text_and_shapes_with_images(fake: GoogleFake, google: GoogleTemplates) -> None:
    out = google.generate("deck-1", VALUES, title="QBR - Acme", image_url=serve(fake))
    deck = fake.files[out.file.id]["item"]
    assert deck.slides[0][0]["text"] == ["QBR: Acme & Co"]
    assert deck.slides[1][0]["kind"] == "image" and deck.slides[1][0]["url"].endswith("pipeline_chart.png")
    assert validate_image(fake.images["pipeline_chart.png"][1]).format == "PNG"  # the chart drawn as a picture
    assert deck.slides[1][1]["children"][0]["text"] == ["Deal: Expansion"]
    assert deck.slides[1][2]["rows"][0][1] == ["Proposal"]
    assert out.occurrences >= 4


def test_image_url_that_is_not_an_image_fails_and_leaves_no_copy(fake: GoogleFake, google: GoogleTemplates) -> None:
    def bad_url(name: str, image: ImageValue) -> str:
        return fake.put_image(f"{name}.png", b"<html>login page</html>", "image/png")

    before = set(fake.files)
    with pytest.raises(Invalid, match="problem retrieving the image"):
        google.generate("deck-1", VALUES, title="QBR", image_url=bad_url)
    assert set(fake.files) == before  # the half-made copy was deleted


def test_missing_value_fails_before_anything_is_filled(fake: GoogleFake, google: GoogleTemplates) -> None:
    values = dict(VALUES)
    del values["opportunity.stage"]
    before = set(fake.files)
    with pytest.raises(Invalid, match="opportunity.stage"):
        google.generate("doc-1", values, title="x", image_url=serve(fake))
    assert set(fake.files) == before


def test_tables_as_text_lines_and_export(fake: GoogleFake, google: GoogleTemplates) -> None:
    fake.add_document("doc-t", "T", ["{{ rows }}"])
    out = google.generate("doc-t", {"rows": TableValue(["Deal", "Amount"], [["A", "1"], ["B", "2"]])},
                          title="t", image_url=serve(fake))
    assert fake.files[out.file.id]["item"].body[:3] == ["Deal\tAmount", "A\t1", "B\t2"]
    assert google.export_pdf(out.file.id).startswith(b"%PDF")


def test_errors_map_to_the_error_tree(fake: GoogleFake, google: GoogleTemplates) -> None:
    with pytest.raises(NotFound, match="not shared"):
        google.scan("nope")
    fake.add_other("sheet", "Budget", "application/vnd.google-apps.spreadsheet")
    with pytest.raises(Invalid, match="link a Google Doc"):
        google.scan("sheet")
    fake.fail_next = [(429, "Quota exceeded")] * 3
    with pytest.raises(RateLimited):
        google.get_file("doc-1")
    assert fake.files["doc-1"]["mimeType"] == DOC_MIME
