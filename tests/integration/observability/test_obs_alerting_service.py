"""Alerting end to end on real SQLite: a connector driven into failure opens an alert that notifies a
local receiver and resolves when the connector recovers; a receiver that is down leaves the alert open;
an unreachable store becomes an alert about the store; a flapping condition gives one alert."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from connectors.base import Connector, Page, Record, Stream
from core.adapters.notify_channels import WebhookSender
from core.adapters.store import PLATFORM
from core.bootstrap import build
from core.config import load_settings
from core.errors import ConfigError, Forbidden, Invalid
from core.migrate import migrate
from core.observability.notify import Notifier, parse_target
from core.services.access import SYSTEM
from core.services.alerting import AlertingService
from core.services.sync_engine import SyncEngine, new_connection


class ScriptedCRM(Connector):
    """One stream; raises a config error (revoked consent) while ``script['revoked']`` is set."""

    name = "scripted"
    label = "Scripted CRM"
    streams = (Stream("accounts", "account", cursor_field="modifiedAt"),)

    def __init__(self, config: dict[str, Any], credentials: dict[str, Any] | None = None, *, script: dict[str, Any],
                 **kw: Any) -> None:
        super().__init__(config, credentials, **kw)
        self.script = script

    def read_pages(self, stream_name: str, state: dict[str, Any] | None, full: bool = False) -> Iterator[Page]:
        if self.script.get("revoked"):
            raise ConfigError("invalid_grant: the refresh token was revoked by the user")
        yield Page(records=[Record("accounts", "a1", "account", {"name": "Acme", "modifiedAt": "2025-01-01T00:00:00Z"},
                                   cursor_value="2025-01-01T00:00:00Z")], next_state={"modifiedAt": "x"})

    def test_connection(self) -> str:
        return "ok"

    def token_info(self) -> dict[str, Any] | None:
        return None


def _notifier(services) -> Notifier:
    return Notifier({"slack": WebhookSender("slack", timeout=5), "teams": WebhookSender("teams", timeout=5)},
                    services.store, attempts=3, initial_wait=0.01, max_wait=0.02)


def _alerting(services, **kw: Any) -> AlertingService:
    from core.services.alerting import default_fact_sources

    return AlertingService(services.store, services.audit, _notifier(services), tenant_ids=services.tenants.all_ids,
                           fact_sources=kw.pop("fact_sources", default_fact_sources(services)), **kw)


def test_connector_driven_into_failure_opens_notifies_and_resolves(services, two_tenants, principals,
                                                                   receiver_factory) -> None:
    tenant = two_tenants[0]
    hook = receiver_factory([200])
    script: dict[str, Any] = {"revoked": True}
    engine = SyncEngine(services.store, lambda provider, config, creds, token_store: ScriptedCRM(
        config, creds, token_store=token_store, script=script), services.box, lambda t, d, op: None)
    conn = services.store.create("connections", new_connection(tenant, "scripted", "Salesforce EU",
                                                               credentials_sealed=services.box.seal("{}")))

    def sync() -> dict[str, Any]:
        run = engine.create_run(conn, {"type": "user", "actor": "ops@x", "reason": "test"})
        return engine.execute(tenant, run["id"])

    assert sync()["status"] == "failed"
    alerting = _alerting(services, resolve_after=2)
    ops = principals["ops"]
    alerting.set_default_channels(ops, tenant, [parse_target("slack", hook.url + "/services/T/B/x")],
                                  reason="ops channel for tenant A")
    s1 = alerting.evaluate()
    assert s1.store_ok and s1.opened == 1, s1
    [alert] = alerting.active(ops, tenant)
    assert alert["rule"] == "connector_attention" and alert["subject"] == conn["id"]
    assert alert["link"] == f"integrations?tenant={tenant}&connection={conn['id']}"
    [msg] = hook.bodies
    assert "Salesforce EU" in msg["text"] and msg["text"].startswith("[CRITICAL]")
    alerting.evaluate()
    assert len(hook.requests) == 1, "an ongoing condition is not announced again"
    assert alerting.active(principals["admin"], two_tenants[1]) == []

    script["revoked"] = False
    assert sync()["status"] == "succeeded"
    alerting.evaluate()
    assert alerting.active(ops, tenant), "one clear cycle is not enough (flap damping)"
    s = alerting.evaluate()
    assert s.resolved == 1 and alerting.active(ops, tenant) == []
    [episode] = alerting.history(ops, tenant)
    assert episode["status"] == "resolved"
    actions = [r["action"] for r in services.audit.search(SYSTEM, tenant).rows]
    assert "alert_channels.set" in actions


def test_notification_target_down_retried_then_failed_and_alert_stays_open(services, two_tenants, principals,
                                                                          receiver_factory) -> None:
    tenant = two_tenants[0]
    down = receiver_factory([503])
    alerting = _alerting(services, fact_sources=[lambda t: {"queue_backlog": 250 if t == tenant else 0}])
    alerting.set_default_channels(principals["admin"], None, [parse_target("teams", down.url + "/hook")],
                                  reason="platform default channel")
    s = alerting.evaluate()
    assert [d.status for d in s.deliveries] == ["failed"] and s.deliveries[0].attempts == 3
    assert len(down.requests) == 3
    [alert] = alerting.active(principals["ops"], tenant)
    assert alert["status"] == "open" and alert["notifyStatus"] == "failed" and "503" in alert["notifyError"]
    [note] = alerting.notifications(principals["ops"], tenant, alert["id"])
    assert note["status"] == "failed" and note["attempts"] == 3 and "/hook" not in note["target"].split("…")[0]
    alerting.evaluate()  # still down; retried only after retry_failed_after
    assert alerting.active(principals["ops"], tenant)[0]["status"] == "open"


def test_store_unreachable_while_evaluating_alerts_through_the_configured_channel(tmp_path: Path,
                                                                                  receiver_factory) -> None:
    hook = receiver_factory([200])
    settings = load_settings(data_dir=tmp_path / "var", alert_channels=f"slack:{hook.url}/services/ops")
    services = build(settings)
    migrate(services)
    services.tenants.create(SYSTEM, "tenant-a", "Tenant A", reason="test")
    services.overrides["notifier"] = _notifier(services)
    alerting = services.alerting
    assert alerting.evaluate().store_ok
    db = settings.sqlite_path
    services.store.close()
    os.rename(db, db.with_suffix(".moved"))
    db.mkdir()  # the store's path is now a folder: every open fails like a lost volume
    try:
        s1 = alerting.evaluate()
        s2 = alerting.evaluate()
    finally:
        db.rmdir()
        os.rename(db.with_suffix(".moved"), db)
    assert not s1.store_ok and s1.store_error and not s2.store_ok
    [down_msg] = hook.bodies
    assert "Store unreachable" in down_msg["text"] and "cannot reach the store" in down_msg["text"]
    s3 = alerting.evaluate()
    assert s3.store_ok and s3.tenants == 2  # the platform itself and tenant-a
    assert len(hook.bodies) == 2 and hook.bodies[1]["text"].startswith("[RESOLVED] Store unreachable")
    [rec] = alerting.history(SYSTEM, None, rule="store_unreachable")
    assert rec["tenantId"] == PLATFORM and rec["status"] == "resolved"
    services.store.close()


def test_flapping_condition_gives_one_alert_and_one_message(services, two_tenants, principals,
                                                            receiver_factory) -> None:
    tenant = two_tenants[0]
    hook = receiver_factory([200])
    state = {"n": 0}

    def drift(tenant_id: str) -> dict[str, Any]:
        # The drift check flips every cycle for tenant A's model: the definition of a flap.
        on = tenant_id == tenant and state["n"] % 3 == 0
        return {"model_drift": {"win_probability": 1.0 if on else 0.0}}

    alerting = _alerting(services, fact_sources=[drift], resolve_after=2, reopen_within=timedelta(hours=1))
    alerting.set_default_channels(principals["admin"], None, [parse_target("slack", hook.url + "/x")], reason="r")
    for _ in range(15):
        alerting.evaluate()
        state["n"] += 1
    episodes = alerting.history(principals["ops"], tenant, rule="model_drift")
    assert len(episodes) == 1 and episodes[0]["flaps"] >= 3
    assert len(hook.requests) == 1


def test_rule_changes_are_validated_scoped_and_audited(services, two_tenants, principals) -> None:
    alerting = _alerting(services)
    ops, admin = principals["ops"], principals["admin"]
    tenant = two_tenants[0]
    with pytest.raises(Invalid, match="between 0 and 1"):
        alerting.set_override(ops, tenant, "error_rate", "tighten", threshold="12")
    with pytest.raises(Invalid, match="reason is required"):
        alerting.set_override(ops, tenant, "error_rate", " ", threshold="0.02")
    with pytest.raises(Forbidden):
        alerting.set_override(ops, None, "error_rate", "platform", threshold="0.02")
    with pytest.raises(Forbidden):
        alerting.set_override(ops, two_tenants[1], "error_rate", "other tenant", threshold="0.02")
    assert not [r for r in services.audit.search(SYSTEM, tenant).rows if r["action"] == "alert_rule.set"]
    alerting.set_override(ops, tenant, "error_rate", "noisy tenant", threshold="2%")
    alerting.set_override(admin, None, "service_p95", "platform SLO", threshold=800)
    rules = {r.key: r for r in alerting.rules(ops, tenant)}
    assert rules["error_rate"].threshold == pytest.approx(0.02) and rules["error_rate"].overridden == ("threshold",)
    assert rules["service_p95"].threshold == 800
    assert rules["cost_over_threshold"].threshold == 500  # from the tenant settings default
    audit = [r for r in services.audit.search(SYSTEM, tenant).rows if r["action"] == "alert_rule.set"]
    assert audit[0]["reason"] == "noisy tenant" and audit[0]["after"]["threshold"] == pytest.approx(0.02)
    alerting.reset_override(ops, tenant, "error_rate", "back to default")
    assert {r.key: r for r in alerting.rules(ops, tenant)}["error_rate"].threshold == 0.05


def test_ack_and_silence_are_audited_and_scoped(services, two_tenants, principals) -> None:
    tenant = two_tenants[0]
    alerting = _alerting(services, fact_sources=[lambda t: {"queue_backlog": 500}])
    alerting.evaluate()
    ops = principals["ops"]
    [alert] = alerting.active(ops, tenant)
    alerting.acknowledge(ops, tenant, alert["id"], "looking at the worker")
    alerting.silence(ops, tenant, alert["id"], 2, "deploy in progress")
    with pytest.raises(Forbidden):
        alerting.acknowledge(ops, two_tenants[1], alert["id"], "not mine")
    with pytest.raises(Invalid):
        alerting.silence(ops, tenant, alert["id"], 0, "zero")
    doc = alerting.get(ops, tenant, alert["id"])
    assert doc["status"] == "acknowledged" and doc["silencedUntil"] and doc["silenceReason"] == "deploy in progress"
    actions = {r["action"]: r for r in services.audit.search(SYSTEM, tenant).rows}
    assert actions["alert.acknowledge"]["reason"] == "looking at the worker"
    assert actions["alert.silence"]["reason"] == "deploy in progress"


def test_experiment_sample_ratio_mismatch_alerts_once_for_the_platform(services, two_tenants, principals) -> None:
    a, b = two_tenants
    now = "2025-03-01T00:00:00.000000Z"
    services.store.create("experiments", {
        "id": "exp-intent-v2", "tenantId": PLATFORM, "name": "Intent prompt v2", "status": "running",
        "variants": [{"name": "control", "weight": 50}, {"name": "v2", "weight": 50}],
        "weightsHistory": [{"from": now, "weights": [50, 50]}], "targetTenants": [], "createdAt": now,
    })
    for tenant, control, v2 in ((a, 600, 420), (b, 400, 380)):
        for variant, units in (("control", control), ("v2", v2)):
            services.store.create("exp_rollups", {"id": f"exp-intent-v2:{variant}:2025-03-01", "tenantId": tenant,
                                                  "experimentId": "exp-intent-v2", "variant": variant,
                                                  "day": "2025-03-01", "units": units, "metrics": {}})
    alerting = _alerting(services, fact_sources=[])
    alerting.evaluate()
    [alert] = alerting.active(principals["admin"], None)
    assert alert["tenantId"] == PLATFORM and alert["rule"] == "experiment_srm" and alert["subject"] == "exp-intent-v2"
    assert alert["value"] < 0.001  # 1000 vs 800 units on a 50/50 split
    assert alerting.active(principals["ops"], a) == []  # one platform alert, not one per tenant
    ov = services.overview.overview(principals["admin"])
    cell = next(r for r in ov.rows if r.tenant_id == a).cells["experiments"]
    assert cell.text == "1 running · 1 SRM" and cell.status == "bad" and "experiment=exp-intent-v2" in cell.link


def test_worker_watchdog_announces_a_store_outage_without_the_scheduler(tmp_path: Path, receiver_factory) -> None:
    import time

    from core.adapters.sqlite_store import SqliteStore
    from core.errors import StoreUnavailable
    from jobs.tasks.alerts import StoreWatchdog

    class SwitchableSqlite(SqliteStore):
        """Real SQLite that can be cut off for every thread at once (like a lost volume or network)."""

        down = False

        def _conn(self):  # type: ignore[no-untyped-def]
            if self.down:
                raise StoreUnavailable(f"cannot open the SQLite store at {self.path}: disk I/O error")
            return super()._conn()

    hook = receiver_factory([200])
    settings = load_settings(data_dir=tmp_path / "var", alert_channels=f"slack:{hook.url}/services/ops")
    raw = SwitchableSqlite(settings.sqlite_path)
    services = build(settings, store=raw)
    migrate(services)
    services.overrides["notifier"] = _notifier(services)
    watchdog = StoreWatchdog(services, interval=0.1).start()
    try:
        time.sleep(0.3)
        assert hook.bodies == [], "a healthy store raises nothing"
        raw.down = True
        deadline = time.time() + 10
        while time.time() < deadline and not hook.bodies:
            time.sleep(0.05)
        assert hook.bodies and "Store unreachable" in hook.bodies[0]["text"]
        time.sleep(0.3)
        assert len(hook.bodies) == 1, "one notice per outage"
        raw.down = False
        while time.time() < deadline and len(hook.bodies) < 2:
            time.sleep(0.05)
        assert hook.bodies[-1]["text"].startswith("[RESOLVED] Store unreachable")
        assert len(hook.bodies) == 2
    finally:
        watchdog.stop()
        raw.down = False
        services.store.close()
