"""The alerting service: rule overrides per tenant (audited), the evaluation cycle, ack/silence, history.

Facts come from rollups and summary records only: telemetry rollups (error rates, p95s, store
failures), the work queue (queued jobs per queue), day rollups priced with the price table
(month-to-date cost), and each feature service that offers an ``attention_facts(tenant_id)``
or ``alert_facts(tenant_id)`` method (connectors needing re-authorisation, model drift,
experiment SRM). A feature that is not set up yet simply contributes no fact, and the rules
that need it show as "no data" instead of opening or resolving anything.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from core import clock
from core.adapters.store import PLATFORM, Cond, Doc, DocumentStore
from core.errors import CastielError, Invalid, NotFound, StoreUnavailable
from core.observability import alerts as al
from core.observability import telemetry
from core.observability.cost import PriceTable, month_to_date
from core.observability.notify import CONTAINER as NOTIFICATIONS
from core.observability.notify import AlertMessage, Delivery, Notifier, Target, parse_target
from core.services.access import ADMIN, OPS, Principal, require
from core.services.audit import AuditLog

log = logging.getLogger(__name__)

VIEW_ROLES = frozenset({ADMIN, OPS})
EDIT_ROLES = frozenset({ADMIN, OPS})
FactSource = Callable[[str], Mapping[str, Any]]
_CHANNEL_SPLIT = re.compile(r"[\s,]+")


def parse_channel_list(text: str) -> list[Target]:
    """``"email:ops@x.com slack:https://hooks..."`` -> targets (``CASTIEL_ALERT_CHANNELS``)."""
    out = []
    for item in _CHANNEL_SPLIT.split(text.strip()):
        if not item:
            continue
        kind, sep, address = item.partition(":")
        if not sep:
            raise Invalid(f"alert channel {item!r} must look like kind:address, e.g. email:ops@example.com")
        out.append(parse_target(kind, address))
    return out


@dataclass(frozen=True)
class RuleView:
    """One rule as it applies to a tenant (or platform-wide), for the Alerts screen."""

    key: str
    title: str
    description: str
    comparator: str
    threshold: float
    threshold_text: str
    default_threshold_text: str
    unit: str
    severity: str
    enabled: bool
    channels: tuple[str, ...]
    overridden: tuple[str, ...]
    threshold_editable: bool
    silenced_until: str | None


def _part(tenant_id: str | None) -> str:
    return tenant_id or PLATFORM


def _reason(reason: str | None, what: str) -> str:
    text = (reason or "").strip()
    if not text:
        raise Invalid(f"a reason is required to {what}; it goes into the audit log")
    return text


class AlertingService:
    def __init__(
        self,
        store: DocumentStore,
        audit: AuditLog,
        notifier: Notifier | None = None,
        *,
        tenant_ids: Callable[[], list[str]] | None = None,
        tenant_cost_threshold: Callable[[str], float | None] | None = None,
        fact_sources: Sequence[FactSource] = (),
        prices: PriceTable | None = None,
        fallback_channels: Sequence[Target] = (),
        console_url: str | None = None,
        resolve_after: int = 3,
        reopen_within: timedelta = timedelta(minutes=60),
        remind_every: timedelta | None = timedelta(hours=4),
        now: Callable[[], datetime] = clock.now,
    ) -> None:
        self.store = store
        self.audit = audit
        self.notifier = notifier
        self._tenant_ids = tenant_ids or (lambda: [d["id"] for d in store.query("tenants", None, order_by="id")])
        self._tenant_cost_threshold = tenant_cost_threshold
        self.fact_sources = list(fact_sources)
        self.prices = prices or PriceTable.load()
        self.fallback_channels = tuple(fallback_channels)
        self.now = now
        self.evaluator = al.AlertEvaluator(
            store, notifier, resolve_after=resolve_after, reopen_within=reopen_within, remind_every=remind_every,
            fallback_channels=fallback_channels, console_url=console_url, now=now,
        )
        self._cycle_lock = threading.Lock()
        self._month_costs: dict[str, float] = {}

    # rules -------------------------------------------------------------------------------------
    def _effective(self, tenant_id: str | None) -> dict[str, al.EffectiveRule]:
        platform = al.load_overrides(self.store, PLATFORM)
        tenant = al.load_overrides(self.store, tenant_id) if tenant_id and tenant_id != PLATFORM else {}
        rules = al.effective_rules(platform, tenant, self.fallback_channels)
        cost = rules["cost_over_threshold"]
        # The tenant's own cost threshold (tenant settings) applies unless a rule override sets one.
        if (tenant_id and tenant_id != PLATFORM and "threshold" not in cost.overridden
                and self._tenant_cost_threshold is not None):
            value = self._tenant_cost_threshold(tenant_id)
            if value is not None:
                rules["cost_over_threshold"] = replace(cost, threshold=float(value))
        return rules

    def rules(self, principal: Principal, tenant_id: str | None = None) -> list[RuleView]:
        """The rules as they apply to ``tenant_id`` (platform defaults when None)."""
        require(principal, tenant_id, VIEW_ROLES)
        if tenant_id is None and not principal.platform_wide:
            tenant_id = principal.tenant_id
        out = []
        for key, eff in self._effective(tenant_id).items():
            r = eff.rule
            out.append(RuleView(
                key=key, title=r.title, description=r.description, comparator=r.comparator, threshold=eff.threshold,
                threshold_text=al.format_value(r.unit, eff.threshold) if r.threshold_editable else "—",
                default_threshold_text=al.format_value(r.unit, r.threshold) if r.threshold_editable else "—",
                unit=r.unit, severity=eff.severity, enabled=eff.enabled, channels=tuple(t.label for t in eff.channels),
                overridden=eff.overridden, threshold_editable=r.threshold_editable, silenced_until=eff.silenced_until,
            ))
        return out

    def overrides(self, principal: Principal, tenant_id: str | None) -> dict[str, al.Override]:
        require(principal, tenant_id, VIEW_ROLES)
        return al.load_overrides(self.store, _part(tenant_id))

    def _require_edit(self, principal: Principal, tenant_id: str | None) -> None:
        require(principal, tenant_id, EDIT_ROLES)
        if tenant_id is None and principal.role != ADMIN:
            from core.errors import Forbidden

            raise Forbidden("platform-wide rule changes are for admins; pick a tenant to change its rules")

    def set_override(
        self,
        principal: Principal,
        tenant_id: str | None,
        rule: str,
        reason: str,
        *,
        threshold: Any = None,
        enabled: bool | None = None,
        severity: str | None = None,
        channels: Sequence[Target] | None = None,
    ) -> Doc:
        """Change one rule for a tenant (or platform-wide with ``tenant_id=None``); validated and audited.

        Fields left as None keep what the override already holds (``reset_override`` clears it all).
        """
        self._require_edit(principal, tenant_id)
        text = _reason(reason, "change an alert rule")
        override = al.validate_override(rule, threshold=threshold, enabled=enabled, severity=severity,
                                        channels=channels)
        part = _part(tenant_id)
        before = self.store.get_or_none(al.RULES_CONTAINER, part, rule)
        doc = al.override_to_doc(part, override)
        if before is not None:
            for k in ("threshold", "enabled", "severity", "channels", "silencedUntil", "silenceReason"):
                if doc.get(k) is None:
                    doc[k] = before.get(k)
        doc.update(updatedAt=clock.iso(self.now()), updatedBy=principal.email)
        saved = self.store.upsert(al.RULES_CONTAINER, doc)
        self.audit.record(principal, tenant_id, "alert_rule.set", f"alert_rule:{rule}", text,
                          before=_public_rule(before), after=_public_rule(saved))
        return saved

    def reset_override(self, principal: Principal, tenant_id: str | None, rule: str, reason: str) -> None:
        self._require_edit(principal, tenant_id)
        text = _reason(reason, "reset an alert rule")
        part = _part(tenant_id)
        before = self.store.get_or_none(al.RULES_CONTAINER, part, rule)
        if before is None:
            raise NotFound(f"rule {rule!r} has no override for {tenant_id or 'the platform'}")
        self.store.delete(al.RULES_CONTAINER, part, rule)
        self.audit.record(principal, tenant_id, "alert_rule.reset", f"alert_rule:{rule}", text,
                          before=_public_rule(before))

    def set_default_channels(self, principal: Principal, tenant_id: str | None, channels: Sequence[Target],
                             reason: str) -> Doc:
        """Replace the default channels of a tenant (or the platform): where every rule notifies by default."""
        self._require_edit(principal, tenant_id)
        text = _reason(reason, "change notification channels")
        part = _part(tenant_id)
        before = self.store.get_or_none(al.RULES_CONTAINER, part, al.DEFAULT_CHANNELS)
        doc = al.override_to_doc(part, al.validate_override(al.DEFAULT_CHANNELS, channels=channels))
        doc.update(updatedAt=clock.iso(self.now()), updatedBy=principal.email)
        saved = self.store.upsert(al.RULES_CONTAINER, doc)
        self.audit.record(principal, tenant_id, "alert_channels.set", f"alert_channels:{part}", text,
                          before=_public_rule(before), after=_public_rule(saved))
        return saved

    def default_channels(self, principal: Principal, tenant_id: str | None) -> list[Target]:
        """The channels set for this scope itself (not inherited)."""
        o = self.overrides(principal, tenant_id).get(al.DEFAULT_CHANNELS)
        return list(o.channels or ()) if o is not None else []

    def send_test(self, principal: Principal, tenant_id: str | None, target: Target, reason: str) -> Delivery:
        """Send a test notification to one target (audited), to check a webhook or address works."""
        self._require_edit(principal, tenant_id)
        text = _reason(reason, "send a test notification")
        if self.notifier is None:
            raise Invalid("notifications are not configured in this process")
        msg = AlertMessage(event="test", tenant_id=_part(tenant_id), rule="test", title="Test notification",
                           severity="info", summary=f"A test from the Castiel console, sent by {principal.email}.",
                           at=clock.iso(self.now()))
        [d] = self.notifier.deliver(msg, [target])
        self.audit.record(principal, tenant_id, "alert_channel.test", target.label, text,
                          after={"status": d.status, "attempts": d.attempts, "error": d.error})
        return d

    # alerts ------------------------------------------------------------------------------------
    def _scope(self, principal: Principal, tenant_id: str | None) -> str | None:
        require(principal, tenant_id, VIEW_ROLES)
        if tenant_id is None and not principal.platform_wide:
            return principal.tenant_id
        return tenant_id

    def active(self, principal: Principal, tenant_id: str | None = None) -> list[Doc]:
        scope = self._scope(principal, tenant_id)
        return al.active_alerts(self.store, scope)

    def history(
        self,
        principal: Principal,
        tenant_id: str | None = None,
        since: datetime | None = None,
        rule: str | None = None,
        status: str | None = None,
        limit: int = 500,
    ) -> list[Doc]:
        scope = self._scope(principal, tenant_id)
        rows = al.history(self.store, scope, since=since, limit=limit)
        if rule:
            rows = [r for r in rows if r["rule"] == rule]
        if status:
            rows = [r for r in rows if r["status"] == status]
        if not principal.platform_wide:
            rows = [r for r in rows if r["tenantId"] != PLATFORM]
        return rows

    def get(self, principal: Principal, tenant_id: str, alert_id: str) -> Doc:
        require(principal, None if tenant_id == PLATFORM else tenant_id, VIEW_ROLES)
        if tenant_id == PLATFORM and not principal.platform_wide:
            raise NotFound(f"alert {alert_id} not found")
        try:
            return self.store.get(al.ALERTS, tenant_id, alert_id)
        except NotFound:
            raise NotFound(f"alert {alert_id} not found for tenant {tenant_id}") from None

    def notifications(self, principal: Principal, tenant_id: str, alert_id: str) -> list[Doc]:
        self.get(principal, tenant_id, alert_id)
        rows = self.store.query(NOTIFICATIONS, tenant_id, [Cond("alertId", "=", alert_id)])
        return sorted(rows, key=lambda r: r.get("at", ""), reverse=True)

    def acknowledge(self, principal: Principal, tenant_id: str, alert_id: str, reason: str) -> Doc:
        require(principal, None if tenant_id == PLATFORM else tenant_id, EDIT_ROLES)
        doc = al.acknowledge(self.store, tenant_id, alert_id, principal.email, reason, now=self.now())
        self.audit.record(principal, None if tenant_id == PLATFORM else tenant_id, "alert.acknowledge",
                          f"alert:{alert_id}", reason.strip(), after={"status": doc["status"], "rule": doc["rule"]})
        return doc

    def silence(self, principal: Principal, tenant_id: str, alert_id: str, hours: float, reason: str) -> Doc:
        require(principal, None if tenant_id == PLATFORM else tenant_id, EDIT_ROLES)
        try:
            hours = float(hours)
        except (TypeError, ValueError):
            raise Invalid(f"silence for how many hours? got {hours!r}") from None
        if not hours > 0:
            raise Invalid("a silence must last more than 0 hours")
        now = self.now()
        doc = al.silence(self.store, tenant_id, alert_id, principal.email, reason, now + timedelta(hours=hours),
                         now=now)
        self.audit.record(principal, None if tenant_id == PLATFORM else tenant_id, "alert.silence",
                          f"alert:{alert_id}", reason.strip(),
                          after={"until": doc["silencedUntil"], "rule": doc["rule"]})
        return doc

    def unsilence(self, principal: Principal, tenant_id: str, alert_id: str, reason: str) -> Doc:
        require(principal, None if tenant_id == PLATFORM else tenant_id, EDIT_ROLES)
        doc = al.unsilence(self.store, tenant_id, alert_id, principal.email, reason, now=self.now())
        self.audit.record(principal, None if tenant_id == PLATFORM else tenant_id, "alert.unsilence",
                          f"alert:{alert_id}", reason.strip())
        return doc

    # evaluation ----------------------------------------------------------------------------------
    def queue_backlog(self, tenant_id: str) -> dict[str, al.Observation]:
        """Queued jobs per queue for one tenant (capped read: past 5000 the exact number does not matter)."""
        counts: dict[str, int] = {}
        for j in self.store.query("jobs", tenant_id, [Cond("status", "=", "queued")], limit=5000):
            counts[j.get("queue", "?")] = counts.get(j.get("queue", "?"), 0) + 1
        return {q: al.Observation(float(n), q, f"jobs?tenant={tenant_id}") for q, n in counts.items()}

    def gather_facts(self, tenant_id: str, now: datetime | None = None) -> dict[str, Any]:
        """Everything the rules compare for one tenant; a feature that is not set up adds nothing."""
        now = now or self.now()
        facts: dict[str, Any] = dict(al.telemetry_facts(self.store, tenant_id, now))
        facts["queue_backlog"] = self.queue_backlog(tenant_id)
        if tenant_id == PLATFORM:
            # Platform-wide facts: experiments span tenants, so their SRM is judged once, here.
            facts.update(experiment_srm_facts(self.store))
            return facts
        facts["month_cost"] = self._month_costs.get(tenant_id, 0.0)
        for source in self.fact_sources:
            try:
                facts.update(source(tenant_id))
            except StoreUnavailable:
                raise
            except Exception:  # one feature's bug must not blind the other rules
                log.exception("alert fact source %s failed for %s", getattr(source, "__qualname__", source), tenant_id)
        return facts

    def evaluate(self) -> al.CycleSummary:
        """One evaluation cycle over every tenant; never raises (the scheduled job calls this)."""
        with self._cycle_lock:
            now = self.now()

            def tenants() -> list[str]:
                # The platform itself is evaluated first: its jobs, its telemetry, experiments across tenants.
                ids = [PLATFORM, *self._tenant_ids()]
                # Cost for every tenant in one read per cycle, not one per tenant.
                self._month_costs = month_to_date(self.store, self.prices, now)
                return ids

            def platform_channels() -> list[Target]:
                # Platform alerts (the store itself) go to the platform's default channels, else the fallback.
                default = al.load_overrides(self.store, PLATFORM).get(al.DEFAULT_CHANNELS)
                return list(default.channels) if default is not None and default.channels else []

            return self.evaluator.run_cycle(tenants, lambda t: self.gather_facts(t, now), self._effective,
                                            platform_channels)

    def open_counts(self, tenant_ids: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
        """Open/acknowledged alerts per tenant and severity (for the overview; no principal: callers check)."""
        out: dict[str, dict[str, int]] = {}
        for a in al.active_alerts(self.store, None):
            if tenant_ids is not None and a["tenantId"] not in tenant_ids and a["tenantId"] != PLATFORM:
                continue
            sev = out.setdefault(a["tenantId"], {})
            sev[a.get("severity", "warning")] = sev.get(a.get("severity", "warning"), 0) + 1
        return out


def _public_rule(doc: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """An override for the audit log, with webhook URLs reduced to their labels (they carry secrets)."""
    if doc is None:
        return None
    out = {k: v for k, v in doc.items() if k not in {"_etag", "id", "tenantId"}}
    if out.get("channels"):
        out["channels"] = [parse_target(c["kind"], c["address"]).label for c in out["channels"]]
    return out


def default_fact_sources(services: Any) -> list[FactSource]:
    """Fact sources offered by the feature services that exist in this build (duck-typed, so a
    feature that has not landed yet is simply absent)."""
    sources: list[FactSource] = []
    for name in ("integrations", "embeddings", "embedding_jobs", "models", "experiments", "templates"):
        try:
            svc = getattr(services, name)
        except (AttributeError, CastielError, ImportError):
            continue
        except Exception:
            log.exception("could not build the %s service for alert facts", name)
            continue
        for method in ("alert_facts", "attention_facts"):
            fn = getattr(svc, method, None)
            if callable(fn):
                sources.append(fn)
                break
    return sources


def telemetry_retention(store: DocumentStore, now: datetime | None = None) -> int:
    return telemetry.prune(store, now)


@dataclass(frozen=True)
class ExperimentState:
    """A running experiment as the overview and the SRM rule see it."""

    id: str
    name: str
    targets: tuple[str, ...]  # empty: every tenant
    srm_p: float | None  # chi-square p-value of the unit split against the weights (None: no units yet)

    def applies_to(self, tenant_id: str) -> bool:
        return not self.targets or tenant_id in self.targets


def running_experiments(store: DocumentStore) -> list[ExperimentState] | None:
    """Running experiments with their SRM p-value, from the experiment records and their rollups only.

    None when the experiments feature has no records at all (not set up). Uses the experiments
    feature's own re-weighting-aware expected split and chi-square check.
    """
    docs = store.query("experiments", PLATFORM, [Cond("status", "=", "running")])
    if not docs and not store.query("experiments", PLATFORM, limit=1):
        return None
    try:
        from core.experiments.stats import srm_check
        from core.services.experiments import expected_shares
    except ImportError:  # the feature's code is not in this build
        return None
    out = []
    by_exp: dict[str, list[Doc]] = {}
    if docs:
        # One read for every running experiment's rollups (across tenants), not one per experiment.
        for r in store.query("exp_rollups", None, [Cond("experimentId", "in", [e["id"] for e in docs])]):
            by_exp.setdefault(r["experimentId"], []).append(r)
    for exp in docs:
        rollups = by_exp.get(exp["id"], [])
        names = [v["name"] for v in exp.get("variants") or []]
        units = {n: 0.0 for n in names}
        for r in rollups:
            if r.get("variant") in units:
                units[r["variant"]] += float(r.get("units") or 0)
        p = None
        if sum(units.values()) > 0 and len(names) >= 2:
            p = _srm_p(tuple(units[n] for n in names), tuple(expected_shares(exp, rollups)), srm_check)
        out.append(ExperimentState(exp["id"], str(exp.get("name") or exp["id"]),
                                   tuple(exp.get("targetTenants") or ()), p))
    return out


@functools.lru_cache(maxsize=4096)
def _srm_p(units: tuple[float, ...], shares: tuple[float, ...], check: Callable[..., Any]) -> float:
    # Same counts, same answer: the overview refreshes often while the counts rarely move.
    return float(check(list(units), list(shares)).p_value)


def experiment_srm_facts(store: DocumentStore) -> dict[str, Any]:
    """The ``experiment_srm_p`` fact (platform-wide: one subject per running experiment)."""
    running = running_experiments(store)
    if running is None:
        return {}
    return {"experiment_srm_p": {
        e.id: al.Observation(e.srm_p, e.name, f"prompt_experiments?experiment={e.id}")
        for e in running if e.srm_p is not None
    }}
