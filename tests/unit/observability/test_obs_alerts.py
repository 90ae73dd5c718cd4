"""Alert rules and the evaluator: thresholds validated, alerts open/de-duplicate/resolve, flaps damped."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.adapters.store import PLATFORM
from core.errors import Invalid, NotFound, StoreUnavailable, TransientError
from core.observability import alerts
from core.observability.alerts import AlertEvaluator, Override, effective_rules, validate_override, validate_threshold
from core.observability.notify import AlertMessage, Notifier, Target, parse_target
from core.observability.telemetry import Recorder

OPS = parse_target("slack", "https://hooks.slack.example/services/T0/B0/secret")
PLATFORM_MAIL = parse_target("email", "oncall@example.com")


class RecordingSender:
    """A Sender that keeps every message; ``fail_times`` makes the next N sends fail transiently."""

    def __init__(self, fail_times: int = 0) -> None:
        self.sent: list[tuple[Target, AlertMessage]] = []
        self.calls = 0
        self.fail_times = fail_times

    def send(self, target: Target, message: AlertMessage) -> None:
        self.calls += 1
        if self.fail_times > 0:
            self.fail_times -= 1
            raise TransientError("receiver answered 503")
        self.sent.append((target, message))


def _evaluator(store, clock, sender, **kw):
    notifier = Notifier({"slack": sender, "email": sender}, store, attempts=3, initial_wait=0, max_wait=0,
                        sleep=lambda s: None, now=clock)
    return AlertEvaluator(store, notifier, now=clock, fallback_channels=[PLATFORM_MAIL], **kw)


def _rules(**overrides: Override):
    return effective_rules({}, overrides, fallback_channels=[OPS])


# thresholds --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("rule", "raw", "reason"),
    [
        ("error_rate", 5, "between 0 and 1"),
        ("error_rate", "abc", "must be a number"),
        ("error_rate", float("nan"), "finite"),
        ("service_p95", -10, "between 1 ms and"),
        ("queue_backlog", 1.5, "whole number"),
        ("queue_backlog", True, "must be a number"),
        ("connector_attention", 1, "has no threshold"),
        ("experiment_srm", 0.5, "between"),
        ("nonexistent", 1, "unknown alert rule"),
    ],
)
def test_invalid_threshold_is_refused_with_the_reason(rule: str, raw: object, reason: str) -> None:
    with pytest.raises(Invalid) as e:
        validate_threshold(rule, raw)
    assert reason in e.value.message


def test_valid_thresholds_parse_including_percent() -> None:
    assert validate_threshold("error_rate", "5%") == pytest.approx(0.05)
    assert validate_threshold("service_p95", "750 ms") == 750.0
    assert validate_threshold("cost_over_threshold", "$1,200") == 1200.0
    assert validate_override("queue_backlog", threshold=250, severity="critical").threshold == 250.0
    with pytest.raises(Invalid, match="severity"):
        validate_override("queue_backlog", severity="panic")


def test_effective_rules_layer_platform_then_tenant_and_pick_channels() -> None:
    platform = {"*": Override("*", channels=(PLATFORM_MAIL,)), "service_p95": Override("service_p95", threshold=800)}
    tenant = {"service_p95": Override("service_p95", threshold=300),
              "model_drift": Override("model_drift", enabled=False)}
    eff = effective_rules(platform, tenant, fallback_channels=[OPS])
    assert eff["service_p95"].threshold == 300 and eff["service_p95"].overridden == ("threshold",)
    assert eff["error_rate"].threshold == 0.05
    assert eff["model_drift"].enabled is False
    assert eff["error_rate"].channels == (PLATFORM_MAIL,)
    assert effective_rules({}, {})["error_rate"].channels == ()
    # a rule's own channels (per rule and tenant) win over the default channels
    pager = parse_target("teams", "https://example.webhook.office.com/pager")
    per_rule = effective_rules(platform, {"queue_backlog": Override("queue_backlog", channels=(pager,))})
    assert per_rule["queue_backlog"].channels == (pager,) and per_rule["error_rate"].channels == (PLATFORM_MAIL,)


# lifecycle ----------------------------------------------------------------------------------
def test_alert_opens_once_deduplicates_and_resolves_after_clear_cycles(mem_store, fake_clock) -> None:
    sender = RecordingSender()
    ev = _evaluator(mem_store, fake_clock, sender, resolve_after=3)
    rules = _rules()
    for _ in range(5):
        res = ev.evaluate_tenant("t1", {"queue_backlog": 150}, rules)
        fake_clock.advance(minutes=1)
    assert res.active == 1
    docs = alerts.history(mem_store, "t1")
    assert len(docs) == 1 and docs[0]["status"] == "open" and docs[0]["value"] == 150
    assert len(sender.sent) == 1
    target, msg = sender.sent[0]
    assert target == OPS and msg.rule == "queue_backlog" and "150" in msg.summary
    for i in range(3):
        res = ev.evaluate_tenant("t1", {"queue_backlog": 20}, rules)
        fake_clock.advance(minutes=1)
        assert (res.resolved != []) == (i == 2)
    doc = alerts.history(mem_store, "t1")[0]
    assert doc["status"] == "resolved" and doc["resolvedAt"]
    assert [e["event"] for e in doc["events"]] == ["opened", "notified", "resolved"]


def test_flapping_condition_gives_one_alert_and_one_notification(mem_store, fake_clock) -> None:
    sender = RecordingSender()
    ev = _evaluator(mem_store, fake_clock, sender, resolve_after=2, reopen_within=timedelta(minutes=30))
    rules = _rules()
    # Breach for one cycle, clear for two (enough to resolve), repeatedly: a classic flap.
    for _ in range(6):
        ev.evaluate_tenant("t1", {"embedding_failure_rate": 0.2}, rules)
        fake_clock.advance(minutes=1)
        for _ in range(2):
            ev.evaluate_tenant("t1", {"embedding_failure_rate": 0.0}, rules)
            fake_clock.advance(minutes=1)
    episodes = alerts.history(mem_store, "t1")
    assert len(episodes) == 1
    assert episodes[0]["flaps"] == 5
    assert len(sender.sent) == 1
    # Short alternation never even resolves (hysteresis): still one alert.
    for i in range(10):
        ev.evaluate_tenant("t1", {"embedding_failure_rate": 0.2 if i % 2 else 0.0}, rules)
        fake_clock.advance(minutes=1)
    assert len(alerts.history(mem_store, "t1")) == 1 and len(sender.sent) == 1


def test_a_condition_returning_after_the_reopen_window_is_a_new_alert(mem_store, fake_clock) -> None:
    sender = RecordingSender()
    ev = _evaluator(mem_store, fake_clock, sender, resolve_after=1, reopen_within=timedelta(minutes=30))
    rules = _rules()
    ev.evaluate_tenant("t1", {"month_cost": 900.0}, rules)
    ev.evaluate_tenant("t1", {"month_cost": 100.0}, rules)
    fake_clock.advance(hours=2)
    ev.evaluate_tenant("t1", {"month_cost": 950.0}, rules)
    episodes = alerts.history(mem_store, "t1")
    assert len(episodes) == 2
    assert sorted(e["status"] for e in episodes) == ["open", "resolved"]
    assert [e["current"] for e in episodes] == [True, False]
    assert len(sender.sent) == 2


def test_per_subject_facts_give_one_alert_per_subject(mem_store, fake_clock) -> None:
    ev = _evaluator(mem_store, fake_clock, RecordingSender(), resolve_after=1)
    rules = _rules()
    facts = {"connectors_attention": {"c1": {"value": 1, "label": "Salesforce (needs_reauth)",
                                             "link": "integrations?tenant=t1&connection=c1"},
                                      "c2": 1}}
    ev.evaluate_tenant("t1", facts, rules)
    active = alerts.active_alerts(mem_store, "t1")
    assert {a["subject"] for a in active} == {"c1", "c2"}
    c1 = next(a for a in active if a["subject"] == "c1")
    assert c1["link"] == "integrations?tenant=t1&connection=c1" and c1["subjectLabel"].startswith("Salesforce")
    ev.evaluate_tenant("t1", {"connectors_attention": {"c2": 1}}, rules)
    assert [a["subject"] for a in alerts.active_alerts(mem_store, "t1")] == ["c2"]


def test_missing_fact_neither_opens_nor_resolves(mem_store, fake_clock) -> None:
    ev = _evaluator(mem_store, fake_clock, RecordingSender(), resolve_after=1)
    rules = _rules()
    ev.evaluate_tenant("t1", {"vector_search_p95_ms": 4000.0}, rules)
    res = ev.evaluate_tenant("t1", {}, rules)
    assert "vector_search_p95" in res.unknown_rules
    assert len(alerts.active_alerts(mem_store, "t1")) == 1


def test_disabling_a_rule_resolves_its_alerts(mem_store, fake_clock) -> None:
    ev = _evaluator(mem_store, fake_clock, RecordingSender())
    ev.evaluate_tenant("t1", {"queue_backlog": 500}, _rules())
    ev.evaluate_tenant("t1", {"queue_backlog": 500}, _rules(queue_backlog=Override("queue_backlog", enabled=False)))
    assert alerts.active_alerts(mem_store, "t1") == []


def test_tenant_threshold_override_is_used(mem_store, fake_clock) -> None:
    ev = _evaluator(mem_store, fake_clock, RecordingSender())
    ev.evaluate_tenant("t1", {"queue_backlog": 50}, _rules(queue_backlog=Override("queue_backlog", threshold=40)))
    ev.evaluate_tenant("t2", {"queue_backlog": 50}, _rules())
    assert len(alerts.active_alerts(mem_store, "t1")) == 1
    assert alerts.active_alerts(mem_store, "t2") == []


# acknowledge and silence ----------------------------------------------------------------------
def test_acknowledge_needs_a_reason_and_stops_reminders(mem_store, fake_clock) -> None:
    sender = RecordingSender()
    ev = _evaluator(mem_store, fake_clock, sender, remind_every=timedelta(hours=1))
    rules = _rules()
    ev.evaluate_tenant("t1", {"queue_backlog": 500}, rules)
    alert_id = alerts.active_alerts(mem_store, "t1")[0]["id"]
    fake_clock.advance(minutes=61)
    ev.evaluate_tenant("t1", {"queue_backlog": 500}, rules)
    assert [m.event for _, m in sender.sent] == ["opened", "reminder"]
    with pytest.raises(Invalid, match="reason is required"):
        alerts.acknowledge(mem_store, "t1", alert_id, "ops@x", "  ")
    doc = alerts.acknowledge(mem_store, "t1", alert_id, "ops@x", "restarting the worker", now=fake_clock())
    assert doc["status"] == "acknowledged" and doc["ackReason"] == "restarting the worker"
    fake_clock.advance(hours=3)
    ev.evaluate_tenant("t1", {"queue_backlog": 500}, rules)
    assert len(sender.sent) == 2
    with pytest.raises(NotFound):
        alerts.acknowledge(mem_store, "t1", "nope", "ops@x", "why")


def test_silence_suppresses_notifications_even_for_a_new_episode(mem_store, fake_clock) -> None:
    sender = RecordingSender()
    ev = _evaluator(mem_store, fake_clock, sender, resolve_after=1, reopen_within=timedelta(minutes=5))
    rules = _rules()
    ev.evaluate_tenant("t1", {"queue_backlog": 500}, rules)
    alert_id = alerts.active_alerts(mem_store, "t1")[0]["id"]
    with pytest.raises(Invalid, match="at most 30 days"):
        alerts.silence(mem_store, "t1", alert_id, "ops@x", "noisy", fake_clock() + timedelta(days=60),
                       now=fake_clock())
    with pytest.raises(Invalid, match="future"):
        alerts.silence(mem_store, "t1", alert_id, "ops@x", "noisy", fake_clock() - timedelta(minutes=1),
                       now=fake_clock())
    alerts.silence(mem_store, "t1", alert_id, "ops@x", "migration tonight", fake_clock() + timedelta(hours=12),
                   now=fake_clock())
    ev.evaluate_tenant("t1", {"queue_backlog": 0}, rules)
    fake_clock.advance(hours=1)
    ev.evaluate_tenant("t1", {"queue_backlog": 700}, rules)  # a new episode, still silenced
    assert len(alerts.history(mem_store, "t1")) == 2
    assert len(sender.sent) == 1
    fake_clock.advance(hours=12)
    ev.evaluate_tenant("t1", {"queue_backlog": 700}, rules)  # silence over: the pending notice goes out
    assert len(sender.sent) == 2


# notification failures and store outages ---------------------------------------------------------
def test_failed_notification_keeps_alert_open_and_is_retried_later(mem_store, fake_clock) -> None:
    sender = RecordingSender(fail_times=3)  # all three attempts of the first cycle fail
    ev = _evaluator(mem_store, fake_clock, sender, retry_failed_after=timedelta(minutes=5))
    rules = _rules()
    res = ev.evaluate_tenant("t1", {"queue_backlog": 500}, rules)
    assert [d.status for d in res.deliveries] == ["failed"] and res.deliveries[0].attempts == 3
    doc = alerts.active_alerts(mem_store, "t1")[0]
    assert doc["status"] == "open" and doc["notifyStatus"] == "failed" and "503" in doc["notifyError"]
    rec = mem_store.query("notifications", "t1")
    assert [(n["status"], n["attempts"]) for n in rec] == [("failed", 3)]
    fake_clock.advance(minutes=1)
    ev.evaluate_tenant("t1", {"queue_backlog": 500}, rules)
    assert sender.calls == 3  # not yet: waits retry_failed_after
    fake_clock.advance(minutes=5)
    ev.evaluate_tenant("t1", {"queue_backlog": 500}, rules)
    assert len(sender.sent) == 1
    assert alerts.active_alerts(mem_store, "t1")[0]["notifyStatus"] == "sent"


def test_store_unreachable_during_cycle_alerts_through_fallback_channel(mem_store, fake_clock) -> None:
    sender = RecordingSender()
    ev = _evaluator(mem_store, fake_clock, sender)

    def tenants():
        return ["t1", "t2"]

    def gather(tenant_id: str):
        if mem_store.down:
            raise StoreUnavailable("cannot open the SQLite store: disk I/O error")
        return {"queue_backlog": 1}

    rules_for = lambda tenant_id: _rules()  # noqa: E731
    mem_store.down = True
    s1 = ev.run_cycle(tenants, gather, rules_for)
    s2 = ev.run_cycle(tenants, gather, rules_for)
    assert not s1.store_ok and "disk I/O" in s1.store_error
    assert len(sender.sent) == 1, "one notice per outage, not one per cycle"
    target, msg = sender.sent[0]
    assert target == PLATFORM_MAIL and msg.rule == "store_unreachable" and msg.tenant_id == PLATFORM
    assert not s2.store_ok and ev.outage is not None
    mem_store.down = False
    s3 = ev.run_cycle(tenants, gather, rules_for)
    assert s3.store_ok and s3.tenants == 2 and ev.outage is None
    assert [m.event for _, m in sender.sent] == ["opened", "resolved"]
    hist = alerts.history(mem_store, PLATFORM)
    assert len(hist) == 1 and hist[0]["rule"] == "store_unreachable" and hist[0]["status"] == "resolved"


def test_a_tenant_with_bad_facts_does_not_stop_the_cycle(mem_store, fake_clock) -> None:
    ev = _evaluator(mem_store, fake_clock, RecordingSender())

    def gather(tenant_id: str):
        if tenant_id == "broken":
            raise ValueError("rollup missing a field")
        return {"queue_backlog": 1000}

    s = ev.run_cycle(lambda: ["broken", "ok"], gather, lambda t: _rules())
    assert s.tenants == 1 and "broken" in s.failed_tenants and s.opened == 1


def test_telemetry_facts_drive_error_rate_and_p95_rules(mem_store, fake_clock) -> None:
    rec = Recorder(mem_store, now=fake_clock)
    for i in range(100):
        rec.record("integrations.resync", 900 if i % 10 == 0 else 40, tenant_id="t1",
                   outcome="error" if i < 8 else "ok", error_kind="TransientError" if i < 8 else None)
    for _ in range(5):  # too few calls to judge
        rec.record("rare.op", 5000, tenant_id="t1", outcome="error")
    rec.record("store.get:x", 3, tenant_id="t1", kind="store", outcome="error", error_kind="StoreUnavailable")
    rec.flush()
    facts = alerts.telemetry_facts(mem_store, "t1", now=fake_clock())
    assert set(facts["service_error_rate"]) == {"integrations.resync"}
    assert facts["service_error_rate"]["integrations.resync"].value == pytest.approx(0.08)
    assert facts["store_connection_failures"] == 1
    assert facts["vector_search_p95_ms"] is None
    ev = _evaluator(mem_store, fake_clock, RecordingSender())
    ev.evaluate_tenant("t1", facts, _rules())
    assert {a["rule"] for a in alerts.active_alerts(mem_store, "t1")} == {"error_rate", "service_p95", "store_failures"}
