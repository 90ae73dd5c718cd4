"""Time in one place, so tests can move it: UTC ISO-8601 strings sort like the instants they name."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def now() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime | None = None) -> str:
    """ISO-8601 in UTC with microseconds and a fixed width, so string order is time order."""
    dt = dt or now()
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse(s: str) -> datetime:
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def iso_in(seconds: float) -> str:
    return iso(now() + timedelta(seconds=seconds))
