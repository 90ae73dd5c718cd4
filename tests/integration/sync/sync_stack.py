"""The sync fault-test stack: real SQLite services, the real worker, local vendor fakes on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from connectors.base import build_connector
from connectors.retry import RetryPolicy
from core import clock
from core.bootstrap import Services, build
from core.config import load_settings
from core.migrate import migrate
from core.services.access import SYSTEM
from core.services.integrations import IntegrationsService
from core.services.sync_engine import SyncEngine
from jobs.runner import Worker
from tests.fakes.change_hook import collect_changes
from tests.fakes.vendors.hubspot import FakeHubSpot

TENANT = "t-sync"


@dataclass
class Stack:
    services: Services
    engine: SyncEngine
    worker: Worker
    changes: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def integrations(self) -> IntegrationsService:
        return self.services.integrations

    def work(self, max_items: int = 10) -> int:
        """Let the worker take every item that is due now; returns how many it ran."""
        done = 0
        while done < max_items and self.worker.run_one():
            done += 1
        return done

    def make_due(self) -> None:
        """Time passes: every queued item waiting out a backoff becomes due."""
        store = self.services.store
        for job in store.query("jobs", TENANT, {"status": "queued"}):
            store.upsert("jobs", {**job, "availableAt": clock.iso()}, if_match=job["_etag"])

    def records(self, stream: str) -> list[dict[str, Any]]:
        return self.services.store.query("crm_records", TENANT, {"stream": stream})

    def connection(self, connection_id: str) -> dict[str, Any]:
        return self.services.store.get("connections", TENANT, connection_id)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    changes: list[tuple[str, str, str]] = []
    services = build(load_settings(data_dir=tmp_path / "var"),
                            on_document_changed=collect_changes(changes))
    # Fast retries so a dead server fails an attempt in well under a second.
    fast = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.05)

    def factory(provider: str, config: dict[str, Any], creds: dict[str, Any], token_store: Any) -> Any:
        return build_connector(provider, config, creds, token_store, http_timeout=3.0, retry=fast)

    engine = SyncEngine(services.store, factory, services.box, collect_changes(changes), audit=services.audit)
    services.overrides["sync_engine"] = engine
    migrate(services)
    services.tenants.create(SYSTEM, TENANT, "Sync tenant", reason="test")
    worker = Worker(services, consumers=1, with_scheduler=False)
    yield Stack(services, engine, worker, changes)
    services.store.close()


@pytest.fixture
def hubspot() -> Iterator[FakeHubSpot]:
    fake = FakeHubSpot(companies=15, deals=40, contacts=10, page_size=7)
    fake.start()
    yield fake
    fake.stop()


def hubspot_connection(stack: Stack, fake: FakeHubSpot) -> str:
    conn = stack.integrations.create_connection(
        SYSTEM, TENANT, "hubspot", "HubSpot portal", fake.connector_config(), fake.connector_credentials(),
        reason="test",
    )
    return str(conn["id"])


@pytest.fixture
def graph() -> Iterator[Any]:
    from tests.fakes.vendors.msgraph import FakeGraph

    fake = FakeGraph(files=12, page_size=5)
    fake.start()
    yield fake
    fake.stop()
