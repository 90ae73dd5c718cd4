"""The Integrations service: connections across tenants, their health and history, and the support actions.

Reads serve the Integrations screen from small records only: the ``connections`` documents
(which carry what the health model needs) and per-connection daily rollups, never a scan of
``sync_runs``; one connection's detail reads its last 30 runs through the
(connectionId, queuedAt) index. Actions (resync, full resync, retry, pause, resume, test) are
checked against the acting user's role and tenant, enqueued on the sync queues, and audited
with the reason given. Credentials are sealed with the SecretBox and never returned.

Connecting an account by consent (``begin_consent`` / ``complete_consent``): an admin is sent to
the vendor's authorize page with a one-time ``state``; its record (``oauth_consents``, platform
partition, id = hash of the state) holds the connection, the user, a 10-minute expiry and the
connector's sealed secret (PKCE verifier or msal flow). The vendor's redirect is accepted once:
the record is consumed by an etag-guarded update, so two tabs racing get one success and one
"already used". The code is redeemed through the connector (never an HTTP client here) and the
tokens are sealed into the credentials the way ``update_credentials`` does.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from core import clock
from core.adapters.store import PLATFORM, Cond, Doc, DocumentStore
from core.crypto import SecretBox
from core.errors import CastielError, Conflict, Forbidden, Invalid, NotFound
from core.services.access import ADMIN, OPS, SUPPORT, SYSTEM, Principal, require
from core.services.audit import AuditLog
from core.services.integration_health import SEVERITY, STATUSES, Health, compute_health
from core.services.sync_engine import (
    CONNECTIONS,
    ROLLUP_KIND,
    ROLLUPS,
    RUNS,
    SyncEngine,
    new_connection,
    token_record,
)
from core.services.work_queue import WorkQueue

Q_SCHEDULED, Q_WEBHOOK, Q_OUTBOUND = "sync-inbound-scheduled", "sync-inbound-webhook", "sync-outbound"
SYNC_QUEUES = (Q_SCHEDULED, Q_WEBHOOK, Q_OUTBOUND)
JOB_RUN, JOB_TEST, JOB_WRITE = "sync.run", "sync.test", "sync.write"
VIEW_ROLES = frozenset({ADMIN, OPS, SUPPORT})
ACTION_ROLES = frozenset({ADMIN, OPS, SUPPORT})
EDIT_ROLES = frozenset({ADMIN})  # credentials and new connections
SETTINGS_ROLES = frozenset({ADMIN, OPS})
WEBHOOK_EVENTS = "webhook_events"
RUN_JOB_ATTEMPTS = 5
MIN_INTERVAL_SECONDS = 60.0
DEMO_ROOT = Path(__file__).resolve().parents[2] / "data" / "demo"
CONSENTS = "oauth_consents"
CONSENT_TTL = timedelta(minutes=10)
CONSENT_KEEP = timedelta(days=1)  # spent or lapsed consent records are purged after this


# provider catalogue (built from connectors.base by the composition root) ----------------------
@dataclass(frozen=True)
class FieldInfo:
    name: str
    label: str
    required: bool = True
    secret: bool = False
    help: str = ""
    default: Any = None


@dataclass(frozen=True)
class StreamInfo:
    name: str
    object_type: str
    cursor_field: str | None = None


@dataclass(frozen=True)
class ProviderInfo:
    name: str
    label: str
    streams: tuple[StreamInfo, ...] = ()
    config_fields: tuple[FieldInfo, ...] = ()
    credential_fields: tuple[FieldInfo, ...] = ()
    webhooks: bool = False
    supports_write: frozenset[str] = frozenset()
    consent: bool = False  # the account can be connected at the vendor's consent page

    @classmethod
    def of(cls, connector_class: Any) -> ProviderInfo:
        """Describe a ``connectors.base.Connector`` subclass without importing the connectors package."""

        def fields(items: Iterable[Any]) -> tuple[FieldInfo, ...]:
            return tuple(FieldInfo(f.name, f.label, f.required, f.secret, f.help, f.default) for f in items)

        return cls(
            name=connector_class.name,
            label=connector_class.label,
            streams=tuple(StreamInfo(s.name, s.object_type, s.cursor_field) for s in connector_class.streams),
            config_fields=fields(connector_class.config_fields),
            credential_fields=fields(connector_class.credential_fields),
            webhooks=bool(connector_class.webhooks),
            supports_write=frozenset(connector_class.supports_write),
            consent=bool(getattr(connector_class, "oauth_consent", False)),
        )


ProviderLookup = Callable[[str], Any]


class ConsentFlowLike(Protocol):
    """What the service uses of ``connectors.oauth2.ConsentFlow`` (structurally; core imports no connector)."""

    def begin(self, redirect_uri: str, state: str) -> Any: ...

    def complete(self, secret: Mapping[str, Any], redirect_uri: str, params: Mapping[str, str]) -> Any: ...


# views -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConnectionRow:
    """One line of the connections table."""

    id: str
    tenant_id: str
    name: str
    provider: str
    provider_label: str
    status: str
    explanation: str
    last_success_at: str | None
    freshness_lag_seconds: float | None
    success_rate_7d: float | None
    runs_7d: int
    failed_7d: int
    records_7d: int
    records_synced: int
    last_run_status: str | None
    last_run_at: str | None
    last_error: str | None
    last_error_type: str | None
    consecutive_failures: int
    interval_seconds: float
    running: bool


@dataclass
class ConnectionList:
    rows: list[ConnectionRow]
    counts: dict[str, int]  # health status -> connections (before the status filter)
    providers: list[str]
    tenants: list[str]
    total: int


@dataclass
class StreamView:
    name: str
    object_type: str
    cursor_field: str | None
    state: Any
    updated_at: str | None
    records: int
    enabled: bool


@dataclass
class ConnectionDetail:
    connection: Doc  # without sealed credentials
    health: Health
    runs: list[Doc]  # newest first
    streams: list[StreamView]
    provider: ProviderInfo | None
    credential_fields_set: list[str]
    daily: list[Doc] = field(default_factory=list)  # rollups, oldest first


@dataclass(frozen=True)
class ActionResult:
    """What an action queued: a run (for syncs) or just a job (for a test), with the job to watch."""

    job_id: str
    run_id: str | None = None
    message: str = ""


@dataclass(frozen=True)
class ConsentOutcome:
    """How a consent callback ended: connected, or what the vendor said instead (shown as is)."""

    ok: bool
    message: str
    tenant_id: str
    connection_id: str
    error: str | None = None


@dataclass(frozen=True)
class WebhookResult:
    status: str  # handshake | accepted | duplicate
    response: str | None = None
    accepted: int = 0
    duplicates: int = 0
    run_id: str | None = None


def public_connection(conn: Doc) -> Doc:
    """A connection without its sealed credentials (they are never shown back)."""
    return {k: v for k, v in conn.items() if k not in {"credentialsSealed", "_etag"}}


def _reason(reason: str | None, what: str) -> str:
    text = (reason or "").strip()
    if not text:
        raise Invalid(f"a reason is required to {what}; it is kept in the audit log")
    if len(text) > 500:
        raise Invalid("keep the reason under 500 characters")
    return text


def _parse_when(text: str) -> datetime:
    """Vendor timestamps ('...Z', offsets, with or without fractions) as aware datetimes."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _day(dt: datetime) -> str:
    return clock.iso(dt)[:10]


class IntegrationsService:
    def __init__(
        self,
        store: DocumentStore,
        audit: AuditLog,
        queue: WorkQueue,
        engine: SyncEngine,
        box: SecretBox,
        provider_class: ProviderLookup,
        provider_labels: Mapping[str, str],
        now: Callable[[], datetime] = clock.now,
    ) -> None:
        self.store, self.audit, self.queue, self.engine, self.box = store, audit, queue, engine, box
        self._provider_class = provider_class
        self.provider_labels = dict(provider_labels)
        self.now = now
        self._infos: dict[str, ProviderInfo] = {}

    # providers -------------------------------------------------------------------------
    def provider(self, name: str) -> ProviderInfo:
        if name not in self._infos:
            if name not in self.provider_labels:
                raise Invalid(f"unknown provider {name!r}; known: {', '.join(sorted(self.provider_labels))}")
            self._infos[name] = ProviderInfo.of(self._provider_class(name))
        return self._infos[name]

    def _scope(self, principal: Principal, tenant_id: str | None, roles: frozenset[str]) -> str | None:
        require(principal, tenant_id, roles)
        if tenant_id is not None:
            return tenant_id
        return None if principal.platform_wide else principal.tenant_id

    def _get(self, tenant_id: str, connection_id: str) -> Doc:
        try:
            return self.store.get(CONNECTIONS, tenant_id, connection_id)
        except NotFound:
            raise NotFound(f"connection {connection_id} does not exist in tenant {tenant_id}") from None

    # reading ---------------------------------------------------------------------------
    def list_connections(
        self,
        principal: Principal,
        tenant_id: str | None = None,
        provider: str | None = None,
        status: str | None = None,
    ) -> ConnectionList:
        """All connections the user may see, with health and 7-day figures from the daily rollups."""
        scope = self._scope(principal, tenant_id, VIEW_ROLES)
        if status is not None and status not in STATUSES:
            raise Invalid(f"unknown status {status!r}; use one of {', '.join(STATUSES)}")
        now = self.now()
        conds = [Cond("provider", "=", provider)] if provider else []
        conns = self.store.query(CONNECTIONS, scope, conds)
        since = _day(now - timedelta(days=6))
        rollups = self.store.query(ROLLUPS, scope, [Cond("kind", "=", ROLLUP_KIND), Cond("bucket", ">=", since)])
        week: dict[str, dict[str, int]] = {}
        for r in rollups:
            w = week.setdefault(r["connectionId"], {"runs": 0, "ok": 0, "failed": 0, "written": 0})
            w["runs"] += int(r.get("runs") or 0) - int(r.get("cancelled") or 0)
            w["ok"] += int(r.get("succeeded") or 0) + int(r.get("partial") or 0)
            w["failed"] += int(r.get("failed") or 0)
            w["written"] += int(r.get("written") or 0)
        rows: list[ConnectionRow] = []
        counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
        for c in conns:
            h = compute_health(c, now)
            counts[h.status] += 1
            if status is not None and h.status != status:
                continue
            w = week.get(c["id"], {"runs": 0, "ok": 0, "failed": 0, "written": 0})
            rows.append(ConnectionRow(
                id=c["id"], tenant_id=c["tenantId"], name=c.get("name") or c["id"], provider=c["provider"],
                provider_label=self.provider_labels.get(c["provider"]) or c["provider"], status=h.status,
                explanation=h.explanation, last_success_at=c.get("lastSuccessAt"),
                freshness_lag_seconds=h.freshness_lag_seconds,
                success_rate_7d=(w["ok"] / w["runs"]) if w["runs"] else None, runs_7d=w["runs"],
                failed_7d=w["failed"], records_7d=w["written"], records_synced=int(c.get("recordsSynced") or 0),
                last_run_status=c.get("lastRunStatus"), last_run_at=c.get("lastRunAt"),
                last_error=c.get("lastError") or c.get("lastAttemptError"),
                last_error_type=c.get("lastErrorType") or c.get("lastAttemptErrorType"),
                consecutive_failures=int(c.get("consecutiveFailures") or 0),
                interval_seconds=float((c.get("schedule") or {}).get("intervalSeconds") or 3600),
                running=bool(c.get("activeRunId")),
            ))
        rows.sort(key=lambda r: (SEVERITY.get(r.status, 9), -(r.freshness_lag_seconds or 0), r.tenant_id, r.name))
        return ConnectionList(
            rows=rows, counts=counts, providers=sorted({c["provider"] for c in conns}),
            tenants=sorted({c["tenantId"] for c in conns}), total=len(conns),
        )

    def connection_detail(
        self, principal: Principal, tenant_id: str, connection_id: str, runs: int = 30
    ) -> ConnectionDetail:
        require(principal, tenant_id, VIEW_ROLES)
        conn = self._get(tenant_id, connection_id)
        now = self.now()
        recent = self.store.query(RUNS, tenant_id, [Cond("connectionId", "=", connection_id)],
                                  order_by="queuedAt", descending=True, limit=runs)
        try:
            info: ProviderInfo | None = self.provider(conn["provider"])
        except Exception:  # noqa: BLE001 - a connector that fails to import still shows its stored state
            info = None
        state = conn.get("streams") or {}
        enabled = conn.get("enabledStreams")
        declared = list(info.streams) if info else [StreamInfo(n, "?") for n in state]
        streams = [
            StreamView(
                name=s.name, object_type=s.object_type, cursor_field=s.cursor_field,
                state=(state.get(s.name) or {}).get("state"), updated_at=(state.get(s.name) or {}).get("updatedAt"),
                records=int((state.get(s.name) or {}).get("records") or 0),
                enabled=enabled is None or s.name in enabled,
            )
            for s in declared
        ]
        since = _day(now - timedelta(days=29))
        daily = self.store.query(
            ROLLUPS, tenant_id,
            [Cond("kind", "=", ROLLUP_KIND), Cond("connectionId", "=", connection_id), Cond("bucket", ">=", since)],
            order_by="bucket",
        )
        return ConnectionDetail(
            connection=public_connection(conn), health=compute_health(conn, now), runs=recent, streams=streams,
            provider=info, credential_fields_set=list(conn.get("credentialFields") or []), daily=daily,
        )

    def get_run(self, principal: Principal, tenant_id: str, run_id: str) -> Doc:
        require(principal, tenant_id, VIEW_ROLES)
        try:
            return self.store.get(RUNS, tenant_id, run_id)
        except NotFound:
            raise NotFound(f"sync run {run_id} does not exist in tenant {tenant_id}") from None

    # creating and editing ------------------------------------------------------------------
    def create_connection(
        self,
        principal: Principal,
        tenant_id: str,
        provider: str,
        name: str,
        config: dict[str, Any],
        credentials: dict[str, Any] | None = None,
        *,
        interval_seconds: float = 3600.0,
        enabled_streams: list[str] | None = None,
        reason: str = "",
    ) -> Doc:
        require(principal, tenant_id, EDIT_ROLES)
        reason = _reason(reason, "add a connection")
        info = self.provider(provider)
        if not name.strip():
            raise Invalid("a connection needs a name")
        self._check_interval(interval_seconds)
        missing = [f.label for f in info.config_fields if f.required and config.get(f.name) in (None, "")]
        creds = {k: v for k, v in (credentials or {}).items() if v not in (None, "")}
        missing += [f.label for f in info.credential_fields if f.required and not creds.get(f.name)]
        if missing:
            raise Invalid(f"{info.label} needs: {', '.join(missing)}")
        self._check_streams(info, enabled_streams)
        secret_names = {f.name for f in info.config_fields if f.secret}
        if secret_names & set(config):
            # A secret typed into a config field belongs with the credentials, sealed.
            creds.update({k: config[k] for k in secret_names if config.get(k)})
            config = {k: v for k, v in config.items() if k not in secret_names}
        doc = new_connection(
            tenant_id, provider, name.strip(), config=config,
            credentials_sealed=self.box.seal(json.dumps(creds)) if creds else None,
            interval_seconds=interval_seconds, enabled_streams=enabled_streams, created_by=principal.email,
            webhook={"lastEventAt": None, "eventsReceived": 0, "duplicates": 0} if info.webhooks else None,
            now=self.now(),
        )
        doc["credentialFields"] = sorted(creds)
        created = self.store.create(CONNECTIONS, doc)
        self.audit.record(principal, tenant_id, "integration.create", f"connection:{doc['id']}", reason,
                          after={"provider": provider, "name": doc["name"], "config": config,
                                 "credentialFields": sorted(creds)})
        return public_connection(created)

    def update_credentials(
        self, principal: Principal, tenant_id: str, connection_id: str, values: dict[str, Any], reason: str
    ) -> Doc:
        """Replace the given credential fields (blank ones keep their stored value); admins only."""
        require(principal, tenant_id, EDIT_ROLES)
        reason = _reason(reason, "change credentials")
        given = {k: v for k, v in values.items() if v not in (None, "")}
        if not given:
            raise Invalid("enter at least one credential value to change")
        conn = self._get(tenant_id, connection_id)
        info = self.provider(conn["provider"])
        allowed = {f.name for f in info.credential_fields} | {f.name for f in info.config_fields if f.secret}
        unknown = sorted(set(given) - allowed)
        if unknown:
            raise Invalid(f"{info.label} has no credential field(s) {', '.join(unknown)}")

        def change(doc: Doc | None) -> Doc:
            doc = self._merge_credentials(doc, connection_id, given, clock.iso(self.now()))
            if doc.get("token"):
                doc["token"] = {**doc["token"], "lastRefreshError": None}
            return doc

        out = self.store.update(CONNECTIONS, tenant_id, connection_id, change)
        assert out is not None
        self.audit.record(principal, tenant_id, "integration.credentials", f"connection:{connection_id}", reason,
                          after={"changedFields": sorted(given)})
        return public_connection(out)

    def _merge_credentials(self, doc: Doc | None, connection_id: str, values: dict[str, Any], at: str) -> Doc:
        """``doc`` with ``values`` merged into its sealed credentials (pasted ones or a consent's tokens)."""
        if doc is None:
            raise NotFound(f"connection {connection_id} was deleted")
        creds = json.loads(self.box.open(doc["credentialsSealed"])) if doc.get("credentialsSealed") else {}
        creds.update(values)
        doc["credentialsSealed"] = self.box.seal(json.dumps(creds))
        doc["credentialsUpdatedAt"] = at
        doc["credentialFields"] = sorted(creds)
        # New credentials answer a config error: let the next run show whether they work.
        if doc.get("lastErrorType") == "config":
            doc.update(lastError=None, lastErrorType=None, consecutiveFailures=0, failingSince=None)
        return doc

    # connecting by consent (OAuth2 authorization code) -------------------------------------
    def _consent_flow(self, conn: Doc) -> tuple[Any, ConsentFlowLike]:
        """The connection's connector (built like Test connection builds it) and its consent flow."""
        connector, _ = self.engine.connector_for(conn)
        try:
            return connector, connector.consent()  # type: ignore[attr-defined]
        except Exception:
            connector.close()
            raise

    @staticmethod
    def _consent_id(state: str) -> str:
        # The record is found by a hash of the state, so the store never holds a usable state.
        return "consent-" + hashlib.sha256(state.encode()).hexdigest()[:48]

    def begin_consent(
        self, principal: Principal, tenant_id: str, connection_id: str, redirect_uri: str, reason: str
    ) -> str:
        """Start connecting the account at the vendor; returns the vendor's authorize URL to send the browser to.

        ``redirect_uri`` is the console page the vendor sends the person back to (it must be
        registered with the vendor's app exactly). Admins only; audited with the reason.
        """
        require(principal, tenant_id, EDIT_ROLES)
        reason = _reason(reason, "connect an account")
        if not redirect_uri.startswith(("https://", "http://")):
            raise Invalid("the console's own address (CASTIEL_CONSOLE_URL) must be an http(s):// URL the browser "
                          "can return to")
        conn = self._get(tenant_id, connection_id)
        info = self.provider(conn["provider"])
        if not info.consent:
            raise Invalid(f"{info.label} accounts are not connected through a consent page; enter the token in the "
                          "credentials form instead")
        now = self.now()
        state = secrets.token_urlsafe(32)
        connector, flow = self._consent_flow(conn)
        try:
            start = flow.begin(redirect_uri, state)
        finally:
            connector.close()
        expires = clock.iso(now + CONSENT_TTL)
        self._purge_consents(now)
        self.store.create(CONSENTS, {
            "id": self._consent_id(state), "tenantId": PLATFORM, "connectionTenantId": tenant_id,
            "connectionId": connection_id, "provider": conn["provider"], "userId": principal.user_id,
            "userEmail": principal.email, "reason": reason, "redirectUri": redirect_uri,
            "createdAt": clock.iso(now), "expiresAt": expires, "usedAt": None, "outcome": None,
            "secretSealed": self.box.seal(json.dumps(start.secret)),
        })
        self.audit.record(principal, tenant_id, "integration.consent_start", f"connection:{connection_id}", reason,
                          after={"provider": conn["provider"], "redirectUri": redirect_uri, "expiresAt": expires})
        return str(start.url)

    def _purge_consents(self, now: datetime) -> None:
        cutoff = clock.iso(now - CONSENT_KEEP)
        for old in self.store.query(CONSENTS, PLATFORM, [Cond("expiresAt", "<", cutoff)], limit=100):
            try:
                self.store.delete(CONSENTS, PLATFORM, old["id"])
            except NotFound:
                continue  # another session purged it first

    def complete_consent(
        self,
        principal: Principal,
        state: str | None,
        *,
        code: str | None = None,
        error: str | None = None,
        error_description: str | None = None,
        params: Mapping[str, str] | None = None,
    ) -> ConsentOutcome:
        """Finish a consent from the vendor's redirect (``code`` and ``state``, or ``error`` and ``state``).

        A state that is unknown, expired, already used, another user's, or for a tenant the user
        may not touch is refused (Invalid / Forbidden) and changes nothing. Otherwise the state is
        spent exactly once; a declined consent or a refused code is recorded, audited and returned
        as ``ok=False`` with the vendor's words; a good code's tokens are sealed into the credentials.
        """
        require(principal, None, EDIT_ROLES)
        if not state:
            raise Invalid("the vendor's answer carries no state; start Connect again from the connection's page")
        consent_id = self._consent_id(state)
        record = self.store.get_or_none(CONSENTS, PLATFORM, consent_id)
        if record is None:
            raise Invalid("this consent answer is unknown (it was never started here, or was purged); "
                          "start Connect again from the connection's page")
        if record["userId"] != principal.user_id:
            raise Forbidden("this consent was started by another user; only they can finish it. "
                            "Start Connect yourself if you need to.")
        tenant_id, connection_id = record["connectionTenantId"], record["connectionId"]
        require(principal, tenant_id, EDIT_ROLES)
        if not code and not error:
            raise Invalid("the vendor's answer carries neither a code nor an error; start Connect again")
        now = self.now()
        at = clock.iso(now)

        def spend(doc: Doc | None) -> Doc:
            if doc is None:
                raise Invalid("this consent answer is unknown; start Connect again from the connection's page")
            if doc.get("usedAt"):
                raise Invalid(f"this consent answer was already used at {doc['usedAt']}; "
                              "start Connect again if the account is still not connected")
            if doc["expiresAt"] <= at:
                raise Invalid(f"this consent expired at {doc['expiresAt']} (it is valid for "
                              f"{int(CONSENT_TTL.total_seconds() // 60)} minutes); start Connect again")
            doc.update(usedAt=at, usedBy=principal.email)
            return doc

        # Etag-guarded: of two answers racing with one state, the second re-reads and finds it spent.
        spent = self.store.update(CONSENTS, PLATFORM, consent_id, spend)
        assert spent is not None
        reason = str(spent.get("reason") or "consent")
        conn = self._get(tenant_id, connection_id)
        label = self.provider(conn["provider"]).label
        answer = {k: str(v) for k, v in (params or {}).items() if v is not None}
        answer.update({"state": state, **({"code": code} if code else {})})
        if error:
            answer.update(error=error, error_description=error_description or "")
        try:
            secret = json.loads(self.box.open(spent["secretSealed"]))
            connector, flow = self._consent_flow(conn)
            try:
                result = flow.complete(secret, str(spent["redirectUri"]), answer)
            finally:
                connector.close()
        except CastielError as e:
            kind = "declined" if error else "failed"
            self._consent_outcome(consent_id, conn, principal, at, False, e.message, error or getattr(e, "kind", None))
            self.audit.record(principal, tenant_id, f"integration.consent_{kind}", f"connection:{connection_id}",
                              reason, after={"provider": conn["provider"], "error": error or type(e).__name__,
                                             "message": e.message[:300]})
            return ConsentOutcome(False, e.message, tenant_id, connection_id, error or getattr(e, "kind", "error"))
        tokens = dict(result.tokens)
        info = dict(result.token_info)

        def store_tokens(doc: Doc | None) -> Doc:
            doc = self._merge_credentials(doc, connection_id, tokens, at)
            doc["token"] = {**token_record(info, doc.get("token")), "lastRefreshError": None}
            doc["lastConsent"] = {"at": at, "by": principal.email, "ok": True, "message": f"{label} account connected"}
            return doc

        out = self.store.update(CONNECTIONS, tenant_id, connection_id, store_tokens)
        assert out is not None
        self.store.update(CONSENTS, PLATFORM, consent_id,
                          lambda d: None if d is None else {**d, "outcome": "connected"})
        self.audit.record(principal, tenant_id, "integration.consent_complete", f"connection:{connection_id}", reason,
                          after={"provider": conn["provider"], "changedFields": sorted(tokens),
                                 "accessExpiresAt": out["token"].get("accessExpiresAt"),
                                 "refreshExpiresAt": out["token"].get("refreshExpiresAt")})
        return ConsentOutcome(True, f"{label} account connected; the next sync uses the new tokens.", tenant_id,
                              connection_id)

    def _consent_outcome(
        self, consent_id: str, conn: Doc, principal: Principal, at: str, ok: bool, message: str, error: str | None
    ) -> None:
        self.store.update(CONSENTS, PLATFORM, consent_id,
                          lambda d: None if d is None else {**d, "outcome": error or "failed", "message": message})

        def note(doc: Doc | None) -> Doc | None:
            if doc is None:
                return None
            doc["lastConsent"] = {"at": at, "by": principal.email, "ok": ok, "message": message, "error": error}
            return doc

        self.store.update(CONNECTIONS, conn["tenantId"], conn["id"], note)

    def update_settings(
        self,
        principal: Principal,
        tenant_id: str,
        connection_id: str,
        reason: str,
        *,
        interval_seconds: float | None = None,
        enabled_streams: list[str] | None = None,
        name: str | None = None,
        notification_url: str | None = None,
    ) -> Doc:
        require(principal, tenant_id, SETTINGS_ROLES)
        reason = _reason(reason, "change connection settings")
        conn = self._get(tenant_id, connection_id)
        if interval_seconds is not None:
            self._check_interval(interval_seconds)
        if enabled_streams is not None:
            self._check_streams(self.provider(conn["provider"]), enabled_streams)
        if notification_url and not notification_url.startswith("https://"):
            raise Invalid("the webhook notification URL must be an https:// address the vendor can reach")
        before = {"interval": (conn.get("schedule") or {}).get("intervalSeconds"),
                  "enabledStreams": conn.get("enabledStreams"), "name": conn.get("name"),
                  "notificationUrl": (conn.get("webhook") or {}).get("notificationUrl")}

        def change(doc: Doc | None) -> Doc:
            if doc is None:
                raise NotFound(f"connection {connection_id} was deleted")
            if interval_seconds is not None:
                doc["schedule"] = {**(doc.get("schedule") or {}), "intervalSeconds": float(interval_seconds)}
            if enabled_streams is not None:
                doc["enabledStreams"] = list(enabled_streams)
            if name is not None and name.strip():
                doc["name"] = name.strip()
            if notification_url is not None:
                doc["webhook"] = {**(doc.get("webhook") or {}), "notificationUrl": notification_url.strip() or None}
            return doc

        out = self.store.update(CONNECTIONS, tenant_id, connection_id, change)
        assert out is not None
        after = {"interval": out["schedule"]["intervalSeconds"], "enabledStreams": out.get("enabledStreams"),
                 "name": out.get("name"), "notificationUrl": (out.get("webhook") or {}).get("notificationUrl")}
        self.audit.record(principal, tenant_id, "integration.settings", f"connection:{connection_id}", reason,
                          before=before, after=after)
        return public_connection(out)

    @staticmethod
    def _check_interval(seconds: float) -> None:
        if not MIN_INTERVAL_SECONDS <= float(seconds) <= 7 * 86400:
            raise Invalid("the schedule interval must be between 1 minute and 7 days")

    @staticmethod
    def _check_streams(info: ProviderInfo, names: list[str] | None) -> None:
        if names is None:
            return
        known = {s.name for s in info.streams}
        bad = [n for n in names if n not in known]
        if bad or not names:
            extra = f" (not {', '.join(bad)})" if bad else ""
            raise Invalid(f"choose streams among: {', '.join(sorted(known))}{extra}")

    # actions ---------------------------------------------------------------------------
    def _enqueue_run(
        self,
        principal: Principal,
        conn: Doc,
        trigger: dict[str, Any],
        *,
        queue: str,
        streams: list[str] | None = None,
        full: bool = False,
        retry_of: str | None = None,
        reason: str = "",
        dedupe_key: str | None = None,
    ) -> ActionResult:
        run = self.engine.create_run(conn, trigger, streams=streams, full=full, queue_name=queue, retry_of=retry_of)
        job = self.queue.enqueue(
            principal, queue, JOB_RUN, conn["tenantId"], {"runId": run["id"], "connectionId": conn["id"]},
            reason=reason, dedupe_key=dedupe_key, max_attempts=RUN_JOB_ATTEMPTS, audit=False,
        )
        if job["payload"].get("runId") != run["id"]:
            # An open job already covers this connection: drop the duplicate run record.
            self.store.delete(RUNS, conn["tenantId"], run["id"])
            return ActionResult(job["id"], job["payload"].get("runId"), "a sync of this connection is already queued")
        self.store.update(RUNS, conn["tenantId"], run["id"], lambda d: None if d is None else {**d, "jobId": job["id"]})
        return ActionResult(job["id"], run["id"], "queued")

    def resync(
        self,
        principal: Principal,
        tenant_id: str,
        connection_id: str,
        reason: str,
        *,
        full: bool = False,
        stream: str | None = None,
    ) -> ActionResult:
        """Incremental resync, or a full resync of the connection or of one stream."""
        require(principal, tenant_id, ACTION_ROLES)
        what = "start a full resync" if full else "start a resync"
        reason = _reason(reason, what)
        conn = self._get(tenant_id, connection_id)
        if conn.get("status") == "paused":
            raise Invalid("this connection is paused; resume it first (a paused connection does not sync)")
        streams = None
        if stream:
            self._check_streams(self.provider(conn["provider"]), [stream])
            streams = [stream]
        action = "full_resync" if full else "resync"
        trigger = {"type": "user", "actor": principal.email, "reason": reason, "action": action}
        result = self._enqueue_run(principal, conn, trigger, queue=Q_SCHEDULED, streams=streams, full=full,
                                   reason=reason)
        self.audit.record(principal, tenant_id, f"integration.{action}", f"connection:{connection_id}", reason,
                          after={"runId": result.run_id, "jobId": result.job_id, "stream": stream, "full": full})
        return result

    def retry_run(self, principal: Principal, tenant_id: str, run_id: str, reason: str) -> ActionResult:
        """Run a failed (or cancelled) run again as a new run with the same streams and mode."""
        require(principal, tenant_id, ACTION_ROLES)
        reason = _reason(reason, "retry a run")
        old = self.get_run(principal, tenant_id, run_id)
        if old["status"] not in ("failed", "cancelled", "partial"):
            raise Invalid(f"run {run_id} is {old['status']}; only failed, partial or cancelled runs can be retried")
        conn = self._get(tenant_id, old["connectionId"])
        if conn.get("status") == "paused":
            raise Invalid("this connection is paused; resume it first")
        trigger = {"type": "user", "actor": principal.email, "reason": reason, "action": "retry"}
        result = self._enqueue_run(principal, conn, trigger, queue=Q_SCHEDULED, streams=old.get("streams"),
                                   full=bool(old.get("full")), retry_of=run_id, reason=reason)
        self.audit.record(principal, tenant_id, "integration.retry_run", f"sync_run:{run_id}", reason,
                          after={"runId": result.run_id, "jobId": result.job_id})
        return result

    def cancel_run(self, principal: Principal, tenant_id: str, run_id: str, reason: str) -> Doc:
        require(principal, tenant_id, ACTION_ROLES)
        reason = _reason(reason, "cancel a run")
        run = self.engine.cancel_run(tenant_id, run_id, reason)
        if run.get("jobId"):
            try:
                self.queue.cancel(principal, tenant_id, run["jobId"], reason)
            except Invalid:
                pass  # the job already finished; the run is what counts
        self.audit.record(principal, tenant_id, "integration.cancel_run", f"sync_run:{run_id}", reason)
        return run

    def pause(self, principal: Principal, tenant_id: str, connection_id: str, reason: str) -> Doc:
        return self._switch(principal, tenant_id, connection_id, reason, pause=True)

    def resume(self, principal: Principal, tenant_id: str, connection_id: str, reason: str) -> Doc:
        """Resume syncing; the failure streak starts over, so one more failure does not pause it again."""
        return self._switch(principal, tenant_id, connection_id, reason, pause=False)

    def _switch(self, principal: Principal, tenant_id: str, connection_id: str, reason: str, pause: bool) -> Doc:
        """Pause or resume a connection, refusing when it is already in that state; audited."""
        require(principal, tenant_id, ACTION_ROLES)
        verb = "pause" if pause else "resume"
        reason = _reason(reason, f"{verb} a connection")
        at = clock.iso(self.now())

        def change(doc: Doc | None) -> Doc:
            if doc is None:
                raise NotFound(f"connection {connection_id} does not exist")
            if (doc.get("status") == "paused") == pause:
                raise Invalid(f"this connection is {'already' if pause else 'not'} paused")
            if pause:
                doc.update(status="paused", pausedAt=at, pausedReason=f"{reason} ({principal.email})",
                           pausedBy=principal.email)
            else:
                doc.update(status="active", pausedAt=None, pausedReason=None, pausedBy=None, nextDueAt=at,
                           consecutiveFailures=0, failingSince=None, resumedAt=at)
            return doc

        out = self.store.update(CONNECTIONS, tenant_id, connection_id, change)
        assert out is not None
        before, after = ("active", "paused") if pause else ("paused", "active")
        self.audit.record(principal, tenant_id, f"integration.{verb}", f"connection:{connection_id}", reason,
                          before={"status": before}, after={"status": after})
        return public_connection(out)

    def test_connection(self, principal: Principal, tenant_id: str, connection_id: str, reason: str) -> ActionResult:
        require(principal, tenant_id, ACTION_ROLES)
        reason = _reason(reason, "test a connection")
        self._get(tenant_id, connection_id)
        job = self.queue.enqueue(principal, Q_SCHEDULED, JOB_TEST, tenant_id, {"connectionId": connection_id},
                                 reason=reason, max_attempts=1, audit=False)
        self.audit.record(principal, tenant_id, "integration.test", f"connection:{connection_id}", reason,
                          after={"jobId": job["id"]})
        return ActionResult(job["id"], None, "queued")

    def write_back(
        self,
        principal: Principal,
        tenant_id: str,
        connection_id: str,
        object_type: str,
        source_id: str | None,
        fields: dict[str, Any],
        reason: str,
    ) -> ActionResult:
        """Queue an outbound create/update in the vendor (where the connector supports it)."""
        require(principal, tenant_id, SETTINGS_ROLES)
        reason = _reason(reason, "write to the vendor")
        conn = self._get(tenant_id, connection_id)
        info = self.provider(conn["provider"])
        if object_type not in info.supports_write:
            allowed = ", ".join(sorted(info.supports_write)) or "nothing"
            raise Invalid(f"{info.label} accepts outbound writes of {allowed}, not {object_type}")
        payload = {"connectionId": connection_id, "objectType": object_type, "sourceId": source_id, "fields": fields}
        job = self.queue.enqueue(principal, Q_OUTBOUND, JOB_WRITE, tenant_id, payload, reason=reason, audit=False)
        self.audit.record(principal, tenant_id, "integration.write", f"connection:{connection_id}", reason,
                          after={"jobId": job["id"], "objectType": object_type, "sourceId": source_id,
                                 "fields": sorted(fields)})
        return ActionResult(job["id"], None, "queued")

    def job_status(self, principal: Principal, tenant_id: str, job_id: str) -> Doc:
        return self.queue.get(principal, tenant_id, job_id)

    # scheduling ------------------------------------------------------------------------
    def enqueue_due(self) -> list[str]:
        """Queue a run for every active connection whose schedule is due; returns the run ids.

        Claiming the slot (moving ``nextDueAt``) is an etag-guarded write, so two workers'
        schedulers never queue the same connection twice.
        """
        now = self.now()
        at = clock.iso(now)
        out = []
        for conn in self.store.query(CONNECTIONS, None, [Cond("status", "=", "active")]):
            if (conn.get("nextDueAt") or "") > at:
                continue
            interval = float((conn.get("schedule") or {}).get("intervalSeconds") or 3600)
            claimed: list[Doc] = []

            def change(doc: Doc | None, claimed: list[Doc] = claimed, interval: float = interval) -> Doc | None:
                if doc is None or doc.get("status") != "active" or (doc.get("nextDueAt") or "") > at:
                    return None
                doc["nextDueAt"] = clock.iso(now + timedelta(seconds=interval))
                claimed.append(doc)
                return doc

            try:
                self.store.update(CONNECTIONS, conn["tenantId"], conn["id"], change, attempts=3)
            except Conflict:
                continue
            if not claimed:
                continue
            result = self._enqueue_run(SYSTEM, claimed[-1], {"type": "schedule"}, queue=Q_SCHEDULED,
                                       reason="schedule", dedupe_key=f"sync-scheduled:{conn['id']}")
            if result.run_id and result.message == "queued":
                out.append(result.run_id)
        return out

    # webhooks --------------------------------------------------------------------------
    def renew_subscriptions(self) -> dict[str, int]:
        """Create or renew vendor change-notification subscriptions before they lapse (scheduled hourly).

        Only connections with a notification URL set take part; each keeps its subscriptions and
        the earliest expiry (what the health model's webhook freshness reads). A failure is kept
        on the connection for the screen and does not stop the others.
        """
        renewed = failed = 0
        at = clock.iso(self.now())
        for conn in self.store.query(CONNECTIONS, None, [Cond("status", "=", "active")]):
            hook = conn.get("webhook") or {}
            url = hook.get("notificationUrl")
            if not url:
                continue
            error: str | None = None
            subs: list[dict[str, Any]] = list(hook.get("subscriptions") or [])
            connector = None
            try:
                connector, _ = self.engine.connector_for(conn)
                subs = connector.manage_subscriptions(subs, url)
                renewed += 1
            except Exception as e:  # noqa: BLE001 - recorded per connection, the sweep goes on
                error = getattr(e, "message", None) or f"{type(e).__name__}: {e}"
                failed += 1
            finally:
                if connector is not None:
                    connector.close()
            expiries = sorted(str(s["expiresAt"]) for s in subs if s.get("expiresAt"))

            def change(doc: Doc | None, subs: list[dict[str, Any]] = subs, error: str | None = error,
                       expiries: list[str] = expiries) -> Doc | None:
                if doc is None:
                    return None
                webhook = dict(doc.get("webhook") or {})
                webhook.update(subscriptions=subs, lastRenewAt=at, lastRenewError=error)
                if expiries:
                    webhook["subscriptionExpiresAt"] = clock.iso(_parse_when(expiries[0]))
                doc["webhook"] = webhook
                return doc

            self.store.update(CONNECTIONS, conn["tenantId"], conn["id"], change)
        return {"renewed": renewed, "failed": failed}

    def receive_webhook(
        self,
        tenant_id: str,
        connection_id: str,
        headers: Mapping[str, str],
        body: bytes,
        query: Mapping[str, str] | None = None,
    ) -> WebhookResult:
        """Verify, de-duplicate and act on one vendor notification (called by the webhook endpoint).

        A bad signature raises ``Invalid`` and is audited; an event id seen before is dropped
        (the ``webhook_events`` record is created exactly once, so two deliveries racing on two
        workers still run one sync).
        """
        conn = self._get(tenant_id, connection_id)
        connector, _ = self.engine.connector_for(conn)
        try:
            answer = connector.webhook_handshake(dict(query or {}), headers, body)
            if answer is not None:
                return WebhookResult("handshake", response=answer)
            try:
                events = connector.verify_webhook(headers, body)
            except Invalid as e:
                self.audit.record(SYSTEM, tenant_id, "integration.webhook_rejected", f"connection:{connection_id}",
                                  e.message, after={"bytes": len(body)})
                raise
        finally:
            connector.close()
        at = clock.iso(self.now())
        fresh = []
        for ev in events:
            key = hashlib.sha256(f"{connection_id}\x1f{ev.event_id}".encode()).hexdigest()[:32]
            try:
                self.store.create(WEBHOOK_EVENTS, {
                    "id": f"wh-{key}", "tenantId": tenant_id, "connectionId": connection_id, "eventId": ev.event_id,
                    "stream": ev.stream, "action": ev.action, "sourceId": ev.source_id, "receivedAt": at,
                })
                fresh.append(ev)
            except Conflict:
                continue
        dupes = len(events) - len(fresh)

        def note(doc: Doc | None) -> Doc | None:
            if doc is None:
                return None
            hook = dict(doc.get("webhook") or {})
            hook.update(lastEventAt=at, eventsReceived=int(hook.get("eventsReceived") or 0) + len(fresh),
                        duplicates=int(hook.get("duplicates") or 0) + dupes)
            doc["webhook"] = hook
            return doc

        try:
            self.store.update(CONNECTIONS, tenant_id, connection_id, note)
            if not fresh:
                return WebhookResult("duplicate", duplicates=dupes)
            if conn.get("status") == "paused":
                return WebhookResult("accepted", accepted=len(fresh), duplicates=dupes)
            declared = {s.name for s in self.provider(conn["provider"]).streams}
            streams = sorted({ev.stream for ev in fresh if ev.stream in declared}) or None
            trigger = {"type": "webhook", "events": len(fresh), "eventIds": [ev.event_id for ev in fresh][:20]}
            result = self._enqueue_run(SYSTEM, conn, trigger, queue=Q_WEBHOOK, streams=streams, reason="webhook",
                                       dedupe_key=f"sync-webhook:{connection_id}")
        except Exception:
            # Nothing was queued: forget these event ids so the vendor's redelivery is not taken for a duplicate.
            for ev in fresh:
                key = hashlib.sha256(f"{connection_id}\x1f{ev.event_id}".encode()).hexdigest()[:32]
                try:
                    self.store.delete(WEBHOOK_EVENTS, tenant_id, f"wh-{key}")
                except CastielError:
                    pass
            raise
        return WebhookResult("accepted", accepted=len(fresh), duplicates=dupes, run_id=result.run_id)

    # alerting --------------------------------------------------------------------------
    def attention_facts(self, tenant_id: str) -> dict[str, Any]:
        """The ``connectors_attention`` fact for the alert evaluator: connections needing a person.

        One subject per connection in ``needs_reauth`` or auto-paused, valued 1, with a deep
        link to its detail. (The worker's evaluator calls this; it is not a page read.)
        """
        now = self.now()
        subjects: dict[str, dict[str, Any]] = {}
        for c in self.store.query(CONNECTIONS, tenant_id):
            h = compute_health(c, now)
            auto_paused = h.status == "paused" and c.get("pausedBy") == "auto-pause"
            if h.status == "needs_reauth" or auto_paused:
                subjects[c["id"]] = {
                    "value": 1.0,
                    "label": f"{c.get('name') or c['id']} ({c['provider']}): {h.explanation}"[:300],
                    "link": f"integrations?tenant={tenant_id}&connection={c['id']}",
                }
        return {"connectors_attention": subjects}


def seed_integrations_demo(services: Any, tenant_id: str, actor: Principal) -> list[Doc]:
    """Demo hook: the demo tenant's local-files connections, synced for real through the engine.

    Two connections over the shipped sample data (``data/demo/crm`` and ``data/demo/documents``):
    the CRM export and the shared documents. Each gets one run now, executed in-process through
    the same engine the worker uses, so the Integrations screen opens on real sync history.
    """
    svc: IntegrationsService = services.integrations
    existing = {c["name"]: c for c in svc.store.query(CONNECTIONS, tenant_id, [Cond("provider", "=", "localfiles")])}
    specs = (
        ("CRM export (CSV)", ["accounts", "opportunities", "contacts"], 3600.0),
        ("Shared documents", ["documents"], 1800.0),
    )
    out = []
    for name, streams, interval in specs:
        conn = existing.get(name) or svc.create_connection(
            actor, tenant_id, "localfiles", name,
            {"path": str(DEMO_ROOT), "documents_dir": "documents", "crm_dir": "crm", "page_size": 200},
            interval_seconds=interval, enabled_streams=streams, reason="demo seed",
        )
        stored = svc.store.get(CONNECTIONS, tenant_id, conn["id"])
        run = svc.engine.create_run(stored, {"type": "user", "actor": actor.email, "reason": "demo seed",
                                             "action": "resync"})
        out.append(svc.engine.execute(tenant_id, run["id"]))
        svc.audit.record(actor, tenant_id, "integration.resync", f"connection:{conn['id']}", "demo seed",
                         after={"runId": run["id"], "status": out[-1]["status"]})
    return out
