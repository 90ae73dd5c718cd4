"""KPI tiles for the Embedding jobs screen, coloured by the platform's alert thresholds."""

from __future__ import annotations

import streamlit as st

from core.services.embeddings import BACKLOG_ALERT, FAILURE_RATE_ALERT, SEARCH_P95_ALERT_MS, Kpis
from core.services.integration_health import human_duration

_BADGE = {"ok": ":green-badge[ok]", "warn": ":orange-badge[watch]", "bad": ":red-badge[over threshold]"}


def human_seconds(seconds: float | None) -> str:
    return "—" if seconds is None else human_duration(seconds, compact=True)


def kpi_tiles(k: Kpis) -> None:
    """Backlog age, backlog count, rate, failure rate, coverage and search p95, each with its status badge."""
    tiles = (
        ("backlog_age", "Backlog age", human_seconds(k.backlog_age_seconds), "age of the oldest unprocessed change"),
        ("backlog", "Backlog", f"{k.backlog:,}", f"alert over {BACKLOG_ALERT}"),
        ("rate", "Docs / min", f"{k.rate_per_minute:,.1f}", "documents processed per minute, last 15 minutes"),
        ("failure_rate", "Failure rate", f"{k.failure_rate:.1%}", f"alert over {FAILURE_RATE_ALERT:.0%}, last hour"),
        ("coverage", "Coverage", "—" if k.coverage is None else f"{k.coverage:.1%}", "documents embedded"),
        ("search_p95", "Search p95", "—" if k.search_p95_ms is None else f"{k.search_p95_ms:,.0f} ms",
         f"alert over {SEARCH_P95_ALERT_MS / 1000:.0f} s"),
    )
    cols = st.columns(len(tiles))
    for col, (name, label, value, help_text) in zip(cols, tiles, strict=True):
        with col:
            st.metric(label, value, border=True, help=help_text)
            st.markdown(_BADGE[k.status(name)])
