"""Overview, Alerts and Telemetry screens' data shaping: service results -> frames and column configs.

No widgets here, so the pages, their AppTests and the overview benchmark build the same frames.
Link cells carry their display text after a ``#`` in the URL; the LinkColumn shows it through
its ``display_text`` pattern, so every cell reads as a value and opens the screen behind it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote

import pandas as pd
import streamlit as st

from core.services.overview import COLUMNS, Cell, Overview, TenantRow

STATUS_MARK = {"bad": "🔴", "warn": "🟠", "ok": "", "unset": ""}
SORTS: dict[str, str] = {"attention": "Needs attention first", "tenant": "Tenant name",
                         **{key: label for key, label in COLUMNS}}
FILTERS = ("All tenants", "Needing attention", "With open alerts", "With a feature not set up")
_LINK_TEXT = r".*#(.+)$"


def cell_url(cell: Cell | None) -> str | None:
    if cell is None or cell.link is None:
        return None
    return link_with_text(cell.link, f"{STATUS_MARK.get(cell.status, '')} {cell.text}".lstrip())


def link_with_text(url: str, text: str) -> str:
    """``url`` carrying the text a LinkColumn with ``_LINK_TEXT`` shows for it.

    The grid shows decodeURIComponent of what follows the last "#" (with "+" read as a space), so the
    text goes in percent-encoded: a bare "%" would not decode and the grid would show the whole URL.
    """
    return f"{url}#{quote(text, safe=' ')}"


def filter_rows(rows: Sequence[TenantRow], search: str = "", show: str = FILTERS[0]) -> list[TenantRow]:
    text = search.strip().lower()
    out = []
    for r in rows:
        if text and text not in r.tenant_id.lower() and text not in r.name.lower():
            continue
        statuses = [c.status for c in r.cells.values()]
        if show == FILTERS[1] and not any(s in ("bad", "warn") for s in statuses):
            continue
        if show == FILTERS[2] and not (r.cells.get("alerts") and (r.cells["alerts"].value or 0) > 0):
            continue
        if show == FILTERS[3] and not any(c.text == "not set up" for c in r.cells.values()):
            continue
        out.append(r)
    return out


def sort_rows(rows: Sequence[TenantRow], by: str = "attention", descending: bool = True) -> list[TenantRow]:
    if by == "attention":
        return sorted(rows, key=lambda r: (-r.attention if descending else r.attention, r.tenant_id))
    if by == "tenant":
        return sorted(rows, key=lambda r: r.name.lower(), reverse=descending)

    def key(r: TenantRow) -> tuple[int, float]:
        c = r.cells.get(by)
        v = c.value if c is not None else None
        # Tenants without a value go last whichever the direction.
        return (1, 0.0) if v is None else (0, -v if descending else v)

    return sorted(rows, key=key)


def tenant_frame(rows: Iterable[TenantRow]) -> pd.DataFrame:
    records = []
    for r in rows:
        rec: dict[str, Any] = {"Tenant": r.name + (" (demo)" if r.demo and "demo" not in r.name.lower() else ""),
                               "Tenant id": r.tenant_id}
        for key, label in COLUMNS:
            rec[label] = cell_url(r.cells.get(key))
        records.append(rec)
    return pd.DataFrame(records, columns=["Tenant", "Tenant id", *[label for _, label in COLUMNS]])


def tenant_column_config() -> dict[str, Any]:
    cfg: dict[str, Any] = {"Tenant": st.column_config.TextColumn("Tenant", pinned=True),
                           "Tenant id": st.column_config.TextColumn("Tenant id", width="small")}
    for _, label in COLUMNS:
        cfg[label] = st.column_config.LinkColumn(label, display_text=_LINK_TEXT)
    return cfg


def kpi_frame(ov: Overview) -> pd.DataFrame:
    return pd.DataFrame([{"kpi": k.label, "value": k.value, "detail": k.help, "status": k.status} for k in ov.kpis])


def alert_feed_frame(alerts: Iterable[dict[str, Any]], limit: int = 15) -> pd.DataFrame:
    rows = []
    for a in list(alerts)[:limit]:
        mark = {"critical": "🔴", "warning": "🟠", "info": "🔵"}.get(a.get("severity", ""), "")
        tenant = a["tenantId"]
        link = a.get("link") or "alerts"
        rows.append({
            "severity": f"{mark} {a.get('severity', '')}",
            "alert": link_with_text(f"./alerts?tenant={tenant}&alert={a['id']}", a["title"]),
            "tenant": tenant,
            "subject": a.get("subjectLabel") or a.get("subject") or "",
            "since": a.get("openedAt", "")[:16].replace("T", " "),
            "status": a["status"] + (" · silenced" if a.get("silencedUntil") else ""),
            "open": link_with_text(link if link.startswith(("./", "http")) else f"./{link}", "open"),
        })
    return pd.DataFrame(rows, columns=["severity", "alert", "tenant", "subject", "since", "status", "open"])


def alert_feed_config() -> dict[str, Any]:
    return {
        "alert": st.column_config.LinkColumn("Alert", display_text=_LINK_TEXT),
        "open": st.column_config.LinkColumn("Where", display_text=_LINK_TEXT, width="small"),
    }


def alerts_frame(alerts: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Active alerts or history on the Alerts screen (also the CSV export)."""
    from core.observability.alerts import format_value

    rows = []
    for a in alerts:
        unit = a.get("unit", "")
        rows.append({
            "id": a["id"],
            "tenant": a["tenantId"],
            "severity": a.get("severity"),
            "rule": a["rule"],
            "title": a.get("title"),
            "subject": a.get("subjectLabel") or a.get("subject") or "",
            "value": format_value(unit, a.get("value")) if isinstance(a.get("value"), int | float) else a.get("error"),
            "threshold": format_value(unit, a.get("threshold")) if a.get("threshold") is not None else "",
            "status": a["status"],
            "opened": a.get("openedAt"),
            "resolved": a.get("resolvedAt"),
            "flaps": a.get("flaps", 0),
            "notified": a.get("notifyStatus"),
            "notify error": a.get("notifyError"),
            "acknowledged by": a.get("ackBy"),
            "silenced until": a.get("silencedUntil"),
        })
    return pd.DataFrame(rows)
