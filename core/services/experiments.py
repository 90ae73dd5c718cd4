"""Prompt A/B experiments: lifecycle, sticky assignment, the events API, rollups, analysis, promotion and rollback.

Storage:
- ``experiments`` (platform-wide): the definition, status, seed, bucket allocation, weight history
  and, once concluded, the outcome.
- ``exp_units`` (partition = the unit's tenant): one record per (experiment, unit): the variant it
  was first served (stickiness), its exposure day, covariates, per-metric tallies and the ids of
  the events applied to it. Updated with the etag, so concurrent writers never double count.
- ``exp_events`` (partition = tenant): the accepted raw events, keyed by a hash of
  (experiment, eventId): a repeated event id is a duplicate and is counted once.
- ``exp_rollups`` (partition = tenant): sufficient statistics per experiment, variant and exposure
  day, incremented as events arrive. Analysis reads only these.

Roles: admins and ML engineers run experiments; changes that affect every tenant (create, start,
promote, roll back) need a platform-wide account. The platform records events as the system
principal (or any admin / ML engineer of the tenant).
"""

from __future__ import annotations

import builtins
import csv
import hashlib
import io
import json
import re
import secrets
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core import clock
from core.adapters.store import PLATFORM, Cond, Doc, DocumentStore
from core.errors import Conflict, Forbidden, Invalid, NotFound
from core.experiments.analysis import ExperimentAnalysis, ExperimentSpec, analyze
from core.experiments.assignment import Allocation, Assigner, Assignment, StickyAssigner, validate_weights
from core.experiments.decision import Decision, decide
from core.experiments.events import Event, IngestReport, fold, parse_event
from core.experiments.metrics import METRICS, UnitState, add_into
from core.services.access import ADMIN, ML_ENGINEER, Principal, require
from core.services.audit import AuditLog
from core.services.prompts import PRODUCTION, PromptCatalog

EXPERIMENTS, EVENTS, ROLLUPS, UNITS = "experiments", "exp_events", "exp_rollups", "exp_units"
DRAFT, RUNNING, STOPPED, CONCLUDED = "draft", "running", "stopped", "concluded"
STATUSES = (DRAFT, RUNNING, STOPPED, CONCLUDED)
TRANSITIONS: dict[str, set[str]] = {
    DRAFT: {RUNNING, CONCLUDED},
    RUNNING: {STOPPED, CONCLUDED},
    STOPPED: {RUNNING, CONCLUDED},
    CONCLUDED: set(),
}
RUNNERS = (ADMIN, ML_ENGINEER)
BATCH = 500
QUERY_CHUNK = 100
UNIT_EVENT_MEMORY = 200  # event ids remembered per unit (older duplicates are still caught by exp_events)
MAX_IMPORT_BYTES = 50 * 1024 * 1024
STALE_HOURS = 24.0
_VARIANT = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def _hash(*parts: str, size: int = 16) -> str:
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=size).hexdigest()


def event_doc_id(experiment_id: str, event_id: str) -> str:
    return _hash(experiment_id, event_id)


def unit_doc_id(experiment_id: str, unit_id: str) -> str:
    return f"{experiment_id}:{_hash(unit_id, size=12)}"


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@dataclass(frozen=True)
class ServedPrompt:
    """What the platform should use for one request: the prompt version and, if any, the experiment arm."""

    version: Doc
    experiment_id: str | None
    variant: str | None
    reason: str


@dataclass(frozen=True)
class Health:
    srm_flagged: bool
    srm_p_value: float
    guardrails_failing: list[str]
    last_update: str | None
    stale: bool
    weights_changed: bool


class StoreAssignmentLog:
    """The sticky-assignment log on ``exp_units``: the first variant served to a unit is kept."""

    def __init__(self, store: DocumentStore, tenant_id: str, experiment_id: str) -> None:
        self.store, self.tenant_id, self.experiment_id = store, tenant_id, experiment_id

    def get(self, unit_id: str) -> str | None:
        doc = self.store.get_or_none(UNITS, self.tenant_id, unit_doc_id(self.experiment_id, unit_id))
        return None if doc is None else str(doc["variant"])

    def put(self, unit_id: str, variant: str) -> str:
        doc: Doc = {
            "id": unit_doc_id(self.experiment_id, unit_id),
            "tenantId": self.tenant_id,
            "experimentId": self.experiment_id,
            "unitId": unit_id,
            "variant": variant,
            "day": "",
            "assignedAt": clock.iso(),
            "covariates": {},
            "tallies": {},
            "events": [],
        }
        try:
            self.store.create(UNITS, doc)
            return variant
        except Conflict:
            return str(self.store.get(UNITS, self.tenant_id, doc["id"])["variant"])


class ExperimentService:
    def __init__(self, store: DocumentStore, audit: AuditLog, prompts: PromptCatalog) -> None:
        self.store = store
        self.audit = audit
        self.prompts = prompts

    # access ---------------------------------------------------------------------------------
    @staticmethod
    def _runner(principal: Principal) -> None:
        require(principal, None, RUNNERS)
        if not principal.platform_wide:
            raise Forbidden(
                "experiments change what every targeted tenant is served; this needs a platform-wide "
                "admin or ML engineer account"
            )

    @staticmethod
    def _visible(principal: Principal, exp: Doc) -> bool:
        targets = exp.get("targetTenants") or []
        return principal.platform_wide or not targets or principal.tenant_id in targets

    # reading --------------------------------------------------------------------------------
    def _get(self, experiment_id: str) -> Doc:
        doc = self.store.get_or_none(EXPERIMENTS, PLATFORM, experiment_id)
        if doc is None:
            raise NotFound(f"experiment {experiment_id!r} does not exist")
        return doc

    def get(self, principal: Principal, experiment_id: str) -> Doc:
        require(principal, None, RUNNERS)
        doc = self._get(experiment_id)
        if not self._visible(principal, doc):
            raise NotFound(f"experiment {experiment_id!r} does not exist")
        return doc

    def list(self, principal: Principal, status: str | None = None, slot: str | None = None) -> list[Doc]:
        require(principal, None, RUNNERS)
        conds = []
        if status:
            conds.append(Cond("status", "=", status))
        if slot:
            conds.append(Cond("slot", "=", slot))
        rows = self.store.query(EXPERIMENTS, PLATFORM, conds, order_by="createdAt", descending=True)
        return [r for r in rows if self._visible(principal, r)]

    # creation and lifecycle -----------------------------------------------------------------
    def create(
        self,
        principal: Principal,
        *,
        name: str,
        hypothesis: str,
        slot: str,
        variants: Sequence[Mapping[str, Any]],
        primary_metric: str,
        secondary_metrics: Sequence[str] = (),
        guardrails: Sequence[Mapping[str, Any]] = (),
        control: str | None = None,
        target_tenants: Sequence[str] = (),
        min_runtime_days: int = 7,
        max_runtime_days: int = 28,
        planned_units_per_arm: int = 10_000,
        alpha: float = 0.05,
        correction: str = "holm",
        sequential: bool = True,
        reason: str = "",
        experiment_id: str | None = None,
        seed: str | None = None,
    ) -> Doc:
        """A draft experiment; every problem with the input is reported in one ``Invalid``.

        ``seed`` (random by default) fixes the assignment hash, for reproducible demos and replays.
        """
        self._runner(principal)
        problems: list[str] = []
        if not (name or "").strip():
            problems.append("give the experiment a name")
        if not (hypothesis or "").strip():
            problems.append("state the hypothesis (what you expect to change, and why)")
        try:
            self.prompts.slot(principal, slot)
        except NotFound as e:
            problems.append(e.message)
        clean_variants: list[dict[str, Any]] = []
        names: list[str] = []
        for i, v in enumerate(variants):
            vname = str(v.get("name") or "").strip().lower()
            if not _VARIANT.match(vname):
                problems.append(f"variant {i + 1}: name {vname!r} must start with a letter and use a-z, 0-9, - or _")
            names.append(vname)
            try:
                version = int(v.get("version"))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                problems.append(f"variant {vname or i + 1}: choose a prompt version")
                continue
            try:
                self.prompts.version(principal, slot, version)
            except NotFound:
                problems.append(
                    f"variant {vname or i + 1} refers to prompt version v{version} of {slot}, which does not exist"
                )
            clean_variants.append({"name": vname, "version": version, "weight": v.get("weight")})
        if len(set(names)) != len(names):
            problems.append("variant names must be different from each other")
        weights: list[float] = []
        try:
            weights = validate_weights([v.get("weight") for v in variants], names)
        except Invalid as e:
            problems.append(e.message)
        control = (control or (names[0] if names else "")).strip().lower()
        if names and control not in names:
            problems.append(f"the control {control!r} must be one of the variants ({', '.join(names)})")
        metric_names = [primary_metric, *secondary_metrics, *(g.get("metric") for g in guardrails)]
        for m in metric_names:
            if m not in METRICS:
                problems.append(f"unknown metric {m!r}; choose from {', '.join(METRICS)}")
        clean_guardrails = []
        for g in guardrails:
            try:
                tol = float(g.get("tolerance", 0.0))
            except (TypeError, ValueError):
                tol = -1.0
            if not 0.0 <= tol <= 1.0:
                problems.append(f"guardrail {g.get('metric')}: tolerance is a fraction between 0 and 1 (0.1 = 10%)")
            clean_guardrails.append({"metric": g.get("metric"), "tolerance": tol})
        for t in target_tenants:
            if self.store.get_or_none("tenants", t, t) is None:
                problems.append(f"targeted tenant {t!r} does not exist")
        if not 0 <= int(min_runtime_days) <= int(max_runtime_days):
            problems.append("minimum runtime must be between 0 and the maximum runtime")
        if not 0.001 <= float(alpha) <= 0.2:
            problems.append("alpha must be between 0.001 and 0.2")
        if correction not in ("holm", "bh", "none"):
            problems.append("correction must be holm, bh or none")
        if int(planned_units_per_arm) < 100:
            problems.append("planned units per arm must be at least 100")
        if problems:
            raise Invalid("cannot create the experiment: " + "; ".join(problems))
        for v, w in zip(clean_variants, weights, strict=True):
            v["weight"] = w
        now = clock.iso()
        exp_id = experiment_id or f"exp-{uuid.uuid4().hex[:12]}"
        doc = {
            "id": exp_id,
            "tenantId": PLATFORM,
            "name": name.strip(),
            "hypothesis": hypothesis.strip(),
            "slot": slot,
            "variants": clean_variants,
            "control": control,
            "primaryMetric": primary_metric,
            "secondaryMetrics": list(dict.fromkeys(m for m in secondary_metrics if m != primary_metric)),
            "guardrails": clean_guardrails,
            "targetTenants": sorted(set(target_tenants)),
            "minRuntimeDays": int(min_runtime_days),
            "maxRuntimeDays": int(max_runtime_days),
            "plannedUnitsPerArm": int(planned_units_per_arm),
            "alpha": float(alpha),
            "correction": correction,
            "sequential": bool(sequential),
            "status": DRAFT,
            "seed": seed or secrets.token_hex(8),
            "allocation": Allocation.initial(weights).to_json(),
            "weightsHistory": [{"from": now, "weights": weights}],
            "createdAt": now,
            "createdBy": principal.email,
            "startedAt": None,
            "stoppedAt": None,
            "concludedAt": None,
            "outcome": None,
        }
        try:
            created = self.store.create(EXPERIMENTS, doc)
        except Conflict:
            raise Conflict(f"an experiment with id {exp_id} already exists") from None
        self.audit.record(
            principal,
            None,
            "experiment.create",
            exp_id,
            reason=reason or None,
            after={"name": doc["name"], "slot": slot, "variants": clean_variants},
        )
        return created

    def _transition(
        self, principal: Principal, experiment_id: str, to: str, reason: str, extra: Mapping[str, Any] | None = None
    ) -> Doc:
        self._runner(principal)
        if not (reason or "").strip():
            raise Invalid("say why (the reason is kept in the audit log)")
        before: dict[str, Any] = {}

        def change(doc: Doc | None) -> Doc:
            if doc is None:
                raise NotFound(f"experiment {experiment_id!r} does not exist")
            status = doc["status"]
            before["status"] = status
            if to not in TRANSITIONS[status]:
                allowed = ", ".join(sorted(TRANSITIONS[status])) or "nothing (it is concluded)"
                raise Conflict(f"experiment is {status}; it can move to {allowed}, not {to}")
            now = clock.iso()
            new = {**doc, "status": to}
            if to == RUNNING:
                new["startedAt"] = doc.get("startedAt") or now
                new["stoppedAt"] = None
            elif to == STOPPED:
                new["stoppedAt"] = now
            elif to == CONCLUDED:
                new["concludedAt"] = now
                new["stoppedAt"] = doc.get("stoppedAt") or now
            new.update(extra or {})
            return new

        if to == RUNNING:
            self._check_no_overlap(self._get(experiment_id))
        updated = self.store.update(EXPERIMENTS, PLATFORM, experiment_id, change)
        assert updated is not None
        self.audit.record(
            principal,
            None,
            f"experiment.{to}",
            experiment_id,
            reason=reason.strip(),
            before=before,
            after={"status": to, **dict(extra or {})},
        )
        return updated

    def _check_no_overlap(self, exp: Doc) -> None:
        """Two running experiments on one slot for the same tenant would fight over what is served."""
        mine = set(exp.get("targetTenants") or [])
        for other in self.store.query(
            EXPERIMENTS, PLATFORM, [Cond("slot", "=", exp["slot"]), Cond("status", "=", RUNNING)]
        ):
            if other["id"] == exp["id"]:
                continue
            theirs = set(other.get("targetTenants") or [])
            if not mine or not theirs or mine & theirs:
                raise Conflict(
                    f"experiment {other['name']!r} is already running on {exp['slot']} for an overlapping "
                    "set of tenants; stop or conclude it first"
                )

    def start(self, principal: Principal, experiment_id: str, reason: str) -> Doc:
        return self._transition(principal, experiment_id, RUNNING, reason)

    def stop(self, principal: Principal, experiment_id: str, reason: str) -> Doc:
        """Stopped experiments serve the control to everyone; late outcomes of enrolled units still count."""
        return self._transition(principal, experiment_id, STOPPED, reason)

    def conclude(self, principal: Principal, experiment_id: str, reason: str) -> Doc:
        """End without changing any label (for abandoned or inconclusive experiments)."""
        return self._transition(
            principal,
            experiment_id,
            CONCLUDED,
            reason,
            {"outcome": {"action": "concluded", "reason": reason, "by": principal.email, "at": clock.iso()}},
        )

    def reweight(self, principal: Principal, experiment_id: str, weights: Sequence[float], reason: str) -> Doc:
        """Change weights; buckets move minimally and already-assigned units keep their variant (sticky log)."""
        self._runner(principal)
        if not (reason or "").strip():
            raise Invalid("say why the weights change")
        exp = self._get(experiment_id)
        names = [v["name"] for v in exp["variants"]]
        new_weights = validate_weights(weights, names)
        if len(new_weights) != len(names):
            raise Invalid(f"give one weight per variant ({', '.join(names)})")
        if exp["status"] == CONCLUDED:
            raise Conflict("the experiment is concluded; weights can no longer change")
        allocation = Allocation.from_json(exp["allocation"]).reweight(new_weights).to_json()
        now = clock.iso()

        def change(doc: Doc | None) -> Doc:
            assert doc is not None
            variants = [{**v, "weight": w} for v, w in zip(doc["variants"], new_weights, strict=True)]
            history = [*doc.get("weightsHistory", []), {"from": now, "weights": new_weights}]
            return {**doc, "variants": variants, "allocation": allocation, "weightsHistory": history}

        updated = self.store.update(EXPERIMENTS, PLATFORM, experiment_id, change)
        assert updated is not None
        self.audit.record(
            principal,
            None,
            "experiment.reweight",
            experiment_id,
            reason=reason.strip(),
            before={"weights": [v["weight"] for v in exp["variants"]]},
            after={"weights": new_weights},
        )
        return updated

    # assignment -----------------------------------------------------------------------------
    @staticmethod
    def assigner(exp: Doc) -> Assigner:
        names = [v["name"] for v in exp["variants"]]
        return Assigner(exp["seed"], names, Allocation.from_json(exp["allocation"]), exp.get("control"))

    def _check_tenant(self, exp: Doc, tenant_id: str) -> None:
        targets = exp.get("targetTenants") or []
        if targets and tenant_id not in targets:
            raise Invalid(
                f"experiment {exp['name']!r} does not target tenant {tenant_id}; it targets {', '.join(targets)}"
            )

    def assign(self, principal: Principal, tenant_id: str, experiment_id: str, unit_id: str) -> Assignment:
        """The variant to serve a unit (sticky); stopped experiments and untargeted tenants get the control."""
        require(principal, tenant_id, RUNNERS)
        exp = self._get(experiment_id)
        sticky = StickyAssigner(
            self.assigner(exp),
            StoreAssignmentLog(self.store, tenant_id, experiment_id),
            exp["status"],
            exp.get("targetTenants"),
        )
        return sticky.decide(unit_id, tenant_id)

    def serve_prompt(self, principal: Principal, tenant_id: str, slot: str, unit_id: str) -> ServedPrompt:
        """What the platform calls per request: the production prompt, or the unit's experiment arm."""
        require(principal, tenant_id, RUNNERS)
        for exp in self.store.query(EXPERIMENTS, PLATFORM, [Cond("slot", "=", slot), Cond("status", "=", RUNNING)]):
            targets = exp.get("targetTenants") or []
            if targets and tenant_id not in targets:
                continue
            a = self.assign(principal, tenant_id, exp["id"], unit_id)
            version = next(v["version"] for v in exp["variants"] if v["name"] == a.variant)
            return ServedPrompt(self.prompts.version(principal, slot, version), exp["id"], a.variant, a.reason)
        return ServedPrompt(self.prompts.resolve(principal, slot, PRODUCTION), None, None, "production label")

    # events ---------------------------------------------------------------------------------
    def record_events(
        self,
        principal: Principal,
        tenant_id: str,
        experiment_id: str,
        events: Iterable[Mapping[str, Any]],
        first_row: int = 1,
        audit: bool = False,
    ) -> IngestReport:
        """The events API: validate, de-duplicate and fold exposures/outcomes into units and rollups.

        Bad events are rejected one by one (row number and reason); the rest are applied.
        """
        report = self._record_numbered(principal, tenant_id, experiment_id, list(enumerate(events, start=first_row)))
        if audit:
            self.audit.record(
                principal,
                tenant_id,
                "experiment.events.record",
                experiment_id,
                after={"accepted": report.accepted, "duplicates": report.duplicates, "rejected": len(report.rejected)},
            )
        return report

    def import_events(
        self, principal: Principal, tenant_id: str, experiment_id: str, content: bytes | str, filename: str
    ) -> IngestReport:
        """Bulk import from CSV (header row) or JSONL; rows are numbered as lines of the file."""
        require(principal, tenant_id, RUNNERS)
        raw = content.encode() if isinstance(content, str) else content
        if len(raw) > MAX_IMPORT_BYTES:
            raise Invalid(
                f"the file is {len(raw) / 1e6:.0f} MB; import at most {MAX_IMPORT_BYTES // 1_000_000} MB at a time"
            )
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise Invalid("the file is not UTF-8 text") from None
        name = filename.lower()
        if name.endswith(".csv"):
            rows, bad = _csv_rows(text)
        elif name.endswith((".jsonl", ".ndjson", ".json")):
            rows, bad = _jsonl_rows(text)
        else:
            raise Invalid("import a .csv file (with a header row) or a .jsonl file (one event per line)")
        report = self._record_numbered(principal, tenant_id, experiment_id, rows)
        report.rejected = sorted(report.rejected + bad)
        self.audit.record(
            principal,
            tenant_id,
            "experiment.events.import",
            experiment_id,
            reason=filename,
            after={"accepted": report.accepted, "duplicates": report.duplicates, "rejected": len(report.rejected)},
        )
        return report

    def _record_numbered(
        self, principal: Principal, tenant_id: str, experiment_id: str, rows: Sequence[tuple[int, Mapping[str, Any]]]
    ) -> IngestReport:
        require(principal, tenant_id, RUNNERS)
        exp = self._get(experiment_id)
        self._check_tenant(exp, tenant_id)
        if exp["status"] in (DRAFT, CONCLUDED):
            raise Invalid(
                f"experiment {exp['name']!r} is {exp['status']}; events are accepted while it runs "
                "(and outcomes of enrolled units while it is stopped)"
            )
        spec = ExperimentSpec.from_record(exp)
        ctx = _Batch(self.store, exp, tenant_id, spec.metric_defs(), self.assigner(exp))
        report = IngestReport()
        for part in _chunks(list(rows), BATCH):
            ctx.ingest(list(part), report)
        return report

    # analysis -------------------------------------------------------------------------------
    def rollups(self, principal: Principal, experiment_id: str, tenant_id: str | None = None) -> builtins.list[Doc]:
        require(principal, tenant_id, RUNNERS)
        exp = self.get(principal, experiment_id)
        scope = tenant_id if tenant_id is not None else (None if principal.platform_wide else principal.tenant_id)
        return self.store.query(ROLLUPS, scope, [Cond("experimentId", "=", exp["id"])])

    def analysis(self, principal: Principal, experiment_id: str, tenant_id: str | None = None) -> ExperimentAnalysis:
        exp = self.get(principal, experiment_id)
        rollups = self.rollups(principal, experiment_id, tenant_id)
        return analyze(ExperimentSpec.from_record(exp), rollups, expected_shares(exp, rollups))

    def decision(
        self, principal: Principal, experiment_id: str, tenant_id: str | None = None, now: datetime | None = None
    ) -> tuple[ExperimentAnalysis, Decision]:
        result = self.analysis(principal, experiment_id, tenant_id)
        return result, decide(result, now or clock.now())

    def health(self, result: ExperimentAnalysis, exp: Doc, now: datetime | None = None) -> Health:
        now = now or clock.now()
        stale = False
        if result.last_update and exp["status"] == RUNNING:
            stale = (now - clock.parse(result.last_update)).total_seconds() > STALE_HOURS * 3600
        elif exp["status"] == RUNNING:
            stale = True
        return Health(
            srm_flagged=result.srm.flagged,
            srm_p_value=result.srm.p_value,
            guardrails_failing=[f"{g.metric} ({g.variant})" for g in result.guardrails if g.status == "fail"],
            last_update=result.last_update,
            stale=stale,
            weights_changed=len(exp.get("weightsHistory") or []) > 1,
        )

    # promotion and rollback -----------------------------------------------------------------
    def promote(
        self,
        principal: Principal,
        experiment_id: str,
        reason: str,
        variant: str | None = None,
        override_srm_reason: str | None = None,
    ) -> Doc:
        """Move the slot's production label to the winning variant's version and conclude the experiment.

        Blocked while the sample ratio mismatch check is flagged, unless an admin overrides with a reason.
        """
        self._runner(principal)
        if not (reason or "").strip():
            raise Invalid("say why you promote (the reason is kept in the audit log and the label history)")
        exp = self._get(experiment_id)
        if exp["status"] not in (RUNNING, STOPPED):
            raise Conflict(f"experiment is {exp['status']}; only running or stopped experiments can be promoted")
        result, decision = self.decision(principal, experiment_id)
        override = (override_srm_reason or "").strip() or None
        if result.srm.flagged:
            if override is None:
                raise Conflict(
                    f"promotion is blocked: sample ratio mismatch (chi-square p = {result.srm.p_value:.2g}); the "
                    "split of units does not match the weights, so the results cannot be trusted. Fix the "
                    "assignment or logging, or an admin may override with a reason."
                )
            if principal.role != ADMIN:
                raise Forbidden("only an admin may override the sample ratio mismatch block")
        chosen = (variant or decision.variant or "").strip().lower()
        if not chosen:
            raise Invalid(f"no winner to promote ({decision.headline}); choose the variant explicitly")
        by_name = {v["name"]: v for v in exp["variants"]}
        if chosen not in by_name:
            raise Invalid(f"unknown variant {chosen!r}; this experiment has {', '.join(by_name)}")
        version = int(by_name[chosen]["version"])
        slot = exp["slot"]
        labels = self.prompts.slot(principal, slot).get("labels") or {}
        previous = labels.get(PRODUCTION)
        note = f"promoted {chosen} of experiment {exp['name']!r}: {reason.strip()}"
        if override:
            note += f" (SRM override: {override})"
        if previous != version:
            self.prompts.move_label(principal, slot, PRODUCTION, version, note, experiment_id, action="promote")
        outcome = {
            "action": "promoted",
            "variant": chosen,
            "version": version,
            "previousVersion": previous,
            "reason": reason.strip(),
            "srmOverride": override,
            "by": principal.email,
            "at": clock.iso(),
            "decision": decision.headline,
        }
        updated = self._transition(principal, experiment_id, CONCLUDED, note, {"outcome": outcome})
        self.audit.record(
            principal,
            None,
            "experiment.promote",
            experiment_id,
            reason=reason.strip(),
            before={"production": previous},
            after={"production": version, "variant": chosen, "srmOverride": override},
        )
        return updated

    def roll_back(self, principal: Principal, experiment_id: str, reason: str) -> Doc:
        """Keep (or restore) the previous production prompt and conclude the experiment.

        After a promotion this restores the production label to the version it had before; for a
        running or stopped experiment nothing was moved, so it concludes keeping the control.
        """
        self._runner(principal)
        if not (reason or "").strip():
            raise Invalid("say why you roll back (the reason is kept in the audit log)")
        exp = self._get(experiment_id)
        outcome = exp.get("outcome") or {}
        slot = exp["slot"]
        restored = None
        if exp["status"] == CONCLUDED:
            if outcome.get("action") != "promoted":
                raise Conflict("this experiment concluded without a promotion; there is nothing to roll back")
            current = (self.prompts.slot(principal, slot).get("labels") or {}).get(PRODUCTION)
            previous = outcome.get("previousVersion")
            if previous is None:
                raise Conflict("the production label had no earlier version to restore")
            if current != outcome.get("version"):
                raise Conflict(
                    f"production already moved on to v{current} since the promotion; move it in the catalog instead"
                )
            self.prompts.roll_back_label(
                principal, slot, PRODUCTION, f"roll back experiment {exp['name']!r}: {reason.strip()}", experiment_id
            )
            restored = previous
            new_outcome = {
                **outcome,
                "action": "rolled_back",
                "restoredVersion": previous,
                "rollbackReason": reason.strip(),
                "rolledBackBy": principal.email,
                "rolledBackAt": clock.iso(),
            }

            def change(doc: Doc | None) -> Doc:
                assert doc is not None
                return {**doc, "outcome": new_outcome}

            updated = self.store.update(EXPERIMENTS, PLATFORM, experiment_id, change)
            assert updated is not None
        else:
            updated = self._transition(
                principal,
                experiment_id,
                CONCLUDED,
                reason,
                {
                    "outcome": {
                        "action": "rolled_back",
                        "reason": reason.strip(),
                        "by": principal.email,
                        "at": clock.iso(),
                        "restoredVersion": (self.prompts.slot(principal, slot).get("labels") or {}).get(PRODUCTION),
                    }
                },
            )
        self.audit.record(
            principal,
            None,
            "experiment.roll_back",
            experiment_id,
            reason=reason.strip(),
            after={"restoredVersion": restored},
        )
        return updated


def expected_shares(exp: Mapping[str, Any], rollups: Sequence[Mapping[str, Any]]) -> list[float]:
    """Expected split of units given the weights in force on each exposure day (re-weighting aware)."""
    history = sorted(exp.get("weightsHistory") or [], key=lambda h: h["from"])
    names = [v["name"] for v in exp["variants"]]
    if not history:
        return [float(v["weight"]) / 100 for v in exp["variants"]]
    per_day: dict[str, float] = defaultdict(float)
    for r in rollups:
        per_day[str(r["day"])] += float(r.get("units") or 0)
    expected = [0.0] * len(names)
    for day, units in per_day.items():
        weights = history[0]["weights"]
        for h in history:
            if h["from"][:10] <= day:
                weights = h["weights"]
        for i, w in enumerate(weights):
            expected[i] += units * float(w) / 100
    total = sum(expected)
    if total <= 0:
        return [float(w) / 100 for w in history[-1]["weights"]]
    return [e / total for e in expected]


@dataclass
class _UnitResult:
    """One unit's part of a batch: its new record and what to count once that record is written."""

    unit: str
    doc: Doc | None
    new_doc: Doc | None = None
    duplicates: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    records: list[Doc] = field(default_factory=list)
    changes: list[tuple[tuple[str, str], dict[str, Any], str]] = field(default_factory=list)

    def commit(
        self,
        report: IngestReport,
        deltas: dict[tuple[str, str], dict[str, Any]],
        last_at: dict[tuple[str, str], str],
        accepted: list[Doc],
    ) -> None:
        report.rejected.extend(self.rejected)
        report.duplicates += self.duplicates
        report.accepted += len(self.records)
        accepted.extend(self.records)
        for key, delta, at in self.changes:
            add_into(deltas.setdefault(key, {}), delta)
            last_at[key] = max(last_at.get(key, ""), at)


class _Batch:
    """Applies batches of events for one experiment and tenant; see ``record_events``."""

    def __init__(
        self, store: DocumentStore, exp: Doc, tenant_id: str, metric_defs: Sequence[Any], assigner: Assigner
    ) -> None:
        self.store, self.exp, self.tenant_id = store, exp, tenant_id
        self.exp_id = exp["id"]
        self.defs = list(metric_defs)
        self.variants = [v["name"] for v in exp["variants"]]
        self.assigner = assigner
        self.running = exp["status"] == RUNNING

    def ingest(self, rows: Sequence[tuple[int, Mapping[str, Any]]], report: IngestReport) -> None:
        parsed: list[tuple[int, Event, str]] = []
        for row, raw in rows:
            try:
                ev = parse_event(raw, METRICS)
            except Invalid as e:
                report.rejected.append((row, e.message))
                continue
            if ev.type == "exposure" and not self.running:
                report.rejected.append(
                    (row, "the experiment is stopped: it serves the control and counts no new exposures")
                )
                continue
            parsed.append((row, ev, event_doc_id(self.exp_id, ev.event_id)))
        known: set[str] = set()
        for part in _chunks([d for _, _, d in parsed], QUERY_CHUNK):
            known.update(r["id"] for r in self.store.query(EVENTS, self.tenant_id, [Cond("id", "in", list(part))]))
        by_unit: dict[str, list[tuple[int, Event, str]]] = defaultdict(list)
        in_batch: set[str] = set()
        for row, ev, did in parsed:
            if did in known or did in in_batch:
                report.duplicates += 1
                continue
            in_batch.add(did)
            by_unit[ev.unit_id].append((row, ev, did))
        docs: dict[str, Doc] = {}
        unit_ids = [unit_doc_id(self.exp_id, u) for u in by_unit]
        for part in _chunks(unit_ids, QUERY_CHUNK):
            for d in self.store.query(UNITS, self.tenant_id, [Cond("id", "in", list(part))]):
                docs[d["id"]] = d
        results = [
            self._fold_unit(unit, items, docs.get(unit_doc_id(self.exp_id, unit))) for unit, items in by_unit.items()
        ]
        # new units (the common case) are written in one transaction; a conflict means a concurrent
        # writer created some of them, so those (and all updates) go through the per-unit etag path
        creates = [r for r in results if r.doc is None and r.new_doc is not None]
        batched = False
        if len(creates) > 1:
            try:
                self.store.create_many(UNITS, [r.new_doc for r in creates])  # type: ignore[misc]
                batched = True
            except Conflict:
                batched = False
        deltas: dict[tuple[str, str], dict[str, Any]] = {}
        last_at: dict[tuple[str, str], str] = {}
        accepted: list[Doc] = []
        for r in results:
            if not (batched and r.doc is None and r.new_doc is not None):
                r = self._write_unit(r, by_unit[r.unit])
            r.commit(report, deltas, last_at, accepted)
        now = clock.iso()
        for (variant, day), delta in deltas.items():
            self._add_rollup(variant, day, delta, last_at[(variant, day)], now)
        self._store_events(accepted)

    def _fold_unit(self, unit: str, items: list[tuple[int, Event, str]], doc: Doc | None) -> _UnitResult:
        """Apply one unit's events to its stored state in memory (nothing is written here)."""
        res = _UnitResult(unit, doc)
        state = UnitState.from_dict(doc) if doc is not None else None
        applied = list(doc.get("events") or []) if doc is not None else []
        seen = set(applied)
        for row, ev, did in items:
            if ev.event_id in seen:
                res.duplicates += 1
                continue
            try:
                folded = fold(ev, state, self.variants, self.defs, self.assigner.assign)
            except Invalid as e:
                res.rejected.append((row, e.message))
                continue
            state = folded.state
            seen.add(ev.event_id)
            applied.append(ev.event_id)
            if folded.key is not None:
                res.changes.append((folded.key, folded.delta, ev.at))
            res.records.append(
                {
                    **ev.to_record(),
                    "id": did,
                    "tenantId": self.tenant_id,
                    "experimentId": self.exp_id,
                    "dedupeKey": did,
                    "variant": state.variant,
                    "receivedAt": clock.iso(),
                }
            )
        if state is not None and res.records:
            res.new_doc = {
                "id": unit_doc_id(self.exp_id, unit),
                "tenantId": self.tenant_id,
                "experimentId": self.exp_id,
                "unitId": unit,
                **state.to_dict(),
                "events": applied[-UNIT_EVENT_MEMORY:],
                "assignedAt": (doc or {}).get("assignedAt") or res.records[0]["at"],
                "updatedAt": clock.iso(),
            }
        return res

    def _write_unit(self, res: _UnitResult, items: list[tuple[int, Event, str]]) -> _UnitResult:
        """Write with the etag; when another writer got there first, fold again on their version."""
        doc_id = unit_doc_id(self.exp_id, res.unit)
        for _ in range(8):
            if res.new_doc is None:
                return res
            try:
                if res.doc is None:
                    self.store.create(UNITS, res.new_doc)
                else:
                    self.store.upsert(UNITS, res.new_doc, if_match=res.doc["_etag"])
                return res
            except Conflict:
                res = self._fold_unit(res.unit, items, self.store.get_or_none(UNITS, self.tenant_id, doc_id))
        raise Conflict(f"unit {res.unit} kept changing under concurrent writers; send its events again")

    def _add_rollup(self, variant: str, day: str, delta: Mapping[str, Any], last_event_at: str, now: str) -> None:
        def change(doc: Doc | None) -> Doc:
            base = (
                doc
                if doc is not None
                else {"experimentId": self.exp_id, "variant": variant, "day": day, "units": 0, "metrics": {}}
            )
            add_into(base, delta)
            base["updatedAt"] = now
            base["lastEventAt"] = max(str(base.get("lastEventAt") or ""), last_event_at)
            return base

        self.store.update(ROLLUPS, self.tenant_id, f"{self.exp_id}:{variant}:{day}", change)

    def _store_events(self, records: Sequence[Doc]) -> None:
        if not records:
            return
        try:
            self.store.create_many(EVENTS, records)
        except Conflict:
            for r in records:  # a concurrent writer stored some of them: keep the rest
                try:
                    self.store.create(EVENTS, r)
                except Conflict:
                    pass


def _csv_rows(text: str) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, str]]]:
    """CSV columns: event_id, type, unit_id, variant, metric, value, at, and covariate_<metric> (optional)."""
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise Invalid("the CSV file is empty; it needs a header row (event_id,type,unit_id,variant,metric,value,at)")
    fields = [f.strip().lower() for f in reader.fieldnames]
    missing = [c for c in ("event_id", "type", "unit_id") if c not in fields]
    if missing:
        raise Invalid(
            f"the CSV header lacks {', '.join(missing)}; expected event_id,type,unit_id,variant,metric,value,at"
        )
    rows: list[tuple[int, dict[str, Any]]] = []
    bad: list[tuple[int, str]] = []
    for raw in reader:
        line = reader.line_num
        if None in raw:
            bad.append((line, "the row has more cells than the header"))
            continue
        cells = {k.strip().lower(): (v.strip() if isinstance(v, str) else v) for k, v in raw.items() if k}
        if not any(cells.values()):
            continue
        event: dict[str, Any] = {
            k: v for k, v in cells.items() if v not in (None, "") and not k.startswith("covariate_")
        }
        covs = {k.removeprefix("covariate_"): v for k, v in cells.items() if k.startswith("covariate_") and v}
        if covs:
            event["covariates"] = covs
        rows.append((line, event))
    return rows, bad


def _jsonl_rows(text: str) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, str]]]:
    rows: list[tuple[int, dict[str, Any]]] = []
    bad: list[tuple[int, str]] = []
    for line, content in enumerate(text.splitlines(), start=1):
        if not content.strip():
            continue
        try:
            obj = json.loads(content)
        except json.JSONDecodeError as e:
            bad.append((line, f"not valid JSON ({e.msg} at column {e.colno})"))
            continue
        if not isinstance(obj, dict):
            bad.append((line, "each line must be one JSON object"))
            continue
        rows.append((line, obj))
    return rows, bad


DEMO_EXPERIMENT_ID = "exp-demo-intent-router"
DEMO_DAYS = 21


def seed_experiments_demo(
    services: Any,
    tenant_id: str,
    actor: Principal,
    new_users_per_day: int = 900,
    days: int = DEMO_DAYS,
) -> dict[str, Any]:
    """Demo: the prompt catalog, and a running experiment on intent classification fed by the simulator.

    The traffic goes through the same events API the platform uses; the planted truth (thumbs-up
    +10% for v2, tokens -10%, latency +5.9% within a 10% guardrail) is documented in
    ``core/experiments/simulator.py`` and is what the results page should recover. Each demo tenant
    adds its own users (about ``new_users_per_day`` a day for ``days`` days).
    """
    from datetime import timedelta

    from core.experiments.simulator import SimulationConfig, simulate
    from core.services.prompts import seed_prompts

    seed_prompts(services, actor)
    svc: ExperimentService = services.experiments
    store: DocumentStore = services.store
    start = clock.now() - timedelta(days=days)
    exp = store.get_or_none(EXPERIMENTS, PLATFORM, DEMO_EXPERIMENT_ID)
    if exp is None:
        svc.create(
            actor,
            name="Intent router: v2 tie-break rules",
            hypothesis="Adding explicit tie-break rules to the intent router (v2) sends more messages to the "
            "right skill, raising the thumbs-up rate by about 10% without slowing answers by more than 10%.",
            slot="intent_classification",
            variants=[
                {"name": "control", "version": 1, "weight": 50},
                {"name": "treatment", "version": 2, "weight": 50},
            ],
            primary_metric="thumbs_up",
            secondary_metrics=["task_success", "tokens", "cost_usd"],
            guardrails=[{"metric": "latency_ms", "tolerance": 0.10}],
            target_tenants=[tenant_id],
            min_runtime_days=14,
            planned_units_per_arm=16_000,
            reason="demo seed",
            experiment_id=DEMO_EXPERIMENT_ID,
            seed="castiel-demo-intent-router",  # fixed so the demo's numbers are the same on every install
        )
        svc.start(actor, DEMO_EXPERIMENT_ID, "demo seed")

        def backdate(doc: Doc | None) -> Doc:
            # the simulated traffic begins `days` ago, so the experiment's clock does too (demo only)
            assert doc is not None
            history = [{**h, "from": clock.iso(start)} for h in doc.get("weightsHistory") or []]
            return {**doc, "startedAt": clock.iso(start), "createdAt": clock.iso(start), "weightsHistory": history}

        store.update(EXPERIMENTS, PLATFORM, DEMO_EXPERIMENT_ID, backdate)
    elif tenant_id not in (exp.get("targetTenants") or []) and exp.get("targetTenants"):

        def add_target(doc: Doc | None) -> Doc:
            assert doc is not None
            return {**doc, "targetTenants": sorted({*doc.get("targetTenants", []), tenant_id})}

        store.update(EXPERIMENTS, PLATFORM, DEMO_EXPERIMENT_ID, add_target)
        services.audit.record(
            actor, None, "experiment.target", DEMO_EXPERIMENT_ID, reason="demo seed", after={"added": tenant_id}
        )
    exp = store.get(EXPERIMENTS, PLATFORM, DEMO_EXPERIMENT_ID)
    if exp["status"] != RUNNING or store.count(ROLLUPS, tenant_id, [Cond("experimentId", "=", DEMO_EXPERIMENT_ID)]):
        return {"experimentId": DEMO_EXPERIMENT_ID, "events": 0}
    tenant_index = sum(ord(c) for c in tenant_id) % 1000
    config = SimulationConfig(
        experiment_id=DEMO_EXPERIMENT_ID,
        seed=exp["seed"],
        variants=[v["name"] for v in exp["variants"]],
        weights=[float(v["weight"]) for v in exp["variants"]],
        days=days,
        new_users_per_day=new_users_per_day,
        start=start,
        rng_seed=8 + tenant_index,
        unit_prefix=f"{tenant_id}-user",
    )
    # the platform would call assign() per request; the pure assigner computes the same (same seed and buckets)
    report = svc.record_events(actor, tenant_id, DEMO_EXPERIMENT_ID, simulate(config, svc.assigner(exp).assign))
    return {"experimentId": DEMO_EXPERIMENT_ID, "events": report.accepted, "rejected": len(report.rejected)}
