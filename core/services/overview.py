"""The ops overview: one row per tenant across every feature, platform KPIs above it.

Reads only summary records and rollups, a handful of queries whatever the number of tenants:
the tenants, the connection records (which carry what the health model needs), hour and day
telemetry rollups, the active alerts, and each feature service's ``overview_figures`` (its own
rollups) when that feature is present. A feature that has not landed or has no data for a
tenant shows "not set up" in its cells instead of failing the page; a feature whose read fails
shows "unavailable" with the reason, and the rest of the overview still renders.

Every cell carries a display text, a sort value, a link to the screen and object behind it
(``integrations?tenant=acme&connection=c1``) and a status (ok, warn, bad, unset).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from core import clock
from core.adapters.store import PLATFORM, Cond, Doc, DocumentStore
from core.errors import CastielError, StoreUnavailable
from core.observability import alerts as al
from core.observability import telemetry
from core.observability.cost import PriceTable, cost_rows, month_start, usage_docs
from core.services.access import ADMIN, OPS, Principal, require
from core.services.integration_health import compute_health

log = logging.getLogger(__name__)

VIEW_ROLES = frozenset({ADMIN, OPS})
NOT_SET_UP = "not set up"
COLUMNS: tuple[tuple[str, str], ...] = (
    ("connectors", "Connectors"),
    ("embeddings", "Embedding backlog"),
    ("coverage", "Coverage"),
    ("search_p95", "Search p95"),
    ("models", "Models"),
    ("experiments", "Experiments"),
    ("generation", "Generation"),
    ("alerts", "Open alerts"),
    ("errors", "Service errors (1 h)"),
    ("cost", "Cost this month"),
)
# Which feature service (attribute of Services) answers each group of columns.
FEATURES: dict[str, tuple[str, ...]] = {
    "embeddings": ("embeddings", "coverage"),
    "models": ("models",),
    "experiments": ("experiments",),
    "templates": ("generation",),
}


@dataclass(frozen=True)
class Cell:
    text: str
    value: float | None = None
    link: str | None = None
    status: str = "ok"  # ok | warn | bad | unset


@dataclass
class TenantRow:
    tenant_id: str
    name: str
    demo: bool = False
    cells: dict[str, Cell] = field(default_factory=dict)

    @property
    def attention(self) -> int:
        """How many cells need a look (bad counts double): the default sort."""
        return sum(2 if c.status == "bad" else 1 if c.status == "warn" else 0 for c in self.cells.values())


@dataclass(frozen=True)
class Kpi:
    key: str
    label: str
    value: str
    help: str = ""
    status: str = "ok"


@dataclass
class Overview:
    rows: list[TenantRow]
    kpis: list[Kpi]
    sections: dict[str, str]  # feature -> "ok" | "not set up" | "unavailable: why"
    generated_at: str
    read_ms: float
    section_ms: dict[str, float] = field(default_factory=dict)  # where the read time went


def link(screen: str, **params: Any) -> str:
    """A relative deep link into the console (resolved against the app's base URL by the browser)."""
    q = "&".join(f"{k}={quote(str(v), safe='')}" for k, v in params.items() if v is not None)
    return f"./{screen}" + (f"?{q}" if q else "")


def fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "—"
    return f"{ms / 1000:.1f} s" if ms >= 1000 else f"{ms:.0f} ms"


def fmt_age(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


class OverviewService:
    def __init__(
        self,
        store: DocumentStore,
        *,
        prices: PriceTable | None = None,
        feature: Callable[[str], Any | None] | None = None,
        now: Callable[[], datetime] = clock.now,
    ) -> None:
        self.store = store
        self.prices = prices or PriceTable.load()
        self._feature = feature or (lambda name: None)
        self.now = now

    # the one read of the screen -------------------------------------------------------------
    def overview(self, principal: Principal, tenant_id: str | None = None) -> Overview:
        require(principal, tenant_id, VIEW_ROLES)
        t0 = time.perf_counter()
        now = self.now()
        if tenant_id is None and not principal.platform_wide:
            tenant_id = principal.tenant_id
        tenants = self.store.query("tenants", tenant_id, order_by="id") if tenant_id else \
            self.store.query("tenants", None, order_by="id")
        rows = {t["id"]: TenantRow(t["id"], t.get("name") or t["id"], bool(t.get("demo"))) for t in tenants}
        ids = list(rows)
        sections: dict[str, str] = {}
        kpis: list[Kpi] = [Kpi("tenants", "Tenants", str(len(ids)))]
        readers: list[tuple[str, Callable[[list[str], datetime, dict[str, TenantRow], dict[str, Doc]], list[Kpi]]]] = [
            ("connectors", self._connectors),
            ("telemetry", self._telemetry),
            ("alerts", self._alerts),
            ("cost", self._cost),
        ]
        readers += [(name, self._feature_reader(name)) for name in FEATURES]
        tenant_docs = {t["id"]: t for t in tenants}
        section_ms: dict[str, float] = {}
        for name, read in readers:
            started = time.perf_counter()
            try:
                kpis += read(ids, now, rows, tenant_docs)
                sections.setdefault(name, "ok")
            except StoreUnavailable:
                raise
            except _NotSetUp:
                sections[name] = NOT_SET_UP
                for col in FEATURES.get(name, ()):
                    for r in rows.values():
                        r.cells.setdefault(col, Cell(NOT_SET_UP, None, link(_SCREEN[col], tenant=r.tenant_id), "unset"))
            except Exception as e:  # one feature's failure leaves the rest of the overview readable
                log.exception("overview section %s failed", name)
                why = e.message if isinstance(e, CastielError) else f"{type(e).__name__}: {e}"
                sections[name] = f"unavailable: {why}"
                for col in FEATURES.get(name, (name,)):
                    for r in rows.values():
                        r.cells.setdefault(col, Cell("unavailable", None, None, "unset"))
            section_ms[name] = (time.perf_counter() - started) * 1000
        ordered = sorted(rows.values(), key=lambda r: (-r.attention, r.tenant_id))
        return Overview(ordered, kpis, sections, clock.iso(now), (time.perf_counter() - t0) * 1000, section_ms)

    # sections ------------------------------------------------------------------------------------
    def _connectors(self, ids: list[str], now: datetime, rows: dict[str, TenantRow], _t: dict[str, Doc]) -> list[Kpi]:
        scope = ids[0] if len(ids) == 1 else None
        counts: dict[str, dict[str, int]] = {}
        problem: dict[str, list[str]] = {}
        for c in self.store.query("connections", scope):
            if c["tenantId"] not in rows:
                continue
            health = compute_health(c, now).status
            counts.setdefault(c["tenantId"], {})[health] = counts.get(c["tenantId"], {}).get(health, 0) + 1
            if health in ("failing", "needs_reauth"):
                problem.setdefault(c["tenantId"], []).append(c["id"])
        total = healthy = 0
        for tid, row in rows.items():
            cs = counts.get(tid)
            if not cs:
                row.cells["connectors"] = Cell(NOT_SET_UP, None, link("integrations", tenant=tid), "unset")
                continue
            n = sum(cs.values())
            total += n
            healthy += cs.get("healthy", 0)
            parts = [f"{cs[s]} {s.replace('_', ' ')}" for s in ("needs_reauth", "failing", "late", "paused")
                     if cs.get(s)]
            text = " · ".join(parts) if parts else f"{n} healthy"
            if parts and cs.get("healthy"):
                text = f"{cs['healthy']} healthy · " + text
            bad = cs.get("failing", 0) + cs.get("needs_reauth", 0)
            status = "bad" if bad else "warn" if (cs.get("late") or cs.get("paused")) else "ok"
            probs = problem.get(tid, [])
            # One connection in trouble: link straight to it; several: to the tenant's list.
            target = link("integrations", tenant=tid, connection=probs[0] if len(probs) == 1 else None)
            row.cells["connectors"] = Cell(text, float(bad), target, status)
        if total == 0:
            return [Kpi("connectors", "Healthy connectors", "—", "no connections yet", "unset")]
        share = healthy / total
        return [Kpi("connectors", "Healthy connectors", f"{healthy}/{total}", f"{share:.0%} healthy",
                    "ok" if share == 1 else "warn" if share >= 0.8 else "bad")]

    def _telemetry(self, ids: list[str], now: datetime, rows: dict[str, TenantRow], _t: dict[str, Doc]) -> list[Kpi]:
        scope = ids[0] if len(ids) == 1 else None
        since = now - timedelta(hours=1)
        # Hour rollups of this hour and the last: a bounded read whatever the traffic.
        docs = self.store.query(telemetry.CONTAINER, scope, [
            Cond("grain", "=", "hour"), Cond("bucket", ">=", clock.iso(telemetry.bucket_start(since, "hour"))),
            Cond("kind", "in", ["service", "vector"]),
        ])
        by = telemetry.summarise(docs, by=("tenantId", "kind"))
        platform: dict[tuple[str], telemetry.OpStats] = {}
        for (_, kind), st in by.items():
            platform.setdefault((kind,), telemetry.OpStats(kind=kind, operation="*")).merge(st)
        vec_rule = al.RULES["vector_search_p95"].threshold
        err_rule = al.RULES["error_rate"].threshold
        for tid, row in rows.items():
            v = by.get((tid, "vector"))
            if v is None or v.count == 0:
                row.cells["search_p95"] = Cell("no searches", None, link("telemetry", tenant=tid, kind="vector"),
                                               "unset")
            else:
                p95 = v.p(95)
                row.cells["search_p95"] = Cell(
                    fmt_ms(p95), p95, link("telemetry", tenant=tid, kind="vector"),
                    "bad" if p95 is not None and p95 > vec_rule else "ok",
                )
            s = by.get((tid, "service"))
            if s is None or s.count == 0:
                row.cells["errors"] = Cell("no calls", None, link("telemetry", tenant=tid), "unset")
            else:
                p95 = s.p(95)
                # Latency is judged per operation by the alert rules; merged over operations it only informs.
                status = "bad" if s.error_rate > err_rule else "ok"
                row.cells["errors"] = Cell(f"{s.error_rate:.1%} of {s.count:,} · p95 {fmt_ms(p95)}", s.error_rate,
                                           link("telemetry", tenant=tid), status)
        out = []
        svc = platform.get(("service",))
        if svc is not None and svc.count:
            out.append(Kpi("service_p95", "Service p95 (1 h)", fmt_ms(svc.p(95)),
                           f"{svc.count:,} calls · {svc.error_rate:.2%} errors",
                           "bad" if svc.error_rate > err_rule else "ok"))
        vec = platform.get(("vector",))
        if vec is not None and vec.count:
            out.append(Kpi("search_p95", "Search p95 (1 h)", fmt_ms(vec.p(95)), f"{vec.count:,} searches",
                           "bad" if (vec.p(95) or 0) > vec_rule else "ok"))
        return out

    def _alerts(self, ids: list[str], now: datetime, rows: dict[str, TenantRow], _t: dict[str, Doc]) -> list[Kpi]:
        scope = ids[0] if len(ids) == 1 else None
        active = al.active_alerts(self.store, scope)
        per: dict[str, dict[str, int]] = {}
        for a in active:
            sev = per.setdefault(a["tenantId"], {})
            key = a.get("severity", "warning")
            sev[key] = sev.get(key, 0) + 1
        crit_total = 0
        for tid, row in rows.items():
            sev = per.get(tid, {})
            n = sum(sev.values())
            crit_total += sev.get("critical", 0)
            text = " · ".join(f"{sev[s]} {s}" for s in al.SEVERITIES if sev.get(s)) or "none"
            status = "bad" if sev.get("critical") else "warn" if n else "ok"
            row.cells["alerts"] = Cell(text, float(n), link("alerts", tenant=tid), status)
        total = sum(sum(v.values()) for t, v in per.items() if t in rows or t == PLATFORM)
        platform_open = sum(per.get(PLATFORM, {}).values()) if scope is None else 0
        return [Kpi("alerts", "Open alerts", str(total), f"{crit_total} critical"
                    + (f" · {platform_open} platform" if platform_open else ""),
                    "bad" if crit_total or platform_open else "warn" if total else "ok")]

    def _cost(self, ids: list[str], now: datetime, rows: dict[str, TenantRow], tenants: dict[str, Doc]) -> list[Kpi]:
        scope = ids[0] if len(ids) == 1 else None
        mtd: dict[str, float] = {}
        calls: dict[str, int] = {}
        for r in cost_rows(usage_docs(self.store, scope, month_start(now), grain="month"), self.prices, "month"):
            mtd[r.tenant_id] = mtd.get(r.tenant_id, 0.0) + r.cost
            calls[r.tenant_id] = calls.get(r.tenant_id, 0) + r.calls
        for tid, row in rows.items():
            threshold = float(((tenants.get(tid) or {}).get("settings") or {}).get("cost_threshold_monthly_usd")
                              or al.RULES["cost_over_threshold"].threshold)
            if tid not in calls:
                row.cells["cost"] = Cell("no model calls", 0.0, link("telemetry", tenant=tid, view="cost"), "unset")
                continue
            c = mtd[tid]
            status = "bad" if c > threshold else "warn" if c > 0.8 * threshold else "ok"
            row.cells["cost"] = Cell(f"${c:,.2f} of ${threshold:,.0f}", c, link("telemetry", tenant=tid, view="cost"),
                                     status)
        total = sum(v for k, v in mtd.items() if k in rows)
        return [Kpi("cost", "Cost this month", f"${total:,.2f}", f"{sum(calls.values()):,} model calls")]

    def _feature_reader(self, name: str) -> Callable[[list[str], datetime, dict[str, TenantRow], dict[str, Doc]],
                                                       list[Kpi]]:
        def read(ids: list[str], now: datetime, rows: dict[str, TenantRow], tenants: dict[str, Doc]) -> list[Kpi]:
            svc = self._feature(name)
            fn = getattr(svc, "overview_figures", None) if svc is not None else None
            if fn is None:
                figures = _BUILTIN.get(name, _none)(self.store, ids, now, tenants)
            else:
                figures = fn(ids)
            if figures is None:
                raise _NotSetUp(name)
            return _apply_feature(name, figures, rows, tenants)

        return read


class _NotSetUp(Exception):
    pass


_SCREEN = {
    "connectors": "integrations",
    "embeddings": "embedding_jobs",
    "coverage": "embedding_jobs",
    "search_p95": "telemetry",
    "models": "models",
    "experiments": "prompt_experiments",
    "generation": "templates",
    "alerts": "alerts",
    "errors": "telemetry",
    "cost": "telemetry",
}


def _none(store: DocumentStore, ids: Sequence[str], now: datetime, tenants: Mapping[str, Doc]) -> None:
    return None


def _experiments_from_store(
    store: DocumentStore, ids: Sequence[str], now: datetime, tenants: Mapping[str, Doc]
) -> dict[str, dict[str, Any]] | None:
    """Running experiments per tenant (an experiment without targets runs for every tenant) and SRM flags."""
    from core.services.alerting import running_experiments

    running = running_experiments(store)
    if running is None:
        return None
    srm_alpha = al.RULES["experiment_srm"].threshold
    out: dict[str, dict[str, Any]] = {}
    for tid in ids:
        mine = [e for e in running if e.applies_to(tid)]
        flagged = [e for e in mine if e.srm_p is not None and e.srm_p < srm_alpha]
        pick = flagged[0] if flagged else (mine[0] if mine else None)
        out[tid] = {"running": len(mine), "srm": len(flagged), "experiment": pick.id if pick else None}
    return out


_BUILTIN: dict[str, Callable[..., dict[str, dict[str, Any]] | None]] = {"experiments": _experiments_from_store}


def _apply_feature(name: str, figures: Mapping[str, Mapping[str, Any]], rows: dict[str, TenantRow],
                   tenants: Mapping[str, Doc]) -> list[Kpi]:
    """Turn a feature's per-tenant figures into cells (the figure keys are the contract in the docstring
    of ``overview_figures`` on each feature service)."""
    kpis: list[Kpi] = []
    if name == "embeddings":
        backlog_total, oldest = 0, 0.0
        for tid, row in rows.items():
            f = figures.get(tid)
            if not f:
                row.cells["embeddings"] = Cell(NOT_SET_UP, None, link("embedding_jobs", tenant=tid), "unset")
                row.cells["coverage"] = Cell(NOT_SET_UP, None, link("embedding_jobs", tenant=tid), "unset")
                continue
            backlog = int(f.get("backlog") or 0)
            age = f.get("backlog_age_seconds")
            backlog_total += backlog
            oldest = max(oldest, float(age or 0))
            status = "bad" if backlog > al.RULES["queue_backlog"].threshold else "warn" if backlog else "ok"
            row.cells["embeddings"] = Cell(f"{backlog:,} queued · oldest {fmt_age(age)}" if backlog else "drained",
                                           float(age or 0), link("embedding_jobs", tenant=tid), status)
            cov = f.get("coverage")
            row.cells["coverage"] = Cell("—" if cov is None else f"{float(cov):.1%}", cov,
                                         link("embedding_jobs", tenant=tid, view="coverage"),
                                         "ok" if cov is None or cov >= 0.99 else "warn")
        kpis.append(Kpi("embedding_backlog", "Embedding backlog", f"{backlog_total:,}", f"oldest {fmt_age(oldest)}",
                        "warn" if backlog_total > al.RULES["queue_backlog"].threshold else "ok"))
    elif name == "models":
        drifted_total = 0
        for tid, row in rows.items():
            f = figures.get(tid)
            if not f:
                row.cells["models"] = Cell(NOT_SET_UP, None, link("models", tenant=tid), "unset")
                continue
            drifted = int(f.get("drifted") or 0)
            drifted_total += drifted
            gate = f.get("gate")
            parts = [f"{int(f.get('models') or 0)} models"]
            if drifted:
                parts.append(f"{drifted} drifting")
            if gate:
                parts.append(f"gate {gate}")
            status = "bad" if drifted else "warn" if gate == "failed" else "ok"
            row.cells["models"] = Cell(" · ".join(parts), float(drifted), link("models", tenant=tid,
                                                                                  model=f.get("model")), status)
        kpis.append(Kpi("models", "Models drifting", str(drifted_total), "", "bad" if drifted_total else "ok"))
    elif name == "experiments":
        running_total = 0
        for tid, row in rows.items():
            f = figures.get(tid) or {"running": 0, "srm": 0}
            running = int(f.get("running") or 0)
            srm = int(f.get("srm") or 0)
            running_total += running
            text = f"{running} running" + (f" · {srm} SRM" if srm else "") if running else "none running"
            row.cells["experiments"] = Cell(text, float(running),
                                            link("prompt_experiments", tenant=tid,
                                                 experiment=f.get("experiment") if (srm or running == 1) else None),
                                            "bad" if srm else "ok")
        kpis.append(Kpi("experiments", "Running experiments", str(running_total)))
    elif name == "templates":
        used_total = 0
        for tid, row in rows.items():
            f = figures.get(tid)
            quota = int(((tenants.get(tid) or {}).get("settings") or {}).get("generation_quota_monthly") or 0)
            if f is None:
                row.cells["generation"] = Cell(NOT_SET_UP, None, link("templates", tenant=tid), "unset")
                continue
            used = int(f.get("used") or 0)
            quota = int(f.get("quota") or quota)
            used_total += used
            share = used / quota if quota else None
            row.cells["generation"] = Cell(
                f"{used:,} of {quota:,}" if quota else f"{used:,} (no quota)", share,
                link("templates", tenant=tid, view="usage"),
                "bad" if share is not None and share >= 1 else "warn" if share is not None and share >= 0.8 else "ok",
            )
        kpis.append(Kpi("generation", "Documents generated (month)", f"{used_total:,}"))
    return kpis


# the Telemetry screen's reads -------------------------------------------------------------------
WINDOWS: dict[str, tuple[timedelta, str]] = {
    "1h": (timedelta(hours=1), "minute"),
    "6h": (timedelta(hours=6), "minute"),
    "24h": (timedelta(hours=24), "hour"),
    "7d": (timedelta(days=7), "hour"),
    "30d": (timedelta(days=30), "day"),
    "90d": (timedelta(days=90), "day"),
}


@dataclass(frozen=True)
class OperationRow:
    kind: str
    operation: str
    count: int
    errors: int
    rejected: int
    error_rate: float
    mean_ms: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    ru: float
    top_error: str | None


class TelemetryService:
    """Latency percentiles, error rates, slowest calls and cost, read from rollups only."""

    def __init__(self, store: DocumentStore, prices: PriceTable | None = None,
                 now: Callable[[], datetime] = clock.now) -> None:
        self.store = store
        self.prices = prices or PriceTable.load()
        self.now = now

    def _scope(self, principal: Principal, tenant_id: str | None) -> str | None:
        require(principal, tenant_id, VIEW_ROLES)
        return tenant_id if (tenant_id or principal.platform_wide) else principal.tenant_id

    def _docs(self, principal: Principal, tenant_id: str | None, window: str, kind: str | None = None,
              operation: str | None = None) -> list[Doc]:
        if window not in WINDOWS:
            from core.errors import Invalid

            raise Invalid(f"unknown window {window!r}; use one of {', '.join(WINDOWS)}")
        span, grain = WINDOWS[window]
        scope = self._scope(principal, tenant_id)
        return telemetry.read_rollups(self.store, scope, grain=grain, since=self.now() - span, kind=kind,
                                      operation=operation)

    def operations(self, principal: Principal, tenant_id: str | None, window: str = "24h",
                   kind: str | None = None) -> list[OperationRow]:
        rows = []
        for (k, op), st in telemetry.summarise(self._docs(principal, tenant_id, window, kind)).items():
            top = max(st.error_kinds.items(), key=lambda kv: kv[1])[0] if st.error_kinds else None
            rows.append(OperationRow(k, op, st.count, st.errors, st.rejected, st.error_rate, st.mean_ms, st.p(50),
                                     st.p(95), st.p(99), st.max_ms, st.ru, top))
        return sorted(rows, key=lambda r: (-(r.p95_ms or 0), r.operation))

    def series(self, principal: Principal, tenant_id: str | None, window: str = "24h", kind: str | None = None,
               operation: str | None = None) -> list[dict[str, Any]]:
        """p50/p95/p99, count and error rate per bucket (per operation, or all operations merged)."""
        docs = self._docs(principal, tenant_id, window, kind, operation)
        if operation is None:
            # One line for the whole selection: merge operations per bucket (histograms add up).
            docs = [{**d, "operation": "all", "kind": kind or "all"} for d in docs]
        return telemetry.series(docs)

    def slowest(self, principal: Principal, tenant_id: str | None, window: str = "24h", kind: str | None = "store",
                limit: int = 50) -> list[dict[str, Any]]:
        return telemetry.slowest(self._docs(principal, tenant_id, window, kind), limit=limit)

    def error_kinds(self, principal: Principal, tenant_id: str | None, window: str = "24h") -> list[dict[str, Any]]:
        out = []
        for (tenant, k, op), st in telemetry.summarise(self._docs(principal, tenant_id, window),
                                                       by=("tenantId", "kind", "operation")).items():
            for err, n in st.error_kinds.items():
                out.append({"tenant": tenant, "kind": k, "operation": op, "error": err, "count": n,
                            "share of calls": n / st.count if st.count else 0.0})
        return sorted(out, key=lambda r: -r["count"])

    def cost_monthly(self, principal: Principal, tenant_id: str | None, months: int = 6) -> list[Any]:
        from core.observability.cost import monthly_view

        return monthly_view(self.store, self.prices, self._scope(principal, tenant_id), months, self.now())

    def cost_trend(self, principal: Principal, tenant_id: str | None) -> list[Any]:
        from core.observability.cost import trend

        return trend(self.store, self.prices, self._scope(principal, tenant_id), self.now())


# demo ---------------------------------------------------------------------------------------------
# Demo traffic: operation -> (kind, median ms, spread (lognormal sigma), error share, calls per hour).
# The demo tenants carry generated traffic so the Telemetry and cost views open on real rollups;
# "globex-demo" gets a flaky resync (8% errors) so the alert rules have something true to show.
DEMO_TRAFFIC: dict[str, tuple[str, float, float, float, int]] = {
    "integrations.resync": ("service", 180.0, 0.7, 0.01, 12),
    "prompts.classify": ("service", 420.0, 0.5, 0.005, 30),
    "templates.generate": ("service", 900.0, 0.6, 0.01, 6),
    "overview.read": ("service", 35.0, 0.4, 0.0, 30),
    "vector.search": ("vector", 140.0, 0.6, 0.0, 40),
    "llm.chat": ("llm", 1200.0, 0.5, 0.01, 20),
    "embeddings.batch": ("embedding", 90.0, 0.5, 0.005, 15),
    "store.query:chunks": ("store", 8.0, 0.9, 0.0, 60),
}
DEMO_MODELS = {"llm.chat": ("gpt-4o-mini", 900, 220), "embeddings.batch": ("text-embedding-3-small", 6000, 0)}


def seed_observability_demo(services: Any, tenant_id: str, actor: Principal, days: int = 7,
                            cost_days: int | None = None, seed: int | None = None) -> dict[str, int]:
    """Demo hook: generated call traffic for a demo tenant through the real recorder, then one alert cycle.

    Minute rollups for the last 3 hours, hour rollups for ``days``, day rollups (the cost view)
    for ``cost_days`` (default: since the start of last month, so the cost trend compares whole months).
    Deterministic per tenant, so a re-seed shows the same figures.
    """
    import random

    from core.observability.wiring import raw_store

    rng = random.Random(seed if seed is not None else sum(map(ord, tenant_id)))
    store = raw_store(services)
    now = clock.now()
    if cost_days is None:
        prev_start = (month_start(now) - timedelta(days=1)).replace(day=1)
        cost_days = (now - prev_start).days + 1
    recorders = {
        "recent": telemetry.Recorder(store, grains=("minute", "hour", "day", "month")),
        "week": telemetry.Recorder(store, grains=("hour", "day", "month")),
        "month": telemetry.Recorder(store, grains=("day", "month")),
    }
    flaky = tenant_id.startswith("globex")
    calls = 0
    for hours_ago in range(cost_days * 24, 0, -1):
        slot = "recent" if hours_ago <= 3 else "week" if hours_ago <= days * 24 else "month"
        for op, (kind, median, sigma, err, per_hour) in DEMO_TRAFFIC.items():
            if slot == "month" and kind not in ("llm", "embedding"):
                continue
            hot = flaky and op == "integrations.resync" and hours_ago <= 3
            error_share = 0.08 if hot else err
            # Business hours are busier: a simple daily cycle (and the flaky resync is retried a lot).
            hour_of_day = (now - timedelta(hours=hours_ago)).hour
            n = max(1, int(per_hour * (1.5 if 8 <= hour_of_day <= 18 else 0.5) * (8 if hot else 1)))
            for _ in range(n):
                at = now - timedelta(hours=hours_ago) + timedelta(seconds=rng.uniform(0, 3600))
                ms = rng.lognormvariate(0, sigma) * median
                failed = rng.random() < error_share
                model = DEMO_MODELS.get(op)
                recorders[slot].record(
                    op, ms, tenant_id=tenant_id, kind=kind, at=at, outcome="error" if failed else "ok",
                    error_kind="TransientError" if failed else None, model=model[0] if model else None,
                    tokens_in=int(model[1] * rng.uniform(0.5, 1.5)) if model else 0,
                    tokens_out=int(model[2] * rng.uniform(0.5, 1.5)) if model else 0,
                    detail="documentId = ? AND project = ? ORDER BY seq LIMIT 50" if kind == "store" else None,
                )
                calls += 1
        if recorders[slot].pending() > 5000:  # keep the generated history under the recorder's buffer cap
            recorders[slot].flush()
    for rec in recorders.values():
        rec.flush()
    summary = services.alerting.evaluate()
    return {"calls": calls, "alerts_opened": summary.opened}
