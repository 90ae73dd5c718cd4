"""Cost per tenant: LLM and embedding tokens and calls per model, priced with a configurable table.

Usage comes from the month (totals) and day (trend) rollups of the ``llm`` and ``embedding``
telemetry kinds (tokens per model are recorded at call time); prices come from
``data/prices.json`` (per 1M tokens, exact model names or glob patterns). Prices are applied
when reading, so correcting the table re-prices history instead of leaving stale amounts.
"""

from __future__ import annotations

import calendar
import fnmatch
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from core import clock
from core.adapters.store import Cond, Doc, DocumentStore
from core.errors import Invalid
from core.observability import telemetry

DEFAULT_PRICES = Path(__file__).resolve().parents[2] / "data" / "prices.json"
MODEL_KINDS = ["llm", "embedding"]


@dataclass(frozen=True)
class Price:
    """Price per 1M input and output tokens, plus an optional fixed price per call."""

    input: float = 0.0
    output: float = 0.0
    per_call: float = 0.0


def _price_of(model: str, raw: Any) -> Price:
    if not isinstance(raw, Mapping):
        raise Invalid(f"price of {model!r} must be an object like {{\"input\": 0.15, \"output\": 0.6}}, got {raw!r}")
    unknown = set(raw) - {"input", "output", "perCall"}
    if unknown:
        raise Invalid(f"price of {model!r} has unknown fields {sorted(unknown)}; use input, output, perCall")
    values = {}
    for k in ("input", "output", "perCall"):
        v = raw.get(k, 0.0)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise Invalid(f"price {k} of {model!r} must be a number of at least 0, got {v!r}")
        values[k] = float(v)
    return Price(values["input"], values["output"], values["perCall"])


class PriceTable:
    """Model name -> price; exact names first, then the longest matching glob pattern."""

    def __init__(self, prices: Mapping[str, Price], currency: str = "USD") -> None:
        self.currency = currency
        self.exact = {k: v for k, v in prices.items() if not any(c in k for c in "*?[")}
        # Longest pattern first: "gpt-4o-mini*" must win over "gpt-4o*".
        self.patterns = sorted(((k, v) for k, v in prices.items() if k not in self.exact), key=lambda kv: -len(kv[0]))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PriceTable:
        models = data.get("models")
        if not isinstance(models, Mapping) or not models:
            raise Invalid("a price table needs a non-empty 'models' object: {\"models\": {\"gpt-4o-mini\": {...}}}")
        currency = data.get("currency", "USD")
        if not isinstance(currency, str) or not currency:
            raise Invalid(f"currency must be a code like 'USD', got {currency!r}")
        return cls({str(k): _price_of(str(k), v) for k, v in models.items()}, currency)

    @classmethod
    def load(cls, path: Path | str | None = None) -> PriceTable:
        p = Path(path) if path is not None else DEFAULT_PRICES
        try:
            data = json.loads(p.read_text())
        except FileNotFoundError:
            raise Invalid(f"price table {p} not found") from None
        except json.JSONDecodeError as e:
            raise Invalid(f"price table {p} is not valid JSON: {e}") from None
        return cls.from_dict(data)

    def lookup(self, model: str) -> Price | None:
        if model in self.exact:
            return self.exact[model]
        for pattern, price in self.patterns:
            if fnmatch.fnmatchcase(model, pattern):
                return price
        return None

    def cost(self, model: str, calls: float, tokens_in: float, tokens_out: float) -> float:
        price = self.lookup(model)
        if price is None:
            return 0.0
        return (tokens_in * price.input + tokens_out * price.output) / 1_000_000 + calls * price.per_call


@dataclass
class CostRow:
    tenant_id: str
    period: str  # YYYY-MM or YYYY-MM-DD
    model: str
    calls: int
    tokens_in: int
    tokens_out: int
    cost: float
    priced: bool


def month_start(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _months_back(at: datetime, n: int) -> datetime:
    start = month_start(at)
    y, m = start.year, start.month - n
    while m <= 0:
        y, m = y - 1, m + 12
    return start.replace(year=y, month=m)


def usage_docs(
    store: DocumentStore, tenant_id: str | None, since: datetime, until: datetime | None = None, grain: str = "day"
) -> list[Doc]:
    """Day (or month) rollups of model calls (LLM and embeddings) from ``since``; ``tenant_id=None``: all tenants."""
    where = [
        Cond("grain", "=", grain),
        Cond("bucket", ">=", clock.iso(telemetry.bucket_start(since, grain))),
        Cond("kind", "in", MODEL_KINDS),
    ]
    if until is not None:
        where.append(Cond("bucket", "<", clock.iso(until)))
    return store.query(telemetry.CONTAINER, tenant_id, where)


def cost_rows(docs: Iterable[Mapping[str, Any]], prices: PriceTable, period: str = "month") -> list[CostRow]:
    """Sum model usage per (tenant, period, model) and price it; ``period`` is 'month' or 'day'."""
    cut = 7 if period == "month" else 10
    acc: dict[tuple[str, str, str], list[float]] = {}
    for d in docs:
        p = str(d["bucket"])[:cut]
        for model, m in (d.get("models") or {}).items():
            a = acc.setdefault((str(d["tenantId"]), p, model), [0, 0, 0])
            a[0] += m.get("calls", 0)
            a[1] += m.get("tokensIn", 0)
            a[2] += m.get("tokensOut", 0)
    rows = []
    for (tenant, p, model), (calls, tin, tout) in sorted(acc.items()):
        rows.append(
            CostRow(tenant, p, model, int(calls), int(tin), int(tout), prices.cost(model, calls, tin, tout),
                    prices.lookup(model) is not None)
        )
    return rows


def monthly_view(
    store: DocumentStore, prices: PriceTable, tenant_id: str | None = None, months: int = 6, now: datetime | None = None
) -> list[CostRow]:
    """Per tenant, month and model over the last ``months`` months (this month included)."""
    now = now or clock.now()
    return cost_rows(usage_docs(store, tenant_id, _months_back(now, months - 1), grain="month"), prices, "month")


def month_to_date(store: DocumentStore, prices: PriceTable, now: datetime | None = None) -> dict[str, float]:
    """This month's cost so far per tenant (one query across tenants; the cost alert's fact)."""
    now = now or clock.now()
    out: dict[str, float] = {}
    for r in cost_rows(usage_docs(store, None, month_start(now), grain="month"), prices, "month"):
        out[r.tenant_id] = out.get(r.tenant_id, 0.0) + r.cost
    return out


@dataclass
class Trend:
    tenant_id: str
    month: str
    month_to_date: float
    projected: float  # at the month's run rate so far
    previous_month: float
    change: float | None  # projected vs previous month, as a fraction
    daily: list[tuple[str, float]]


def trend(
    store: DocumentStore, prices: PriceTable, tenant_id: str | None = None, now: datetime | None = None
) -> list[Trend]:
    """Daily cost this month, a run-rate projection and the change against last month, per tenant."""
    now = now or clock.now()
    start = month_start(now)
    prev = _months_back(now, 1)
    daily: dict[str, dict[str, float]] = {}
    previous: dict[str, float] = {}
    for r in cost_rows(usage_docs(store, tenant_id, start), prices, "day"):
        day = daily.setdefault(r.tenant_id, {})
        day[r.period] = day.get(r.period, 0.0) + r.cost
    for r in cost_rows(usage_docs(store, tenant_id, prev, until=start, grain="month"), prices, "month"):
        previous[r.tenant_id] = previous.get(r.tenant_id, 0.0) + r.cost
    days_in_month = calendar.monthrange(start.year, start.month)[1]
    elapsed_days = max((now - start) / timedelta(days=1), 1 / 24)
    out = []
    for tenant in sorted(set(daily) | set(previous)):
        days = daily.get(tenant, {})
        mtd = sum(days.values())
        projected = mtd / elapsed_days * days_in_month
        before = previous.get(tenant, 0.0)
        out.append(
            Trend(tenant, start.strftime("%Y-%m"), mtd, projected, before,
                  (projected - before) / before if before > 0 else None, sorted(days.items()))
        )
    return out
