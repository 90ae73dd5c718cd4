"""Experiment metrics and the rollup arithmetic that keeps their sufficient statistics up to date.

The analysis unit is the randomisation unit (a user or a conversation). Each unit has one value per
metric, built from its outcome events by the metric's aggregation (``max``: did it ever happen,
``sum``: total, ``mean``: per-call average, ``last``: latest). When an event changes a unit's value
from ``old`` to ``new``, the rollup of the unit's variant and exposure day gets the *difference* of
its sufficient statistics (n, sum y, sum y^2, and for CUPED sum x, sum x^2, sum xy), so rollups stay
exact without ever re-reading raw events. Binary metrics count every exposed unit (a unit with no
event has value 0); mean metrics count units that have at least one value.

Metrics with ``quantiles=True`` (latency) also keep a log-bucketed histogram of per-call values, so
p95 can be estimated to within about 1% from rollups.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from core.errors import Invalid

HIST_BASE = 1.02  # bucket i holds values in [1.02^i, 1.02^(i+1)): p95 is known to within ~1%

Kind = Literal["binary", "mean"]
Agg = Literal["max", "sum", "mean", "last"]


@dataclass(frozen=True)
class MetricDef:
    name: str
    label: str
    kind: Kind
    agg: Agg
    higher_is_better: bool = True
    unit: str = ""
    quantiles: bool = False

    def check_value(self, value: Any) -> float:
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise Invalid(f"metric {self.name} needs a number, got {value!r}") from None
        if not math.isfinite(v):
            raise Invalid(f"metric {self.name} needs a finite number, got {value!r}")
        if self.kind == "binary" and v not in (0.0, 1.0):
            raise Invalid(f"metric {self.name} is a yes/no metric; send 0 or 1, got {value!r}")
        if self.kind == "mean" and v < 0 and self.unit in {"ms", "tokens", "USD"}:
            raise Invalid(f"metric {self.name} ({self.unit}) cannot be negative, got {value!r}")
        return v


METRICS: dict[str, MetricDef] = {
    m.name: m
    for m in (
        MetricDef("thumbs_up", "Thumbs-up rate", "binary", "max", True),
        MetricDef("task_success", "Task success rate", "binary", "max", True),
        MetricDef("latency_ms", "Latency per call (ms)", "mean", "mean", False, "ms", quantiles=True),
        MetricDef("tokens", "Tokens per call", "mean", "mean", False, "tokens"),
        MetricDef("cost_usd", "Cost per call (USD)", "mean", "mean", False, "USD"),
    )
}


def metric(name: str) -> MetricDef:
    try:
        return METRICS[name]
    except KeyError:
        raise Invalid(f"unknown metric {name!r}; known metrics: {', '.join(METRICS)}") from None


def hist_bucket(value: float) -> str:
    """Histogram key of one per-call value ("z" for values <= 1, which all fall in the first bucket)."""
    if value <= 1.0:
        return "z"
    return str(int(math.floor(math.log(value) / math.log(HIST_BASE))))


def hist_quantile(hist: Mapping[str, float], q: float) -> float:
    """The q-quantile of a histogram (geometric midpoint of the bucket holding it)."""
    return _hist_at_rank(hist, q * sum(hist.values()))


def _hist_at_rank(hist: Mapping[str, float], rank: float) -> float:
    items = sorted(((-1 if k == "z" else int(k)), c) for k, c in hist.items() if c)
    if not items:
        return float("nan")
    acc = 0.0
    for idx, c in items:
        acc += c
        if acc >= rank:
            return 1.0 if idx < 0 else HIST_BASE ** (idx + 0.5)
    idx = items[-1][0]
    return 1.0 if idx < 0 else HIST_BASE ** (idx + 0.5)


def hist_quantile_interval(hist: Mapping[str, float], q: float, alpha: float = 0.05) -> tuple[float, float, float]:
    """(estimate, low, high) for the q-quantile; distribution-free interval from binomial order statistics."""
    from scipy.stats import binom

    n = sum(hist.values())
    if n <= 0:
        return (float("nan"),) * 3
    lo_rank = max(float(binom.ppf(alpha / 2, n, q)), 1.0)
    hi_rank = min(float(binom.ppf(1 - alpha / 2, n, q)) + 1, n)
    return hist_quantile(hist, q), _hist_at_rank(hist, lo_rank), _hist_at_rank(hist, hi_rank)


# --------------------------------------------------------------------------------------------------
# unit state and rollup deltas
# --------------------------------------------------------------------------------------------------
@dataclass
class UnitState:
    """What the store keeps per (experiment, unit): its variant, exposure day, covariates and event tallies.

    ``day`` is empty while the unit has been assigned (served) but its exposure has not arrived yet.
    """

    variant: str
    day: str
    covariates: dict[str, float] = field(default_factory=dict)
    tallies: dict[str, dict[str, float]] = field(default_factory=dict)  # metric -> count, sum, max, last

    def to_dict(self) -> dict[str, Any]:
        return {"variant": self.variant, "day": self.day, "covariates": self.covariates, "tallies": self.tallies}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> UnitState:
        return cls(
            str(d["variant"]),
            str(d["day"]),
            {k: float(v) for k, v in (d.get("covariates") or {}).items()},
            {k: dict(v) for k, v in (d.get("tallies") or {}).items()},
        )

    def value(self, m: MetricDef) -> float | None:
        t = self.tallies.get(m.name)
        if not t or not t.get("count"):
            return 0.0 if m.kind == "binary" else None
        if m.agg == "max":
            return float(t["max"])
        if m.agg == "sum":
            return float(t["sum"])
        if m.agg == "last":
            return float(t["last"])
        return float(t["sum"]) / float(t["count"])


Delta = dict[str, Any]  # nested dict of numbers, added into a rollup document


def exposure_delta(metrics: Iterable[MetricDef], covariates: Mapping[str, float]) -> Delta:
    """A new unit: one more unit, and every binary metric gains a unit with value 0."""
    out: Delta = {"units": 1, "metrics": {}}
    for m in metrics:
        if m.kind != "binary":
            continue
        x = float(covariates.get(m.name, 0.0))
        out["metrics"][m.name] = {"n": 1, "sx": x, "sxx": x * x, "cov": 1 if m.name in covariates else 0}
    return out


def record_outcome(state: UnitState, m: MetricDef, value: float) -> dict[str, Any]:
    """Fold one outcome event into the unit's tallies; return the change to this metric's rollup fields."""
    old = state.value(m)
    t = state.tallies.setdefault(m.name, {"count": 0, "sum": 0.0, "max": value, "last": value})
    t["count"] = t.get("count", 0) + 1
    t["sum"] = t.get("sum", 0.0) + value
    t["max"] = max(t.get("max", value), value)
    t["last"] = value
    new = state.value(m)
    assert new is not None
    x = float(state.covariates.get(m.name, 0.0))
    d: dict[str, Any] = {}
    if old is None:  # first value of a mean metric: the unit joins this metric's denominator
        d.update({"n": 1, "sx": x, "sxx": x * x, "cov": 1 if m.name in state.covariates else 0})
        old = 0.0
        old_sq = 0.0
    else:
        old_sq = old * old
    if new != old or "n" in d:
        d.update({"s": new - old, "ss": new * new - old_sq, "sxy": x * (new - old)})
    if m.quantiles:
        d["hist"] = {hist_bucket(value): 1}
    return d


def add_into(doc: dict[str, Any], delta: Mapping[str, Any]) -> dict[str, Any]:
    """Add a nested delta into a rollup document (missing numbers start at 0)."""
    for k, v in delta.items():
        if type(v) is dict:
            sub = doc.get(k)
            if sub is None:
                doc[k] = sub = {}
            add_into(sub, v)
        else:
            doc[k] = doc.get(k, 0) + v
    return doc


def merge_deltas(deltas: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for d in deltas:
        add_into(out, d)
    return out
