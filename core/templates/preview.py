"""Preview: LibreOffice headless converts a document to PDF, pdftoppm turns pages into PNG images.

Each process (and thread) uses its own LibreOffice profile directory: two conversions sharing a
profile collide (the second exits at once without output). The profile is reused across calls in
the same process because creating one costs seconds. Conversions run in their own process group
under a time limit and are killed whole when it passes. The preview says what it is: a LibreOffice
rendering, which can differ from Word or PowerPoint in fonts and line breaks.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import CastielError

INSTALL_HINT = ("install it with `apt-get install -y --no-install-recommends libreoffice-writer-nogui "
                "libreoffice-impress-nogui poppler-utils` (scripts/install-test-deps.sh does this)")


class PreviewUnavailable(CastielError):
    """The preview cannot be made here (LibreOffice or poppler missing, conversion failed or timed out)."""


@dataclass
class Preview:
    pdf: bytes = field(repr=False)
    pages: list[bytes] = field(repr=False)
    page_count: int
    seconds: float
    engine: str

    @property
    def label(self) -> str:
        shown = len(self.pages)
        more = f" (first {shown} of {self.page_count} pages)" if shown < self.page_count else ""
        return f"Preview rendered by {self.engine}; Word and PowerPoint may differ in fonts and line breaks{more}"


def soffice_path() -> str | None:
    return shutil.which("soffice") or shutil.which("libreoffice")


_version_cache: dict[str, str] = {}


def engine_name(binary: str) -> str:
    if binary not in _version_cache:
        try:
            out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout
            m = re.search(r"LibreOffice\s+([\d.]+)", out)
            _version_cache[binary] = f"LibreOffice {m.group(1)}" if m else "LibreOffice"
        except (OSError, subprocess.TimeoutExpired):
            _version_cache[binary] = "LibreOffice"
    return _version_cache[binary]


def _profile_dir() -> Path:
    base = Path(tempfile.gettempdir()) / f"castiel-lo-{os.getuid()}"
    path = base / f"profile-{os.getpid()}-{threading.get_ident()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run(cmd: list[str], timeout: float, what: str) -> subprocess.CompletedProcess[bytes]:
    """Run in a new process group; on timeout kill the whole group (soffice forks soffice.bin)."""
    env = dict(os.environ, SAL_USE_VCLPLUGIN="svp")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, env=env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # already gone
        proc.communicate()
        raise PreviewUnavailable(f"{what} took longer than {timeout:g} s and was stopped; the document may be "
                                 "very large, try again or preview a smaller template") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def to_pdf(data: bytes, kind: str, *, timeout: float = 60.0) -> bytes:
    binary = soffice_path()
    if binary is None:
        raise PreviewUnavailable(f"LibreOffice is not installed, so previews cannot be rendered; {INSTALL_HINT}")
    if kind not in {"docx", "pptx"}:
        raise PreviewUnavailable(f"no preview for {kind!r} files")
    with tempfile.TemporaryDirectory(prefix="castiel-preview-") as tmp:
        src = Path(tmp) / f"document.{kind}"
        src.write_bytes(data)
        outdir = Path(tmp) / "out"
        outdir.mkdir()
        cmd = [binary, f"-env:UserInstallation={_profile_dir().as_uri()}", "--headless", "--invisible",
               "--nologo", "--norestore", "--nolockcheck", "--nodefault", "--convert-to", "pdf",
               "--outdir", str(outdir), str(src)]
        res = _run(cmd, timeout, "LibreOffice conversion")
        pdf = outdir / "document.pdf"
        if not pdf.is_file():
            detail = (res.stderr or res.stdout or b"").decode(errors="replace").strip()[-400:]
            raise PreviewUnavailable(f"LibreOffice could not convert the document (exit {res.returncode}): "
                                     f"{detail or 'no output'}")
        return pdf.read_bytes()


def pdf_pages(pdf: bytes, *, dpi: int = 60, max_pages: int = 30, timeout: float = 60.0) -> tuple[list[bytes], int]:
    """PNG images of the first ``max_pages`` pages, and the document's page count."""
    pdftoppm, pdfinfo = shutil.which("pdftoppm"), shutil.which("pdfinfo")
    if pdftoppm is None:
        raise PreviewUnavailable(f"pdftoppm (poppler-utils) is not installed; {INSTALL_HINT}")
    with tempfile.TemporaryDirectory(prefix="castiel-pages-") as tmp:
        src = Path(tmp) / "document.pdf"
        src.write_bytes(pdf)
        total = 0
        if pdfinfo:
            info = _run([pdfinfo, str(src)], timeout, "pdfinfo")
            m = re.search(rb"^Pages:\s+(\d+)", info.stdout, re.M)
            total = int(m.group(1)) if m else 0
        res = _run([pdftoppm, "-png", "-r", str(dpi), "-f", "1", "-l", str(max_pages), str(src),
                    str(Path(tmp) / "page")], timeout, "pdftoppm")
        files = sorted(Path(tmp).glob("page-*.png"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
        if res.returncode != 0 or not files:
            raise PreviewUnavailable(f"pdftoppm could not render the PDF: {res.stderr.decode(errors='replace')[-300:]}")
        return [f.read_bytes() for f in files], max(total, len(files))


def render_preview(data: bytes, kind: str, *, timeout: float = 60.0, dpi: int = 60, max_pages: int = 30) -> Preview:
    """Document bytes -> PDF and page images, with the time it took and the engine that drew it."""
    started = time.perf_counter()
    pdf = to_pdf(data, kind, timeout=timeout)
    pages, total = pdf_pages(pdf, dpi=dpi, max_pages=max_pages, timeout=timeout)
    binary = soffice_path() or "soffice"
    return Preview(pdf=pdf, pages=pages, page_count=total, seconds=time.perf_counter() - started,
                   engine=engine_name(binary))
