"""Integrations page under AppTest: health list across tenants, detail by deep link, actions with reasons, progress."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from core.bootstrap import Services, build
from core.config import load_settings
from core.services.access import Principal
from core.services.integrations import IntegrationsService
from jobs.runner import Worker
from tests.app.apptest_helpers import not_authorised, open_page, texts
from tests.fakes.change_hook import collect_changes

SECRET = "sk-live-do-not-show-7f3a"


def frame(at: Any, column: str) -> Any:
    """The first table on the page with this column (AppTest does not expose keys of plain dataframes)."""
    for df in at.dataframe:
        if column in df.value.columns:
            return df.value
    raise AssertionError(f"no table with a {column!r} column; tables: {[list(d.value.columns) for d in at.dataframe]}")


def open_detail(principal: Principal, connection_id: str) -> Any:
    """Open the page at /integrations?connection=<id>, as a deep link does."""
    at = open_page("integrations", principal)
    at.query_params["connection"] = connection_id
    at.run()
    return at


def write_crm(folder: Path, n: int = 12) -> Path:
    crm = folder / "crm"
    crm.mkdir(parents=True, exist_ok=True)
    with (crm / "accounts.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "name", "industry", "updated_at"])
        for i in range(n):
            w.writerow([f"ACC-{i:03d}", f"Account {i}", "Software", f"2025-01-01T00:00:{i:02d}Z"])
    return folder


@pytest.fixture
def integ(services: Services, principals: dict[str, Principal], two_tenants: tuple[str, str],
          tmp_path: Path) -> dict[str, Any]:
    svc: IntegrationsService = services.integrations
    admin = principals["admin"]
    root = str(write_crm(tmp_path / "export"))
    cfg = {"path": root, "documents_dir": "documents", "crm_dir": "crm", "page_size": 5}
    a = svc.create_connection(admin, "tenant-a", "localfiles", "Acme export", cfg,
                              enabled_streams=["accounts"], reason="setup")
    broken = svc.create_connection(admin, "tenant-a", "localfiles", "Broken export",
                                   {**cfg, "path": str(tmp_path / "missing")}, enabled_streams=["accounts"],
                                   reason="setup")
    b = svc.create_connection(admin, "tenant-b", "localfiles", "Other tenant export", cfg,
                              enabled_streams=["accounts"], reason="setup")
    return {"svc": svc, "a": a["id"], "broken": broken["id"], "b": b["id"], "root": root}


def run_worker(data_dir: Path, items: int = 5) -> int:
    """The worker process: its own composition with the document hook wired."""
    changes: list[tuple[str, str, str]] = []
    worker_services = build(load_settings(data_dir=data_dir),
                            on_document_changed=collect_changes(changes))
    worker = Worker(worker_services, consumers=1, with_scheduler=False)
    done = 0
    while done < items and worker.run_one():
        done += 1
    worker_services.store.close()
    return done


def sync_now(services: Services, data_dir: Path, principal: Principal, tenant: str, conn_id: str) -> None:
    services.integrations.resync(principal, tenant, conn_id, "test setup")
    assert run_worker(data_dir) >= 1


def test_list_shows_counts_table_and_csv_across_tenants(app_env, services, principals, integ, data_dir):
    sync_now(services, data_dir, principals["admin"], "tenant-a", integ["a"])
    services.integrations.resync(principals["admin"], "tenant-a", integ["broken"], "test setup")
    run_worker(data_dir)
    at = open_page("integrations", principals["admin"])
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    # The broken folder is a config error: needs a person. The never-synced tenant-b one is still new.
    assert metrics["Needs re-auth"] == "1"
    assert metrics["Healthy"] == "2"
    df = frame(at, "freshness lag")
    assert set(df["connection"]) == {"Acme export", "Broken export", "Other tenant export"}
    assert df.iloc[0]["connection"] == "Broken export"  # the most urgent first
    healthy = df[df["connection"] == "Acme export"].iloc[0]
    assert healthy["records synced"] == 12 and healthy["7-day success"] == 1.0
    assert at.get("download_button")  # the CSV export is there
    at.selectbox(key="integ_f_status").set_value("needs_reauth").run()
    df = frame(at, "freshness lag")
    assert list(df["connection"]) == ["Broken export"]
    assert "does not exist" in df.iloc[0]["why"]


def test_tenant_user_sees_only_own_tenant(app_env, services, principals, integ):
    at = open_page("integrations", principals["support"])
    assert not at.exception
    df = frame(at, "freshness lag")
    assert set(df["tenant"]) == {"tenant-a"}
    other = open_detail(principals["support"], integ["b"])
    assert not other.exception
    assert f"connection {integ['b']} does not exist in tenant tenant-a" in texts(other)
    assert not other.dataframe


def test_ml_engineer_is_not_authorised(app_env, services, principals, integ):
    at = open_page("integrations", principals["ml_engineer"])
    assert not_authorised(at)
    assert not at.dataframe


def test_deep_link_detail_shows_health_runs_and_cursors(app_env, services, principals, integ, data_dir):
    sync_now(services, data_dir, principals["admin"], "tenant-a", integ["a"])
    at = open_detail(principals["ops"], integ["a"])
    assert not at.exception, at.exception
    assert at.title[0].value == "Acme export"
    assert "Healthy" in texts(at)
    runs = frame(at, "trigger")
    assert list(runs["status"]) == ["succeeded"] and runs.iloc[0]["written"] == 12
    assert "test setup" in runs.iloc[0]["trigger"]
    streams = frame(at, "cursor field")
    acc = streams[streams["stream"] == "accounts"].iloc[0]
    assert json.loads(acc["cursor"]) == {"id": "ACC-011", "updated_at": "2025-01-01T00:00:11.000000Z"}
    assert acc["records written"] == 12
    assert at.get("vega_lite_chart")  # the run history chart


def test_support_resyncs_from_the_screen_and_watches_it_finish(app_env, services, principals, integ, data_dir):
    support = principals["support"]
    at = open_detail(support, integ["a"])
    at.button(key="integ_act_resync").click().run()
    at.button(key="integ_dlg_resync_go").click().run()
    assert "a reason is required to start a resync" in texts(at)
    at.text_area(key="integ_dlg_resync_reason").input("customer reports missing accounts")
    at.button(key="integ_dlg_resync_go").click().run()
    assert not at.exception, at.exception
    job = services.store.query("jobs", "tenant-a", {"kind": "sync.run"})
    assert len(job) == 1 and job[0]["queue"] == "sync-inbound-scheduled"
    assert "Resync: queued" in texts(at) or at.get("progress")
    assert run_worker(data_dir) == 1
    at.run()
    assert "Resync finished: succeeded · 12 read, 12 written, 0 skipped" in texts(at)
    audit = services.store.query("audit", "tenant-a", {"action": "integration.resync"})
    assert audit[0]["reason"] == "customer reports missing accounts" and audit[0]["actor"] == support.email
    assert services.store.count("crm_records", "tenant-a") == 12


def test_full_resync_of_one_stream_needs_confirmation(app_env, services, principals, integ, data_dir):
    sync_now(services, data_dir, principals["admin"], "tenant-a", integ["a"])
    at = open_detail(principals["ops"], integ["a"])
    at.button(key="integ_act_full").click().run()
    assert at.button(key="integ_dlg_full_go").disabled
    at.selectbox(key="integ_dlg_full_stream").set_value("accounts")
    at.text_area(key="integ_dlg_full_reason").input("cursor looked wrong")
    at.checkbox(key="integ_dlg_full_sure").check().run()
    at.button(key="integ_dlg_full_go").click().run()
    assert not at.exception, at.exception
    runs = services.store.query("sync_runs", "tenant-a", {"connectionId": integ["a"]}, order_by="queuedAt")
    assert runs[-1]["full"] is True and runs[-1]["streams"] == ["accounts"]
    run_worker(data_dir)
    at.run()
    assert "Full resync of accounts finished: succeeded · 12 read, 0 written" in texts(at)
    assert services.store.count("crm_records", "tenant-a") == 12  # nothing duplicated


def test_pause_and_resume_with_reason(app_env, services, principals, integ):
    at = open_detail(principals["support"], integ["a"])
    at.button(key="integ_act_pause").click().run()
    at.text_area(key="integ_dlg_pause_reason").input("vendor maintenance window")
    at.button(key="integ_dlg_pause_go").click().run()
    assert not at.exception, at.exception
    assert "Connection paused." in texts(at)
    assert "Paused" in texts(at) and "vendor maintenance window" in texts(at)
    assert at.button(key="integ_act_resync").disabled
    at.button(key="integ_act_pause").click().run()
    at.text_area(key="integ_dlg_pause_reason").input("window over")
    at.button(key="integ_dlg_pause_go").click().run()
    assert "Connection resumed." in texts(at)
    actions = [r["action"] for r in services.store.query("audit", "tenant-a") if r["action"].startswith("integration.")]
    assert "integration.pause" in actions and "integration.resume" in actions


def test_test_connection_reports_the_vendor_answer(app_env, services, principals, integ, data_dir):
    at = open_detail(principals["support"], integ["broken"])
    at.button(key="integ_act_test").click().run()
    at.text_area(key="integ_dlg_test_reason").input("checking the folder")
    at.button(key="integ_dlg_test_go").click().run()
    assert run_worker(data_dir) == 1
    at.run()
    assert "Test:" in texts(at) and "does not exist" in texts(at)
    assert "Last test" in texts(at)


def test_failed_run_shows_attempt_errors_and_can_be_retried(app_env, services, principals, integ, data_dir):
    services.integrations.resync(principals["admin"], "tenant-a", integ["broken"], "first try")
    run_worker(data_dir)
    at = open_detail(principals["support"], integ["broken"])
    attempts = frame(at, "attempt")
    assert attempts.iloc[0]["error type"] == "config" and "does not exist" in attempts.iloc[0]["error"]
    assert "Needs re-auth" in texts(at)
    at.button(key="integ_act_retry").click().run()
    at.text_area(key="integ_dlg_retry_reason").input("folder restored")
    at.button(key="integ_dlg_retry_go").click().run()
    runs = services.store.query("sync_runs", "tenant-a", {"connectionId": integ["broken"]}, order_by="queuedAt")
    assert len(runs) == 2 and runs[-1]["retryOf"] == runs[0]["id"]


def test_credentials_are_admin_only_and_never_shown(app_env, services, principals, integ):
    svc = services.integrations
    # localfiles has no credential fields, so store one through a provider that does.
    sf = svc.create_connection(
        principals["admin"], "tenant-a", "salesforce", "Salesforce prod",
        {k.name: "https://login.example" for k in svc.provider("salesforce").config_fields if k.required},
        {f.name: SECRET for f in svc.provider("salesforce").credential_fields if f.required}, reason="setup",
    )
    support = open_detail(principals["support"], sf["id"])
    assert not support.exception, support.exception
    assert SECRET not in texts(support)
    assert "Credentials" not in [e.label for e in support.expander]
    admin = open_detail(principals["admin"], sf["id"])
    assert not admin.exception, admin.exception
    assert "Credentials" in [e.label for e in admin.expander]
    assert SECRET not in texts(admin)
    assert all(SECRET not in str(w.value) for w in admin.text_input)
    field = svc.provider("salesforce").credential_fields[0].name
    admin.text_input(key=f"integ_cred_{field}").input("rotated-secret")
    admin.text_input(key="integ_cred_reason").input("rotation")
    admin.button(key="FormSubmitter:integ_creds_form-Save credentials").click().run()
    assert "Credentials saved (encrypted)." in texts(admin)
    stored = services.store.get("connections", "tenant-a", sf["id"])
    assert "rotated-secret" not in json.dumps(stored)
    assert json.loads(services.box.open(stored["credentialsSealed"]))[field] == "rotated-secret"
    audit = services.store.query("audit", "tenant-a", {"action": "integration.credentials"})
    assert "rotated-secret" not in json.dumps(audit)


def test_picking_a_connection_opens_it_and_back_returns_to_the_list(app_env, services, principals, integ):
    at = open_page("integrations", principals["ops"])
    at.selectbox(key="integ_open").set_value(integ["a"]).run()
    assert not at.exception, at.exception
    assert at.query_params["connection"] == integ["a"]
    assert at.title[0].value == "Acme export"
    at.button(key="integ_back").click().run()
    assert "connection" not in at.query_params
    assert at.title[0].value == "Integrations"
    at.run()
    assert at.title[0].value == "Integrations"  # the picker does not reopen the last connection
