"""Validating exposure/outcome events and folding them into unit state and rollup deltas (no storage).

Event shape (JSON; the bulk importer maps CSV columns onto the same fields):

    {"eventId": "e-123", "type": "exposure", "unitId": "user-42", "variant": "treatment",
     "at": "2025-01-31T10:00:00Z", "covariates": {"thumbs_up": 0.3}}
    {"eventId": "e-124", "type": "outcome", "unitId": "user-42", "at": "...",
     "metrics": {"latency_ms": 812.5, "tokens": 402}}        # or "metric": "tokens", "value": 402

Rules: an exposure enrols a unit on its first arrival (variant given, or taken from assignment);
later exposures of the same unit change nothing (sticky, counted once) but must not name another
variant. An outcome needs an earlier exposure of its unit. Event ids are unique per experiment;
a repeated id is a duplicate and is counted once. :class:`Ledger` is the in-memory reference
implementation the service mirrors on the store, and what tests and the benchmark use.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from core.clock import iso
from core.errors import Invalid
from core.experiments.metrics import METRICS, MetricDef, UnitState, add_into, exposure_delta, record_outcome

EVENT_TYPES = ("exposure", "outcome")
_CANONICAL_TIME = re.compile(r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{6}Z")
MAX_ID_LENGTH = 200


@dataclass(frozen=True)
class Event:
    event_id: str
    type: str
    unit_id: str
    at: str
    variant: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    covariates: dict[str, float] = field(default_factory=dict)

    @property
    def day(self) -> str:
        return self.at[:10]

    def to_record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"eventId": self.event_id, "type": self.type, "unitId": self.unit_id, "at": self.at}
        if self.variant is not None:
            out["variant"] = self.variant
        if self.metrics:
            out["metrics"] = self.metrics
        if self.covariates:
            out["covariates"] = self.covariates
        return out


def _text(raw: Mapping[str, Any], *keys: str, required: bool = True) -> str | None:
    for k in keys:
        v = raw.get(k)
        if v is not None and str(v).strip() != "":
            s = str(v).strip()
            if len(s) > MAX_ID_LENGTH:
                raise Invalid(f"{keys[0]} is longer than {MAX_ID_LENGTH} characters")
            return s
    if required:
        raise Invalid(f"{keys[0]} is missing")
    return None


def parse_time(value: Any) -> str:
    """Accept ISO-8601 (with Z or an offset, or naive = UTC) and return the store's fixed-width UTC form."""
    if value is None or str(value).strip() == "":
        return iso()
    if isinstance(value, str) and _CANONICAL_TIME.fullmatch(value):
        return value  # already in the store's form (the common case): skip parsing
    if isinstance(value, datetime):
        dt = value
    else:
        try:
            dt = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            raise Invalid(f"at {value!r} is not an ISO-8601 time like 2025-01-31T10:00:00Z") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return iso(dt)


def parse_event(raw: Mapping[str, Any], metrics: Mapping[str, MetricDef] | None = None) -> Event:
    """Validate one event; ``Invalid`` says what is wrong with it."""
    metrics = metrics if metrics is not None else METRICS
    if not isinstance(raw, Mapping):
        raise Invalid("an event must be an object with eventId, type, unitId")
    event_id = _text(raw, "eventId", "event_id", "id")
    etype = _text(raw, "type", "event_type")
    if etype not in EVENT_TYPES:
        raise Invalid(f"type must be one of {', '.join(EVENT_TYPES)}, got {etype!r}")
    unit_id = _text(raw, "unitId", "unit_id")
    at = parse_time(raw.get("at") or raw.get("timestamp"))
    variant = _text(raw, "variant", required=False)

    values: dict[str, float] = {}
    given = raw.get("metrics")
    if given is not None and not isinstance(given, Mapping):
        raise Invalid("metrics must be an object of metric name to number")
    pairs = dict(given or {})
    name = _text(raw, "metric", required=False)
    if name is not None:
        pairs[name] = raw.get("value")
    for k, v in pairs.items():
        if k not in metrics:
            raise Invalid(f"unknown metric {k!r}; known metrics: {', '.join(metrics)}")
        values[k] = metrics[k].check_value(v)
    covs: dict[str, float] = {}
    for k, v in dict(raw.get("covariates") or {}).items():
        if k not in metrics:
            raise Invalid(f"covariate for unknown metric {k!r}")
        try:
            covs[k] = float(v)
        except (TypeError, ValueError):
            raise Invalid(f"covariate {k} must be a number, got {v!r}") from None
    if etype == "outcome" and not values:
        raise Invalid("an outcome needs at least one metric value (metrics: {...} or metric + value)")
    if etype == "exposure" and values:
        raise Invalid("an exposure carries no metric values; send them as an outcome")
    return Event(event_id, etype, unit_id, at, variant, values, covs)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Folded:
    """The effect of one event: the unit's new state and the delta for rollup (variant, day); None = no change."""

    state: UnitState
    key: tuple[str, str] | None
    delta: dict[str, Any]


def fold(
    ev: Event,
    state: UnitState | None,
    variants: Sequence[str],
    metric_defs: Sequence[MetricDef],
    assign: Callable[[str], str],
) -> Folded:
    """Apply one valid event to the unit's state; ``Invalid`` for unknown variants or orphan outcomes."""
    if ev.type == "exposure":
        if ev.variant is not None and ev.variant not in variants:
            raise Invalid(f"unknown variant {ev.variant!r}; this experiment has {', '.join(variants)}")
        if state is not None:
            if ev.variant is not None and ev.variant != state.variant:
                raise Invalid(f"unit {ev.unit_id} is assigned to {state.variant}, not {ev.variant}")
            if state.day:
                return Folded(state, None, {})  # a re-exposure: sticky, counted once
        # first exposure; a unit assigned earlier (state without a day) keeps the variant it was served
        variant = state.variant if state is not None else (ev.variant or assign(ev.unit_id))
        covs = {k: v for k, v in ev.covariates.items() if k in {m.name for m in metric_defs}}
        new = UnitState(variant, ev.day, covs, {})
        return Folded(new, (variant, ev.day), exposure_delta(metric_defs, covs))
    if state is None or not state.day:
        raise Invalid(f"no exposure recorded for unit {ev.unit_id}; send its exposure before outcomes")
    if ev.variant is not None and ev.variant != state.variant:
        raise Invalid(f"unit {ev.unit_id} is assigned to {state.variant}, not {ev.variant}")
    changes: dict[str, Any] = {}
    for m in metric_defs:  # metrics the experiment does not track are accepted and ignored
        if m.name in ev.metrics:
            d = record_outcome(state, m, ev.metrics[m.name])
            if d:
                changes[m.name] = d
    return Folded(state, (state.variant, state.day) if changes else None, {"metrics": changes} if changes else {})


@dataclass
class IngestReport:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (row number, reason)


@dataclass
class Ledger:
    """In-memory units, rollups and seen event ids for one experiment (tests, simulations, benchmarks)."""

    variants: Sequence[str]
    metric_defs: Sequence[MetricDef]
    assign: Callable[[str], str]
    units: dict[str, UnitState] = field(default_factory=dict)
    rollups: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)

    def ingest(self, raws: Iterable[Mapping[str, Any]], first_row: int = 1) -> IngestReport:
        report = IngestReport()
        defs = {m.name: m for m in self.metric_defs} | {k: v for k, v in METRICS.items()}
        for row, raw in enumerate(raws, start=first_row):
            try:
                ev = parse_event(raw, defs)
                if ev.event_id in self.seen:
                    report.duplicates += 1
                    continue
                folded = fold(ev, self.units.get(ev.unit_id), self.variants, self.metric_defs, self.assign)
            except Invalid as e:
                report.rejected.append((row, e.message))
                continue
            self.seen.add(ev.event_id)
            self.units[ev.unit_id] = folded.state
            if folded.key is not None:
                doc = self.rollups.setdefault(folded.key, {"variant": folded.key[0], "day": folded.key[1]})
                add_into(doc, folded.delta)
                doc["updatedAt"] = ev.at if ev.at > doc.get("updatedAt", "") else doc["updatedAt"]
            report.accepted += 1
        return report

    def rollup_list(self) -> list[dict[str, Any]]:
        return list(self.rollups.values())
