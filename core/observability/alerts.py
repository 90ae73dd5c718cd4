"""Alert rules, per-tenant overrides and the evaluator that opens, de-duplicates and resolves alerts.

The evaluator is fed a snapshot of *facts* per tenant (numbers the services already keep in
rollups: error rate, p95s, backlog, monthly cost, connectors needing attention, ...), compares
them with each rule's effective threshold and keeps one alert document per (tenant, rule,
subject) as the *current* episode (fixed id, so two workers cannot open the same alert twice).

Flap damping, so a flapping condition gives one alert and one notification, not many:
  * an open alert resolves only after ``resolve_after`` consecutive clear cycles (hysteresis);
  * a condition that comes back within ``reopen_within`` of resolving reopens the same alert
    (``flaps`` counts it) and sends nothing new.
An unacknowledged alert is re-announced every ``remind_every``; acknowledging stops that;
silencing (with a reason and an end time) stops every notification about that rule and subject
until it ends, also for a new episode. A failed delivery is retried on later cycles and never
changes the alert's state. When the store cannot be reached, the evaluator raises an alert
about the store itself through the configured fallback channels instead of crashing, and
records it once the store is back.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from core import clock
from core.adapters.store import PLATFORM, Cond, Doc, DocumentStore
from core.errors import CastielError, Conflict, Invalid, NotFound, StoreUnavailable
from core.observability import telemetry
from core.observability.notify import AlertMessage, Delivery, Notifier, Target, targets_from_docs

log = logging.getLogger(__name__)

ALERTS = "alerts"
RULES_CONTAINER = "alert_rules"
DEFAULT_CHANNELS = "*"  # the override id holding a tenant's (or the platform's) default channels
SEVERITIES = ("critical", "warning", "info")
ACTIVE = ("open", "acknowledged")
MAX_EVENTS = 100
MAX_REASON = 500
MAX_SILENCE = timedelta(days=30)
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": lambda v, t: v > t,
    ">=": lambda v, t: v >= t,
    "<": lambda v, t: v < t,
    "<=": lambda v, t: v <= t,
}


@dataclass(frozen=True)
class RuleDef:
    """One alert rule: which fact it watches, how it compares, and what thresholds make sense."""

    key: str
    title: str
    fact: str
    comparator: str
    threshold: float
    unit: str  # ratio | ms | count | currency | p | flag
    severity: str
    lo: float
    hi: float
    description: str
    screen: str
    integer: bool = False
    threshold_editable: bool = True

    def fires(self, value: float, threshold: float) -> bool:
        return _COMPARE[self.comparator](value, threshold)


DEFAULT_RULES: tuple[RuleDef, ...] = (
    RuleDef("error_rate", "Service error rate", "service_error_rate", ">", 0.05, "ratio", "critical", 0.0, 1.0,
            "Share of a service operation's calls that failed (bad input is not counted) over the last 15 minutes.",
            "telemetry"),
    RuleDef("service_p95", "Service p95 latency", "service_p95_ms", ">", 500.0, "ms", "warning", 1.0, 600_000.0,
            "95th percentile latency of a service operation over the last 15 minutes.", "telemetry"),
    RuleDef("store_failures", "Store connection failures", "store_connection_failures", ">", 0.0, "count",
            "critical", 0.0, 1_000_000.0, "Calls that could not reach the store over the last 15 minutes.",
            "telemetry", integer=True),
    RuleDef("queue_backlog", "Queue backlog", "queue_backlog", ">", 100.0, "count", "warning", 1.0, 10_000_000.0,
            "Jobs waiting in a work queue.", "overview", integer=True),
    RuleDef("embedding_failure_rate", "Embedding failure rate", "embedding_failure_rate", ">", 0.05, "ratio",
            "warning", 0.0, 1.0, "Share of embedding work that failed over the last 15 minutes.", "embeddings"),
    RuleDef("vector_search_p95", "Vector search p95 latency", "vector_search_p95_ms", ">", 2000.0, "ms", "warning",
            1.0, 600_000.0, "95th percentile vector search latency over the last 15 minutes.", "embeddings"),
    RuleDef("cost_over_threshold", "Monthly cost over threshold", "month_cost", ">", 500.0, "currency", "warning",
            0.0, 10_000_000.0, "LLM and embedding spend this month, priced with data/prices.json.", "telemetry"),
    RuleDef("connector_attention", "Connector needs re-authorisation or was paused", "connectors_attention", ">",
            0.0, "flag", "critical", 0.0, 0.0,
            "A connection is in needs_reauth, or was auto-paused after repeated failures.", "integrations",
            threshold_editable=False),
    RuleDef("model_drift", "Model drift detected", "model_drift", ">", 0.0, "flag", "warning", 0.0, 0.0,
            "The latest drift check of a model found data or prediction drift.", "models",
            threshold_editable=False),
    RuleDef("experiment_srm", "Experiment sample ratio mismatch", "experiment_srm_p", "<", 0.001, "p", "warning",
            1e-12, 0.05, "A running experiment's assignment counts deviate from its weights (chi-square p-value).",
            "experiments"),
)
# Raised by the evaluator itself when the store cannot be reached; not configurable per tenant.
STORE_UNREACHABLE = RuleDef(
    "store_unreachable", "Store unreachable", "store_reachable", "<", 1.0, "flag", "critical", 0.0, 0.0,
    "The alert evaluator could not read or write the document store.", "overview", threshold_editable=False,
)
RULES: dict[str, RuleDef] = {r.key: r for r in DEFAULT_RULES}


# thresholds and overrides ---------------------------------------------------------------------
def format_value(unit: str, value: float | None) -> str:
    if value is None:
        return "—"
    if unit == "ratio":
        return f"{value * 100:.1f}%"
    if unit == "ms":
        return f"{value / 1000:.2f} s" if value >= 10_000 else f"{value:.0f} ms"
    if unit == "currency":
        return f"${value:,.2f}"
    if unit == "p":
        return f"p={value:.2g}"
    if unit == "flag":
        return "yes" if value else "no"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def _range_text(rule: RuleDef) -> str:
    if rule.unit == "ratio":
        return "between 0 and 1 (a fraction: 0.05 means 5%; '5%' is also accepted)"
    return f"between {format_value(rule.unit, rule.lo)} and {format_value(rule.unit, rule.hi)}"


def validate_threshold(rule_key: str, raw: Any) -> float:
    """Parse and check a threshold for ``rule_key``; ``Invalid`` gives the reason and what is allowed."""
    rule = RULES.get(rule_key)
    if rule is None:
        raise Invalid(f"unknown alert rule {rule_key!r}; rules are: {', '.join(RULES)}")
    if not rule.threshold_editable:
        raise Invalid(
            f"'{rule.title}' has no threshold: it fires whenever "
            f"{rule.description[0].lower()}{rule.description[1:-1]}; "
            "you can enable or disable it, change its severity and channels, or silence it"
        )
    value: float
    if isinstance(raw, bool) or raw is None:
        raise Invalid(f"the threshold for '{rule.title}' must be a number, got {raw!r}")
    if isinstance(raw, int | float):
        value = float(raw)
    elif isinstance(raw, str):
        text = raw.strip().replace(",", "")
        try:
            if text.endswith("%") and rule.unit == "ratio":
                value = float(text[:-1]) / 100.0
            else:
                value = float(text.lstrip("$").removesuffix("ms").strip())
        except ValueError:
            raise Invalid(f"the threshold for '{rule.title}' must be a number, got {raw!r}") from None
    else:
        raise Invalid(f"the threshold for '{rule.title}' must be a number, got {type(raw).__name__}")
    if not math.isfinite(value):
        raise Invalid(f"the threshold for '{rule.title}' must be a finite number, got {raw!r}")
    if not rule.lo <= value <= rule.hi:
        raise Invalid(f"the threshold for '{rule.title}' must be {_range_text(rule)}, got {raw!r}")
    if rule.integer and not value.is_integer():
        raise Invalid(f"the threshold for '{rule.title}' counts things, so it must be a whole number, got {raw!r}")
    return value


@dataclass(frozen=True)
class Override:
    """A tenant's (or the platform's) changes to one rule; ``None`` means 'inherit'."""

    rule: str
    threshold: float | None = None
    enabled: bool | None = None
    severity: str | None = None
    channels: tuple[Target, ...] | None = None
    silenced_until: str | None = None
    silence_reason: str | None = None


def validate_override(
    rule_key: str,
    *,
    threshold: Any = None,
    enabled: bool | None = None,
    severity: str | None = None,
    channels: Sequence[Target] | None = None,
) -> Override:
    """Build a checked override; ``rule_key='*'`` sets only the default channels."""
    if rule_key == DEFAULT_CHANNELS:
        if threshold is not None or enabled is not None or severity is not None:
            raise Invalid("the default-channels entry only holds channels; set thresholds on a rule")
        return Override(DEFAULT_CHANNELS, channels=tuple(channels or ()))
    if rule_key not in RULES:
        raise Invalid(f"unknown alert rule {rule_key!r}; rules are: {', '.join(RULES)}")
    value = None if threshold is None or threshold == "" else validate_threshold(rule_key, threshold)
    if severity is not None and severity not in SEVERITIES:
        raise Invalid(f"severity must be one of {', '.join(SEVERITIES)}, got {severity!r}")
    if enabled is not None and not isinstance(enabled, bool):
        raise Invalid(f"enabled must be true or false, got {enabled!r}")
    return Override(rule_key, value, enabled, severity, None if channels is None else tuple(channels))


def override_to_doc(tenant_id: str, o: Override) -> Doc:
    return {
        "id": o.rule,
        "tenantId": tenant_id,
        "rule": o.rule,
        "threshold": o.threshold,
        "enabled": o.enabled,
        "severity": o.severity,
        "channels": None if o.channels is None else [t.to_doc() for t in o.channels],
        "silencedUntil": o.silenced_until,
        "silenceReason": o.silence_reason,
    }


def override_from_doc(doc: Mapping[str, Any]) -> Override:
    ch = doc.get("channels")
    return Override(
        rule=str(doc["rule"]),
        threshold=doc.get("threshold"),
        enabled=doc.get("enabled"),
        severity=doc.get("severity"),
        channels=None if ch is None else targets_from_docs(ch),
        silenced_until=doc.get("silencedUntil"),
        silence_reason=doc.get("silenceReason"),
    )


def load_overrides(store: DocumentStore, tenant_id: str) -> dict[str, Override]:
    return {d["rule"]: override_from_doc(d) for d in store.query(RULES_CONTAINER, tenant_id)}


@dataclass(frozen=True)
class EffectiveRule:
    rule: RuleDef
    threshold: float
    enabled: bool
    severity: str
    channels: tuple[Target, ...]
    silenced_until: str | None = None
    silence_reason: str | None = None
    overridden: tuple[str, ...] = ()


def effective_rules(
    platform: Mapping[str, Override] | None = None,
    tenant: Mapping[str, Override] | None = None,
    fallback_channels: Sequence[Target] = (),
) -> dict[str, EffectiveRule]:
    """Defaults, then platform overrides, then the tenant's: the rules as they apply to one tenant.

    Channels: the rule's own channels (tenant, then platform), else the default channels
    (tenant, then platform), else the configured fallback.
    """
    platform = platform or {}
    tenant = tenant or {}
    default_channels: tuple[Target, ...] = tuple(fallback_channels)
    for layer in (platform, tenant):
        o = layer.get(DEFAULT_CHANNELS)
        if o is not None and o.channels:
            default_channels = o.channels
    out: dict[str, EffectiveRule] = {}
    for key, rule in RULES.items():
        eff = EffectiveRule(rule, rule.threshold, True, rule.severity, default_channels)
        changed: list[str] = []
        for layer in (platform, tenant):
            o = layer.get(key)
            if o is None:
                continue
            if o.threshold is not None:
                eff = replace(eff, threshold=float(o.threshold))
                changed.append("threshold")
            if o.enabled is not None:
                eff = replace(eff, enabled=o.enabled)
                changed.append("enabled")
            if o.severity is not None:
                eff = replace(eff, severity=o.severity)
                changed.append("severity")
            if o.channels:
                eff = replace(eff, channels=o.channels)
                changed.append("channels")
            if o.silenced_until is not None:
                eff = replace(eff, silenced_until=o.silenced_until, silence_reason=o.silence_reason)
        out[key] = replace(eff, overridden=tuple(dict.fromkeys(changed)))
    return out


# facts -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Observation:
    """One subject's value for a fact, with how to show it and where it lives in the console."""

    value: float
    label: str = ""
    link: str | None = None


FactValue = float | int | None | Mapping[str, Any]
Facts = Mapping[str, FactValue]


def observations(value: FactValue) -> dict[str, Observation] | None:
    """Normalise a fact: a number is one tenant-wide subject (``""``); a mapping is per subject."""
    if value is None:
        return None
    if isinstance(value, bool | int | float):
        return {"": Observation(float(value))}
    out: dict[str, Observation] = {}
    for subject, v in value.items():
        if isinstance(v, Observation):
            out[str(subject)] = v
        elif isinstance(v, Mapping):
            out[str(subject)] = Observation(float(v["value"]), str(v.get("label") or ""), v.get("link"))
        elif v is not None:
            out[str(subject)] = Observation(float(v))
    return out


def telemetry_facts(
    store: DocumentStore,
    tenant_id: str,
    now: datetime | None = None,
    window_minutes: int = 15,
    min_calls: int = 20,
) -> dict[str, FactValue]:
    """Facts the telemetry rollups answer: per-operation error rate and p95, store failures,
    embedding failure rate, vector search p95. Operations with fewer than ``min_calls`` calls in
    the window give no rate or percentile (three failures out of four calls is not an outage).
    """
    now = now or clock.now()
    docs = telemetry.read_rollups(store, tenant_id, grain="minute", since=now - timedelta(minutes=window_minutes))
    by_op = telemetry.summarise(docs, by=("kind", "operation"))
    error_rate: dict[str, Observation] = {}
    p95: dict[str, Observation] = {}
    for (kind, op), st in by_op.items():
        if kind == "service" and st.count >= min_calls:
            link = f"telemetry?operation={op}"
            error_rate[op] = Observation(st.error_rate, op, link)
            p = st.p(95)
            if p is not None:
                p95[op] = Observation(p, op, link)
    # Tenant-wide sums across operations of one kind (histograms merge by adding counts).
    by_kind = telemetry.summarise(docs, by=("kind",))
    store_failures = sum(st.error_kinds.get("StoreUnavailable", 0) for st in by_kind.values())
    emb = by_kind.get(("embedding",))
    vector = by_kind.get(("vector",))
    facts: dict[str, FactValue] = {
        "service_error_rate": error_rate,
        "service_p95_ms": p95,
        "store_connection_failures": store_failures,
        "embedding_failure_rate": emb.error_rate if emb is not None and emb.count >= min_calls else None,
        "vector_search_p95_ms": vector.p(95) if vector is not None and vector.count >= min_calls else None,
    }
    return facts


# the evaluator ----------------------------------------------------------------------------------
def subject_key(subject: str) -> str:
    return hashlib.sha1(subject.encode()).hexdigest()[:12] if subject else "all"


def current_id(rule: str, subject: str) -> str:
    return f"{rule}.{subject_key(subject)}"


def _event(at: str, kind: str, **extra: Any) -> dict[str, Any]:
    return {"at": at, "event": kind, **{k: v for k, v in extra.items() if v is not None}}


def _push_event(doc: Doc, ev: dict[str, Any]) -> None:
    events = list(doc.get("events") or [])
    events.append(ev)
    doc["events"] = events[-MAX_EVENTS:]


@dataclass
class TenantResult:
    tenant_id: str
    opened: list[str] = field(default_factory=list)
    reopened: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    active: int = 0
    unknown_rules: list[str] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)


@dataclass
class CycleSummary:
    started_at: str
    duration_ms: float = 0.0
    tenants: int = 0
    opened: int = 0
    reopened: int = 0
    resolved: int = 0
    active: int = 0
    failed_tenants: dict[str, str] = field(default_factory=dict)
    store_ok: bool = True
    store_error: str | None = None
    deliveries: list[Delivery] = field(default_factory=list)
    results: list[TenantResult] = field(default_factory=list)


class AlertEvaluator:
    """Turns fact snapshots into alert documents and notifications; one instance per worker process."""

    def __init__(
        self,
        store: DocumentStore,
        notifier: Notifier | None = None,
        *,
        resolve_after: int = 3,
        reopen_within: timedelta = timedelta(minutes=60),
        remind_every: timedelta | None = timedelta(hours=4),
        retry_failed_after: timedelta = timedelta(minutes=5),
        fallback_channels: Sequence[Target] = (),
        console_url: str | None = None,
        now: Callable[[], datetime] = clock.now,
    ) -> None:
        if resolve_after < 1:
            raise Invalid("resolve_after must be at least 1 cycle")
        self.store = store
        self.notifier = notifier
        self.resolve_after = resolve_after
        self.reopen_within = reopen_within
        self.remind_every = remind_every
        self.retry_failed_after = retry_failed_after
        self.fallback_channels = tuple(fallback_channels)
        self.console_url = console_url.rstrip("/") if console_url else None
        self._now = now
        # Channels for alerts about the platform, remembered from the last good read so an
        # outage of the store can still be announced where ops asked for platform alerts.
        self._platform_channels: tuple[Target, ...] = tuple(fallback_channels)
        self._outage: Doc | None = None

    # one tenant -------------------------------------------------------------------------------
    def evaluate_tenant(self, tenant_id: str, facts: Facts, rules: Mapping[str, EffectiveRule]) -> TenantResult:
        """Compare one tenant's facts with its rules and move its alerts; raises StoreUnavailable."""
        now = self._now()
        stamp = clock.iso(now)
        result = TenantResult(tenant_id)
        current = {d["id"]: d for d in self.store.query(ALERTS, tenant_id, [Cond("current", "=", True)])}
        by_rule: dict[str, list[Doc]] = {}
        for d in current.values():
            by_rule.setdefault(d["rule"], []).append(d)

        for key, eff in rules.items():
            rule = eff.rule
            existing = by_rule.get(key, [])
            if not eff.enabled:
                for d in existing:
                    if d["status"] in ACTIVE:
                        self._resolve(tenant_id, d, stamp, "rule disabled")
                        result.resolved.append(d["id"])
                continue
            obs = observations(facts.get(rule.fact))
            if obs is None:
                # The feature is not set up (or did not report): neither open nor resolve on no data.
                result.unknown_rules.append(key)
                result.active += sum(1 for d in existing if d["status"] in ACTIVE)
                continue
            breaching = {s: o for s, o in obs.items() if rule.fires(o.value, eff.threshold)}
            for subject, o in breaching.items():
                doc = current.get(current_id(key, subject))
                outcome = self._breach(tenant_id, eff, subject, o, doc, now, stamp)
                if outcome == "opened":
                    result.opened.append(current_id(key, subject))
                elif outcome == "reopened":
                    result.reopened.append(current_id(key, subject))
                result.active += 1
            for d in existing:
                if d.get("subject", "") in breaching or d["status"] not in ACTIVE:
                    continue
                if self._clear(tenant_id, d, stamp):
                    result.resolved.append(d["id"])
                else:
                    result.active += 1

        result.deliveries.extend(self._notify_due(tenant_id, rules, now))
        return result

    def _write(self, tenant_id: str, doc_id: str, change: Callable[[Doc | None], Doc | None]) -> Doc | None:
        return self.store.update(ALERTS, tenant_id, doc_id, change)

    def _breach(
        self,
        tenant_id: str,
        eff: EffectiveRule,
        subject: str,
        o: Observation,
        doc: Doc | None,
        now: datetime,
        stamp: str,
    ) -> str:
        rule = eff.rule
        doc_id = current_id(rule.key, subject)
        recent_cutoff = clock.iso(now - self.reopen_within)
        outcome = "ongoing"

        def change(cur: Doc | None) -> Doc:
            nonlocal outcome
            if cur is not None and cur["status"] in ACTIVE:
                outcome = "ongoing"
                cur.update(value=o.value, lastSeenAt=stamp, clearStreak=0, threshold=eff.threshold)
                cur["peak"] = o.value if cur.get("peak") is None else (
                    max(cur["peak"], o.value) if rule.comparator.startswith(">") else min(cur["peak"], o.value)
                )
                return cur
            if cur is not None and (cur.get("resolvedAt") or "") >= recent_cutoff:
                outcome = "reopened"
                # Someone who acknowledged it is still on it when it comes back.
                status = "acknowledged" if cur.get("ackBy") else "open"
                cur.update(status=status, value=o.value, lastSeenAt=stamp, clearStreak=0, resolvedAt=None,
                           flaps=int(cur.get("flaps", 0)) + 1, threshold=eff.threshold)
                _push_event(cur, _event(stamp, "reopened", value=o.value))
                return cur
            if cur is not None:
                # A new episode: keep the old one as history under its own id.
                archived = {k: v for k, v in cur.items() if k != "_etag"}
                archived.update(id=f"{doc_id}.{cur['openedAt'].replace(':', '').replace('-', '')}", current=False)
                try:
                    self.store.create(ALERTS, archived)
                except Conflict:
                    pass  # archived already by a concurrent evaluator
            outcome = "opened"
            carried_silence = None
            if cur is not None and (cur.get("silencedUntil") or "") > stamp:
                carried_silence = cur
            new: Doc = {
                "rule": rule.key,
                "current": True,
                "subject": subject,
                "subjectLabel": o.label or subject,
                "title": rule.title,
                "severity": eff.severity,
                "status": "open",
                "value": o.value,
                "peak": o.value,
                "threshold": eff.threshold,
                "comparator": rule.comparator,
                "unit": rule.unit,
                "link": o.link or self._default_link(rule, tenant_id),
                "openedAt": stamp,
                "lastSeenAt": stamp,
                "resolvedAt": None,
                "clearStreak": 0,
                "flaps": 0,
                "notifyStatus": "pending",
                "notifyAttempts": 0,
                "lastNotifiedAt": None,
                "lastNotifyTryAt": None,
                "events": [_event(stamp, "opened", value=o.value, threshold=eff.threshold)],
            }
            if carried_silence is not None:
                for k in ("silencedUntil", "silencedBy", "silenceReason"):
                    new[k] = carried_silence.get(k)
            return new

        self._write(tenant_id, doc_id, change)
        return outcome

    def _clear(self, tenant_id: str, doc: Doc, stamp: str) -> bool:
        resolved = False

        def change(cur: Doc | None) -> Doc | None:
            nonlocal resolved
            if cur is None or cur["status"] not in ACTIVE:
                return None
            cur["clearStreak"] = int(cur.get("clearStreak", 0)) + 1
            if cur["clearStreak"] >= self.resolve_after:
                cur.update(status="resolved", resolvedAt=stamp)
                _push_event(cur, _event(stamp, "resolved", reason="condition cleared"))
                resolved = True
            return cur

        self._write(tenant_id, doc["id"], change)
        return resolved

    def _resolve(self, tenant_id: str, doc: Doc, stamp: str, reason: str) -> None:
        def change(cur: Doc | None) -> Doc | None:
            if cur is None or cur["status"] not in ACTIVE:
                return None
            cur.update(status="resolved", resolvedAt=stamp)
            _push_event(cur, _event(stamp, "resolved", reason=reason))
            return cur

        self._write(tenant_id, doc["id"], change)

    def _default_link(self, rule: RuleDef, tenant_id: str) -> str:
        return f"{rule.screen}?tenant={tenant_id}"

    # notifications ----------------------------------------------------------------------------
    def _due(self, doc: Doc, eff: EffectiveRule | None, now: datetime) -> str | None:
        """Which notification (if any) an active alert needs now: 'opened', 'reminder' or None."""
        stamp = clock.iso(now)
        if (doc.get("silencedUntil") or "") > stamp:
            return None
        if eff is not None and (eff.silenced_until or "") > stamp:
            return None
        status = doc.get("notifyStatus")
        last_try = doc.get("lastNotifyTryAt")
        if status == "pending":
            return "opened"
        if status == "failed":
            if last_try is None or clock.parse(last_try) <= now - self.retry_failed_after:
                return "opened" if doc.get("lastNotifiedAt") is None else "reminder"
            return None
        if (
            self.remind_every is not None
            and doc["status"] == "open"
            and doc.get("lastNotifiedAt")
            and clock.parse(doc["lastNotifiedAt"]) <= now - self.remind_every
        ):
            return "reminder"
        return None

    def _notify_due(self, tenant_id: str, rules: Mapping[str, EffectiveRule], now: datetime) -> list[Delivery]:
        if self.notifier is None:
            return []
        out: list[Delivery] = []
        where = [Cond("current", "=", True), Cond("status", "in", list(ACTIVE))]
        for doc in self.store.query(ALERTS, tenant_id, where):
            eff = rules.get(doc["rule"])
            event = self._due(doc, eff, now)
            if event is None:
                continue
            channels = eff.channels if eff is not None else self._platform_channels
            out.extend(self._send(tenant_id, doc, event, channels, now))
        return out

    def message_for(self, tenant_id: str, doc: Mapping[str, Any], event: str) -> AlertMessage:
        unit = doc.get("unit", "")
        subject = doc.get("subjectLabel") or doc.get("subject") or ""
        value, threshold = format_value(unit, doc.get("value")), format_value(unit, doc.get("threshold"))
        where = f" for {subject}" if subject else ""
        if unit == "flag":
            summary = f"{doc['title']}{where}."
        else:
            summary = f"{doc['title']}{where}: {value} (threshold {doc.get('comparator', '>')} {threshold})."
        if doc.get("flaps"):
            summary += f" It has cleared and come back {doc['flaps']} time(s) since it opened."
        link = doc.get("link")
        if link and self.console_url and not link.startswith("http"):
            link = f"{self.console_url}/{link}"
        return AlertMessage(
            event=event, tenant_id=tenant_id, rule=doc["rule"], title=doc["title"],
            severity=doc.get("severity", "warning"), summary=summary, subject=subject, value=value,
            threshold=threshold, alert_id=doc["id"], at=doc.get("openedAt", clock.iso()), link=link,
        )

    def _send(self, tenant_id: str, doc: Doc, event: str, channels: Sequence[Target], now: datetime) -> list[Delivery]:
        assert self.notifier is not None
        stamp = clock.iso(now)
        error: str | None
        if not channels:
            deliveries: list[Delivery] = []
            status, error = "failed", "no notification channel is configured for this rule or tenant"
        else:
            deliveries = self.notifier.deliver(self.message_for(tenant_id, doc, event), channels)
            sent = [d for d in deliveries if d.status == "sent"]
            status = "sent" if sent else "failed"
            failures = [f"{d.target}: {d.error}" for d in deliveries if d.status == "failed"]
            error = "; ".join(failures) or None
        attempts = sum(d.attempts for d in deliveries)

        def change(cur: Doc | None) -> Doc | None:
            if cur is None:
                return None
            cur["notifyStatus"] = status
            cur["notifyError"] = error
            cur["notifyAttempts"] = int(cur.get("notifyAttempts", 0)) + attempts
            cur["lastNotifyTryAt"] = stamp
            if status == "sent":
                cur["lastNotifiedAt"] = stamp
            _push_event(cur, _event(stamp, "notified" if status == "sent" else "notify_failed", notice=event,
                                    error=error, targets=[d.target for d in deliveries] or None))
            return cur

        self._write(tenant_id, doc["id"], change)
        return deliveries

    # a whole cycle ----------------------------------------------------------------------------
    def run_cycle(
        self,
        tenant_ids: Callable[[], Iterable[str]],
        gather: Callable[[str], Facts],
        rules_for: Callable[[str], Mapping[str, EffectiveRule]],
        platform_channels: Callable[[], Sequence[Target]] | None = None,
    ) -> CycleSummary:
        """Evaluate every tenant; never raises. A store outage becomes an alert about the store."""
        t0 = time.perf_counter()
        summary = CycleSummary(started_at=clock.iso(self._now()))
        try:
            if platform_channels is not None:
                chans = tuple(platform_channels())
                self._platform_channels = chans or self.fallback_channels
            tenants = list(tenant_ids())
        except StoreUnavailable as e:
            self._store_down(e, summary)
            summary.duration_ms = (time.perf_counter() - t0) * 1000
            return summary
        except Exception as e:
            log.exception("alert evaluation could not list tenants")
            summary.failed_tenants["*"] = f"{type(e).__name__}: {e}"
            summary.duration_ms = (time.perf_counter() - t0) * 1000
            return summary
        for tenant_id in tenants:
            try:
                res = self.evaluate_tenant(tenant_id, gather(tenant_id), rules_for(tenant_id))
            except StoreUnavailable as e:
                self._store_down(e, summary)
                break
            except CastielError as e:
                summary.failed_tenants[tenant_id] = e.message
                continue
            except Exception as e:  # one tenant's bad data must not stop the others being watched
                log.exception("alert evaluation failed for tenant %s", tenant_id)
                summary.failed_tenants[tenant_id] = f"{type(e).__name__}: {e}"
                continue
            summary.tenants += 1
            summary.opened += len(res.opened)
            summary.reopened += len(res.reopened)
            summary.resolved += len(res.resolved)
            summary.active += res.active
            summary.deliveries.extend(res.deliveries)
            summary.results.append(res)
        if summary.store_ok and self._outage is not None:
            self._store_back(summary)
        summary.duration_ms = (time.perf_counter() - t0) * 1000
        return summary

    def _store_down(self, err: StoreUnavailable, summary: CycleSummary) -> None:
        summary.store_ok = False
        summary.store_error = err.message
        log.error("alert evaluation: the store is unreachable: %s", err.message)
        stamp = clock.iso(self._now())
        if self._outage is not None:
            self._outage["lastSeenAt"] = stamp
            self._outage["value"] = err.message
            return
        self._outage = {
            "id": current_id(STORE_UNREACHABLE.key, ""),
            "tenantId": PLATFORM,
            "rule": STORE_UNREACHABLE.key,
            "current": True,
            "subject": "",
            "subjectLabel": "",
            "title": STORE_UNREACHABLE.title,
            "severity": STORE_UNREACHABLE.severity,
            "status": "open",
            "value": None,
            "threshold": None,
            "comparator": STORE_UNREACHABLE.comparator,
            "unit": "flag",
            "link": "overview",
            "openedAt": stamp,
            "lastSeenAt": stamp,
            "resolvedAt": None,
            "flaps": 0,
            "error": err.message,
            "events": [_event(stamp, "opened", error=err.message)],
        }
        if self.notifier is None:
            return
        msg = AlertMessage(
            event="opened", tenant_id=PLATFORM, rule=STORE_UNREACHABLE.key, title=STORE_UNREACHABLE.title,
            severity="critical", summary=f"The alert evaluator cannot reach the store: {err.message}",
            alert_id=self._outage["id"], at=stamp, link=f"{self.console_url}/overview" if self.console_url else None,
        )
        # record=False: the notifications container lives in the store that is down.
        deliveries = self.notifier.deliver(msg, self._platform_channels, record=False)
        summary.deliveries.extend(deliveries)
        self._outage["notifyStatus"] = "sent" if any(d.status == "sent" for d in deliveries) else "failed"
        self._outage["events"].append(
            _event(stamp, "notified" if self._outage["notifyStatus"] == "sent" else "notify_failed",
                   targets=[d.target for d in deliveries] or None,
                   error="; ".join(f"{d.target}: {d.error}" for d in deliveries if d.error) or None)
        )

    def _store_back(self, summary: CycleSummary) -> None:
        """Record the outage as a resolved platform alert and say so on the same channels."""
        assert self._outage is not None
        stamp = clock.iso(self._now())
        doc = dict(self._outage)
        doc.update(status="resolved", resolvedAt=stamp, current=False,
                   id=f"{doc['id']}.{doc['openedAt'].replace(':', '').replace('-', '')}")
        doc["events"] = [*doc["events"], _event(stamp, "resolved", reason="store reachable again")]
        try:
            self.store.create(ALERTS, doc)
        except Conflict:
            pass
        except StoreUnavailable as e:
            self._store_down(e, summary)
            return
        self._outage = None
        if self.notifier is not None:
            msg = AlertMessage(
                event="resolved", tenant_id=PLATFORM, rule=STORE_UNREACHABLE.key, title=STORE_UNREACHABLE.title,
                severity="critical", summary=f"The store is reachable again (unreachable since {doc['openedAt']}).",
                alert_id=doc["id"], at=stamp,
            )
            summary.deliveries.extend(self.notifier.deliver(msg, self._platform_channels))

    @property
    def outage(self) -> Doc | None:
        """The in-memory alert about the store while it is unreachable (shown by health checks)."""
        return self._outage


# acknowledge, silence, read -------------------------------------------------------------------
def _reason(reason: str | None, what: str) -> str:
    text = (reason or "").strip()
    if not text:
        raise Invalid(f"a reason is required to {what} an alert (it goes into the alert's history and the audit log)")
    if len(text) > MAX_REASON:
        raise Invalid(f"the reason is {len(text)} characters; keep it under {MAX_REASON}")
    return text


def acknowledge(store: DocumentStore, tenant_id: str, alert_id: str, actor: str, reason: str,
                now: datetime | None = None) -> Doc:
    """Mark an active alert as being handled: reminders stop; it still resolves by itself."""
    text = _reason(reason, "acknowledge")
    stamp = clock.iso(now)

    def change(cur: Doc | None) -> Doc:
        if cur is None:
            raise NotFound(f"alert {alert_id} not found for tenant {tenant_id}")
        if cur["status"] not in ACTIVE:
            raise Invalid(f"alert {alert_id} is {cur['status']}; only open alerts can be acknowledged")
        cur.update(status="acknowledged", ackBy=actor, ackAt=stamp, ackReason=text)
        _push_event(cur, _event(stamp, "acknowledged", by=actor, reason=text))
        return cur

    out = store.update(ALERTS, tenant_id, alert_id, change)
    assert out is not None
    return out


def silence(store: DocumentStore, tenant_id: str, alert_id: str, actor: str, reason: str, until: datetime,
            now: datetime | None = None) -> Doc:
    """Stop notifications about this rule and subject until ``until`` (at most 30 days)."""
    text = _reason(reason, "silence")
    now = now or clock.now()
    if until <= now:
        raise Invalid("a silence must end in the future")
    if until - now > MAX_SILENCE:
        raise Invalid(f"a silence can last at most {MAX_SILENCE.days} days; disable the rule instead")
    stamp, end = clock.iso(now), clock.iso(until)

    def change(cur: Doc | None) -> Doc:
        if cur is None:
            raise NotFound(f"alert {alert_id} not found for tenant {tenant_id}")
        if not cur.get("current"):
            raise Invalid(f"alert {alert_id} is history; silence the current alert for that rule")
        cur.update(silencedUntil=end, silencedBy=actor, silenceReason=text)
        _push_event(cur, _event(stamp, "silenced", by=actor, reason=text, until=end))
        return cur

    out = store.update(ALERTS, tenant_id, alert_id, change)
    assert out is not None
    return out


def unsilence(store: DocumentStore, tenant_id: str, alert_id: str, actor: str, reason: str,
              now: datetime | None = None) -> Doc:
    text = _reason(reason, "unsilence")
    stamp = clock.iso(now)

    def change(cur: Doc | None) -> Doc:
        if cur is None:
            raise NotFound(f"alert {alert_id} not found for tenant {tenant_id}")
        cur.update(silencedUntil=None, silencedBy=None, silenceReason=None)
        _push_event(cur, _event(stamp, "unsilenced", by=actor, reason=text))
        return cur

    out = store.update(ALERTS, tenant_id, alert_id, change)
    assert out is not None
    return out


def active_alerts(store: DocumentStore, tenant_id: str | None) -> list[Doc]:
    """Open and acknowledged alerts, newest first; ``tenant_id=None`` across tenants."""
    return store.query(ALERTS, tenant_id, [Cond("status", "in", list(ACTIVE))], order_by="openedAt", descending=True)


def history(store: DocumentStore, tenant_id: str | None, since: datetime | None = None, limit: int = 500) -> list[Doc]:
    """Every alert episode (current and archived), newest first."""
    where = [Cond("openedAt", ">=", clock.iso(since))] if since is not None else []
    return store.query(ALERTS, tenant_id, where, order_by="openedAt", descending=True, limit=limit)
