"""Time axes in UTC for every chart, as the rollups and the stored timestamps are.

Vega-Lite reads a timestamp without an offset as browser-local time and draws axes in local time,
so a chart of UTC buckets showed them shifted by the viewer's offset (and a date-only day could land
on the evening before). These helpers make the data carry its offset and the axis and tooltips say
UTC, the same way the Embedding jobs charts do.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

UTC_MINUTES = "utcyearmonthdatehoursminutes"
UTC_DAYS = "utcyearmonthdate"


def utc_times(values: Any) -> pd.Series:
    """Timestamps (ISO strings, or dates for day charts) as UTC instants; naive values are taken as UTC."""
    return pd.to_datetime(pd.Series(values).astype(str).str[:19], utc=True, format="ISO8601")


def utc_x(field: str, title: str | None = None, *, days: bool = False) -> Any:
    """An x encoding on a UTC time scale; the title says UTC (``days`` labels dates only)."""
    import altair as alt

    label = f"{title} (UTC)" if title else "time (UTC)" if not days else "day (UTC)"
    axis = alt.Axis(format="%b %d") if days else alt.Axis()
    return alt.X(f"{field}:T", title=label, scale=alt.Scale(type="utc"), axis=axis)


def utc_tooltip(field: str, title: str | None = None, *, days: bool = False) -> Any:
    """A tooltip showing ``field`` in UTC, to the minute (or the day)."""
    import altair as alt

    return alt.Tooltip(f"{field}:T", timeUnit=UTC_DAYS if days else UTC_MINUTES,
                       title=f"{title or field} (UTC)")
