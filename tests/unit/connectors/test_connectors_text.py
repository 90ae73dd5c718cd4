"""Text extraction and value normalisers shared by the connectors."""

from __future__ import annotations

import io

import pytest

from connectors.text import (
    DOCX,
    PPTX,
    as_date,
    as_float,
    as_timestamp,
    extract_text,
    mime_for_name,
    title_from_text,
)
from core.errors import DataError


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-05-01T10:00:00.000+0000", "2024-05-01T10:00:00.000000Z"),  # Salesforce
        ("2024-05-01T12:00:00+02:00", "2024-05-01T10:00:00.000000Z"),
        ("2024-05-01T10:00:00.1234567Z", "2024-05-01T10:00:00.123456Z"),  # OData 7 digits
        ("2024-05-01T10:00:00Z", "2024-05-01T10:00:00.000000Z"),
        (1714557600000, "2024-05-01T10:00:00.000000Z"),  # epoch ms
        ("1714557600.000100", "2024-05-01T10:00:00.000100Z"),  # Slack ts
    ],
)
def test_timestamps_normalise_to_the_core_clock_format(raw, expected):
    assert as_timestamp(raw, "t") == expected


def test_bad_values_raise_data_errors_naming_the_field():
    with pytest.raises(DataError, match="Amount 'abc' is not a number"):
        as_float("abc", "Amount")
    with pytest.raises(DataError, match="CloseDate"):
        as_date("31/12/2024", "CloseDate")
    with pytest.raises(DataError, match="modified"):
        as_timestamp("yesterday", "modified")
    assert as_float("1,250.50", "Amount") == 1250.5
    assert as_float("", "Amount") is None


def test_html_loses_markup_and_scripts():
    html = b"<html><head><script>alert(1)</script></head><body><h1>Plan</h1><p>Grow</p></body></html>"
    text = extract_text(html, "text/html")
    assert "Plan" in text and "Grow" in text and "alert" not in text


def test_docx_and_pptx_text_is_read():
    import docx
    import pptx

    buf = io.BytesIO()
    d = docx.Document()
    d.add_paragraph("Renewal terms agreed")
    d.save(buf)
    assert "Renewal terms agreed" in extract_text(buf.getvalue(), DOCX)
    buf = io.BytesIO()
    deck = pptx.Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[1])
    slide.shapes.title.text = "Quarterly review"
    deck.save(buf)
    assert "Quarterly review" in extract_text(buf.getvalue(), PPTX)


def test_broken_documents_are_data_errors_and_unknown_types_yield_no_text():
    with pytest.raises(DataError, match="docx"):
        extract_text(b"not a zip", DOCX, "deck.docx")
    with pytest.raises(DataError, match="JSON"):
        extract_text(b"{nope", "application/json")
    assert extract_text(b"%PDF-1.7", "application/pdf") == ""


def test_titles_and_types():
    assert title_from_text("\n# Contoso plan\nbody", "f") == "Contoso plan"
    assert title_from_text("Call summary: Fabrikam\n\nx", "f", markdown=False) == "Call summary: Fabrikam"
    assert title_from_text("", "fallback") == "fallback"
    assert mime_for_name("Notes.MD") == "text/markdown"
    assert mime_for_name("x.bin") == "application/octet-stream"
