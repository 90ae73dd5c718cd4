"""Telemetry screen under AppTest: percentiles per operation, slowest calls, errors, cost; scoped per tenant."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from core import clock
from tests.app.apptest_helpers import not_authorised, open_page


def _seed(services, a: str, b: str) -> None:
    rec = services.telemetry
    for i in range(50):
        rec.record("prompts.classify", 100 + 10 * i, tenant_id=a, outcome="error" if i < 5 else "ok",
                   error_kind="TransientError" if i < 5 else None)
        rec.record("llm.chat", 900, tenant_id=a, kind="llm", model="gpt-4o-mini", tokens_in=1_000_000 // 50,
                   tokens_out=0, at=clock.now() - timedelta(minutes=5))
        rec.record("store.query:chunks", 3 + i, tenant_id=a, kind="store", detail="project = ? LIMIT 20")
        rec.record("secret.op", 5, tenant_id=b)
    rec.flush()


def _utc_x_axes(at) -> list[str]:
    """Each time chart's x axis title, asserting its scale is UTC (as the rollup buckets are)."""
    titles = []
    for chart in at.get("vega_lite_chart"):
        x = json.loads(chart.proto.spec)["encoding"]["x"]
        if x["type"] == "temporal":
            assert x["scale"]["type"] == "utc", x
            titles.append(x["title"])
    return titles


def test_latency_view_lists_operations_with_percentiles(app_env, services, principals, two_tenants):
    a, b = two_tenants
    _seed(services, a, b)
    at = open_page("telemetry", principals["admin"])
    assert not at.exception, at.exception
    assert not at.warning, [w.value for w in at.warning]
    ops = at.dataframe[0].value
    row = ops[ops["operation"] == "prompts.classify"].iloc[0]
    assert row["calls"] == 50 and row["error rate"] == pytest.approx(0.1)
    assert 560 <= row["p95 ms"] <= 600 * 1.1  # true p95 of 100..590 is 570
    assert "secret.op" in ops["operation"].tolist()  # admin sees every tenant
    assert _utc_x_axes(at) == ["time (UTC)"]
    at.selectbox(key="tel_operation").select("prompts.classify").run()
    assert not at.exception


def test_slowest_and_errors_views(app_env, services, principals, two_tenants):
    _seed(services, *two_tenants)
    at = open_page("telemetry", principals["admin"])
    at.segmented_control(key="tel_view").set_value("slowest").run()
    slow = at.dataframe[0].value
    assert slow.iloc[0]["operation"] == "store.query:chunks" and slow.iloc[0]["what"] == "project = ? LIMIT 20"
    assert slow.iloc[0]["ms"] == pytest.approx(52.0)
    at.segmented_control(key="tel_view").set_value("errors").run()
    errors = at.dataframe[0].value
    assert errors.iloc[0]["error"] == "TransientError" and errors.iloc[0]["count"] == 5
    assert _utc_x_axes(at) == ["time (UTC)"]


def test_cost_view_from_deep_link(app_env, services, principals, two_tenants):
    a, b = two_tenants
    _seed(services, a, b)
    at = open_page("telemetry", principals["admin"])
    at.query_params["view"] = "cost"  # a deep link (switching pages under AppTest drops query params)
    at.run()
    assert not at.exception, at.exception
    cost = at.dataframe[0].value
    row = cost[(cost["tenant"] == a) & (cost["model"] == "gpt-4o-mini")].iloc[0]
    assert row["calls"] == 50 and row["tokens_in"] == 1_000_000
    assert row["cost"] == pytest.approx(0.15)  # 1M input tokens at the shipped $0.15 per 1M
    trend = at.dataframe[1].value
    assert trend.iloc[0]["month to date"] == pytest.approx(0.15)
    assert _utc_x_axes(at)[-1] == "day (UTC)"  # the cost-per-day chart


def test_tenant_user_sees_only_their_tenant(app_env, services, principals, two_tenants):
    a, b = two_tenants
    _seed(services, a, b)
    at = open_page("telemetry", principals["ops"])
    assert not at.exception and not not_authorised(at)
    assert "secret.op" not in at.dataframe[0].value["operation"].tolist()
    assert not_authorised(open_page("telemetry", principals["content_admin"]))


def test_utc_times_read_buckets_and_days_as_utc_instants() -> None:
    from app.components.time_axes import utc_times

    t = utc_times(["2026-11-22T21:55", "2026-11-22T22:00:00Z", "2026-11-22"])
    assert str(t.dt.tz) == "UTC"
    assert [x.isoformat() for x in t] == ["2026-11-22T21:55:00+00:00", "2026-11-22T22:00:00+00:00",
                                          "2026-11-22T00:00:00+00:00"]
