"""Cost per tenant and model from token rollups and the price table; monthly view and trend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.errors import Invalid
from core.observability.cost import PriceTable, month_to_date, monthly_view, trend
from core.observability.telemetry import Recorder


def test_shipped_price_table_loads_and_prices_by_exact_name_then_pattern() -> None:
    prices = PriceTable.load()
    assert prices.currency == "USD"
    # 1M input + 1M output tokens of gpt-4o-mini at the shipped list price
    assert prices.cost("gpt-4o-mini", 1, 1_000_000, 1_000_000) == pytest.approx(0.15 + 0.60)
    assert prices.lookup("wordllama-l2-supercat") is not None and prices.cost("wordllama-l2", 5, 10**6, 0) == 0
    assert prices.lookup("unknown-model") is None and prices.cost("unknown-model", 1, 10**6, 0) == 0


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"models": {}}, "non-empty 'models'"),
        ({"models": {"m": {"input": -1}}}, "at least 0"),
        ({"models": {"m": {"input": "cheap"}}}, "must be a number"),
        ({"models": {"m": {"inptu": 1}}}, "unknown fields"),
        ({"models": {"m": 3}}, "must be an object"),
    ],
)
def test_bad_price_tables_are_refused(data: dict, reason: str) -> None:
    with pytest.raises(Invalid, match=reason):
        PriceTable.from_dict(data)


def test_per_call_price_and_longest_pattern_wins() -> None:
    p = PriceTable.from_dict({"models": {"gpt-*": {"input": 1.0}, "gpt-4o-mini*": {"input": 0.1, "perCall": 0.01}}})
    assert p.cost("gpt-4o-mini-2024", 3, 1_000_000, 0) == pytest.approx(0.1 + 0.03)
    assert p.cost("gpt-5", 1, 1_000_000, 0) == pytest.approx(1.0)


def test_monthly_view_and_trend_from_recorded_calls(mem_store) -> None:
    prices = PriceTable.from_dict({"models": {"chat": {"input": 2.0, "output": 8.0}, "emb": {"input": 0.02}}})
    now = datetime(2025, 3, 10, 12, tzinfo=UTC)
    rec = Recorder(mem_store)
    # February: 2M chat input tokens for acme. March (10 days in): 1M in + 0.5M out, plus embeddings.
    rec.record("llm.chat", 800, tenant_id="acme", kind="llm", model="chat", tokens_in=2_000_000,
               at=datetime(2025, 2, 14, 9, tzinfo=UTC))
    rec.record("llm.chat", 800, tenant_id="acme", kind="llm", model="chat", tokens_in=1_000_000,
               tokens_out=500_000, at=now - timedelta(days=2))
    rec.record("embed", 30, tenant_id="acme", kind="embedding", model="emb", tokens_in=5_000_000, at=now)
    rec.record("llm.chat", 700, tenant_id="beta", kind="llm", model="chat", tokens_in=100_000, at=now)
    rec.record("svc.other", 5, tenant_id="acme", at=now)  # not a model call: no cost
    rec.flush()
    rows = monthly_view(mem_store, prices, now=now, months=2)
    by = {(r.tenant_id, r.period, r.model): r for r in rows}
    assert by[("acme", "2025-02", "chat")].cost == pytest.approx(4.0)
    assert by[("acme", "2025-03", "chat")].cost == pytest.approx(2.0 + 4.0)
    assert by[("acme", "2025-03", "emb")].cost == pytest.approx(0.1)
    assert by[("acme", "2025-03", "chat")].calls == 1 and by[("acme", "2025-03", "chat")].tokens_out == 500_000
    assert month_to_date(mem_store, prices, now=now) == {"acme": pytest.approx(6.1), "beta": pytest.approx(0.2)}
    [acme] = [t for t in trend(mem_store, prices, "acme", now=now)]
    assert acme.month == "2025-03" and acme.month_to_date == pytest.approx(6.1)
    assert acme.previous_month == pytest.approx(4.0)
    # 9.5 days elapsed of 31: run-rate projection
    assert acme.projected == pytest.approx(6.1 / 9.5 * 31)
    assert acme.change == pytest.approx((6.1 / 9.5 * 31 - 4.0) / 4.0)
    assert [d for d, _ in acme.daily] == ["2025-03-08", "2025-03-10"]
