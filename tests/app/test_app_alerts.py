"""Alerts screen under AppTest: open alerts with acknowledge/silence (reason required, audited), rule edits with
validation, channels with a test message to a local receiver, history; tenant scoping."""

from __future__ import annotations

from core.observability.alerts import load_overrides
from core.services.access import SYSTEM
from tests.app.apptest_helpers import not_authorised, open_page, texts
from tests.integration.observability.conftest import _start_receiver


def _click(at, label: str):
    next(b for b in at.button if b.label == label).click().run()
    return at


def _open_alert(services, tenant: str) -> str:
    rec = services.telemetry
    for i in range(30):
        rec.record("integrations.resync", 40, tenant_id=tenant, outcome="error" if i < 9 else "ok",
                   error_kind="TransientError" if i < 9 else None)
    rec.flush()
    services.alerting.evaluate()
    [alert] = services.alerting.active(SYSTEM, tenant)
    return alert["id"]


def test_acknowledge_and_silence_need_a_reason_and_are_audited(app_env, services, principals, two_tenants):
    a, _ = two_tenants
    alert_id = _open_alert(services, a)
    at = open_page("alerts", principals["ops"], query={"alert": alert_id})
    assert not at.exception, at.exception
    assert "integrations.resync" in at.dataframe[0].value["subject"].tolist()
    at.radio(key="alerts_action").set_value("Acknowledge")
    _click(at, "Apply")
    assert "reason is required" in texts(at)
    assert services.store.get("alerts", a, alert_id)["status"] == "open"
    at.text_input(key="alerts_reason").input("restarting the sync worker")
    _click(at, "Apply")
    assert not at.exception
    doc = services.store.get("alerts", a, alert_id)
    assert doc["status"] == "acknowledged" and doc["ackReason"] == "restarting the sync worker"
    at.radio(key="alerts_action").set_value("Silence")
    at.number_input(key="alerts_hours").set_value(2.0)
    at.text_input(key="alerts_reason").input("vendor maintenance window")
    _click(at, "Apply")
    assert services.store.get("alerts", a, alert_id)["silenceReason"] == "vendor maintenance window"
    actions = [r["action"] for r in services.audit.search(SYSTEM, a).rows]
    assert "alert.acknowledge" in actions and "alert.silence" in actions


def test_rule_edit_refuses_an_invalid_threshold_with_the_reason(app_env, services, principals, two_tenants):
    a, _ = two_tenants
    at = open_page("alerts", principals["ops"])
    assert not at.exception
    at.selectbox(key="rule_pick").select("error_rate")
    at.text_input(key="rule_threshold").input("12")
    at.text_input(key="rule_reason").input("noisy tenant")
    _click(at, "Save rule")
    assert "must be between 0 and 1" in texts(at)
    assert "error_rate" not in load_overrides(services.store, a)
    at.text_input(key="rule_threshold").input("2%")
    _click(at, "Save rule")
    assert load_overrides(services.store, a)["error_rate"].threshold == 0.02
    rules = at.dataframe[0].value if "rule" in at.dataframe[0].value else at.dataframe[1].value
    row = rules[rules["rule"] == "error_rate"].iloc[0]
    assert row["fires when"] == "> 2.0%" and "threshold" in row["changed here"]


def test_channel_test_message_reaches_a_local_receiver(app_env, services, principals, two_tenants):
    receiver = _start_receiver([200])
    try:
        at = open_page("alerts", principals["ops"])
        at.selectbox(key="channel_kind").select("slack")
        at.text_input(key="channel_address").input(receiver.url + "/services/T/B/x")
        at.text_input(key="channel_reason").input("ops channel")
        _click(at, "Apply")  # the first Apply on the page is the alerts form only when alerts exist
        assert not at.exception
        assert [t.label.split("…")[0] for t in services.alerting.default_channels(principals["ops"], two_tenants[0])]
        at.radio(key="channel_op").set_value("Send a test")
        _click(at, "Apply")
        assert "Test sent" in texts(at)
        assert receiver.bodies and receiver.bodies[-1]["text"].startswith("[TEST] Test notification")
    finally:
        receiver.stop()


def test_history_and_scoping(app_env, services, principals, two_tenants):
    a, b = two_tenants
    _open_alert(services, b)
    ops_a = open_page("alerts", principals["ops"])
    assert "No open alerts." in texts(ops_a)
    admin = open_page("alerts", principals["admin"])
    assert not admin.exception
    history = admin.dataframe[-1].value
    assert b in history["tenant"].tolist()


def test_ml_engineer_cannot_open_it(app_env, services, principals):
    assert not_authorised(open_page("alerts", principals["ml_engineer"]))
