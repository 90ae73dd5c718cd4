"""Integrations screen data shaping: the frames and the run-history chart spec."""

from __future__ import annotations

import altair as alt

from app.components.integrations_view import attempts_frame, connections_frame, run_history_chart, runs_frame
from core.services.integrations import ConnectionRow

RUNS = [
    {"id": "r3", "queuedAt": "2025-01-03T00:00:00.000000Z", "status": "failed", "written": 0, "durationMs": 1200,
     "error": "HTTP 503", "errorType": "transient", "trigger": {"type": "schedule"},
     "attempts": [{"n": 1, "status": "failed", "error": "HTTP 503", "errorType": "transient"},
                  {"n": 2, "status": "failed", "error": "HTTP 503 again", "errorType": "transient"}]},
    {"id": "r2", "queuedAt": "2025-01-02T00:00:00.000000Z", "status": "succeeded", "written": 40,
     "durationMs": 3000, "trigger": {"type": "user", "actor": "ops@x", "reason": "customer asked"},
     "attempts": [{"n": 1, "status": "succeeded"}]},
]


def test_history_chart_is_a_valid_vega_lite_spec_oldest_first_with_failures_marked() -> None:
    spec = run_history_chart(RUNS)
    assert spec is not None
    alt.LayerChart.from_dict({k: v for k, v in spec.items() if k != "$schema"}, validate=True)
    values = spec["data"]["values"]
    assert [v["status"] for v in values] == ["succeeded", "failed"]
    assert values[1]["failed"] is True and values[0]["records"] == 40 and values[0]["duration_s"] == 3.0
    marks = [layer["mark"]["type"] for layer in spec["layer"][1]["layer"]]
    assert marks == ["line", "point"] and spec["layer"][1]["layer"][1]["transform"] == [{"filter": "datum.failed"}]
    assert run_history_chart([]) is None


def test_runs_and_attempt_frames_keep_each_attempts_error() -> None:
    runs = runs_frame(RUNS)
    assert list(runs["status"]) == ["failed", "succeeded"]
    assert runs.iloc[1]["trigger"] == "user · ops@x · customer asked"
    attempts = attempts_frame(RUNS)
    assert list(attempts["error"])[:2] == ["HTTP 503", "HTTP 503 again"]
    assert list(attempts["attempt"]) == [1, 2, 1]


def test_connections_frame_formats_lag_and_rate() -> None:
    row = ConnectionRow(
        id="c1", tenant_id="t", name="CRM", provider="hubspot", provider_label="HubSpot", status="late",
        explanation="Late: ...", last_success_at="2025-01-01T00:00:00.000000Z", freshness_lag_seconds=5400,
        success_rate_7d=0.75, runs_7d=4, failed_7d=1, records_7d=10, records_synced=100, last_run_status="failed",
        last_run_at=None, last_error="x", last_error_type="transient", consecutive_failures=1, interval_seconds=3600,
        running=False,
    )
    df = connections_frame([row])
    assert df.iloc[0]["status"] == "Late" and df.iloc[0]["freshness lag"] == "1 h 30 min"
    assert df.iloc[0]["7-day success"] == 0.75
