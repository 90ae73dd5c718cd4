"""Preview with the real LibreOffice and pdftoppm: pages as PNG, parallel profiles, time limit, missing binary."""

from __future__ import annotations

import io
import os
import shutil
import stat
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from core.templates import preview as preview_mod
from core.templates.preflight import preflight
from core.templates.preview import PreviewUnavailable, render_preview
from tests.unit.templates.tpl_builders import demo, pptx_textbox

needs_libreoffice = pytest.mark.skipif(
    shutil.which("soffice") is None or shutil.which("pdftoppm") is None,
    reason="LibreOffice/poppler not installed (scripts/install-test-deps.sh installs them)",
)


@needs_libreoffice
def test_docx_preview_gives_pdf_and_page_images() -> None:
    tpl = preflight(demo("proposal.docx"), "proposal.docx").normalised
    assert tpl is not None
    p = render_preview(tpl, "docx", dpi=40)
    assert p.pdf.startswith(b"%PDF") and p.page_count >= 1 and len(p.pages) == p.page_count
    img = Image.open(io.BytesIO(p.pages[0]))
    assert img.format == "PNG" and img.height > img.width  # a portrait A4/Letter page
    assert p.engine.startswith("LibreOffice") and "LibreOffice" in p.label


@needs_libreoffice
def test_parallel_conversions_use_separate_profiles() -> None:
    decks = [pptx_textbox(f"Slide text {i}") for i in range(2)]
    results: list[object] = [None, None]

    def run(i: int) -> None:
        try:
            results[i] = render_preview(decks[i], "pptx", dpi=30, max_pages=1)
        except Exception as e:  # noqa: BLE001 - the assertion below shows it
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        assert not isinstance(r, Exception), r
        assert r.page_count == 1  # type: ignore[union-attr]
        assert Image.open(io.BytesIO(r.pages[0])).width > Image.open(io.BytesIO(r.pages[0])).height  # type: ignore[union-attr]


def test_missing_libreoffice_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preview_mod, "soffice_path", lambda: None)
    with pytest.raises(PreviewUnavailable, match="LibreOffice is not installed.*apt-get install"):
        render_preview(b"PK", "docx")


def test_time_limit_kills_the_whole_conversion(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    script = tmp_path / "slow-soffice"
    # forks a child the way soffice forks soffice.bin, then hangs
    script.write_text(f"#!/bin/sh\nsleep 60 &\necho $! > {pidfile}\nwait\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(preview_mod, "soffice_path", lambda: str(script))
    started = time.monotonic()
    with pytest.raises(PreviewUnavailable, match="longer than 1 s"):
        preview_mod.to_pdf(b"PK", "docx", timeout=1)
    assert time.monotonic() - started < 15
    child = int(pidfile.read_text().strip())
    for _ in range(50):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the forked child survived the time limit")
