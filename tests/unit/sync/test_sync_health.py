"""Health model boundaries: each status flips exactly at its threshold, and says why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core import clock
from core.services.integration_health import (
    HealthPolicy,
    compute_health,
    human_duration,
    token_forecast,
    webhook_freshness,
)

NOW = datetime(2025, 3, 10, 12, 0, 0, tzinfo=UTC)
HOUR = 3600


def conn(**kw: object) -> dict:
    base = {
        "id": "c1",
        "status": "active",
        "schedule": {"intervalSeconds": HOUR},
        "createdAt": clock.iso(NOW - timedelta(days=30)),
        "consecutiveFailures": 0,
    }
    base.update(kw)
    return base


def ago(seconds: float) -> str:
    return clock.iso(NOW - timedelta(seconds=seconds))


def ahead(seconds: float) -> str:
    return clock.iso(NOW + timedelta(seconds=seconds))


def test_healthy_within_one_interval() -> None:
    h = compute_health(conn(lastSuccessAt=ago(HOUR)), NOW)
    assert h.status == "healthy"
    assert "last success 1 h ago" in h.explanation
    assert h.freshness_lag_seconds == HOUR


def test_late_just_past_one_interval_and_until_two() -> None:
    assert compute_health(conn(lastSuccessAt=ago(HOUR + 1)), NOW).status == "late"
    h = compute_health(conn(lastSuccessAt=ago(2 * HOUR)), NOW)
    assert h.status == "late"
    assert "longer than the schedule" in h.explanation


def test_failing_past_two_intervals() -> None:
    h = compute_health(conn(lastSuccessAt=ago(2 * HOUR + 1)), NOW)
    assert h.status == "failing"
    assert "more than twice the schedule" in h.explanation


def test_consecutive_failures_boundary() -> None:
    one = compute_health(
        conn(lastSuccessAt=ago(60), consecutiveFailures=1, lastErrorType="transient", lastError="HTTP 503"), NOW
    )
    assert one.status == "healthy"
    assert "HTTP 503" in one.explanation
    two = compute_health(
        conn(lastSuccessAt=ago(60), consecutiveFailures=2, lastErrorType="transient", lastError="HTTP 503"), NOW
    )
    assert two.status == "failing"
    assert "2 runs in a row failed (transient: HTTP 503)" in two.explanation
    custom = compute_health(
        conn(lastSuccessAt=ago(60), consecutiveFailures=2, lastErrorType="transient", lastError="x"),
        NOW,
        HealthPolicy(failing_after=3),
    )
    assert custom.status == "healthy"


def test_never_succeeded_measured_from_creation() -> None:
    fresh = compute_health(conn(createdAt=ago(600)), NOW)
    assert fresh.status == "healthy"
    assert "waiting for the first sync" in fresh.explanation
    assert compute_health(conn(createdAt=ago(HOUR + 5)), NOW).status == "late"
    old = compute_health(conn(createdAt=ago(3 * HOUR)), NOW)
    assert old.status == "failing"
    assert "never succeeded" in old.explanation


def test_config_error_needs_reauth_even_when_recent_success() -> None:
    h = compute_health(
        conn(lastSuccessAt=ago(60), consecutiveFailures=1, lastErrorType="config", lastError="invalid_grant"), NOW
    )
    assert h.status == "needs_reauth"
    assert "invalid_grant" in h.explanation
    # A config error followed by a success is history, not a current problem.
    ok = compute_health(conn(lastSuccessAt=ago(60), consecutiveFailures=0, lastErrorType="config"), NOW)
    assert ok.status == "healthy"


def test_refresh_token_near_lifetime_boundary() -> None:
    policy = HealthPolicy(reauth_warning=timedelta(days=3))
    far = conn(lastSuccessAt=ago(60), token={"refreshExpiresAt": ahead(3 * 86400 + 1)})
    near = conn(lastSuccessAt=ago(60), token={"refreshExpiresAt": ahead(3 * 86400)})
    assert compute_health(far, NOW, policy).status == "healthy"
    h = compute_health(near, NOW, policy)
    assert h.status == "needs_reauth"
    assert "refresh token expires in 3 d" in h.explanation


def test_refresh_failed_and_expired_need_reauth() -> None:
    failed = compute_health(conn(lastSuccessAt=ago(60), token={"lastRefreshError": "invalid_grant: revoked"}), NOW)
    assert failed.status == "needs_reauth"
    assert "token refresh failed: invalid_grant: revoked" in failed.explanation
    expired = compute_health(conn(lastSuccessAt=ago(60), token={"refreshExpiresAt": ago(7200)}), NOW)
    assert expired.status == "needs_reauth"
    assert "expired 2 h ago" in expired.explanation


def test_paused_wins_over_everything() -> None:
    h = compute_health(
        conn(
            status="paused",
            pausedAt=ago(600),
            pausedReason="20 failures in a row over 4 days",
            consecutiveFailures=20,
            lastErrorType="config",
            lastError="bad credentials",
        ),
        NOW,
    )
    assert h.status == "paused"
    assert "20 failures in a row" in h.explanation
    assert "10 min ago" in h.explanation


def test_needs_reauth_wins_over_failing() -> None:
    h = compute_health(
        conn(lastSuccessAt=ago(10 * HOUR), consecutiveFailures=5, lastErrorType="config", lastError="401"), NOW
    )
    assert h.status == "needs_reauth"


def test_schedule_interval_drives_thresholds() -> None:
    daily = {"intervalSeconds": 86400}
    assert compute_health(conn(schedule=daily, lastSuccessAt=ago(20 * HOUR)), NOW).status == "healthy"
    assert compute_health(conn(schedule=daily, lastSuccessAt=ago(30 * HOUR)), NOW).status == "late"


def test_token_forecast_states() -> None:
    assert token_forecast(None, NOW).state == "none"
    ok = token_forecast({"accessExpiresAt": ahead(HOUR), "refreshExpiresAt": ahead(30 * 86400)}, NOW)
    assert ok.state == "ok"
    assert ok.refresh_expires_in_seconds == 30 * 86400
    assert "access token valid for 1 h" in ok.text
    expiring = token_forecast({"accessExpiresAt": ahead(60)}, NOW)
    assert expiring.state == "expiring"
    assert "refreshed on next use" in expiring.text
    assert token_forecast({"accessExpiresAt": ago(1)}, NOW).text.startswith("access token expired")


def test_webhook_freshness_states() -> None:
    assert webhook_freshness(None, NOW).state == "none"
    fresh = webhook_freshness({"lastEventAt": ago(120), "expectedEverySeconds": 600}, NOW)
    assert fresh.state == "fresh"
    assert fresh.last_event_age_seconds == 120
    quiet = webhook_freshness({"lastEventAt": ago(1801), "expectedEverySeconds": 600}, NOW)
    assert quiet.state == "quiet"
    at_limit = webhook_freshness({"lastEventAt": ago(1800), "expectedEverySeconds": 600}, NOW)
    assert at_limit.state == "fresh"
    expiring = webhook_freshness({"lastEventAt": ago(60), "subscriptionExpiresAt": ahead(3600)}, NOW)
    assert expiring.state == "subscription_expiring"
    expired = webhook_freshness({"subscriptionExpiresAt": ago(60)}, NOW)
    assert expired.state == "subscription_expired"
    assert "no event received yet" in expired.text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "never"), (5, "5 s"), (125, "2 min"), (3600, "1 h"),
        (3 * 3600 + 1200, "3 h 20 min"), (86400 * 2 + 3600 * 4, "2 d 4 h"),
    ],
)
def test_human_duration(seconds: float | None, text: str) -> None:
    assert human_duration(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "never"), (45, "45 s"), (600, "10 min"), (11_520, "3.2 h"), (-11_520, "-3.2 h"), (259_200, "3.0 d")],
)
def test_human_duration_compact_fits_a_tile(seconds: float | None, text: str) -> None:
    assert human_duration(seconds, compact=True) == text
