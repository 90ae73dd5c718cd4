"""Tenants and their settings (document settings, MFA policy, generation quota), with defaults."""

from __future__ import annotations

import builtins
import re
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from core import clock
from core.adapters.store import Doc, DocumentStore
from core.errors import Conflict, Invalid, NotFound
from core.services.access import ADMIN, Principal, require
from core.services.audit import AuditLog


class DocumentSettings(BaseModel):
    chunk_tokens: int = Field(default=256, ge=32, le=2048)
    chunk_overlap: int = Field(default=32, ge=0, le=512)
    max_document_mb: int = Field(default=50, ge=1, le=500)


class TenantSettings(BaseModel):
    """Per-tenant settings; ``migrate`` fills in defaults for any that are missing."""

    documents: DocumentSettings = Field(default_factory=DocumentSettings)
    mfa_required: bool = False
    generation_quota_monthly: int = Field(default=1000, ge=0)
    cost_threshold_monthly_usd: float = Field(default=500.0, ge=0)


_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,40}$")


class TenantService:
    CONTAINER = "tenants"

    def __init__(self, store: DocumentStore, audit: AuditLog) -> None:
        self.store = store
        self.audit = audit

    def _get(self, tenant_id: str) -> Doc:
        return self.store.get(self.CONTAINER, tenant_id, tenant_id)

    def create(self, principal: Principal, tenant_id: str, name: str, demo: bool = False, reason: str = "") -> Doc:
        require(principal, None, {ADMIN})
        if not _SLUG.match(tenant_id):
            raise Invalid("tenant id must be 2-41 lowercase letters, digits or '-', starting with a letter or digit")
        if not name.strip():
            raise Invalid("tenant name is required")
        doc = {
            "id": tenant_id,
            "tenantId": tenant_id,
            "name": name.strip(),
            "demo": demo,
            "createdAt": clock.iso(),
            "settings": TenantSettings().model_dump(),
        }
        try:
            created = self.store.create(self.CONTAINER, doc)
        except Conflict:
            raise Conflict(f"tenant {tenant_id!r} already exists") from None
        self.audit.record(principal, tenant_id, "tenant.create", f"tenant:{tenant_id}", reason, after={"name": name})
        return created

    def get(self, principal: Principal, tenant_id: str) -> Doc:
        require(principal, tenant_id)
        try:
            return self._get(tenant_id)
        except NotFound:
            raise NotFound(f"tenant {tenant_id!r} does not exist") from None

    def list(self, principal: Principal) -> list[Doc]:
        require(principal)
        if principal.platform_wide:
            return self.store.query(self.CONTAINER, None, order_by="id")
        return [self._get(principal.tenant_id)] if principal.tenant_id else []

    def all_ids(self) -> builtins.list[str]:
        """Every tenant id, for the worker and migrations (no principal: not for pages)."""
        return [d["id"] for d in self.store.query(self.CONTAINER, None, order_by="id")]

    def settings(self, tenant_id: str) -> TenantSettings:
        doc = self.store.get_or_none(self.CONTAINER, tenant_id, tenant_id)
        return TenantSettings.model_validate((doc or {}).get("settings") or {})

    def update_settings(self, principal: Principal, tenant_id: str, changes: dict[str, Any], reason: str) -> Doc:
        require(principal, tenant_id, {ADMIN, "ops"})
        if not reason.strip():
            raise Invalid("a reason is required to change tenant settings")
        current = self.get(principal, tenant_id)
        merged = {**current.get("settings", {}), **changes}
        try:
            valid = TenantSettings.model_validate(merged).model_dump()
        except ValidationError as e:
            msgs = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
            raise Invalid(f"invalid tenant settings: {msgs}") from None
        updated = self.store.upsert(self.CONTAINER, {**current, "settings": valid}, if_match=current["_etag"])
        self.audit.record(
            principal,
            tenant_id,
            "tenant.settings",
            f"tenant:{tenant_id}",
            reason,
            before=current.get("settings"),
            after=valid,
        )
        return updated

    def fill_default_settings(self) -> builtins.list[str]:
        """Add defaults for settings a tenant lacks (used by migrate); returns tenants changed."""
        changed = []
        for doc in self.store.query(self.CONTAINER, None):
            full = TenantSettings.model_validate(doc.get("settings") or {}).model_dump()
            if full != doc.get("settings"):
                self.store.upsert(self.CONTAINER, {**doc, "settings": full}, if_match=doc["_etag"])
                changed.append(doc["id"])
        return changed

    def tenants_missing_defaults(self) -> builtins.list[str]:
        return [
            d["id"]
            for d in self.store.query(self.CONTAINER, None)
            if TenantSettings.model_validate(d.get("settings") or {}).model_dump() != d.get("settings")
        ]
