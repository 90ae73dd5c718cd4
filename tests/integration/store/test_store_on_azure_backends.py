"""The composition root on the Azure backends: settings with CASTIEL_STORE=cosmos and CASTIEL_BLOB=azure
build CosmosStore and AzureBlobStore, migrate creates everything once, and foundation services work."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.adapters.azure_blobs import AzureBlobStore
from core.adapters.cosmos_store import CosmosStore
from core.bootstrap import Services, build
from core.config import load_settings
from core.migrate import migrate
from core.schema import CONTAINERS
from core.services.access import SYSTEM
from core.services.work_queue import WorkQueue
from tests.servers.fixtures import CosmosServer


@pytest.fixture
def azure_services(cosmos_server: CosmosServer, azurite_connection_string: str, tmp_path: Path) -> Iterator[Services]:
    database = f"boot_{uuid.uuid4().hex[:10]}"
    settings = load_settings(
        data_dir=tmp_path / "var",
        store="cosmos",
        cosmos_endpoint=cosmos_server.endpoint,
        cosmos_key=cosmos_server.key,
        cosmos_database=database,
        # The local server's certificate is self-signed; a real account is verified.
        cosmos_verify_tls=cosmos_server.real,
        blob="azure",
        azure_storage_connection_string=azurite_connection_string,
        secret_key="k" * 32,
    )
    svc = build(settings)
    yield svc
    cosmos = raw_store(svc)
    cosmos._get_client().delete_database(database)
    svc.store.close()


def raw_store(svc: Services) -> CosmosStore:
    """The adapter under the telemetry wrapper the composition root may add."""
    store = getattr(svc.store, "inner", svc.store)
    assert isinstance(store, CosmosStore)
    return store


def test_bootstrap_builds_the_azure_adapters_and_migrate_is_idempotent(azure_services: Services) -> None:
    assert azure_services.store.backend == "cosmos"
    raw_store(azure_services)
    assert isinstance(azure_services.blobs, AzureBlobStore)
    before = migrate(azure_services, check=True)
    assert set(before.created) == {c.name for c in CONTAINERS}
    first = migrate(azure_services)
    assert set(first.created) == {c.name for c in CONTAINERS}
    assert not migrate(azure_services, check=True).changed
    assert not migrate(azure_services).changed


def test_foundation_services_run_on_cosmos(azure_services: Services) -> None:
    migrate(azure_services)
    azure_services.tenants.create(SYSTEM, "tenant-a", "Tenant A", reason="test")
    azure_services.tenants.create(SYSTEM, "tenant-b", "Tenant B", reason="test")
    user, _ = azure_services.users.create(
        SYSTEM, "ops@example.com", "ops", "tenant-a", password="correct-horse-battery"
    )
    step = azure_services.users.authenticate("ops@example.com", "correct-horse-battery")
    assert step is not None
    assert {t["id"] for t in azure_services.tenants.list(SYSTEM)} >= {"tenant-a", "tenant-b"}
    # Every change was audited in the Cosmos store.
    assert azure_services.store.count("audit", None) >= 3
    assert user["tenantId"]


def test_two_workers_on_cosmos_claim_each_item_once(azure_services: Services) -> None:
    migrate(azure_services)
    queue: WorkQueue = azure_services.queue
    items = [queue.enqueue(SYSTEM, "q", "noop", None, {"i": i}, audit=False)["id"] for i in range(20)]
    claimed: list[str] = []
    lock = threading.Lock()

    def work(worker: str) -> None:
        while True:
            item = queue.claim(worker, ["q"])
            if item is None:
                return
            queue.complete(item, worker)
            with lock:
                claimed.append(item["id"])

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(claimed) == sorted(items)  # each exactly once
