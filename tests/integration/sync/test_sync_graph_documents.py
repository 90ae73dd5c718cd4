"""Documents through the engine from the Microsoft Graph fake: embedding hook, subscriptions, notifications."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from core import clock
from core.services.access import SYSTEM
from core.services.integration_health import compute_health
from tests.integration.sync.sync_stack import TENANT, Stack


def graph_connection(stack: Stack, fake: Any) -> str:
    conn = stack.integrations.create_connection(
        SYSTEM, TENANT, "msgraph", "Contoso SharePoint", fake.connector_config(), fake.connector_credentials(),
        reason="test",
    )
    return str(conn["id"])


def test_documents_sync_feeds_the_embedding_hook_once_per_change(stack: Stack, graph: Any):
    conn_id = graph_connection(stack, graph)
    stack.integrations.resync(SYSTEM, TENANT, conn_id, "first")
    stack.work()
    docs = stack.services.store.query("documents", TENANT, {"connectionId": conn_id})
    expected = {i for i in graph.expected_ids("items") if not i.startswith("folder-")}
    assert {d["sourceId"] for d in docs} <= expected and len(docs) >= 10
    assert sorted(d for _, d, _ in stack.changes) == sorted(d["id"] for d in docs)
    assert all(op == "upsert" for _, _, op in stack.changes)
    assert all(d["text"] and d["project"] for d in docs if d["mimeType"] in ("text/plain", "text/markdown"))
    stack.changes.clear()
    stack.integrations.resync(SYSTEM, TENANT, conn_id, "nothing changed")
    stack.work()
    assert stack.changes == []  # the delta link: nothing new, nothing re-embedded


def test_subscriptions_are_created_renewed_and_forecast(stack: Stack, graph: Any):
    conn_id = graph_connection(stack, graph)
    stack.integrations.update_settings(SYSTEM, TENANT, conn_id, "enable push",
                                       notification_url="https://console.example/hooks/graph")
    assert stack.integrations.renew_subscriptions() == {"renewed": 1, "failed": 0}
    assert len(graph.subscriptions) == 1
    conn = stack.connection(conn_id)
    expires = clock.parse(conn["webhook"]["subscriptionExpiresAt"])
    assert expires > clock.now() + timedelta(days=20)
    assert compute_health(conn).webhook.state == "fresh"
    stack.integrations.renew_subscriptions()
    assert len(graph.subscriptions) == 1  # still far from expiry: kept, not duplicated
    # The vendor's notification (handshake first, then a change) queues one webhook-triggered run.
    sub_id = next(iter(graph.subscriptions))
    hello = stack.integrations.receive_webhook(TENANT, conn_id, {}, b"", {"validationToken": "abc123"})
    assert hello.status == "handshake" and hello.response == "abc123"
    note = stack.integrations.receive_webhook(TENANT, conn_id, {"Content-Type": "application/json"},
                                              graph.notification(sub_id))
    assert note.status == "accepted" and note.run_id
    stack.work()
    run = stack.services.store.get("sync_runs", TENANT, note.run_id)
    assert run["status"] == "succeeded" and run["trigger"]["type"] == "webhook"
    assert stack.connection(conn_id)["webhook"]["lastEventAt"]
