"""Integrations screen data shaping: service results -> table frames and the run-history chart (no widgets here).

Kept free of Streamlit calls so the page, its tests and the page-render benchmark all build the
same frames from the same service calls.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pandas as pd

from core.services.integration_health import human_duration
from core.services.integrations import ConnectionRow, StreamView

STATUS_LABELS = {
    "healthy": "Healthy",
    "late": "Late",
    "failing": "Failing",
    "needs_reauth": "Needs re-auth",
    "paused": "Paused",
}
STATUS_ICONS = {
    "healthy": ":material/check_circle:",
    "late": ":material/schedule:",
    "failing": ":material/error:",
    "needs_reauth": ":material/key_off:",
    "paused": ":material/pause_circle:",
}
RUN_COLORS = {"succeeded": "#2f9e44", "partial": "#f08c00", "failed": "#e03131", "cancelled": "#868e96",
              "running": "#3b5bdb", "queued": "#adb5bd"}


def connections_frame(rows: Iterable[ConnectionRow]) -> pd.DataFrame:
    """The connections table (also the CSV export): one row per connection, most urgent first."""
    records = [
        {
            "tenant": r.tenant_id,
            "connection": r.name,
            "provider": r.provider_label,
            "status": STATUS_LABELS.get(r.status, r.status),
            "last success": r.last_success_at,
            "freshness lag": human_duration(r.freshness_lag_seconds),
            "lag seconds": None if r.freshness_lag_seconds is None else round(r.freshness_lag_seconds),
            "7-day success": None if r.success_rate_7d is None else round(r.success_rate_7d, 4),
            "runs 7d": r.runs_7d,
            "records 7d": r.records_7d,
            "records synced": r.records_synced,
            "last run": r.last_run_status,
            "last error": r.last_error,
            "error type": r.last_error_type,
            "why": r.explanation,
            "id": r.id,
        }
        for r in rows
    ]
    return pd.DataFrame(records)


def runs_frame(runs: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """The runs table: newest first, with trigger, counts, duration and the last error."""
    out = []
    for r in runs:
        trig = r.get("trigger") or {}
        who = trig.get("actor") or ""
        parts = [trig.get("type", "?"), who, trig.get("reason") or ""]
        trigger = " · ".join(p for p in parts if p)
        out.append({
            "queued": r.get("queuedAt"),
            "status": r.get("status"),
            "mode": "full" if r.get("full") else "incremental",
            "streams": ", ".join(r.get("streams") or []) or "all",
            "trigger": trigger,
            "read": r.get("read", 0),
            "written": r.get("written", 0),
            "skipped": r.get("skipped", 0),
            "duration s": None if r.get("durationMs") is None else round(r["durationMs"] / 1000, 2),
            "attempts": len(r.get("attempts") or []),
            "error type": r.get("errorType"),
            "error": r.get("error"),
            "run id": r.get("id"),
        })
    return pd.DataFrame(out)


def attempts_frame(runs: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Every attempt of the given runs, with its own error and error type."""
    out = []
    for r in runs:
        for a in r.get("attempts") or []:
            out.append({
                "run id": r.get("id"),
                "attempt": a.get("n"),
                "started": a.get("startedAt"),
                "finished": a.get("finishedAt"),
                "status": a.get("status"),
                "read": a.get("read", 0),
                "written": a.get("written", 0),
                "skipped": a.get("skipped", 0),
                "error type": a.get("errorType"),
                "error": a.get("error"),
            })
    return pd.DataFrame(out)


def skipped_frame(runs: Iterable[dict[str, Any]]) -> pd.DataFrame:
    rows = [
        {"run id": r.get("id"), "stream": s.get("stream"), "source id": s.get("sourceId"), "reason": s.get("reason")}
        for r in runs for s in (r.get("skippedSamples") or [])
    ]
    return pd.DataFrame(rows)


def streams_frame(streams: Iterable[StreamView]) -> pd.DataFrame:
    return pd.DataFrame([
        {
            "stream": s.name,
            "object type": s.object_type,
            "cursor field": s.cursor_field or "(delta link / page token)",
            "cursor": "" if s.state is None else json.dumps(s.state, sort_keys=True),
            "cursor stored": s.updated_at,
            "records written": s.records,
            "enabled": s.enabled,
        }
        for s in streams
    ])


def run_history_chart(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Vega-Lite spec of the last runs, oldest to newest: bars of records written, a line of duration,
    failures marked with a red cross.

    A plain spec (``st.vega_lite_chart``) rather than Altair objects: Altair validates every
    channel against the schema, which costs more than the rest of the page together.
    """
    if not runs:
        return None
    values = [
        {
            "run": i + 1,
            "queued": r.get("queuedAt"),
            "status": r.get("status"),
            "records": int(r.get("written") or 0),
            "duration_s": round((r.get("durationMs") or 0) / 1000, 3),
            "failed": r.get("status") == "failed",
            "error": r.get("error") or "",
        }
        for i, r in enumerate(reversed(runs))
    ]
    x = {"field": "run", "type": "ordinal", "title": "run (oldest to newest)"}
    tooltip = [{"field": f, "type": t} for f, t in
               (("queued", "nominal"), ("status", "nominal"), ("records", "quantitative"),
                ("duration_s", "quantitative"), ("error", "nominal"))]
    duration = {"field": "duration_s", "type": "quantitative", "title": "duration (s)"}
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "data": {"values": values},
        "height": 260,
        "resolve": {"scale": {"y": "independent"}},
        "layer": [
            {
                "mark": {"type": "bar", "opacity": 0.8},
                "encoding": {
                    "x": x,
                    "y": {"field": "records", "type": "quantitative", "title": "records written"},
                    "color": {"field": "status", "type": "nominal",
                              "scale": {"domain": list(RUN_COLORS), "range": list(RUN_COLORS.values())},
                              "legend": {"orient": "bottom"}},
                    "tooltip": tooltip,
                },
            },
            {
                "layer": [
                    {"mark": {"type": "line", "point": True, "color": "#1f2430"},
                     "encoding": {"x": x, "y": duration, "tooltip": tooltip}},
                    {"transform": [{"filter": "datum.failed"}],
                     "mark": {"type": "point", "shape": "cross", "size": 140, "color": "#e03131", "filled": True},
                     "encoding": {"x": x, "y": duration, "tooltip": tooltip}},
                ],
            },
        ],
    }


def token_lines(detail_connection: dict[str, Any], token_text: str | None, webhook_text: str | None) -> list[str]:
    """Short lines for the token and webhook panel."""
    lines = []
    if token_text:
        lines.append(f"**Token:** {token_text}")
    tok = detail_connection.get("token") or {}
    if tok.get("accessExpiresAt"):
        lines.append(f"Access token expires at {tok['accessExpiresAt']}")
    if tok.get("refreshExpiresAt"):
        lines.append(f"Refresh token known to lapse at {tok['refreshExpiresAt']}")
    if tok.get("lastRefreshAt"):
        lines.append(f"Last refresh {tok['lastRefreshAt']}")
    if webhook_text:
        lines.append(f"**Webhook:** {webhook_text}")
    hook = detail_connection.get("webhook") or {}
    if hook.get("eventsReceived") or hook.get("duplicates"):
        received, dupes = hook.get("eventsReceived", 0), hook.get("duplicates", 0)
        lines.append(f"{received} events processed, {dupes} duplicates dropped")
    if hook.get("notificationUrl"):
        lines.append(f"Notifications go to {hook['notificationUrl']}; {len(hook.get('subscriptions') or [])} "
                     f"subscription(s), last renewed {hook.get('lastRenewAt') or 'never'}")
    if hook.get("lastRenewError"):
        lines.append(f"**Subscription renewal failed:** {hook['lastRenewError']}")
    return lines
