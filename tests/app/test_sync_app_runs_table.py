"""The Integrations runs table shows what each run deleted, including records a full resync found gone at the vendor."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from core.bootstrap import Services, build
from core.config import load_settings
from core.services.access import Principal
from jobs.runner import Worker
from tests.app.apptest_helpers import open_page


def write_accounts(folder: Path, ids: list[int]) -> None:
    crm = folder / "crm"
    crm.mkdir(parents=True, exist_ok=True)
    with (crm / "accounts.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "name", "industry", "updated_at"])
        for i in ids:
            w.writerow([f"ACC-{i:03d}", f"Account {i}", "Software", f"2025-01-01T00:00:{i:02d}Z"])


def run_worker(data_dir: Path) -> int:
    worker_services = build(load_settings(data_dir=data_dir), on_document_changed=lambda *a: None)
    worker = Worker(worker_services, consumers=1, with_scheduler=False)
    done = 0
    while done < 5 and worker.run_one():
        done += 1
    worker_services.store.close()
    return done


def runs_table(at: Any) -> Any:
    for df in at.dataframe:
        if "trigger" in df.value.columns:
            return df.value
    raise AssertionError("no runs table on the page")


def test_runs_table_counts_records_a_full_resync_removed(
    app_env: Path, services: Services, principals: dict[str, Principal], two_tenants: tuple[str, str],
    tmp_path: Path, data_dir: Path,
) -> None:
    admin = principals["admin"]
    folder = tmp_path / "export"
    write_accounts(folder, list(range(10)))
    conn = services.integrations.create_connection(
        admin, "tenant-a", "localfiles", "Acme export", {"path": str(folder), "page_size": 4},
        enabled_streams=["accounts"], reason="setup",
    )
    services.integrations.resync(admin, "tenant-a", conn["id"], "first sync")
    assert run_worker(data_dir) == 1
    write_accounts(folder, [i for i in range(10) if i not in (3, 7, 8)])  # three rows gone from the export
    services.integrations.resync(admin, "tenant-a", conn["id"], "export was pruned", full=True)
    assert run_worker(data_dir) == 1

    at = open_page("integrations", principals["ops"])
    at.query_params["connection"] = conn["id"]
    at.run()
    assert not at.exception, at.exception
    runs = runs_table(at)
    columns = list(runs.columns)
    assert columns.index("deleted") == columns.index("skipped") + 1
    full = runs[runs["mode"] == "full"].iloc[0]
    first = runs[runs["mode"] == "incremental"].iloc[0]
    assert (full["status"], full["read"], full["written"], full["deleted"]) == ("succeeded", 7, 0, 3)
    assert first["deleted"] == 0
    assert services.store.count("crm_records", "tenant-a") == 7
