"""Run the real app under AppTest as a given principal and open one page."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from app import state
from core.services.access import Principal

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")


def open_page(
    page_key: str | None,
    principal: Principal | None,
    tenant: str | None = None,
    query: dict[str, str] | None = None,
    timeout: float = 60,
) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=timeout)
    if principal is not None:
        at.session_state[state.PRINCIPAL] = principal
    if tenant is not None:
        at.session_state[state.TENANT] = tenant
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.run()
    if page_key is not None and principal is not None:
        at.switch_page(f"pages/{page_key}.py")
        at.run()
    return at


def texts(at: AppTest) -> str:
    """All visible text of errors, warnings, markdown, titles and captions, for assertions."""
    parts = []
    for kind in ("error", "warning", "info", "success", "markdown", "title", "header", "subheader", "caption"):
        parts += [str(getattr(e, "value", "")) for e in getattr(at, kind)]
    return "\n".join(parts)


def not_authorised(at: AppTest) -> bool:
    return any("Not authorised" in str(e.value) for e in at.error)
