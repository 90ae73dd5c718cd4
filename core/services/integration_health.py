"""Health of one integration connection, computed from its stored record: status, why, token and webhook outlook.

Pure functions over the connection document (and a clock value passed in), so the screen, the
overview rollups and the alerting all agree on one definition and tests can walk every boundary.

Status, first match wins (a paused connection is paused whatever else is true, and a person
must act on credentials before retrying makes sense):

    paused        an operator or the auto-pause paused it
    needs_reauth  the last run failed with a ``config`` error, a token refresh failed, or the
                  refresh token is within ``reauth_warning`` of its known lifetime
    failing       no success within 2x the schedule interval, or ``failing_after`` runs in a row failed
    late          no success within 1x the schedule interval
    healthy       otherwise
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from core import clock

Status = Literal["healthy", "late", "failing", "needs_reauth", "paused"]
STATUSES: tuple[Status, ...] = ("healthy", "late", "failing", "needs_reauth", "paused")
# Order used when sorting a list by how urgently a person should look at it.
SEVERITY: dict[str, int] = {"needs_reauth": 0, "failing": 1, "late": 2, "paused": 3, "healthy": 4}

DEFAULT_INTERVAL_SECONDS = 3600.0


@dataclass(frozen=True)
class HealthPolicy:
    """Thresholds of the health model; defaults follow common connector-platform practice."""

    failing_after: int = 2  # consecutive failed runs that make a connection failing
    reauth_warning: timedelta = timedelta(days=3)  # refresh token this close to its lifetime -> reauth
    access_warning: timedelta = timedelta(minutes=5)  # access token this close to expiry is "expiring"
    webhook_quiet_factor: float = 3.0  # no event in 3x the expected gap -> quiet
    subscription_warning: timedelta = timedelta(hours=12)  # renew subscriptions before this


DEFAULT_POLICY = HealthPolicy()


@dataclass(frozen=True)
class TokenForecast:
    """When the connection's tokens lapse, and whether that needs a person."""

    state: Literal["none", "ok", "expiring", "refresh_failed", "refresh_expiring", "refresh_expired"]
    access_expires_at: str | None
    refresh_expires_at: str | None
    refresh_expires_in_seconds: float | None
    text: str


@dataclass(frozen=True)
class WebhookFreshness:
    """When the vendor last pushed an event, and when its subscription runs out."""

    state: Literal["none", "fresh", "quiet", "subscription_expiring", "subscription_expired"]
    last_event_at: str | None
    last_event_age_seconds: float | None
    subscription_expires_at: str | None
    text: str


@dataclass(frozen=True)
class Health:
    status: Status
    explanation: str
    reasons: tuple[str, ...] = field(default_factory=tuple)
    freshness_lag_seconds: float | None = None
    token: TokenForecast | None = None
    webhook: WebhookFreshness | None = None


def human_duration(seconds: float | None, compact: bool = False) -> str:
    """'3 h 20 min', '45 s', '2 d 4 h' for a table cell; ``compact`` gives one unit ('3.3 h') for tiles."""
    if seconds is None:
        return "never"
    s = int(abs(seconds))
    sign = "-" if seconds < 0 else ""
    if compact:
        f = abs(float(seconds))
        if f < 90:
            return f"{sign}{f:.0f} s"
        if f < 5400:
            return f"{sign}{f / 60:.0f} min"
        if f < 172_800:
            return f"{sign}{f / 3600:.1f} h"
        return f"{sign}{f / 86400:.1f} d"
    if s < 60:
        return f"{sign}{s} s"
    if s < 3600:
        return f"{sign}{s // 60} min"
    if s < 86400:
        h, m = divmod(s // 60, 60)
        return f"{sign}{h} h {m} min" if m else f"{sign}{h} h"
    d, h = divmod(s // 3600, 24)
    return f"{sign}{d} d {h} h" if h else f"{sign}{d} d"


def _parse(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value
    return clock.parse(str(value))


def interval_seconds(conn: dict[str, Any]) -> float:
    schedule = conn.get("schedule") or {}
    value = schedule.get("intervalSeconds") or DEFAULT_INTERVAL_SECONDS
    return float(value)


def freshness_lag(conn: dict[str, Any], now: datetime) -> float | None:
    """Seconds since the last successful (or partial) run finished; None if never."""
    last = _parse(conn.get("lastSuccessAt"))
    return None if last is None else (now - last).total_seconds()


def token_forecast(token: dict[str, Any] | None, now: datetime, policy: HealthPolicy = DEFAULT_POLICY) -> TokenForecast:
    """Forecast from the token fields the engine copies from the connector after each run.

    ``refreshExpiresAt`` is the refresh token's known end (explicit from the vendor, or issue time
    plus the vendor's documented lifetime); access tokens are refreshed automatically, so an
    expiring access token alone never needs a person.
    """
    if not token:
        return TokenForecast("none", None, None, None, "no OAuth token (API key or local source)")
    access = _parse(token.get("accessExpiresAt"))
    refresh = _parse(token.get("refreshExpiresAt"))
    refresh_in = None if refresh is None else (refresh - now).total_seconds()
    access_iso = clock.iso(access) if access else None
    refresh_iso = clock.iso(refresh) if refresh else None
    if token.get("lastRefreshError"):
        return TokenForecast(
            "refresh_failed", access_iso, refresh_iso, refresh_in,
            f"token refresh failed: {token['lastRefreshError']}; an admin must reconnect the account",
        )
    if refresh_in is not None and refresh_in <= 0:
        return TokenForecast(
            "refresh_expired", access_iso, refresh_iso, refresh_in,
            f"refresh token expired {human_duration(-refresh_in)} ago; an admin must reconnect the account",
        )
    if refresh_in is not None and refresh_in <= policy.reauth_warning.total_seconds():
        return TokenForecast(
            "refresh_expiring", access_iso, refresh_iso, refresh_in,
            f"refresh token expires in {human_duration(refresh_in)}; reconnect the account before then",
        )
    parts = []
    state: Literal["ok", "expiring"] = "ok"
    if access is not None:
        access_in = (access - now).total_seconds()
        if access_in <= policy.access_warning.total_seconds():
            state = "expiring"
            parts.append(
                "access token expired, refreshed on next use" if access_in <= 0
                else f"access token expires in {human_duration(access_in)}, refreshed on next use"
            )
        else:
            parts.append(f"access token valid for {human_duration(access_in)}")
    parts.append(
        "refresh token has no known expiry" if refresh_in is None
        else f"refresh token valid for {human_duration(refresh_in)}"
    )
    return TokenForecast(state, access_iso, refresh_iso, refresh_in, "; ".join(parts))


def webhook_freshness(
    webhook: dict[str, Any] | None, now: datetime, policy: HealthPolicy = DEFAULT_POLICY
) -> WebhookFreshness:
    """Whether pushed change notifications are still arriving and their subscription still stands."""
    if not webhook:
        return WebhookFreshness("none", None, None, None, "no webhook subscription (polling only)")
    last = _parse(webhook.get("lastEventAt"))
    expires = _parse(webhook.get("subscriptionExpiresAt"))
    age = None if last is None else (now - last).total_seconds()
    last_iso = clock.iso(last) if last else None
    exp_iso = clock.iso(expires) if expires else None
    last_text = "no event received yet" if age is None else f"last event {human_duration(age)} ago"
    if expires is not None:
        left = (expires - now).total_seconds()
        if left <= 0:
            return WebhookFreshness(
                "subscription_expired", last_iso, age, exp_iso,
                f"subscription expired {human_duration(-left)} ago, so changes arrive only by polling; {last_text}",
            )
        if left <= policy.subscription_warning.total_seconds():
            return WebhookFreshness(
                "subscription_expiring", last_iso, age, exp_iso,
                f"subscription expires in {human_duration(left)} and is renewed by the next run; {last_text}",
            )
    expected = webhook.get("expectedEverySeconds")
    if expected and age is not None and age > policy.webhook_quiet_factor * float(expected):
        return WebhookFreshness(
            "quiet", last_iso, age, exp_iso,
            f"{last_text}, more than {policy.webhook_quiet_factor:g}x "
            f"the usual gap of {human_duration(float(expected))}",
        )
    return WebhookFreshness("fresh", last_iso, age, exp_iso, last_text)


def compute_health(conn: dict[str, Any], now: datetime | None = None, policy: HealthPolicy = DEFAULT_POLICY) -> Health:
    """The connection's status and a sentence a support engineer can act on."""
    now = now or clock.now()
    interval = interval_seconds(conn)
    lag = freshness_lag(conn, now)
    token = token_forecast(conn.get("token"), now, policy)
    hook = webhook_freshness(conn.get("webhook"), now, policy)
    failures = int(conn.get("consecutiveFailures") or 0)
    last_error = conn.get("lastError") or ""
    last_error_type = conn.get("lastErrorType")

    def result(status: Status, explanation: str, *reasons: str) -> Health:
        return Health(status, explanation, tuple(reasons), lag, token, hook)

    if conn.get("status") == "paused":
        why = conn.get("pausedReason") or "paused by an operator"
        since = _parse(conn.get("pausedAt"))
        when = f" {human_duration((now - since).total_seconds())} ago" if since else ""
        return result("paused", f"Paused{when}: {why}. Nothing syncs until someone resumes it.", "paused")

    reauth: list[str] = []
    if last_error_type == "config" and failures > 0:
        reauth.append(f"the last run failed with a configuration error: {last_error}")
    if token.state in {"refresh_failed", "refresh_expired", "refresh_expiring"}:
        reauth.append(token.text)
    if reauth:
        return result("needs_reauth", "Needs a person: " + "; ".join(reauth) + ".", *reauth)

    # Without a success yet, measure lateness from when the connection was created.
    since_ok = lag
    if since_ok is None:
        created = _parse(conn.get("createdAt"))
        since_ok = None if created is None else (now - created).total_seconds()
    ok_text = "never succeeded" if lag is None else f"last success {human_duration(lag)} ago"
    every = f"scheduled every {human_duration(interval)}"

    failing: list[str] = []
    if failures >= policy.failing_after:
        failing.append(f"{failures} runs in a row failed ({last_error_type or 'error'}: {last_error})")
    if since_ok is not None and since_ok > 2 * interval:
        failing.append(f"{ok_text}, more than twice the schedule ({every})")
    if failing:
        return result("failing", "Failing: " + "; ".join(failing) + ".", *failing)

    if since_ok is not None and since_ok > interval:
        why = f"{ok_text}, longer than the schedule ({every})"
        if failures:
            why += f"; the last run failed ({last_error_type or 'error'}: {last_error})"
        return result("late", f"Late: {why}.", why)

    if lag is None:
        return result("healthy", f"Healthy: waiting for the first sync ({every}).")
    extra = f"; the last run failed and is retried ({last_error_type}: {last_error})" if failures else ""
    return result("healthy", f"Healthy: {ok_text} ({every}){extra}.")
