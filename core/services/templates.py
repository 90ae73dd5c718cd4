"""Template library and document generation per tenant: upload with preflight, immutable versions,
placeholder configuration, preview, generation jobs (single or batch) with a monthly quota, outputs
with per-field provenance, re-generation of one field, usage; every change audited.

Storage
-------
``templates``        one record per template: kind (docx, pptx, gdoc, gslides), the list of immutable
                     versions (blob name, sha256, placeholders, preflight summary), the placeholder
                     configuration (with its own version number)
``generation_jobs``  one record per job: the template version and a snapshot of the configuration it
                     used, the target records, counts and progress, status
``generated_docs``   one record per (job, CRM record): ``succeeded`` only once its file is in the blob
                     store (rendered fully in memory first, so nothing partial is ever a finished
                     document), or ``failed`` with the reasons; provenance per field; later versions
                     when one field is re-generated
``rollups``          ``template-usage-YYYY-MM`` per tenant: documents generated this month, and the
                     reservations of open jobs, so the quota is checked before a job starts even when
                     two jobs start at once (the reservation is an etag-guarded write)
Blobs: ``templates/<tenant>/templates/<id>/v<n>-<sha>.<ext>`` (never overwritten) and
``outputs/<tenant>/generated/<job>/<doc>-v<n>.<ext>``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core import clock
from core.adapters.blobs import BlobStore
from core.adapters.store import Cond, Doc, DocumentStore, matches
from core.errors import (
    CastielError,
    ConfigError,
    Conflict,
    Invalid,
    NotFound,
    QuotaExceeded,
    StoreUnavailable,
    TransientError,
)
from core.services.access import ADMIN, CONTENT_ADMIN, SYSTEM, Principal, require
from core.services.audit import AuditLog
from core.templates.images import ImageLoader, validate_image
from core.templates.placeholders import (
    PromptSource,
    RecordContext,
    RenderedPrompt,
    Resolution,
    Resolver,
    TemplateConfig,
    TextModel,
    suggest_config,
)
from core.templates.preflight import PreflightLimits, PreflightReport, preflight
from core.templates.preview import Preview, render_preview
from core.templates.render_docx import render_docx
from core.templates.render_pptx import render_pptx
from core.templates.values import ImageValue, RenderValue, dump_value, load_value

TEMPLATES, JOBS, DOCS, ROLLUPS, CRM = "templates", "generation_jobs", "generated_docs", "rollups", "crm_records"
QUEUE, KIND = "templates", "templates.generate"
EDIT_ROLES = frozenset({ADMIN, CONTENT_ADMIN})
OPEN = ("queued", "running")
MAX_BATCH = 1000
CONTENT_TYPES = {
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
}
SAMPLE_CONTEXT: dict[str, Any] = {
    "opportunity": {"name": "Sample opportunity - Expansion", "amount": 125000, "stage": "Proposal",
                    "closeDate": "2025-09-30", "ownerName": "Sample Owner", "currency": "USD"},
    "account": {"name": "Sample Account", "industry": "Manufacturing", "region": "EMEA",
                "opportunities": [
                    {"name": "Sample - Expansion", "stage": "Proposal", "amount": 125000, "closeDate": "2025-09-30"},
                    {"name": "Sample - Renewal", "stage": "Negotiation", "amount": 48000, "closeDate": "2025-08-15"},
                    {"name": "Sample - Pilot", "stage": "Closed Won", "amount": 15000, "closeDate": "2025-03-01"}]},
}


class FilterCond(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: str
    op: Literal["=", "!=", "<", "<=", ">", ">=", "in"] = "="
    value: Any


class RecordFilter(BaseModel):
    """Which CRM records a batch covers: an object type and conditions on its fields."""

    model_config = ConfigDict(extra="forbid")

    object_type: Literal["opportunity", "account"] = "opportunity"
    conditions: list[FilterCond] = Field(default_factory=list)
    limit: int = Field(default=100, ge=1, le=MAX_BATCH)


@dataclass
class Usage:
    month: str
    generated: int
    reserved: int
    quota: int

    @property
    def remaining(self) -> int:
        return max(0, self.quota - self.generated - self.reserved)


@dataclass
class PreviewResult:
    preview: Preview
    document: bytes = field(repr=False)
    filename: str
    provenance: dict[str, dict[str, Any]]
    errors: dict[str, str]
    record_label: str


def month_of(now: dt.datetime) -> str:
    return now.strftime("%Y-%m")


def _slug(text: str, limit: int = 60) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return (s or "document")[:limit]


class TemplateService:
    """All template and generation operations; pages and the worker call only these."""

    def __init__(
        self,
        store: DocumentStore,
        blobs: BlobStore,
        audit: AuditLog,
        queue: Any,
        tenants: Any,
        *,
        llm: TextModel | None = None,
        prompts: PromptSource | None = None,
        google_factory: Callable[[str], Any] | None = None,
        google_image_url: Callable[[str, str, ImageValue], str] | None = None,
        limits: PreflightLimits | None = None,
        allow_remote_images: bool = False,
        preview_timeout: float = 90.0,
        now: Callable[[], dt.datetime] = clock.now,
    ) -> None:
        self.store, self.blobs, self.audit, self.queue, self.tenants = store, blobs, audit, queue, tenants
        self.llm, self.prompts = llm, prompts
        self.google_factory = google_factory
        self.google_image_url = google_image_url
        self.limits = limits or PreflightLimits()
        self.allow_remote_images = allow_remote_images
        self.preview_timeout = preview_timeout
        self.now = now

    # library ------------------------------------------------------------------------------------------------
    def list_templates(self, principal: Principal, tenant_id: str, include_archived: bool = False) -> list[Doc]:
        require(principal, tenant_id, EDIT_ROLES)
        rows = self.store.query(TEMPLATES, tenant_id, order_by="name", limit=500)
        return [r for r in rows if include_archived or r.get("status") != "archived"]

    def get_template(self, principal: Principal, tenant_id: str, template_id: str) -> Doc:
        require(principal, tenant_id, EDIT_ROLES)
        return self.store.get(TEMPLATES, tenant_id, template_id)

    def check_upload(self, principal: Principal, tenant_id: str, filename: str, data: bytes) -> PreflightReport:
        """Run preflight and return the report to show; nothing is stored. Refusals are audited."""
        require(principal, tenant_id, EDIT_ROLES)
        report = preflight(data, filename, self.limits)
        if not report.accepted:
            self.audit.record(principal, tenant_id, "template.upload_refused", f"file:{filename[:120]}",
                              "; ".join(i.message for i in report.errors)[:500],
                              after={"sha256": report.sha256, "codes": [i.code for i in report.errors]})
        return report

    def add_version(self, principal: Principal, tenant_id: str, filename: str, data: bytes, reason: str,
                    name: str | None = None, template_id: str | None = None) -> Doc:
        """Store an accepted upload as a new template (or a new version of ``template_id``)."""
        require(principal, tenant_id, EDIT_ROLES)
        if not reason.strip():
            raise Invalid("a reason is required to add a template version")
        report = preflight(data, filename, self.limits)  # never trust an earlier check
        if not report.accepted or report.normalised is None:
            problems = "; ".join(f"{i.message}" + (f" ({i.location})" if i.location else "") for i in report.errors)
            raise Invalid(f"{filename} did not pass preflight: {problems}")
        now = clock.iso(self.now())
        existing = self.store.get(TEMPLATES, tenant_id, template_id) if template_id else None
        if existing is not None and existing["kind"] != report.kind:
            raise Invalid(f"{existing['name']} is a {existing['kind']} template; upload a .{existing['kind']} file")
        tid = template_id or f"tpl-{uuid.uuid4().hex[:12]}"
        version = (existing or {}).get("currentVersion", 0) + 1
        blob = f"{tenant_id}/templates/{tid}/v{version}-{report.sha256[:12]}.{report.kind}"
        if self.blobs.exists("templates", blob):
            raise Conflict(f"version {version} of this template already exists; reload and try again")
        self.blobs.put("templates", blob, report.normalised, CONTENT_TYPES[report.kind or "docx"])
        summary = report.to_dict()
        entry = {
            "version": version, "blob": blob, "sha256": hashlib.sha256(report.normalised).hexdigest(),
            "uploadedSha256": report.sha256, "size": len(report.normalised), "filename": filename[:200],
            "createdAt": now, "createdBy": principal.email, "placeholders": report.placeholders,
            "uses": summary["uses"], "warnings": [i for i in summary["issues"] if i["severity"] == "warning"],
            "mergedSplits": report.merged_splits, "reason": reason,
        }
        if existing is None:
            config = self._suggested(report.placeholders, entry["uses"])
            doc = {
                "id": tid, "tenantId": tenant_id, "name": (name or filename.rsplit(".", 1)[0])[:120],
                "kind": report.kind, "status": "active", "createdAt": now, "createdBy": principal.email,
                "updatedAt": now, "currentVersion": version, "versions": [entry],
                "config": config.model_dump(mode="json"), "configVersion": 1, "configured": False,
                "objectType": "opportunity",
            }
            saved = self.store.create(TEMPLATES, doc)
        else:
            def change(doc: Doc | None) -> Doc:
                if doc is None:
                    raise NotFound(f"template {tid} not found")
                if doc.get("currentVersion") != version - 1:
                    raise Conflict("someone added a version at the same time; reload and try again")
                cfg = TemplateConfig.model_validate(doc.get("config") or {})
                for n, ph in self._suggested(report.placeholders, entry["uses"]).placeholders.items():
                    cfg.placeholders.setdefault(n, ph)
                doc.update(currentVersion=version, versions=[*doc["versions"], entry], updatedAt=now,
                           config=cfg.model_dump(mode="json"))
                if name:
                    doc["name"] = name[:120]
                return doc

            saved = self.store.update(TEMPLATES, tenant_id, tid, change) or {}
        self.audit.record(principal, tenant_id, "template.version_added", f"template:{tid}", reason,
                          after={"version": version, "sha256": entry["sha256"], "placeholders": report.placeholders,
                                 "mergedSplits": report.merged_splits})
        return saved

    def link_google(self, principal: Principal, tenant_id: str, file_id: str, reason: str,
                    name: str | None = None) -> Doc:
        """Add a Google Doc or Slides deck by file id; its placeholders are scanned like a preflight."""
        require(principal, tenant_id, EDIT_ROLES)
        if not reason.strip():
            raise Invalid("a reason is required to link a Google file")
        if not re.fullmatch(r"[A-Za-z0-9_-]{5,200}", file_id.strip()):
            raise Invalid("a Google file id is the long id in the file's URL (letters, digits, '-' and '_')")
        scan = self._google(tenant_id).scan(file_id.strip())
        if scan.problems:
            raise Invalid("; ".join(f"{m} ({loc})" for m, loc in scan.problems))
        if not scan.uses:
            raise Invalid("no {{ placeholder }} was found in the Google file")
        now = clock.iso(self.now())
        tid = f"tpl-{uuid.uuid4().hex[:12]}"
        uses = [{"name": n, "raw": raw, "location": loc, "part": "", "where": "google", "context": "inline"}
                for n, raw, loc in scan.uses]
        entry = {"version": 1, "googleFileId": scan.file.id, "url": scan.file.url, "createdAt": now,
                 "createdBy": principal.email, "placeholders": scan.placeholders, "uses": uses, "warnings": [],
                 "reason": reason}
        doc = {"id": tid, "tenantId": tenant_id, "name": (name or scan.file.name)[:120], "kind": scan.file.kind,
               "status": "active", "createdAt": now, "createdBy": principal.email, "updatedAt": now,
               "currentVersion": 1, "versions": [entry], "configVersion": 1, "configured": False,
               "config": self._suggested(scan.placeholders, uses).model_dump(mode="json"), "objectType": "opportunity"}
        saved = self.store.create(TEMPLATES, doc)
        self.audit.record(principal, tenant_id, "template.google_linked", f"template:{tid}", reason,
                          after={"fileId": scan.file.id, "placeholders": scan.placeholders})
        return saved

    def archive(self, principal: Principal, tenant_id: str, template_id: str, reason: str) -> Doc:
        require(principal, tenant_id, EDIT_ROLES)
        if not reason.strip():
            raise Invalid("a reason is required to archive a template")

        def change(doc: Doc | None) -> Doc:
            if doc is None:
                raise NotFound(f"template {template_id} not found")
            doc.update(status="archived", updatedAt=clock.iso(self.now()))
            return doc

        out = self.store.update(TEMPLATES, tenant_id, template_id, change) or {}
        self.audit.record(principal, tenant_id, "template.archive", f"template:{template_id}", reason)
        return out

    @staticmethod
    def _suggested(names: list[str], uses: list[dict[str, Any]]) -> TemplateConfig:
        context: dict[str, str] = {}
        for u in uses:
            context.setdefault(u["name"], u["context"])
        return TemplateConfig(placeholders={n: suggest_config(n, context.get(n, "inline")) for n in names})

    def version_bytes(self, template: Doc, version: int | None = None) -> tuple[Doc, bytes]:
        v = version or template["currentVersion"]
        entry = next((e for e in template["versions"] if e["version"] == v), None)
        if entry is None:
            raise NotFound(f"{template['name']} has no version {v}")
        if "blob" not in entry:
            return entry, b""
        data = self.blobs.get("templates", entry["blob"])
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise Invalid(f"version {v} of {template['name']} does not match its recorded checksum; upload it again")
        return entry, data

    # configuration ------------------------------------------------------------------------------------------
    def configure(self, principal: Principal, tenant_id: str, template_id: str, config: Mapping[str, Any],
                  reason: str, object_type: str | None = None) -> Doc:
        require(principal, tenant_id, EDIT_ROLES)
        if not reason.strip():
            raise Invalid("a reason is required to change a template's configuration")
        try:
            cfg = TemplateConfig.model_validate(config)
        except ValidationError as e:
            msgs = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
            raise Invalid(f"the configuration is not valid: {msgs}") from None
        template = self.store.get(TEMPLATES, tenant_id, template_id)
        names = template["versions"][-1]["placeholders"]
        unknown = sorted(set(cfg.placeholders) - set(names))
        if unknown:
            raise Invalid(f"placeholder(s) {', '.join(unknown)} are not in the current version of the template")
        mismatched = [n for n, pc in cfg.placeholders.items() if pc.name != n]
        if mismatched:
            raise Invalid(f"configuration key and name differ for {', '.join(mismatched)}")
        if object_type not in (None, "opportunity", "account"):
            raise Invalid("documents are generated per opportunity or per account")
        before = template.get("config")

        def change(doc: Doc | None) -> Doc:
            if doc is None:
                raise NotFound(f"template {template_id} not found")
            doc.update(config=cfg.model_dump(mode="json"), configVersion=int(doc.get("configVersion") or 0) + 1,
                       configured=not cfg.check_against(names), updatedAt=clock.iso(self.now()),
                       configUpdatedBy=principal.email)
            if object_type:
                doc["objectType"] = object_type
            return doc

        out = self.store.update(TEMPLATES, tenant_id, template_id, change) or {}
        self.audit.record(principal, tenant_id, "template.configure", f"template:{template_id}", reason,
                          before=before, after=out.get("config"))
        return out

    # CRM records --------------------------------------------------------------------------------------------
    def records(self, principal: Principal, tenant_id: str, object_type: str = "opportunity",
                limit: int = 500) -> list[Doc]:
        """CRM records a document can be generated for (newest first), for pickers."""
        require(principal, tenant_id, EDIT_ROLES)
        return self.store.query(CRM, tenant_id, [Cond("objectType", "=", object_type)], order_by="updatedAt",
                                descending=True, limit=limit)

    def select_records(self, tenant_id: str, flt: RecordFilter) -> list[Doc]:
        rows = self.store.query(CRM, tenant_id, [Cond("objectType", "=", flt.object_type)], order_by="updatedAt",
                                descending=True, limit=20_000)
        conds = [Cond(c.field, c.op, c.value) for c in flt.conditions]
        picked = [r for r in rows if matches(r.get("data") or {}, conds)]
        return picked[: flt.limit]

    # quota and usage ----------------------------------------------------------------------------------------
    def _usage_id(self, month: str) -> str:
        return f"template-usage-{month}"

    def _quota(self, tenant_id: str) -> int:
        return int(self.tenants.settings(tenant_id).generation_quota_monthly)

    def usage(self, principal: Principal, tenant_id: str) -> Usage:
        require(principal, tenant_id, EDIT_ROLES | {"ops"})
        month = month_of(self.now())
        doc = self.store.get_or_none(ROLLUPS, tenant_id, self._usage_id(month)) or {}
        live = self._live_reservations(tenant_id, doc.get("reservations") or {})
        return Usage(month, int(doc.get("generated") or 0), sum(live.values()), self._quota(tenant_id))

    def _live_reservations(self, tenant_id: str, reservations: Mapping[str, int]) -> dict[str, int]:
        """Reservations of jobs still open; a job that ended or vanished no longer holds quota."""
        live = {}
        for job_id, n in reservations.items():
            job = self.store.get_or_none(JOBS, tenant_id, job_id)
            if job is not None and job.get("status") in OPEN:
                live[job_id] = int(n)
        return live

    def _reserve(self, tenant_id: str, job_id: str, n: int) -> Usage:
        month = month_of(self.now())
        quota = self._quota(tenant_id)
        seen: dict[str, Any] = {}

        def change(doc: Doc | None) -> Doc:
            doc = doc or {"kind": "template_usage", "bucket": month, "generated": 0, "reservations": {}}
            live = self._live_reservations(tenant_id, doc.get("reservations") or {})
            used, held = int(doc.get("generated") or 0), sum(live.values())
            if used + held + n > quota:
                left = max(0, quota - used - held)
                raise QuotaExceeded(
                    f"this job needs {n} document{'s' if n != 1 else ''} but only {left} of the monthly quota of "
                    f"{quota} {'is' if left == 1 else 'are'} left ({used} generated in {month}, {held} reserved by "
                    "running jobs); narrow the batch or ask an admin to raise the quota")
            live[job_id] = n
            doc.update(reservations=live, kind="template_usage", bucket=month)
            seen.update(used=used, held=held + n)
            return doc

        self.store.update(ROLLUPS, tenant_id, self._usage_id(month), change)
        return Usage(month, seen["used"], seen["held"], quota)

    def _settle(self, tenant_id: str, job: Doc, generated: int) -> None:
        month = job.get("month") or month_of(self.now())

        def change(doc: Doc | None) -> Doc:
            doc = doc or {"kind": "template_usage", "bucket": month, "generated": 0, "reservations": {}}
            res = dict(doc.get("reservations") or {})
            res.pop(job["id"], None)
            doc.update(reservations=res, generated=int(doc.get("generated") or 0) + generated)
            return doc

        self.store.update(ROLLUPS, tenant_id, self._usage_id(month), change)

    def overview_figures(self, tenant_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Overview contract: ``{tenant: {"used": documents generated this month, "quota": monthly quota}}``
        for tenants that have templates; others are left out (shown as not set up)."""
        month = month_of(self.now())
        out: dict[str, dict[str, Any]] = {}
        for tid in tenant_ids:
            if not self.store.count(TEMPLATES, tid):
                continue
            doc = self.store.get_or_none(ROLLUPS, tid, self._usage_id(month)) or {}
            out[tid] = {"used": int(doc.get("generated") or 0), "quota": self._quota(tid)}
        return out

    # generation jobs ----------------------------------------------------------------------------------------
    def start_generation(self, principal: Principal, tenant_id: str, template_id: str, reason: str, *,
                         record_ids: list[str] | None = None,
                         record_filter: RecordFilter | Mapping[str, Any] | None = None,
                         version: int | None = None) -> Doc:
        """Queue a job for one record or a batch; refused with the numbers when it would exceed the quota."""
        require(principal, tenant_id, EDIT_ROLES)
        if not reason.strip():
            raise Invalid("a reason is required to generate documents")
        template = self.store.get(TEMPLATES, tenant_id, template_id)
        if template.get("status") == "archived":
            raise Invalid(f"{template['name']} is archived; restore it or pick another template")
        entry = next((e for e in template["versions"] if e["version"] == (version or template["currentVersion"])),
                     None)
        if entry is None:
            raise NotFound(f"{template['name']} has no version {version}")
        cfg = TemplateConfig.model_validate(template.get("config") or {})
        problems = cfg.check_against(entry["placeholders"])
        if problems:
            raise Invalid(f"{template['name']} is not fully configured: {'; '.join(problems)}")
        flt: RecordFilter | None = None
        if record_ids:
            ids = list(dict.fromkeys(record_ids))
            if len(ids) > MAX_BATCH:
                raise Invalid(f"at most {MAX_BATCH} documents per job")
            for rid in ids:
                self.store.get(CRM, tenant_id, rid)  # NotFound names a bad id before anything is queued
        else:
            flt = record_filter if isinstance(record_filter, RecordFilter) else RecordFilter.model_validate(
                record_filter or {"object_type": template.get("objectType", "opportunity")})
            ids = [r["id"] for r in self.select_records(tenant_id, flt)]
            if not ids:
                raise Invalid("no CRM record matches this filter; widen it or sync the CRM first")
        job_id = f"gen-{uuid.uuid4().hex[:12]}"
        now = clock.iso(self.now())
        job = {
            "id": job_id, "tenantId": tenant_id, "templateId": template_id, "templateName": template["name"],
            "templateVersion": entry["version"], "kind": template["kind"], "config": cfg.model_dump(mode="json"),
            "configVersion": template.get("configVersion"), "recordIds": ids,
            "filter": flt.model_dump(mode="json") if flt else None, "total": len(ids), "done": 0, "succeeded": 0,
            "failed": 0, "progress": 0.0, "status": "queued", "createdAt": now, "createdBy": principal.email,
            "reason": reason, "month": month_of(self.now()), "startedAt": None, "finishedAt": None, "error": None,
        }
        self.store.create(JOBS, job)
        try:
            usage = self._reserve(tenant_id, job_id, len(ids))
        except QuotaExceeded as e:
            message = e.message
            self.store.update(JOBS, tenant_id, job_id, lambda d: {**(d or {}), "status": "refused",
                                                                    "error": message, "finishedAt": now})
            self.audit.record(principal, tenant_id, "template.generate_refused", f"template:{template_id}",
                              message, after={"documents": len(ids)})
            raise
        item = self.queue.enqueue(principal, QUEUE, KIND, tenant_id, {"jobId": job_id}, reason=reason,
                                  dedupe_key=f"gen:{job_id}", max_attempts=3, audit=False)
        job = self.store.update(JOBS, tenant_id, job_id, lambda d: {**(d or {}), "queueItemId": item["id"]}) or job
        self.audit.record(principal, tenant_id, "template.generate", f"template:{template_id}", reason,
                          after={"jobId": job_id, "documents": len(ids), "version": entry["version"],
                                 "quotaUsed": usage.generated, "quotaReserved": usage.reserved, "quota": usage.quota})
        return job

    def jobs(self, principal: Principal, tenant_id: str, template_id: str | None = None, limit: int = 50) -> list[Doc]:
        require(principal, tenant_id, EDIT_ROLES)
        conds = [Cond("templateId", "=", template_id)] if template_id else []
        return self.store.query(JOBS, tenant_id, conds, order_by="createdAt", descending=True, limit=limit)

    def job(self, principal: Principal, tenant_id: str, job_id: str) -> Doc:
        require(principal, tenant_id, EDIT_ROLES)
        return self.store.get(JOBS, tenant_id, job_id)

    def outputs(self, principal: Principal, tenant_id: str, job_id: str) -> list[Doc]:
        require(principal, tenant_id, EDIT_ROLES)
        return self.store.query(DOCS, tenant_id, [Cond("jobId", "=", job_id)], limit=MAX_BATCH + 10)

    def run_job(self, tenant_id: str, job_id: str, progress: Callable[[float | None, str | None], None] | None = None,
                cancelled: Callable[[], bool] | None = None) -> dict[str, Any]:
        """The worker's part: render every record of the job; per-document failures are recorded, not raised."""
        progress = progress or (lambda f, m: None)
        cancelled = cancelled or (lambda: False)
        job = self.store.get(JOBS, tenant_id, job_id)
        if job["status"] not in OPEN:
            return {"status": job["status"], "skipped": "job already finished"}
        started = job.get("startedAt") or clock.iso(self.now())
        job = self._job_update(tenant_id, job_id, status="running", startedAt=started)
        try:
            template = self.store.get(TEMPLATES, tenant_id, job["templateId"])
            entry, tpl_bytes = self.version_bytes(template, job["templateVersion"])
            cfg = TemplateConfig.model_validate(job["config"])
            crm = _CrmIndex(self.store, tenant_id, self.now())
            resolver = self._resolver(tenant_id)
            done = {d["id"]: d for d in self.store.query(DOCS, tenant_id, [Cond("jobId", "=", job_id)],
                                                         limit=MAX_BATCH + 10)}
            total = len(job["recordIds"])
            stopped = False
            for i, record_id in enumerate(job["recordIds"]):
                doc_id = _doc_id(job_id, record_id)
                if doc_id in done and done[doc_id]["status"] in {"succeeded", "failed"}:
                    continue  # a resumed job keeps what an earlier attempt finished
                if cancelled():
                    stopped = True
                    break
                out = self._generate_one(tenant_id, job, template, entry, tpl_bytes, cfg, crm, resolver, record_id)
                done[doc_id] = out
                ok = sum(1 for d in done.values() if d["status"] == "succeeded")
                bad = sum(1 for d in done.values() if d["status"] == "failed")
                self._job_update(tenant_id, job_id, done=ok + bad, succeeded=ok, failed=bad,
                                 progress=(ok + bad) / max(total, 1))
                progress((i + 1) / max(total, 1), f"{ok + bad} of {total} documents ({bad} failed)")
        except CastielError as e:
            if isinstance(e, TransientError | StoreUnavailable):
                raise  # the queue retries; finished documents are kept and skipped next time
            self._finish(tenant_id, job_id, "failed", e.message)
            raise
        except Exception as e:
            self._finish(tenant_id, job_id, "failed", f"{type(e).__name__}: {e}")
            raise
        ok = sum(1 for d in done.values() if d["status"] == "succeeded")
        bad = sum(1 for d in done.values() if d["status"] == "failed")
        status = "cancelled" if stopped else "succeeded" if bad == 0 else "failed" if ok == 0 else "partial"
        final = self._finish(tenant_id, job_id, status, None if bad == 0 else f"{bad} of {total} documents failed")
        return {"status": status, "succeeded": ok, "failed": bad, "total": total, "jobId": final["id"]}

    def _finish(self, tenant_id: str, job_id: str, status: str, error: str | None) -> Doc:
        job = self._job_update(tenant_id, job_id, status=status, error=error, finishedAt=clock.iso(self.now()))
        self._settle(tenant_id, job, int(job.get("succeeded") or 0))
        self.audit.record(SYSTEM, tenant_id, f"template.generate_{status}", f"job:{job_id}", error or "",
                          after={"succeeded": job.get("succeeded"), "failed": job.get("failed"),
                                 "total": job.get("total")})
        return job

    def _job_update(self, tenant_id: str, job_id: str, **fields: Any) -> Doc:
        def change(doc: Doc | None) -> Doc:
            if doc is None:
                raise NotFound(f"generation job {job_id} not found")
            doc.update(fields)
            return doc

        out = self.store.update(JOBS, tenant_id, job_id, change)
        assert out is not None
        return out

    def _resolver(self, tenant_id: str) -> Resolver:
        def read_blob(container: str, name: str) -> bytes:
            # a configuration can only point at its own tenant's blobs
            if container not in {"templates", "outputs"} or not name.startswith(f"{tenant_id}/"):
                raise Invalid(f"image blob:{container}/{name} is not one of this tenant's template images")
            return self.blobs.get(container, name)

        return Resolver(llm=self.llm, prompts=self.prompts,
                        images=ImageLoader(read_blob=read_blob, allow_remote=self.allow_remote_images))

    def add_image(self, principal: Principal, tenant_id: str, filename: str, data: bytes, reason: str) -> str:
        """Store a checked image (PNG, JPEG, GIF) for image placeholders; returns its ``blob:`` reference."""
        require(principal, tenant_id, EDIT_ROLES)
        if not reason.strip():
            raise Invalid("a reason is required to add an image")
        image = validate_image(data, source=filename)
        digest = hashlib.sha256(data).hexdigest()[:10]
        ext = image.format.lower().replace("jpeg", "jpg")
        name = f"{tenant_id}/assets/{_slug(filename.rsplit('.', 1)[0], 40)}-{digest}.{ext}"
        self.blobs.put("templates", name, data, image.content_type)
        self.audit.record(principal, tenant_id, "template.image_added", f"blob:templates/{name}", reason,
                          after={"size": len(data), "format": image.format, "pixels": [image.width, image.height]})
        return f"blob:templates/{name}"

    def images(self, principal: Principal, tenant_id: str) -> list[str]:
        require(principal, tenant_id, EDIT_ROLES)
        return [f"blob:templates/{n}" for n in self.blobs.list("templates", f"{tenant_id}/assets/")]

    def _generate_one(self, tenant_id: str, job: Doc, template: Doc, entry: Doc, tpl_bytes: bytes,
                      cfg: TemplateConfig, crm: _CrmIndex, resolver: Resolver, record_id: str) -> Doc:
        doc_id = _doc_id(job["id"], record_id)
        base = {"id": doc_id, "tenantId": tenant_id, "jobId": job["id"], "templateId": template["id"],
                "templateVersion": entry["version"], "configVersion": job.get("configVersion"), "recordId": record_id,
                "createdAt": clock.iso(self.now()), "kind": template["kind"]}
        try:
            ctx, label = crm.context(record_id)
            base["recordLabel"] = label
            res = resolver.resolve(cfg, ctx)
            if not res.ok:
                raise _DocFailed(list(res.errors.values()), res.provenance)
            title = f"{template['name']} - {label}"
            stored = self._store_output(tenant_id, job["id"], doc_id, 1, template, tpl_bytes, res.values, title)
            doc = {**base, **stored, "status": "succeeded", "title": title, "provenance": res.provenance,
                   "errors": [], "version": 1, "history": []}
        except _DocFailed as f:
            doc = {**base, "status": "failed", "errors": f.reasons, "provenance": f.provenance}
        except (Invalid, NotFound, ConfigError) as e:
            doc = {**base, "status": "failed", "errors": [e.message], "provenance": {}}
        doc.setdefault("recordLabel", record_id)
        return self.store.upsert(DOCS, doc)

    def _store_output(self, tenant_id: str, job_id: str, doc_id: str, version: int, template: Doc,
                      tpl_bytes: bytes, values: Mapping[str, RenderValue], title: str) -> dict[str, Any]:
        """Render fully in memory, then write the file, then (by the caller) the record: a crash leaves at
        most an unreferenced blob, never a 'succeeded' document without its file."""
        values_ref = f"{tenant_id}/generated/{job_id}/{doc_id}-v{version}.values.json"
        stored_values = {k: dump_value(v, lambda img: self._store_image(tenant_id, job_id, img))
                         for k, v in values.items()}
        kind = template["kind"]
        if kind in {"gdoc", "gslides"}:
            google = self._google(tenant_id)
            out = google.generate(template["versions"][0]["googleFileId"], values, title=title,
                                  image_url=lambda name, img: self._image_url(tenant_id, job_id, img))
            self.blobs.put("outputs", values_ref, json.dumps(stored_values).encode(), "application/json")
            return {"googleFileId": out.file.id, "url": out.file.url, "valuesBlob": values_ref,
                    "filename": title}
        render = render_docx if kind == "docx" else render_pptx
        data = render(tpl_bytes, values)
        blob = f"{tenant_id}/generated/{job_id}/{doc_id}-v{version}.{kind}"
        self.blobs.put("outputs", values_ref, json.dumps(stored_values).encode(), "application/json")
        self.blobs.put("outputs", blob, data, CONTENT_TYPES[kind])
        return {"blob": blob, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "valuesBlob": values_ref,
                "filename": f"{_slug(title)}.{kind}"}

    def _store_image(self, tenant_id: str, job_id: str, img: ImageValue) -> str:
        name = f"{tenant_id}/generated/assets/{hashlib.sha256(img.data).hexdigest()[:24]}.{img.format.lower()}"
        if not self.blobs.exists("outputs", name):
            self.blobs.put("outputs", name, img.data, img.content_type)
        return f"blob:outputs/{name}"

    def _image_url(self, tenant_id: str, job_id: str, img: ImageValue) -> str:
        if self.google_image_url is not None:
            return self.google_image_url(tenant_id, job_id, img)
        ref = self._store_image(tenant_id, job_id, img)[len("blob:outputs/"):]
        url = self.blobs.download_url("outputs", ref, expiry_minutes=30)
        if url is None:
            raise ConfigError("Google fetches images by URL, and this blob store has no shareable URLs; use Azure "
                              "Blob Storage (SAS URLs) for templates with images or charts")
        return url

    def _google(self, tenant_id: str) -> Any:
        if self.google_factory is None:
            raise ConfigError("Google Docs/Slides templates are not set up: set CASTIEL_GOOGLE_SERVICE_ACCOUNT_JSON "
                              "to a service account key with Drive, Docs and Slides access")
        return self.google_factory(tenant_id)

    # outputs ------------------------------------------------------------------------------------------------
    def download(self, principal: Principal, tenant_id: str, doc_id: str) -> tuple[str, bytes, str | None]:
        """(file name, bytes, short-lived URL where the blob store has one); audited."""
        require(principal, tenant_id, EDIT_ROLES)
        doc = self.store.get(DOCS, tenant_id, doc_id)
        if doc["status"] != "succeeded" or "blob" not in doc:
            raise Invalid(f"{doc.get('recordLabel', doc_id)} has no file to download ({doc['status']})")
        data = self.blobs.get("outputs", doc["blob"])
        url = self.blobs.download_url("outputs", doc["blob"], expiry_minutes=15)
        self.audit.record(principal, tenant_id, "template.download", f"generated:{doc_id}", "",
                          after={"version": doc.get("version")})
        return doc["filename"], data, url

    def regenerate_field(self, principal: Principal, tenant_id: str, doc_id: str, name: str, reason: str) -> Doc:
        """Resolve one field again (e.g. a new LLM answer) and re-render with every other value as it was."""
        require(principal, tenant_id, EDIT_ROLES)
        if not reason.strip():
            raise Invalid("a reason is required to re-generate a field")
        doc = self.store.get(DOCS, tenant_id, doc_id)
        if doc["status"] != "succeeded":
            raise Invalid("only a generated document can have a field re-generated; generate it again instead")
        job = self.store.get(JOBS, tenant_id, doc["jobId"])
        cfg = TemplateConfig.model_validate(job["config"])
        if name not in cfg.placeholders:
            raise Invalid(f"{name} is not a placeholder of this document")
        template = self.store.get(TEMPLATES, tenant_id, doc["templateId"])
        entry, tpl_bytes = self.version_bytes(template, doc["templateVersion"])
        stored = json.loads(self.blobs.get("outputs", doc["valuesBlob"]))
        values = {k: load_value(v, self._read_ref) for k, v in stored.items()}
        ctx, _ = _CrmIndex(self.store, tenant_id, self.now()).context(doc["recordId"])
        res: Resolution = self._resolver(tenant_id).resolve(cfg, ctx, only={name})
        if not res.ok:
            raise Invalid(f"the field could not be re-generated: {res.errors[name]}")
        values[name] = res.values[name]
        version = int(doc.get("version") or 1) + 1
        out = self._store_output(tenant_id, job["id"], doc_id, version, template, tpl_bytes, values, doc["title"])
        prov = dict(doc.get("provenance") or {})
        prov[name] = {**res.provenance[name], "regeneratedAt": clock.iso(self.now()), "regeneratedBy": principal.email}
        history = [*doc.get("history", []), {k: doc.get(k) for k in ("version", "blob", "sha256", "valuesBlob")}]

        def change(current: Doc | None) -> Doc:
            if current is None or current.get("version") != doc.get("version"):
                raise Conflict("the document changed while re-generating; reload and try again")
            current.update(out, version=version, provenance=prov, history=history)
            return current

        saved = self.store.update(DOCS, tenant_id, doc_id, change) or {}
        self.audit.record(principal, tenant_id, "template.regenerate_field", f"generated:{doc_id}", reason,
                          before={"version": version - 1,
                                  "value": (doc.get("provenance") or {}).get(name, {}).get("value")},
                          after={"version": version, "field": name, "value": prov[name].get("value")})
        return saved

    def _read_ref(self, ref: str) -> bytes:
        container, _, name = ref[len("blob:"):].partition("/")
        return self.blobs.get(container, name)

    # preview ------------------------------------------------------------------------------------------------
    def preview(self, principal: Principal, tenant_id: str, template_id: str, record_id: str | None = None,
                version: int | None = None, dpi: int = 60) -> PreviewResult:
        """Render with a chosen CRM record (or sample data) and convert with LibreOffice; nothing is stored."""
        require(principal, tenant_id, EDIT_ROLES)
        template = self.store.get(TEMPLATES, tenant_id, template_id)
        if template["kind"] not in {"docx", "pptx"}:
            raise Invalid("previews are for Word and PowerPoint templates; open the Google file to see it")
        entry, tpl_bytes = self.version_bytes(template, version)
        cfg = TemplateConfig.model_validate(template.get("config") or {})
        missing = cfg.check_against(entry["placeholders"])
        if missing:
            raise Invalid(f"configure every placeholder before previewing: {'; '.join(missing)}")
        if record_id:
            ctx, label = _CrmIndex(self.store, tenant_id, self.now()).context(record_id)
        else:
            ctx, label = _sample_context(self.now()), "sample data (no CRM record)"
        res = self._resolver(tenant_id).resolve(cfg, ctx)
        if not res.ok:
            raise Invalid("the preview cannot be filled: " + "; ".join(res.errors.values()))
        render = render_docx if template["kind"] == "docx" else render_pptx
        data = render(tpl_bytes, res.values)
        pv = render_preview(data, template["kind"], timeout=self.preview_timeout, dpi=dpi)
        self.audit.record(principal, tenant_id, "template.preview", f"template:{template_id}", "",
                          after={"record": record_id, "version": entry["version"], "seconds": round(pv.seconds, 2)})
        return PreviewResult(pv, data, f"{_slug(template['name'] + ' preview')}.{template['kind']}", res.provenance,
                             res.errors, label)


class CatalogPrompts:
    """The prompt catalog as a ``PromptSource``: a pinned version, or the one its ``production`` label serves."""

    def __init__(self, catalog: Any, label: str = "production") -> None:
        self.catalog, self.label = catalog, label

    def render_prompt(self, prompt: str, version: int | None, variables: Mapping[str, str]) -> RenderedPrompt:
        if version is None:
            version = int(self.catalog.resolve(SYSTEM, prompt, self.label)["version"])
        return RenderedPrompt(self.catalog.render(SYSTEM, prompt, version, dict(variables)), prompt, version)


class ChatTextModel:
    """The configured chat client as a ``TextModel``: one user message in, the answer's text out.
    The per-call time limit is the client's own (its request timeout and retries)."""

    def __init__(self, client: Any, max_tokens: int = 800) -> None:
        self.client, self.max_tokens = client, max_tokens
        self.model_name = str(getattr(client, "model", "llm"))

    def complete(self, prompt: str, *, timeout: float) -> str:
        result = self.client.chat([{"role": "user", "content": prompt}], temperature=0.2, max_tokens=self.max_tokens)
        return str(result.text)


DEMO_PROMPTS = {
    "template_executive_summary": (
        "Template: proposal executive summary",
        "Two or three sentences opening a sales proposal, from the opportunity and its account.",
        "Write a two to three sentence executive summary for a sales proposal to {{ account }} ({{ industry }}) "
        "for the opportunity \"{{ opportunity }}\" worth {{ amount }}, currently at stage {{ stage }}. "
        "Be concrete and plain; no greetings, no bullet points.",
        ["account", "industry", "opportunity", "amount", "stage"]),
    "template_qbr_highlights": (
        "Template: QBR highlights",
        "Three to five short highlights for a quarterly business review slide.",
        "List three to five short highlights (one per line, each under 120 characters) for a quarterly business "
        "review with {{ account }}: the largest deal is \"{{ opportunity }}\" at stage {{ stage }}, "
        "worth {{ amount }}.",
        ["account", "opportunity", "stage", "amount"]),
}


def _ensure_demo_prompts(services: Any) -> None:
    """The demo templates' prompts in the catalog (a production label on v1), unless they exist already."""
    catalog = getattr(services, "prompts", None)
    if catalog is None:
        return
    for slot, (title, description, template, names) in DEMO_PROMPTS.items():
        _, created = catalog.ensure_slot(SYSTEM, slot, title, description)
        if created or not catalog.versions(SYSTEM, slot):
            variables = [{"name": n, "description": f"the {n} from the CRM record"} for n in names]
            v = catalog.add_version(SYSTEM, slot, template, variables, notes="demo seed for the sample templates")
            catalog.move_label(SYSTEM, slot, "production", int(v["version"]), "demo seed")


class _DocFailed(Exception):
    def __init__(self, reasons: list[str], provenance: dict[str, Any]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons, self.provenance = reasons, provenance


def _doc_id(job_id: str, record_id: str) -> str:
    return "doc-" + hashlib.sha256(f"{job_id}:{record_id}".encode()).hexdigest()[:20]


def _quarter(now: dt.datetime) -> str:
    return f"Q{(now.month - 1) // 3 + 1} {now.year}"


def _sample_context(now: dt.datetime) -> RecordContext:
    data = json.loads(json.dumps(SAMPLE_CONTEXT))
    data.update(today=now.date(), quarter=_quarter(now))
    return RecordContext(data=data, refs={"opportunity": {"objectType": "sample"}, "account": {"objectType": "sample"}})


class _CrmIndex:
    """CRM records of one tenant, loaded once per job, joined the way templates address them:
    ``opportunity.*``, ``account.*`` (the opportunity's account) and ``account.opportunities``."""

    def __init__(self, store: DocumentStore, tenant_id: str, now: dt.datetime) -> None:
        self.store, self.tenant_id, self.now = store, tenant_id, now
        self._accounts: dict[tuple[str, str], Doc] | None = None
        self._opps_by_account: dict[tuple[str, str], list[Doc]] | None = None

    def _load(self) -> None:
        if self._accounts is not None:
            return
        accounts = self.store.query(CRM, self.tenant_id, [Cond("objectType", "=", "account")], limit=20_000)
        opps = self.store.query(CRM, self.tenant_id, [Cond("objectType", "=", "opportunity")], limit=50_000)
        self._accounts = {(a.get("connectionId", ""), a["sourceId"]): a for a in accounts}
        self._opps_by_account = {}
        for o in opps:
            key = (o.get("connectionId", ""), str((o.get("data") or {}).get("accountId") or ""))
            self._opps_by_account.setdefault(key, []).append(o)
        for rows in self._opps_by_account.values():
            rows.sort(key=lambda r: -float((r.get("data") or {}).get("amount") or 0))

    @staticmethod
    def _ref(rec: Doc) -> dict[str, Any]:
        return {"objectType": rec.get("objectType"), "id": rec["id"], "sourceId": rec.get("sourceId"),
                "connectionId": rec.get("connectionId"), "updatedAt": rec.get("updatedAt")}

    def context(self, record_id: str) -> tuple[RecordContext, str]:
        rec = self.store.get_or_none(CRM, self.tenant_id, record_id)
        if rec is None:
            raise NotFound(f"CRM record {record_id} no longer exists (deleted in the CRM since the job was queued)")
        self._load()
        assert self._accounts is not None and self._opps_by_account is not None
        conn = rec.get("connectionId", "")
        data: dict[str, Any] = {"today": self.now.date(), "quarter": _quarter(self.now)}
        refs: dict[str, dict[str, Any]] = {}
        opp: Doc | None
        account: Doc | None
        if rec["objectType"] == "opportunity":
            opp = rec
            account = self._accounts.get((conn, str((rec.get("data") or {}).get("accountId") or "")))
        elif rec["objectType"] == "account":
            account = rec
            related = self._opps_by_account.get((conn, rec["sourceId"]), [])
            open_ = [o for o in related if not (o.get("data") or {}).get("isClosed")]
            opp = (open_ or related)[0] if (open_ or related) else None
        else:
            raise Invalid(f"documents are generated per opportunity or account, not {rec['objectType']}")
        if opp is not None:
            data["opportunity"] = {**(opp.get("data") or {}), "id": opp.get("sourceId")}
            refs["opportunity"] = self._ref(opp)
        if account is not None:
            related = self._opps_by_account.get((conn, account["sourceId"]), [])
            data["account"] = {**(account.get("data") or {}), "id": account.get("sourceId"),
                               "opportunities": [{**(o.get("data") or {}), "id": o.get("sourceId")} for o in related]}
            refs["account"] = self._ref(account)
        label = (rec.get("data") or {}).get("name") or rec.get("sourceId") or record_id
        return RecordContext(data=data, refs=refs), str(label)


def seed_templates_demo(services: Any, tenant_id: str, actor: Principal) -> list[Doc]:
    """Demo hook: upload both sample templates through the real preflight, configure them against the demo
    CRM fields and store the logo they use, so a content admin can preview and generate at first start."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "data" / "templates"
    svc: TemplateService = services.templates
    _ensure_demo_prompts(services)
    logo = (root / "castiel-logo.png").read_bytes()
    services.blobs.put("templates", f"{tenant_id}/assets/castiel-logo.png", logo, "image/png")
    existing = {t["name"] for t in svc.list_templates(actor, tenant_id, include_archived=True)}
    out = []
    for filename, name, object_type in (("proposal.docx", "Proposal", "opportunity"),
                                        ("qbr.pptx", "Quarterly business review", "account")):
        if name in existing:
            continue
        data = (root / filename).read_bytes()
        report = svc.check_upload(actor, tenant_id, filename, data)
        if not report.accepted:
            raise Invalid(f"demo template {filename} failed preflight: {[i.message for i in report.errors]}")
        tpl = svc.add_version(actor, tenant_id, filename, data, "demo seed", name=name)
        config_text = (root / filename.replace(f".{filename.rsplit('.', 1)[1]}", ".config.json")).read_text()
        config = json.loads(config_text.replace("{tenant}", tenant_id))
        out.append(svc.configure(actor, tenant_id, tpl["id"], config, "demo seed", object_type=object_type))
    return out
