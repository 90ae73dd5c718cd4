"""Notifier retries transient failures, honours rate limits, never retries config errors; formats."""

from __future__ import annotations

import json

import pytest

from core.adapters.notify_channels import email_message, slack_payload, teams_payload
from core.errors import ConfigError, Invalid, RateLimited, TransientError
from core.observability.notify import AlertMessage, Notifier, Target, parse_target

MSG = AlertMessage(event="opened", tenant_id="acme", rule="queue_backlog", title="Queue backlog", severity="warning",
                   summary="Queue backlog: 150 (threshold > 100).", value="150", threshold="100", alert_id="a1",
                   link="https://console.example/integrations?tenant=acme")


class ScriptedSender:
    def __init__(self, errors: list[Exception]) -> None:
        self.errors = list(errors)
        self.calls = 0

    def send(self, target: Target, message: AlertMessage) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)


def _notifier(sender, store=None, attempts=4):
    waits: list[float] = []
    n = Notifier({"slack": sender, "email": sender}, store, attempts=attempts, initial_wait=1.0, max_wait=30.0,
                 sleep=waits.append)
    return n, waits


def test_transient_failures_are_retried_until_success(mem_store) -> None:
    sender = ScriptedSender([TransientError("503"), TransientError("timeout")])
    n, waits = _notifier(sender, mem_store)
    [d] = n.deliver(MSG, [parse_target("slack", "https://hooks.example/x")])
    assert (d.status, d.attempts, sender.calls) == ("sent", 3, 3)
    assert len(waits) == 2 and all(w >= 1.0 for w in waits)
    [rec] = mem_store.query("notifications", "acme")
    assert rec["status"] == "sent" and rec["alertId"] == "a1" and "/x" not in rec["target"].split("…")[0]


def test_gives_up_after_the_attempts_and_reports_failed() -> None:
    sender = ScriptedSender([TransientError("503")] * 10)
    n, waits = _notifier(sender, attempts=3)
    [d] = n.deliver(MSG, [parse_target("slack", "https://hooks.example/x")])
    assert (d.status, d.attempts, sender.calls) == ("failed", 3, 3)
    assert "503" in d.error


def test_config_errors_are_not_retried() -> None:
    sender = ScriptedSender([ConfigError("404 no_service")])
    n, _ = _notifier(sender)
    [d] = n.deliver(MSG, [parse_target("email", "ops@example.com")])
    assert (d.status, sender.calls) == ("failed", 1)


def test_rate_limit_retry_after_is_honoured() -> None:
    sender = ScriptedSender([RateLimited("429", retry_after=7)])
    n, waits = _notifier(sender)
    [d] = n.deliver(MSG, [parse_target("slack", "https://hooks.example/x")])
    assert d.status == "sent" and waits == [7.0]


def test_missing_sender_and_duplicate_targets() -> None:
    n = Notifier({}, None, sleep=lambda s: None)
    t = parse_target("teams", "https://example.webhook.office.com/abc")
    ds = n.deliver(MSG, [t, t])
    assert len(ds) == 1 and ds[0].status == "failed" and "no teams sender" in ds[0].error


@pytest.mark.parametrize(
    ("kind", "address", "reason"),
    [
        ("pager", "x", "unknown notification channel"),
        ("email", "not-an-address", "not an email address"),
        ("slack", "ftp://hooks.example/x", "https:// URL"),
        ("teams", "http://example.com/hook", "plain http is allowed only to localhost"),
    ],
)
def test_bad_targets_are_refused_with_the_reason(kind: str, address: str, reason: str) -> None:
    with pytest.raises(Invalid, match=reason):
        parse_target(kind, address)


def test_webhook_labels_hide_the_secret_path() -> None:
    t = parse_target("slack", "https://hooks.slack.com/services/T000/B000/verysecrettoken")
    assert "verysecret" not in t.label and t.label.startswith("slack:https://hooks.slack.com/")


def test_slack_teams_and_email_formats_carry_the_alert() -> None:
    slack = slack_payload(MSG)
    assert slack["text"].startswith("[WARNING] Queue backlog - acme")
    assert slack["blocks"][0]["type"] == "header"
    assert any(b["type"] == "actions" and b["elements"][0]["url"] == MSG.link for b in slack["blocks"])
    teams = teams_payload(MSG)
    card = teams["attachments"][0]
    assert teams["type"] == "message" and card["contentType"] == "application/vnd.microsoft.card.adaptive"
    facts = {f["title"]: f["value"] for f in card["content"]["body"][2]["facts"]}
    assert facts["Tenant"] == "acme" and facts["Value"] == "150"
    json.dumps(slack), json.dumps(teams)  # both are plain JSON
    mail = email_message(MSG, "alerts@castiel.local", "ops@example.com")
    assert mail["Subject"] == "[WARNING] Queue backlog - acme"
    plain = mail.get_body(("plain",)).get_content()
    assert "150" in plain and MSG.link in plain
