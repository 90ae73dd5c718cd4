"""Webhook signatures in each vendor style, replay windows, and de-duplication by event id."""

from __future__ import annotations

import time

import pytest

from connectors.base import WebhookEvent
from connectors.webhooks import (
    MemorySeenIdStore,
    dedupe,
    sign_hubspot_v3,
    sign_prefixed_hmac,
    sign_slack,
    verify_hubspot_v3,
    verify_prefixed_hmac,
    verify_shared_secret,
    verify_slack,
)
from core.errors import ConfigError, Invalid

BODY = b'{"event_id":"Ev1"}'


def test_slack_signature_accepts_the_real_one_and_rejects_tampering():
    headers = sign_slack("s3cret", BODY)
    verify_slack(headers, BODY, "s3cret")
    with pytest.raises(Invalid, match="does not match"):
        verify_slack(headers, BODY + b" ", "s3cret")
    with pytest.raises(Invalid, match="does not match"):
        verify_slack(headers, BODY, "other")


def test_slack_signature_outside_the_replay_window_is_rejected():
    headers = sign_slack("s3cret", BODY, ts=time.time() - 3600)
    with pytest.raises(Invalid, match="replay window"):
        verify_slack(headers, BODY, "s3cret")


def test_hubspot_v3_signature_covers_method_url_body_and_time():
    url = "https://console.example/hooks/hubspot"
    headers = sign_hubspot_v3("client-secret", BODY, url)
    verify_hubspot_v3(headers, BODY, "client-secret", method="POST", url=url)
    with pytest.raises(Invalid):
        verify_hubspot_v3(headers, BODY, "client-secret", method="POST", url=url + "/other")
    with pytest.raises(ConfigError, match="webhook URL"):
        verify_hubspot_v3(headers, BODY, "client-secret", method="POST", url=None)


def test_prefixed_hmac_and_shared_secret():
    headers = sign_prefixed_hmac("tok", BODY, "X-Notion-Signature")
    verify_prefixed_hmac("Notion", {k.lower(): v for k, v in headers.items()}, BODY, "tok", "X-Notion-Signature")
    with pytest.raises(Invalid):
        verify_prefixed_hmac("Notion", headers, b"{}", "tok", "X-Notion-Signature")
    verify_shared_secret("Graph", "state", "state")
    with pytest.raises(Invalid):
        verify_shared_secret("Graph", "state", None)
    with pytest.raises(ConfigError, match="no signing secret"):
        verify_shared_secret("Graph", "", "state")


def test_dedupe_processes_each_event_once_per_scope():
    seen = MemorySeenIdStore()
    events = [WebhookEvent("e1", "deals"), WebhookEvent("e2", "deals"), WebhookEvent("e1", "deals")]
    assert [e.event_id for e in dedupe(events, seen, scope="conn-1")] == ["e1", "e2"]
    assert dedupe([WebhookEvent("e1", "deals")], seen, scope="conn-1") == []
    assert len(dedupe([WebhookEvent("e1", "deals")], seen, scope="conn-2")) == 1


def test_seen_store_forgets_oldest_beyond_capacity():
    seen = MemorySeenIdStore(capacity=2)
    assert seen.add_if_new("a") and seen.add_if_new("b") and seen.add_if_new("c")
    assert seen.add_if_new("a")  # evicted, so new again
    assert not seen.add_if_new("c")
