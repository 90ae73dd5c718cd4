"""Every connector through the engine, queue and worker against its local vendor fake: a full first sync,
then an incremental and a full resync that change nothing and duplicate nothing."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from core.services.access import SYSTEM
from tests.integration.sync.sync_stack import TENANT, Stack

FAKES = {
    "salesforce": ("tests.fakes.vendors.salesforce", "FakeSalesforce", {"page_size": 200}),
    "hubspot": ("tests.fakes.vendors.hubspot", "FakeHubSpot", {"page_size": 10}),
    "dynamics365": ("tests.fakes.vendors.dynamics365", "FakeDynamics", {}),
    "msgraph": ("tests.fakes.vendors.msgraph", "FakeGraph", {"files": 12, "page_size": 5}),
    "gdrive": ("tests.fakes.vendors.gdrive", "FakeGoogleDrive", {"files": 12, "page_size": 5}),
    "slack": ("tests.fakes.vendors.slack", "FakeSlack", {"channels": 2, "messages": 30, "page_size": 10}),
    "notion": ("tests.fakes.vendors.notion", "FakeNotion", {"pages": 8, "rows": 12, "page_size": 5}),
}


def stored(stack: Stack, conn_id: str) -> int:
    store = stack.services.store
    return store.count("crm_records", TENANT, {"connectionId": conn_id}) + store.count(
        "documents", TENANT, {"connectionId": conn_id}
    )


@pytest.mark.parametrize("provider", sorted(FAKES))
def test_vendor_syncs_through_the_engine_without_duplicates(stack: Stack, provider: str) -> None:
    module, cls, kwargs = FAKES[provider]
    fake: Any = getattr(importlib.import_module(module), cls)(**kwargs)
    fake.start()
    try:
        conn = stack.integrations.create_connection(
            SYSTEM, TENANT, provider, f"{provider} test", fake.connector_config(), fake.connector_credentials(),
            reason="test",
        )
        runs = []
        for mode in ("first", "incremental", "full"):
            result = stack.integrations.resync(SYSTEM, TENANT, conn["id"], mode, full=(mode == "full"))
            assert stack.work() == 1
            runs.append(stack.services.store.get("sync_runs", TENANT, str(result.run_id)))
        first, incremental, full = runs
        assert first["status"] == "succeeded", first["error"]
        assert first["written"] > 0 and stored(stack, conn["id"]) == first["written"]
        assert incremental["status"] == "succeeded" and incremental["written"] == 0
        assert full["status"] == "succeeded" and full["written"] == 0 and full["read"] >= first["written"]
        assert stored(stack, conn["id"]) == first["written"]  # nothing duplicated, nothing lost
        streams = stack.connection(conn["id"])["streams"]
        assert streams and all(s.get("updatedAt") for s in streams.values())
    finally:
        fake.stop()
