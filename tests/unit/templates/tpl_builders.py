"""Builders for template test inputs: small .docx/.pptx files, package surgery, hostile payloads."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path

from PIL import Image

DATA = Path(__file__).resolve().parents[3] / "data" / "templates"


def demo(name: str) -> bytes:
    return (DATA / name).read_bytes()


def png(w: int = 40, h: int = 20, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, format="PNG")
    return buf.getvalue()


def docx_with(build: Callable[[object], None]) -> bytes:
    import docx

    doc = docx.Document()
    build(doc)
    buf = io.BytesIO()
    doc.save(buf)
    return buf.getvalue()


def docx_paragraphs(*texts: str) -> bytes:
    def build(doc: object) -> None:
        for t in texts:
            doc.add_paragraph(t)  # type: ignore[attr-defined]

    return docx_with(build)


def pptx_with(build: Callable[[object], None]) -> bytes:
    import pptx

    prs = pptx.Presentation()
    build(prs)
    buf = io.BytesIO()
    prs.save(buf)
    return buf.getvalue()


def pptx_textbox(*texts: str) -> bytes:
    from pptx.util import Inches

    def build(prs: object) -> None:
        slide = prs.slides.add_slide(prs.slide_layouts[6])  # type: ignore[attr-defined]
        for i, t in enumerate(texts):
            box = slide.shapes.add_textbox(Inches(1), Inches(1 + i), Inches(6), Inches(1))
            box.name = f"Box {i + 1}"
            box.text_frame.text = t

    return pptx_with(build)


def members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n: z.read(n) for n in z.namelist()}


def rezip(data: bytes, replace: dict[str, bytes] | None = None, add: dict[str, bytes] | None = None,
          transform: dict[str, Callable[[str], str]] | None = None) -> bytes:
    """Copy a package, replacing, transforming (as text) or adding members."""
    replace, add, transform = replace or {}, add or {}, transform or {}
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for name in src.namelist():
            blob = replace.get(name, src.read(name))
            if name in transform:
                blob = transform[name](blob.decode("utf-8")).encode("utf-8")
            dst.writestr(name, blob)
        for name, blob in add.items():
            dst.writestr(name, blob)
    return out.getvalue()


def member_text(data: bytes, name: str) -> str:
    return members(data)[name].decode("utf-8")
