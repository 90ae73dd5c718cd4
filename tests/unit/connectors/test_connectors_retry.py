"""The one retry policy and the HTTP-status -> core error mapping."""

from __future__ import annotations

import email.utils
import time
import urllib.error

import httpx
import pytest
import requests

from connectors.retry import (
    RetryPolicy,
    error_for_status,
    http_status,
    is_transport_error,
    parse_retry_after,
    transport_error,
)
from core.errors import ConfigError, DataError, Invalid, RateLimited, TransientError


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def policy(**kw) -> tuple[RetryPolicy, Sleeps]:
    sleeps = Sleeps()
    defaults = {"max_attempts": 4, "base_delay": 0.5, "max_delay": 8.0, "max_retry_after": 60.0}
    return RetryPolicy(sleep=sleeps, **{**defaults, **kw}), sleeps


def failing(times: int, error: Exception):
    calls = []

    def fn():
        calls.append(1)
        if len(calls) <= times:
            raise error
        return "ok"

    return fn, calls


def test_parse_retry_after_reads_seconds_and_http_dates():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("0.25") == 0.25
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= parse_retry_after(future) <= 31


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (429, RateLimited),
        (500, TransientError),
        (503, TransientError),
        (408, TransientError),
        (401, ConfigError),
        (403, ConfigError),
        (404, ConfigError),
        (400, ConfigError),
    ],
)
def test_statuses_map_onto_the_error_tree(status, kind):
    error = error_for_status("Acme", status, "the vendor's words")
    assert type(error) is kind
    assert "the vendor's words" in error.message
    assert http_status(error) == status


def test_rejected_write_is_invalid_and_rate_limit_keeps_retry_after():
    assert isinstance(error_for_status("Acme", 422, "amount must be a number", writing=True), Invalid)
    limited = error_for_status("Acme", 429, "slow down", {"retry-after": "12"})
    assert isinstance(limited, RateLimited) and limited.retry_after == 12.0


def test_transient_errors_are_retried_with_growing_backoff():
    p, sleeps = policy()
    fn, calls = failing(3, TransientError("503"))
    assert p.call(fn) == "ok"
    assert len(calls) == 4
    assert len(sleeps) == 3
    # exponential: each base wait doubles (jitter adds at most base_delay)
    assert sleeps[0] <= 1.0 and sleeps[2] >= 2.0


def test_retry_after_is_honoured_exactly():
    p, sleeps = policy()
    fn, _ = failing(1, RateLimited("429", retry_after=7.0))
    assert p.call(fn) == "ok"
    assert sleeps == [7.0]


def test_gives_up_after_max_attempts_with_the_last_error():
    p, sleeps = policy(max_attempts=3)
    fn, calls = failing(10, TransientError("still down"))
    with pytest.raises(TransientError, match="still down"):
        p.call(fn)
    assert len(calls) == 3 and len(sleeps) == 2


@pytest.mark.parametrize("error", [ConfigError("bad key"), DataError("bad row"), Invalid("bad input")])
def test_other_errors_fail_fast(error):
    p, sleeps = policy()
    fn, calls = failing(1, error)
    with pytest.raises(type(error)):
        p.call(fn)
    assert len(calls) == 1 and sleeps == []


def test_a_long_retry_after_is_left_to_the_scheduler():
    p, sleeps = policy(max_retry_after=60.0)
    fn, calls = failing(1, RateLimited("daily limit", retry_after=3600.0))
    with pytest.raises(RateLimited) as info:
        p.call(fn)
    assert info.value.retry_after == 3600.0
    assert len(calls) == 1 and sleeps == []


def test_transport_errors_are_recognised_across_http_stacks():
    assert is_transport_error(httpx.ReadTimeout("slow"))
    assert is_transport_error(httpx.ConnectError("refused"))
    assert is_transport_error(requests.ConnectionError("reset"))
    assert is_transport_error(TimeoutError())
    assert not is_transport_error(urllib.error.HTTPError("u", 500, "boom", {}, None))  # type: ignore[arg-type]
    assert not is_transport_error(ValueError("no"))
    assert isinstance(transport_error("Acme", httpx.ReadTimeout("slow")), TransientError)


def test_an_untrusted_certificate_needs_a_person_not_a_retry():
    error = transport_error(
        "Acme", requests.exceptions.SSLError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    )
    assert isinstance(error, ConfigError)
    assert "CA bundle" in error.message
