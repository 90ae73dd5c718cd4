"""Vega-Lite specs and their data for the Embedding jobs charts: documents per bar, backlog over time.

Plain dict specs (no Altair): the server skips Altair's schema validation, which cost more than the
rest of the page together. The x axis is UTC throughout, as the pipeline's rollup buckets are.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from app.components.time_axes import UTC_MINUTES
from core import clock

# Integer counts: without an explicit format Vega-Lite labels a flat series with decimals ("0.000000").
COUNT_AXIS = {"format": ",d", "tickMinStep": 1}
CHART_HEIGHT, LEGEND_HEIGHT = 220, 46  # the legend row and its gap under the x axis


def timeline_columns(timeline: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Rollup rows as columns for the backlog chart: UTC timestamps (buckets are UTC minutes), counts."""
    return {
        "time": [f"{r['bucket']}:00Z" for r in timeline],
        "backlog": [int(r.get("backlog") or 0) for r in timeline],
    }


def outcome_columns(timeline: list[dict[str, Any]], hours: int) -> dict[str, list[Any]]:
    """Documents processed and failed per bar (``bar_minutes``), summed from the 5-minute rollups.

    Each bar carries its start and end, so the browser draws it across its whole span: a bar placed
    by a Vega-Lite time unit alone is drawn a few pixels wide, whatever span it stands for.
    """
    step = bar_minutes(hours)
    bins: dict[datetime, list[int]] = {}
    for r in timeline:
        start = bar_start(datetime.fromisoformat(r["bucket"]).replace(tzinfo=UTC), step)
        counts = bins.setdefault(start, [0, 0])
        counts[0] += int(r.get("processed") or 0)
        counts[1] += int(r.get("failed") or 0)
    starts = sorted(bins)
    iso = "%Y-%m-%dT%H:%M:00Z"
    return {
        "time": [t.strftime(iso) for t in starts],
        "end": [(t + timedelta(minutes=step)).strftime(iso) for t in starts],
        "processed": [bins[t][0] for t in starts],
        "failed": [bins[t][1] for t in starts],
    }


def vega_datetime(at: datetime) -> dict[str, Any]:
    # Vega-Lite's DateTime object; Streamlit's renderer drops a temporal domain given as epoch numbers
    return {"year": at.year, "month": at.month, "date": at.day, "hours": at.hour, "minutes": at.minute,
            "utc": True}


def bar_minutes(hours: int) -> int:
    """Minutes per bar for a window: at most about a hundred bars, so a bar is a few pixels wide even in
    half the page (5-minute bars over a day were under a pixel and did not show at all)."""
    return 5 if hours <= 6 else 15 if hours <= 24 else 60


def bar_start(at: datetime, step: int) -> datetime:
    """The start of the ``step``-minute bar holding ``at`` (bars start at whole multiples from midnight)."""
    at = at.replace(second=0, microsecond=0)
    return at - timedelta(minutes=(at.hour * 60 + at.minute) % step)


def window_axis(hours: int) -> dict[str, Any]:
    """The x axis spans the whole window in UTC, so a quiet stretch shows as a gap rather than a zoom.

    It ends where the current bar ends (the next 5 or 15 minutes, or the next hour for hourly bars).
    """
    step = bar_minutes(hours)
    end = bar_start(clock.now(), step) + timedelta(minutes=step)
    return {"field": "time", "type": "temporal", "title": "time (UTC)", "axis": {"format": "%a %H:%M"},
            "scale": {"type": "utc", "domain": [vega_datetime(end - timedelta(hours=hours)), vega_datetime(end)]}}


def outcome_chart(hours: int) -> dict[str, Any]:
    """Stacked bars of documents processed and failed per ``bar_minutes`` (the 5-minute rollups summed).

    A plain Vega-Lite spec over ``outcome_columns``: Vega folds the two columns and stacks them. Each
    bar is a rectangle from its start to its end and from the stack's bottom to its top: Vega-Lite
    draws a bar given both ends on x as a range on a y position (a Gantt bar), not as a column.
    """
    return {
        "height": CHART_HEIGHT + LEGEND_HEIGHT,  # plot as tall as the backlog chart's beside it
        "transform": [
            {"fold": ["processed", "failed"], "as": ["outcome", "documents"]},
            # processed at the bottom, failed on top of it
            {"stack": "documents", "groupby": ["time"], "as": ["bottom", "top"],
             "sort": [{"field": "outcome", "order": "descending"}]},
        ],
        "mark": {"type": "rect", "clip": True},
        "encoding": {
            "x": window_axis(hours),
            "x2": {"field": "end"},
            "y": {"field": "bottom", "type": "quantitative", "title": "documents", "axis": COUNT_AXIS},
            "y2": {"field": "top"},
            "color": {"field": "outcome", "type": "nominal", "title": "outcome",
                      "legend": {"orient": "bottom", "titleOrient": "left"},  # one row under the axis
                      "scale": {"domain": ["processed", "failed"], "range": ["#2e7d32", "#c62828"]}},
            "tooltip": [{"field": "time", "type": "temporal", "timeUnit": UTC_MINUTES, "title": "from (UTC)"},
                        {"field": "end", "type": "temporal", "timeUnit": UTC_MINUTES, "title": "to (UTC)"},
                        {"field": "outcome", "type": "nominal"},
                        {"field": "documents", "type": "quantitative", "format": ",d"}],
        },
    }


def backlog_chart(hours: int) -> dict[str, Any]:
    """Line of changes waiting at the end of each 5-minute bucket (points too, so one bucket still shows)."""
    return {
        "height": CHART_HEIGHT,
        "mark": {"type": "line", "interpolate": "step-after", "color": "#3b5bdb", "point": True, "clip": True},
        "encoding": {
            "x": window_axis(hours),
            "y": {"field": "backlog", "type": "quantitative", "title": "changes waiting", "axis": COUNT_AXIS,
                  "scale": {"zero": True}},
            "tooltip": [{"field": "time", "type": "temporal", "timeUnit": UTC_MINUTES, "title": "time (UTC)"},
                        {"field": "backlog", "type": "quantitative", "format": ",d"}],
        },
    }
