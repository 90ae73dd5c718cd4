"""Overview screen under AppTest: KPIs, one row per tenant with linked cells, filters, scoping, alert feed."""

from __future__ import annotations

from typing import Any

from core.services.sync_engine import new_connection
from tests.app.apptest_helpers import not_authorised, open_page, texts


def _frames(at) -> list[Any]:
    return [d.value for d in at.dataframe]


def _seed(services, tenants: tuple[str, str]) -> None:
    a, b = tenants
    rec = services.telemetry
    for i in range(40):
        rec.record("vector.search", 2500 + i, tenant_id=a, kind="vector")  # slow searches in tenant A
        rec.record("integrations.resync", 50, tenant_id=b, outcome="error" if i < 10 else "ok",
                   error_kind="TransientError" if i < 10 else None)
    rec.flush()
    conn = new_connection(b, "localfiles", "Shared drive")
    conn.update(lastErrorType="config", lastError="invalid_grant", lastRunStatus="failed", consecutiveFailures=1)
    services.store.create("connections", conn)
    services.alerting.evaluate()


def test_admin_sees_every_tenant_with_linked_cells_and_the_alert_feed(app_env, services, principals, two_tenants):
    _seed(services, two_tenants)
    a, b = two_tenants
    at = open_page("overview", principals["admin"])
    assert not at.exception, at.exception
    assert not at.warning, [w.value for w in at.warning]  # every feature section read without failing
    labels = [m.label for m in at.metric]
    assert {"Tenants", "Open alerts", "Search p95 (1 h)", "Cost this month"} <= set(labels)
    assert next(m for m in at.metric if m.label == "Tenants").value == "2"
    tenants, feed = _frames(at)[:2]
    assert sorted(tenants["Tenant id"]) == [a, b]
    row_a = tenants[tenants["Tenant id"] == a].iloc[0]
    row_b = tenants[tenants["Tenant id"] == b].iloc[0]
    assert row_a["Search p95"].startswith(f"./telemetry?tenant={a}&kind=vector#") and "s" in row_a["Search p95"]
    assert "needs reauth" in row_b["Connectors"]
    assert row_b["Connectors"].startswith(f"./integrations?tenant={b}&connection=conn-")
    assert row_a["Connectors"].endswith("not set up")
    assert row_b["Open alerts"].startswith(f"./alerts?tenant={b}#") and "critical" in row_b["Open alerts"]
    assert row_a["Embedding backlog"].endswith("not set up")  # a feature that has not landed yet
    assert set(feed["tenant"]) == {a, b}
    rules = set(feed["alert"].str.split("#").str[1])
    expected = {"Vector search p95 latency", "Service error rate", "Connector needs re-authorisation or was paused"}
    assert expected <= rules
    assert "Not set up yet" in texts(at)


def test_filters_and_sort(app_env, services, principals, two_tenants):
    _seed(services, two_tenants)
    a, b = two_tenants
    at = open_page("overview", principals["admin"])
    at.text_input(key="overview_search").input(b).run()
    assert list(_frames(at)[0]["Tenant id"]) == [b]
    at.text_input(key="overview_search").input("").run()
    at.selectbox(key="overview_sort").select("tenant").run()
    at.toggle(key="overview_desc").set_value(False).run()
    assert list(_frames(at)[0]["Tenant id"]) == [a, b]
    at.selectbox(key="overview_show").select("With a feature not set up").run()
    assert len(_frames(at)[0]) == 2


def test_tenant_ops_sees_only_their_tenant(app_env, services, principals, two_tenants):
    _seed(services, two_tenants)
    a, b = two_tenants
    at = open_page("overview", principals["ops"])
    assert not at.exception and not not_authorised(at)
    tenants, feed = _frames(at)[:2]
    assert list(tenants["Tenant id"]) == [a]
    assert set(feed["tenant"]) == {a}


def test_empty_platform_renders(app_env, services, principals):
    at = open_page("overview", principals["admin"])
    assert not at.exception
    assert "No open alerts." in texts(at)


def test_support_cannot_open_it(app_env, services, principals):
    assert not_authorised(open_page("overview", principals["support"]))


def test_link_cells_carry_text_the_grid_can_decode() -> None:
    """The grid shows decodeURIComponent of what follows the last '#' ('+' read as a space); a bare '%' used
    to be swapped for a full-width sign, which fonts without CJK glyphs drew as a box."""
    import re
    from urllib.parse import unquote

    from app.components.overview_view import _LINK_TEXT, link_with_text

    text = "🟠 99.5% · +3 since #2"
    url = link_with_text("./embedding_jobs?tenant=t1", text)
    shown = re.match(_LINK_TEXT, url, re.S)
    assert shown is not None and unquote(shown.group(1).replace("+", "%20")) == text
    assert url.startswith("./embedding_jobs?tenant=t1#")
