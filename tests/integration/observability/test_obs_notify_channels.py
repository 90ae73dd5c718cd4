"""Email over a real SMTP server (aiosmtpd) and Slack/Teams webhooks to a local HTTP receiver, with retries."""

from __future__ import annotations

from core.adapters.notify_channels import SmtpSender, WebhookSender
from core.adapters.sqlite_store import SqliteStore
from core.observability.notify import AlertMessage, Notifier, parse_target
from core.schema import CONTAINERS
from tests.integration.observability.conftest import free_port

MSG = AlertMessage(event="opened", tenant_id="acme", rule="connector_attention",
                   title="Connector needs re-authorisation or was paused", severity="critical",
                   summary="Connector needs re-authorisation or was paused for Salesforce (needs_reauth).",
                   subject="Salesforce", alert_id="connector_attention.abc", link="https://console.example/alerts")


def _notifier(store=None, smtp_port: int | None = None, attempts: int = 3, waits: list[float] | None = None):
    senders = {"slack": WebhookSender("slack", timeout=5), "teams": WebhookSender("teams", timeout=5)}
    if smtp_port is not None:
        senders["email"] = SmtpSender("127.0.0.1", smtp_port, "alerts@castiel.local", timeout=5)
    sleeps = waits if waits is not None else []
    return Notifier(senders, store, attempts=attempts, initial_wait=0.01, max_wait=0.05, sleep=sleeps.append)


def test_email_reaches_a_real_smtp_server(smtp_server) -> None:
    n = _notifier(smtp_port=smtp_server.port)
    [d] = n.deliver(MSG, [parse_target("email", "oncall@example.com")])
    assert d.status == "sent" and d.attempts == 1
    [mail] = smtp_server.messages
    assert smtp_server.envelopes[0] == ("alerts@castiel.local", ["oncall@example.com"])
    assert mail["Subject"] == "[CRITICAL] Connector needs re-authorisation or was paused - acme"
    plain = next(p for p in mail.walk() if p.get_content_type() == "text/plain").get_payload(decode=True).decode()
    assert "Salesforce" in plain and "https://console.example/alerts" in plain


def test_slack_and_teams_payloads_reach_the_receiver(receiver_factory) -> None:
    slack, teams = receiver_factory([200]), receiver_factory([200])
    n = _notifier()
    ds = n.deliver(MSG, [parse_target("slack", slack.url + "/services/T/B/x"),
                         parse_target("teams", teams.url + "/webhookb2/abc")])
    assert [d.status for d in ds] == ["sent", "sent"]
    [s] = slack.bodies
    assert s["text"].startswith("[CRITICAL]") and s["blocks"][0]["type"] == "header"
    [t] = teams.bodies
    assert t["attachments"][0]["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert teams.requests[0]["path"] == "/webhookb2/abc"


def test_receiver_down_is_retried_then_marked_failed_and_recorded(receiver_factory, tmp_path) -> None:
    store = SqliteStore(tmp_path / "n.db")
    store.ensure_containers(CONTAINERS)
    down = receiver_factory([503])
    waits: list[float] = []
    n = _notifier(store, attempts=4, waits=waits)
    [d] = n.deliver(MSG, [parse_target("slack", down.url + "/hook")])
    assert d.status == "failed" and d.attempts == 4 and "503" in d.error
    assert len(down.requests) == 4 and len(waits) == 3
    [rec] = store.query("notifications", "acme")
    assert rec["status"] == "failed" and rec["attempts"] == 4 and rec["alertId"] == MSG.alert_id


def test_flaky_receiver_recovers_within_the_retries(receiver_factory) -> None:
    flaky = receiver_factory([500, 503, 200])
    [d] = _notifier(attempts=4).deliver(MSG, [parse_target("teams", flaky.url + "/hook")])
    assert d.status == "sent" and d.attempts == 3 and len(flaky.requests) == 3


def test_rate_limit_honours_retry_after_and_revoked_webhook_is_not_retried(receiver_factory) -> None:
    limited = receiver_factory([429, 200], retry_after="0.04")
    waits: list[float] = []
    [d] = _notifier(waits=waits).deliver(MSG, [parse_target("slack", limited.url + "/hook")])
    assert d.status == "sent" and waits == [0.04]
    gone = receiver_factory([404])
    [d] = _notifier().deliver(MSG, [parse_target("slack", gone.url + "/hook")])
    assert d.status == "failed" and d.attempts == 1 and "no_service" in d.error and len(gone.requests) == 1


def test_smtp_server_down_is_transient_and_retried() -> None:
    waits: list[float] = []
    [d] = _notifier(smtp_port=free_port(), attempts=3, waits=waits).deliver(
        MSG, [parse_target("email", "oncall@example.com")]
    )
    assert d.status == "failed" and d.attempts == 3 and "cannot reach the SMTP server" in d.error
