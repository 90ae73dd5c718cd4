"""The one composition root: builds every adapter and service from settings.

Nothing is built at import time. The app calls ``build`` inside ``st.cache_resource``; the
worker and the CLI call it once at start. Tests pass keyword overrides (``store=...``,
``blobs=...``) to swap in fakes or servers on loopback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from core.adapters.blobs import BlobStore, LocalBlobStore
from core.adapters.store import DocumentStore
from core.config import Settings, load_settings
from core.crypto import SecretBox
from core.services.audit import AuditLog
from core.services.tenants import TenantService
from core.services.users import UserService
from core.services.work_queue import WorkQueue


def build_store(settings: Settings) -> DocumentStore:
    if settings.store == "cosmos":
        from core.adapters.cosmos_store import CosmosStore

        assert settings.cosmos_endpoint and settings.cosmos_key
        return CosmosStore(
            endpoint=settings.cosmos_endpoint,
            key=settings.cosmos_key.get_secret_value(),
            database=settings.cosmos_database,
            verify_tls=settings.cosmos_verify_tls,
        )
    from core.adapters.sqlite_store import SqliteStore

    return SqliteStore(settings.sqlite_path)


def build_blobs(settings: Settings) -> BlobStore:
    if settings.blob == "azure":
        from core.adapters.azure_blobs import AzureBlobStore

        assert settings.azure_storage_connection_string
        return AzureBlobStore(settings.azure_storage_connection_string.get_secret_value())
    return LocalBlobStore(settings.blob_root)


@dataclass
class Services:
    """Everything the app, the worker and the CLI use, wired once."""

    settings: Settings
    store: DocumentStore
    blobs: BlobStore
    overrides: dict[str, Any] = field(default_factory=dict)

    def _override(self, name: str) -> Any:
        return self.overrides.get(name)

    @cached_property
    def box(self) -> SecretBox:
        return self._override("box") or SecretBox(self.settings.fernet_key())

    @cached_property
    def audit(self) -> AuditLog:
        return self._override("audit") or AuditLog(self.store)

    @cached_property
    def tenants(self) -> TenantService:
        return self._override("tenants") or TenantService(self.store, self.audit)

    @cached_property
    def users(self) -> UserService:
        return self._override("users") or UserService(
            self.store, self.audit, self.tenants, self.box,
            lockout_attempts=self.settings.lockout_attempts, lockout_minutes=self.settings.lockout_minutes,
        )

    @cached_property
    def queue(self) -> WorkQueue:
        return self._override("queue") or WorkQueue(self.store, self.audit, lease_seconds=self.settings.lease_seconds)

    # Feature services are added below, one cached_property each, built from the pieces above.


def build(settings: Settings | None = None, **overrides: Any) -> Services:
    settings = settings or load_settings()
    store = overrides.pop("store", None) or build_store(settings)
    blobs = overrides.pop("blobs", None) or build_blobs(settings)
    return Services(settings=settings, store=store, blobs=blobs, overrides=overrides)
