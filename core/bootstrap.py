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
from core.services.integrations import IntegrationsService
from core.services.sync_engine import SyncEngine
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

    # overview, telemetry and alerting (issue 8)
    @cached_property
    def telemetry(self) -> Any:
        from core.observability.wiring import recorder_for

        return self._override("telemetry") or recorder_for(self)

    @cached_property
    def alerting(self) -> Any:
        from core.observability.wiring import build_alerting

        return self._override("alerting") or build_alerting(self)

    @cached_property
    def overview(self) -> Any:
        from core.observability.wiring import build_overview

        return self._override("overview") or build_overview(self)

    @cached_property
    def telemetry_views(self) -> Any:
        from core.observability.wiring import build_telemetry_views

        return self._override("telemetry_views") or build_telemetry_views(self)

    # prompts and experiments (issue 5)
    @cached_property
    def prompts(self) -> Any:
        from core.services.prompts import PromptCatalog

        return self._override("prompts") or PromptCatalog(self.store, self.audit)

    @cached_property
    def experiments(self) -> Any:
        from core.services.experiments import ExperimentService

        return self._override("experiments") or ExperimentService(self.store, self.audit, self.prompts)

    @cached_property
    def eval_runs(self) -> Any:
        from core.services.intents import EvaluationRuns

        return self._override("eval_runs") or EvaluationRuns(self.store, self.audit)

    @cached_property
    def chat_llm(self) -> Any:
        """The configured chat model (openai SDK), or None when no LLM is configured."""
        from core.adapters.llm_openai import OpenAIChatClient

        return self._override("chat_llm") or OpenAIChatClient.from_settings(self.settings)

    # embedding pipeline (issue 4)
    @cached_property
    def embeddings(self) -> Any:
        if self._override("embeddings"):
            return self._override("embeddings")
        from core.services.embeddings import EmbeddingsService, default_embedder_factories

        s = self.settings
        telemetry = self.telemetry if getattr(s, "telemetry_enabled", False) else None
        return EmbeddingsService(
            self.store, self.audit, self.queue, embedders=self._override("embedders") or default_embedder_factories(s),
            default=self._override("embedder_default") or s.embedder, index_root=s.data_dir / "vectors",
            strict_index=bool(self._override("strict_index")), telemetry=telemetry,
            vector_search=self._vector_search(),
        )

    def _vector_search(self) -> Any:
        """Cosmos DB vector search when the store is Cosmos; None (the embedded index) otherwise.

        ``vector_search=None`` as an override turns it off (e.g. on the local Cosmos test server,
        which has no VectorDistance); a ``cosmos_vector_search`` setting of False does the same.
        """
        if "vector_search" in self.overrides:
            return self.overrides["vector_search"]
        if self.store.backend != "cosmos" or not getattr(self.settings, "cosmos_vector_search", True):
            return None
        from core.adapters.cosmos_vector import CosmosVectorSearch

        return CosmosVectorSearch.from_store(self.store)

    # integrations (issue 3)
    @cached_property
    def sync_engine(self) -> SyncEngine:
        if self._override("sync_engine"):
            return self._override("sync_engine")
        from connectors.base import build_connector  # the composition root is where connectors meet core
        from core.embeddings.changes import document_change_hook  # every synced document becomes embedding work

        hook = self._override("on_document_changed") or document_change_hook(self.store)
        return SyncEngine(self.store, build_connector, self.box, hook, audit=self.audit)

    @cached_property
    def integrations(self) -> IntegrationsService:
        if self._override("integrations"):
            return self._override("integrations")
        from connectors.base import PROVIDER_LABELS, get_connector_class

        return IntegrationsService(self.store, self.audit, self.queue, self.sync_engine, self.box,
                                   get_connector_class, PROVIDER_LABELS)

    # templates (issue 7)
    @cached_property
    def templates(self) -> Any:
        if self._override("templates"):
            return self._override("templates")
        from core.services.templates import CatalogPrompts, ChatTextModel, TemplateService

        llm = self._override("template_llm") or (ChatTextModel(self.chat_llm) if self.chat_llm else None)
        return TemplateService(self.store, self.blobs, self.audit, self.queue, self.tenants, llm=llm,
                               prompts=self._override("template_prompts") or CatalogPrompts(self.prompts),
                               google_factory=self._override("google_templates") or self._google_factory())

    def _google_factory(self) -> Any:
        """Builds the Google Docs/Slides client from the configured service account, or None when not set."""
        key = self.settings.google_service_account_json
        if key is None:
            return None
        import json

        from core.adapters.google_templates import GoogleTemplates
        from core.errors import Invalid

        try:
            info = json.loads(key.get_secret_value())
        except ValueError:
            raise Invalid("CASTIEL_GOOGLE_SERVICE_ACCOUNT_JSON is not JSON: paste the service account key file's "
                          "contents") from None
        subject = self.settings.google_impersonate
        return lambda tenant_id: GoogleTemplates.from_service_account(info, subject)

    # models (issue 6)
    @cached_property
    def models(self) -> Any:
        if self._override("models"):
            return self._override("models")
        from core.services.models import ModelService
        from ml.backend import MlflowModelBackend  # the composition root is where ml meets core

        backend = self._override("model_backend") or MlflowModelBackend.from_settings(self.settings)
        return ModelService(self.store, self.blobs, self.audit, self.queue, backend)


def build(settings: Settings | None = None, **overrides: Any) -> Services:
    settings = settings or load_settings()
    store = overrides.pop("store", None) or build_store(settings)
    if settings.telemetry_enabled and overrides.pop("instrument_store", True):
        from core.observability.instrumented_store import instrument

        store = instrument(store)  # store calls are timed into telemetry rollups (issue 8)
    blobs = overrides.pop("blobs", None) or build_blobs(settings)
    return Services(settings=settings, store=store, blobs=blobs, overrides=overrides)
