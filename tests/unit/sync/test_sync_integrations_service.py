"""IntegrationsService rules: roles and tenants, required reasons, secrets kept sealed, queue and audit side effects."""

from __future__ import annotations

import json

import pytest

from connectors.base import ConfigField
from core.errors import Forbidden, Invalid
from core.services.access import Principal
from core.services.audit import AuditLog
from core.services.integrations import IntegrationsService, public_connection
from core.services.work_queue import WorkQueue
from tests.unit.sync.sync_fakes import Env, ScriptedConnector, rows

ADMIN = Principal("u1", "admin@x", "admin")
OPS_T1 = Principal("u2", "ops@t1", "ops", tenant_id="t1")
SUPPORT_T1 = Principal("u3", "support@t1", "support", tenant_id="t1")
SUPPORT_T2 = Principal("u4", "support@t2", "support", tenant_id="t2")
ML_T1 = Principal("u5", "ml@t1", "ml_engineer", tenant_id="t1")


class SecretConnector(ScriptedConnector):
    name = "scripted"
    label = "Scripted"
    credential_fields = (ConfigField("api_key", "API key", secret=True),)


@pytest.fixture
def svc(env: Env) -> IntegrationsService:
    audit = AuditLog(env.store)
    return IntegrationsService(env.store, audit, WorkQueue(env.store, audit), env.engine, env.box,
                               lambda name: SecretConnector, {"scripted": "Scripted"})


def make(svc: IntegrationsService, tenant: str = "t1", name: str = "CRM") -> str:
    return str(svc.create_connection(ADMIN, tenant, "scripted", name, {"region": "eu"}, {"api_key": "k-123"},
                                     reason="setup")["id"])


def test_create_validates_and_seals_credentials(svc: IntegrationsService, env: Env) -> None:
    with pytest.raises(Invalid, match="needs: API key"):
        svc.create_connection(ADMIN, "t1", "scripted", "CRM", {}, {}, reason="setup")
    with pytest.raises(Invalid, match="reason is required"):
        svc.create_connection(ADMIN, "t1", "scripted", "CRM", {}, {"api_key": "k"}, reason=" ")
    with pytest.raises(Forbidden):
        svc.create_connection(OPS_T1, "t1", "scripted", "CRM", {}, {"api_key": "k"}, reason="setup")
    with pytest.raises(Invalid, match="unknown provider"):
        svc.create_connection(ADMIN, "t1", "nope", "CRM", {}, {}, reason="setup")
    conn_id = make(svc)
    stored = env.store.get("connections", "t1", conn_id)
    assert "k-123" not in json.dumps(stored)
    assert json.loads(env.box.open(stored["credentialsSealed"])) == {"api_key": "k-123"}
    assert "credentialsSealed" not in public_connection(stored) and stored["credentialFields"] == ["api_key"]
    audit = env.store.query("audit", "t1", {"action": "integration.create"})
    assert audit and "k-123" not in json.dumps(audit)


def test_list_is_scoped_to_the_users_tenant(svc: IntegrationsService) -> None:
    make(svc, "t1", "A")
    make(svc, "t2", "B")
    assert {r.tenant_id for r in svc.list_connections(ADMIN).rows} == {"t1", "t2"}
    assert {r.tenant_id for r in svc.list_connections(SUPPORT_T1).rows} == {"t1"}
    with pytest.raises(Forbidden):
        svc.list_connections(SUPPORT_T1, "t2")
    with pytest.raises(Forbidden):
        svc.list_connections(ML_T1)
    with pytest.raises(Invalid, match="unknown status"):
        svc.list_connections(ADMIN, status="broken")


def test_actions_need_a_reason_the_right_tenant_and_are_queued_and_audited(
    svc: IntegrationsService, env: Env
) -> None:
    conn_id = make(svc)
    with pytest.raises(Invalid, match="reason is required to start a full resync"):
        svc.resync(SUPPORT_T1, "t1", conn_id, "", full=True)
    with pytest.raises(Forbidden):
        svc.resync(SUPPORT_T2, "t1", conn_id, "not mine")
    with pytest.raises(Invalid, match="choose streams among"):
        svc.resync(SUPPORT_T1, "t1", conn_id, "one stream", full=True, stream="invoices")
    result = svc.resync(SUPPORT_T1, "t1", conn_id, "missing deals", full=True, stream="opportunities")
    run = env.store.get("sync_runs", "t1", str(result.run_id))
    assert run["full"] is True and run["streams"] == ["opportunities"] and run["jobId"] == result.job_id
    assert run["trigger"] == {"type": "user", "actor": "support@t1", "reason": "missing deals",
                              "action": "full_resync"}
    job = env.store.get("jobs", "t1", result.job_id)
    assert job["queue"] == "sync-inbound-scheduled" and job["payload"]["runId"] == run["id"]
    audit = env.store.query("audit", "t1", {"action": "integration.full_resync"})
    assert audit[0]["reason"] == "missing deals" and audit[0]["actor"] == "support@t1"


def test_pause_blocks_resync_and_resume_restarts_the_failure_streak(svc: IntegrationsService, env: Env) -> None:
    conn_id = make(svc)
    env.store.update("connections", "t1", conn_id, lambda d: {**d, "consecutiveFailures": 7})
    svc.pause(OPS_T1, "t1", conn_id, "vendor outage")
    with pytest.raises(Invalid, match="paused"):
        svc.resync(OPS_T1, "t1", conn_id, "try")
    with pytest.raises(Invalid, match="already paused"):
        svc.pause(OPS_T1, "t1", conn_id, "again")
    svc.resume(OPS_T1, "t1", conn_id, "outage over")
    conn = env.store.get("connections", "t1", conn_id)
    assert conn["status"] == "active" and conn["consecutiveFailures"] == 0


def test_credentials_are_admin_only_and_blank_fields_keep_their_value(svc: IntegrationsService, env: Env) -> None:
    conn_id = make(svc)
    with pytest.raises(Forbidden):
        svc.update_credentials(OPS_T1, "t1", conn_id, {"api_key": "x"}, "rotate")
    with pytest.raises(Invalid, match="enter at least one"):
        svc.update_credentials(ADMIN, "t1", conn_id, {"api_key": ""}, "rotate")
    with pytest.raises(Invalid, match="no credential field"):
        svc.update_credentials(ADMIN, "t1", conn_id, {"password": "x"}, "rotate")
    svc.update_credentials(ADMIN, "t1", conn_id, {"api_key": "k-456"}, "rotate")
    stored = env.store.get("connections", "t1", conn_id)
    assert json.loads(env.box.open(stored["credentialsSealed"])) == {"api_key": "k-456"}


def test_retry_creates_a_new_run_linked_to_the_failed_one(svc: IntegrationsService, env: Env) -> None:
    env.script["rows"] = {"accounts": rows("A", 2)}
    env.script["config_error"] = "401 bad key"
    conn_id = make(svc)
    first = svc.resync(OPS_T1, "t1", conn_id, "sync")
    failed = env.engine.execute("t1", str(first.run_id))
    assert failed["status"] == "failed"
    with pytest.raises(Invalid, match="reason is required"):
        svc.retry_run(OPS_T1, "t1", failed["id"], "")
    again = svc.retry_run(OPS_T1, "t1", failed["id"], "key fixed")
    new = env.store.get("sync_runs", "t1", str(again.run_id))
    assert new["retryOf"] == failed["id"] and new["status"] == "queued"
    env.script.pop("config_error")
    assert env.engine.execute("t1", new["id"])["status"] == "succeeded"
    with pytest.raises(Invalid, match="only failed, partial or cancelled"):
        svc.retry_run(OPS_T1, "t1", new["id"], "again")
