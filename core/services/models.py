"""Models: which version serves, predictions with fallback and shadow scoring, alias history, drift, retraining.

The ML work (training, the MLflow registry, scikit-learn, Evidently) sits behind
``ModelBackend``, implemented by ``ml.backend.MlflowModelBackend`` and injected by the
composition root; this module imports none of it. What it owns is the console's side:

* **Serving.** The champion (by alias) is loaded once and cached; the alias is re-read every
  ``alias_ttl`` seconds and at once after a move made here, so a promotion elsewhere is picked
  up without a restart. When the champion cannot be loaded, the last version that loaded
  (or the previous champion from the alias history) serves instead, and every such answer
  is flagged ``fallback`` with the reason.
* **The prediction log** (container ``predictions``): one row per scored record with the
  version, the feature values, the output, latency, and the challenger's output when shadow
  mode is on. Drift checks and the shadow agreement report read it. The challenger's scoring
  and the log write run on a background thread after the answer, so shadow mode adds no
  latency to the request it shadows (``flush()`` waits for them).
* **Alias history** (container ``model_aliases``): MLflow keeps only the current alias, so
  every move (who, when, which version, from which, why, gate result, override) is kept here
  and audited.
* **Drift** (container ``drift_checks``): one record per model and window with a verdict per
  feature; the window's sample goes to blob storage for Evidently's report.
* **Retraining**: on demand through the work queue (``models.retrain``) and on a schedule;
  two retrains of the same model never run at once (an etag-guarded lock record).
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from queue import Empty, Full, Queue
from typing import Any, Protocol

import numpy as np

from core import clock
from core.adapters.blobs import BlobStore
from core.adapters.store import Cond, Doc, DocumentStore
from core.errors import CastielError, Conflict, Forbidden, Invalid, NotFound
from core.services.access import ADMIN, ANY_ROLE, ML_ENGINEER, OPS, Principal, require
from core.services.audit import AuditLog
from core.services.work_queue import OPEN_STATES, WorkQueue

log = logging.getLogger(__name__)

RISK, WIN, FORECAST = "risk", "win", "forecast"
MODEL_KINDS: tuple[str, ...] = (RISK, WIN, FORECAST)
KIND_LABELS = {RISK: "Deal risk", WIN: "Win probability", FORECAST: "Revenue forecast"}
CHAMPION, CHALLENGER = "champion", "challenger"
ALIASES, PREDICTIONS, DRIFT_CHECKS, SETTINGS = "model_aliases", "predictions", "drift_checks", "model_settings"
QUEUE, RETRAIN_JOB = "models", "models.retrain"
READ_ROLES = frozenset({ADMIN, ML_ENGINEER, OPS})
WRITE_ROLES = frozenset({ADMIN, ML_ENGINEER})
DRIFT_KINDS = (RISK, WIN)  # per-request models; the forecast scores one series a month
REPORT_SAMPLE_ROWS = 5_000
LOCK_TTL_SECONDS = 4 * 3600
MAX_PENDING = 5000  # answered requests waiting for shadow scoring and logging; beyond it a request does its own
BACKGROUND_BATCH = 500
PREDICTION_RETENTION_DAYS = 90


class Predictor(Protocol):
    kind: str
    version: str
    feature_names: list[str]

    def features(self, records: Sequence[Mapping[str, Any]], as_of: object | None = None) -> np.ndarray: ...

    def predict_features(self, X: np.ndarray) -> np.ndarray: ...


class ModelBackend(Protocol):
    """The ML side (``ml.backend.MlflowModelBackend``); plain data in and out."""

    kinds: tuple[str, ...]
    primary_metric: Mapping[str, str]
    decision_thresholds: Mapping[str, float]

    def model_name(self, tenant_id: str, kind: str) -> str: ...

    def gate_rules(self, kind: str) -> list[dict[str, Any]]: ...

    def train(self, tenant_id: str, kind: str, records: Sequence[Mapping[str, Any]], *, trained_by: str,
              synthetic: bool = False, window_end: str | None = None, seed: int = 0,
              progress: Callable[[float, str], None] | None = None, source: str = "") -> dict[str, Any]: ...

    def versions(self, tenant_id: str, kind: str) -> list[dict[str, Any]]: ...

    def version(self, tenant_id: str, kind: str, version: str) -> dict[str, Any]: ...

    def aliases(self, tenant_id: str, kind: str) -> dict[str, str]: ...

    def set_alias(self, tenant_id: str, kind: str, alias: str, version: str) -> None: ...

    def delete_alias(self, tenant_id: str, kind: str, alias: str) -> None: ...

    def gate(self, tenant_id: str, kind: str, version: str, champion: str | None) -> dict[str, Any]: ...

    def load_predictor(self, tenant_id: str, kind: str, version: str) -> Predictor: ...

    def evaluation(self, tenant_id: str, kind: str, version: str) -> dict[str, Any]: ...

    def plot(self, tenant_id: str, kind: str, version: str, filename: str) -> bytes: ...

    def plot_names(self, tenant_id: str, kind: str, version: str) -> list[str]: ...

    def drift_check(self, tenant_id: str, kind: str, version: str, rows: Sequence[Mapping[str, Any]], *,
                    max_rows: int = ..., alert_share: float = ...) -> dict[str, Any]: ...

    def drift_report_html(self, tenant_id: str, kind: str, version: str,
                          rows: Sequence[Mapping[str, Any]]) -> str: ...

    def demo_requests(self, tenant_id: str, n: int, *, seed: int, as_of: str, drifted: bool = False) -> list[dict]: ...

    def revenue_history(self, tenant_id: str, records: Sequence[Mapping[str, Any]],
                        synthetic: bool) -> list[dict]: ...

    def on_champion_changed(self, tenant_id: str, kind: str, version: str) -> list[dict[str, int]]:
        """Deploy the new champion where it serves outside the console (Azure ML); the traffic plan, or []."""
        ...


@dataclass
class PredictionResult:
    values: list[float]
    version: str
    fallback: bool = False
    fallback_reason: str = ""
    latency_ms: float = 0.0
    shadow_version: str | None = None
    shadow_values: list[float] | None = None
    logged: int = 0


@dataclass
class _AfterAnswer:
    """An answered request's remaining work: the challenger's shadow score and the log rows."""

    tenant_id: str
    kind: str
    ids: list[str]
    X: np.ndarray
    predictor: Predictor
    shadow: Predictor | None
    result: PredictionResult
    at: str
    log: bool


@dataclass
class _Served:
    champion: str | None
    challenger: str | None
    checked: float
    predictor: Predictor | None = None
    fallback: Predictor | None = None
    fallback_reason: str = ""
    shadow: Predictor | None = None
    shadow_failed: bool = False


@dataclass
class ModelSummary:
    kind: str
    label: str
    name: str
    champion: str | None
    challenger: str | None
    versions: int
    champion_metrics: dict[str, float] = field(default_factory=dict)
    last_drift: Doc | None = None


def _check_kind(kind: str) -> str:
    if kind not in MODEL_KINDS:
        raise Invalid(f"unknown model {kind!r}; models are: {', '.join(MODEL_KINDS)}")
    return kind


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


class ModelService:
    """The Models feature's service; ``backend`` does the ML work (see the module docstring)."""

    def __init__(
        self,
        store: DocumentStore,
        blobs: BlobStore,
        audit: AuditLog,
        queue: WorkQueue,
        backend: ModelBackend,
        *,
        alias_ttl: float = 10.0,
        shadow: bool = True,
        drift_alert_share: float = 0.2,
        drift_max_rows: int = 200_000,
        background: bool = True,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.blobs, self.audit, self.queue, self.backend = store, blobs, audit, queue, backend
        self.alias_ttl, self.shadow_enabled = alias_ttl, shadow
        self.drift_alert_share, self.drift_max_rows = drift_alert_share, drift_max_rows
        self._now = now
        self._served: dict[tuple[str, str], _Served] = {}
        self._last_good: dict[tuple[str, str], Predictor] = {}
        self.background = background
        self.background_failures = 0
        self._queue: Queue[_AfterAnswer] = Queue(maxsize=MAX_PENDING)
        self._worker: threading.Thread | None = None
        self._pending_lock = threading.Lock()

    # ---- reading -------------------------------------------------------------------------------------------------
    def models(self, principal: Principal, tenant_id: str) -> list[ModelSummary]:
        require(principal, tenant_id, READ_ROLES)
        out = []
        for kind in MODEL_KINDS:
            aliases = self.backend.aliases(tenant_id, kind)
            versions = self.backend.versions(tenant_id, kind)
            champ = aliases.get(CHAMPION)
            metrics: dict[str, float] = next((v["metrics"] for v in versions if v["version"] == champ), {})
            last = self.store.query(DRIFT_CHECKS, tenant_id, [Cond("model", "=", kind)], order_by="at",
                                    descending=True, limit=1)
            out.append(ModelSummary(kind, KIND_LABELS[kind], self.backend.model_name(tenant_id, kind), champ,
                                    aliases.get(CHALLENGER), len(versions), metrics, last[0] if last else None))
        return out

    def versions(self, principal: Principal, tenant_id: str, kind: str) -> list[dict[str, Any]]:
        """Every version, newest first, with metrics, data window, who trained it and its gate."""
        require(principal, tenant_id, READ_ROLES)
        return self.backend.versions(tenant_id, _check_kind(kind))

    def version(self, principal: Principal, tenant_id: str, kind: str, version: str) -> dict[str, Any]:
        require(principal, tenant_id, READ_ROLES)
        return self.backend.version(tenant_id, _check_kind(kind), version)

    def evaluation(self, principal: Principal, tenant_id: str, kind: str, version: str) -> dict[str, Any]:
        require(principal, tenant_id, READ_ROLES)
        return self.backend.evaluation(tenant_id, _check_kind(kind), version)

    def plot(self, principal: Principal, tenant_id: str, kind: str, version: str, filename: str) -> bytes:
        require(principal, tenant_id, READ_ROLES)
        return self.backend.plot(tenant_id, _check_kind(kind), version, filename)

    def plot_names(self, principal: Principal, tenant_id: str, kind: str, version: str) -> list[str]:
        require(principal, tenant_id, READ_ROLES)
        return self.backend.plot_names(tenant_id, _check_kind(kind), version)

    def compare(self, principal: Principal, tenant_id: str, kind: str, a: str, b: str) -> list[dict[str, Any]]:
        """Metrics of two versions side by side, with ``b - a`` and which is better on each."""
        require(principal, tenant_id, READ_ROLES)
        va = self.backend.version(tenant_id, _check_kind(kind), a)
        vb = self.backend.version(tenant_id, kind, b)
        lower_better = {"mae", "rmse", "brier", "ece", "log_loss", "mape", "max_ape"}
        rows = []
        for m in sorted(set(va["metrics"]) | set(vb["metrics"])):
            x, y = _finite(va["metrics"].get(m)), _finite(vb["metrics"].get(m))
            delta = None if x is None or y is None else y - x
            better = None
            if delta is not None and m not in {"n_iter", "base_rate", "mean_predicted", "mean_error", "bias"}:
                better = a if (delta > 0) == (m in lower_better) else b
                if delta == 0:
                    better = "same"
            rows.append({"metric": m, f"v{a}": x, f"v{b}": y, "delta": delta, "better": better,
                         "primary": m == self.backend.primary_metric.get(kind)})
        return rows

    def metric_trend(self, principal: Principal, tenant_id: str, kind: str) -> list[dict[str, Any]]:
        """One row per version and metric, oldest first, for the trend chart."""
        require(principal, tenant_id, READ_ROLES)
        rows = []
        for v in reversed(self.backend.versions(tenant_id, _check_kind(kind))):
            for m, value in v["metrics"].items():
                if _finite(value) is not None:
                    rows.append({"version": int(v["version"]), "metric": m, "value": float(value),
                                 "trained": v["created_at"]})
        return rows

    def alias_history(self, principal: Principal, tenant_id: str, kind: str, limit: int = 100) -> list[Doc]:
        require(principal, tenant_id, READ_ROLES)
        return self.store.query(ALIASES, tenant_id, [Cond("model", "=", _check_kind(kind))], order_by="at",
                                descending=True, limit=limit)

    def gate(self, principal: Principal, tenant_id: str, kind: str, version: str | None = None) -> dict[str, Any]:
        """The gate of ``version`` (default: the challenger) against today's champion."""
        require(principal, tenant_id, READ_ROLES)
        aliases = self.backend.aliases(tenant_id, _check_kind(kind))
        version = version or aliases.get(CHALLENGER)
        if version is None:
            raise NotFound(f"the {KIND_LABELS[kind]} model has no challenger to gate")
        return self.backend.gate(tenant_id, kind, version, aliases.get(CHAMPION))

    # ---- alias moves ------------------------------------------------------------------------------------------------
    def _record_move(self, principal: Principal, tenant_id: str, kind: str, alias: str, version: str | None,
                     previous: str | None, action: str, reason: str, gate: Mapping[str, Any] | None = None,
                     override: bool = False, deployment: list[dict[str, int]] | None = None) -> Doc:
        at = clock.iso()
        doc = {
            "id": f"{kind}-{_stamp(at)}-{uuid.uuid4().hex[:6]}",
            "tenantId": tenant_id,
            "model": kind,
            "alias": alias,
            "version": version,
            "previous": previous,
            "action": action,
            "actor": principal.email,
            "at": at,
            "reason": reason,
            "gatePassed": None if gate is None else bool(gate.get("passed")),
            "gateReasons": list((gate or {}).get("reasons") or []),
            "override": override,
            "deployment": deployment or [],
        }
        self.store.create(ALIASES, doc)
        self.audit.record(principal, tenant_id, f"model.{action}", f"model:{kind}", reason,
                          before={alias: previous}, after={alias: version, "override": override,
                                                           "gate": doc["gatePassed"]})
        self._served.pop((tenant_id, kind), None)  # the next prediction re-reads the aliases
        return doc

    def set_challenger(self, principal: Principal, tenant_id: str, kind: str, version: str, reason: str) -> Doc:
        require(principal, tenant_id, WRITE_ROLES)
        if not reason.strip():
            raise Invalid("say why this version should be the challenger")
        aliases = self.backend.aliases(tenant_id, _check_kind(kind))
        if aliases.get(CHAMPION) == str(version):
            raise Invalid(f"v{version} is the champion; pick another version as the challenger")
        self.backend.set_alias(tenant_id, kind, CHALLENGER, str(version))
        return self._record_move(principal, tenant_id, kind, CHALLENGER, str(version), aliases.get(CHALLENGER),
                                 "set_challenger", reason)

    def promote(self, principal: Principal, tenant_id: str, kind: str, reason: str, override: bool = False) -> Doc:
        """Make the challenger the champion if the gate passes; an admin may override a failed gate with a reason."""
        require(principal, tenant_id, WRITE_ROLES)
        if not reason.strip():
            raise Invalid("a promotion needs a reason (it is kept in the alias history and the audit log)")
        aliases = self.backend.aliases(tenant_id, _check_kind(kind))
        challenger = aliases.get(CHALLENGER)
        if challenger is None:
            raise Invalid(f"the {KIND_LABELS[kind]} model has no challenger to promote; retrain first")
        champion = aliases.get(CHAMPION)
        gate = self.backend.gate(tenant_id, kind, challenger, champion)
        if not gate.get("passed"):
            if not override:
                raise Conflict("the gate blocks this promotion: " + "; ".join(gate.get("reasons") or ["failed"]))
            if principal.role != ADMIN:
                raise Forbidden("only an admin may override a failed gate")
        deployment = self.backend.on_champion_changed(tenant_id, kind, challenger)  # before the alias: a failed
        self.backend.set_alias(tenant_id, kind, CHAMPION, challenger)  # deployment leaves the champion as it was
        self.backend.delete_alias(tenant_id, kind, CHALLENGER)
        action = "promote_override" if (override and not gate.get("passed")) else "promote"
        return self._record_move(principal, tenant_id, kind, CHAMPION, challenger, champion, action, reason, gate,
                                 override=action == "promote_override", deployment=deployment)

    def rollback(self, principal: Principal, tenant_id: str, kind: str, reason: str) -> Doc:
        """Point the champion back at the version that was champion before the current one."""
        require(principal, tenant_id, WRITE_ROLES)
        if not reason.strip():
            raise Invalid("a rollback needs a reason")
        current = self.backend.aliases(tenant_id, _check_kind(kind)).get(CHAMPION)
        target = self._previous_champion(tenant_id, kind, current)
        if target is None:
            raise Invalid(f"the {KIND_LABELS[kind]} model has no earlier champion to roll back to")
        deployment = self.backend.on_champion_changed(tenant_id, kind, target)
        self.backend.set_alias(tenant_id, kind, CHAMPION, target)
        return self._record_move(principal, tenant_id, kind, CHAMPION, target, current, "rollback", reason,
                                 deployment=deployment)

    def _previous_champion(self, tenant_id: str, kind: str, current: str | None) -> str | None:
        moves = self.store.query(ALIASES, tenant_id, [Cond("model", "=", kind), Cond("alias", "=", CHAMPION)],
                                 order_by="at", descending=True, limit=200)
        # Walk back from the move that installed the current champion to the one before it.
        for m in moves:
            if m.get("version") == current:
                prev = m.get("previous")
                if prev and prev != current:
                    return str(prev)
        return None

    # ---- serving ---------------------------------------------------------------------------------------------------
    def _serving(self, tenant_id: str, kind: str) -> _Served:
        key = (tenant_id, kind)
        served = self._served.get(key)
        if served is None or self._now() - served.checked > self.alias_ttl:
            aliases = self.backend.aliases(tenant_id, kind)
            champ, chall = aliases.get(CHAMPION), aliases.get(CHALLENGER)
            if served is not None and served.champion == champ and served.challenger == chall:
                served.checked = self._now()
            else:
                served = _Served(champ, chall, self._now())
                self._served[key] = served
        if served.champion is None:
            raise NotFound(f"the {KIND_LABELS[kind]} model has no champion yet: train a version and promote it")
        if served.predictor is None and served.fallback is None:
            try:
                served.predictor = self.backend.load_predictor(tenant_id, kind, served.champion)
                self._last_good[key] = served.predictor
            except CastielError as e:
                fb = self._fallback_predictor(tenant_id, kind, served.champion)
                if fb is None:
                    raise NotFound(f"the champion v{served.champion} of the {KIND_LABELS[kind]} model cannot be "
                                   f"loaded ({e.message}) and no earlier version can stand in") from e
                served.fallback = fb
                served.fallback_reason = (f"champion v{served.champion} cannot be loaded ({e.message}); "
                                          f"serving v{fb.version} instead")
                log.warning("model fallback for %s/%s: %s", tenant_id, kind, served.fallback_reason)
        return served

    def _fallback_predictor(self, tenant_id: str, kind: str, broken: str) -> Predictor | None:
        last = self._last_good.get((tenant_id, kind))
        if last is not None and last.version != broken:
            return last
        tried = {broken}
        history = self.store.query(ALIASES, tenant_id, [Cond("model", "=", kind), Cond("alias", "=", CHAMPION)],
                                   order_by="at", descending=True, limit=50)
        candidates = [str(v) for m in history for v in (m.get("version"), m.get("previous")) if v]
        candidates += [v["version"] for v in self.backend.versions(tenant_id, kind)]
        for version in candidates:
            if version in tried:
                continue
            tried.add(version)
            try:
                return self.backend.load_predictor(tenant_id, kind, version)
            except CastielError:
                continue
        return None

    def _shadow(self, tenant_id: str, kind: str, served: _Served) -> Predictor | None:
        if not self.shadow_enabled or served.challenger is None or served.challenger == served.champion:
            return None
        if served.shadow is None and not served.shadow_failed:
            try:
                served.shadow = self.backend.load_predictor(tenant_id, kind, served.challenger)
            except CastielError:
                served.shadow_failed = True  # shadow mode never affects the served answer
        return served.shadow

    def predict(
        self,
        principal: Principal,
        tenant_id: str,
        kind: str,
        records: Sequence[Mapping[str, Any]],
        *,
        as_of: str | None = None,
        observed_at: str | None = None,
        log_predictions: bool = True,
        background: bool | None = None,
    ) -> PredictionResult:
        """Score records with the champion; the challenger scores them too (shadow) and every record is logged.

        ``as_of`` is when the records describe the deals (default now); ``observed_at`` is when the
        requests happened, for backfills (default now). Shadow scoring and the log write happen after
        the answer, on a background thread, unless ``background`` is False (the answer then carries
        the shadow values); ``flush()`` waits for them.
        """
        require(principal, tenant_id, ANY_ROLE)
        _check_kind(kind)
        if isinstance(records, Mapping):
            raise Invalid("send a list of records (use predict_one for a single record)")
        if not records:
            raise Invalid("send at least one record to score")
        served = self._serving(tenant_id, kind)
        predictor = served.predictor or served.fallback
        assert predictor is not None
        t0 = time.perf_counter()
        X = predictor.features(records, as_of=as_of or clock.iso())
        values = predictor.predict_features(X)
        latency = (time.perf_counter() - t0) * 1000.0
        result = PredictionResult([float(v) for v in values], predictor.version, served.predictor is None,
                                  served.fallback_reason if served.predictor is None else "", latency)
        shadow = self._shadow(tenant_id, kind, served)
        if shadow is None and not log_predictions:
            return result
        ids = [str(rec.get("id") or rec.get("month") or "") for rec in records]
        if len(result.values) != len(records):  # the forecast: one answer for a whole revenue history
            ids = [f"next-after-{ids[-1]}"]
        job = _AfterAnswer(tenant_id, kind, ids, X, predictor, shadow, result, observed_at or clock.iso(),
                           log_predictions)
        if self.background if background is None else background:
            self._enqueue(job)
        else:
            self._after_answer([job])
        return result

    def _after_answer(self, jobs: Sequence[_AfterAnswer]) -> None:
        """Shadow-score and log a batch of answered requests: one challenger call per group, one store write.

        Batching is what keeps shadow mode cheap under load: scoring 50 queued requests in one call
        costs about what one does, so the background thread leaves the interpreter to the requests.
        """
        groups: dict[tuple[int, int], list[_AfterAnswer]] = {}
        for job in jobs:
            if job.shadow is not None:
                groups.setdefault((id(job.predictor), id(job.shadow)), []).append(job)
        for group in groups.values():
            shadow, predictor = group[0].shadow, group[0].predictor
            assert shadow is not None
            # The same feature builder feeds every version, so the champion's rows serve the challenger.
            if list(shadow.feature_names) != list(predictor.feature_names):
                continue
            try:
                values = shadow.predict_features(np.vstack([j.X for j in group]))
            except CastielError:
                continue
            offset = 0
            for j in group:
                n = len(j.X)
                j.result.shadow_values = [float(v) for v in values[offset:offset + n]]
                j.result.shadow_version = shadow.version
                offset += n
        docs = [doc for job in jobs if job.log for doc in self._log_docs(job)]
        if docs:
            self.store.create_many(PREDICTIONS, docs)
        for job in jobs:
            job.result.logged = len(job.ids) if job.log else 0

    def _enqueue(self, job: _AfterAnswer) -> None:
        with self._pending_lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._drain, name="model-shadow", daemon=True)
                self._worker.start()
        try:
            self._queue.put_nowait(job)
        except Full:
            self._after_answer([job])  # backpressure: this request does its own work, nothing is dropped

    def _drain(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < BACKGROUND_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except Empty:
                    break
            try:
                self._after_answer(batch)
            except Exception:  # the answers went out already; a failed log write must not stop the thread
                self.background_failures += len(batch)
                log.exception("shadow scoring or prediction logging failed for %d request(s)", len(batch))
            finally:
                for _ in batch:
                    self._queue.task_done()

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until background shadow scoring and log writes are done (tests, backfills, shutdown)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.002)

    def predict_one(self, principal: Principal, tenant_id: str, kind: str, record: Mapping[str, Any],
                    **kwargs: Any) -> PredictionResult:
        return self.predict(principal, tenant_id, kind, [record], **kwargs)

    def _log_docs(self, job: _AfterAnswer) -> list[Doc]:
        names = job.predictor.feature_names
        result = job.result
        per_row_ms = result.latency_ms / max(1, len(job.ids))
        return [{
            "id": f"p-{uuid.uuid4().hex}",
            "tenantId": job.tenant_id,
            "model": job.kind,
            "at": job.at,
            "version": result.version,
            "fallback": result.fallback,
            "fallbackReason": result.fallback_reason,
            "latencyMs": round(per_row_ms, 4),
            "output": result.values[i],
            "recordId": record_id,
            "features": {n: _finite(x) for n, x in zip(names, job.X[i], strict=True)},
            "shadowVersion": result.shadow_version,
            "shadowOutput": None if result.shadow_values is None else result.shadow_values[i],
        } for i, record_id in enumerate(job.ids)]

    def recent_predictions(self, principal: Principal, tenant_id: str, kind: str, limit: int = 50) -> list[Doc]:
        require(principal, tenant_id, READ_ROLES)
        return self.store.query(PREDICTIONS, tenant_id, [Cond("model", "=", _check_kind(kind))], order_by="at",
                                descending=True, limit=limit)

    def serving_status(self, principal: Principal, tenant_id: str, kind: str) -> dict[str, Any]:
        """What answers requests right now: the champion, or a flagged fallback and why."""
        require(principal, tenant_id, READ_ROLES)
        try:
            served = self._serving(tenant_id, _check_kind(kind))
        except NotFound as e:
            return {"serving": None, "fallback": False, "reason": e.message}
        p = served.predictor or served.fallback
        return {"serving": p.version if p else None, "champion": served.champion,
                "fallback": served.predictor is None, "reason": served.fallback_reason}

    # ---- shadow agreement ----------------------------------------------------------------------------------------
    def shadow_agreement(self, principal: Principal, tenant_id: str, kind: str, since: str | None = None,
                         until: str | None = None, threshold: float | None = None) -> dict[str, Any]:
        """Champion vs challenger on the same logged requests: correlation, mean absolute difference, flips."""
        require(principal, tenant_id, READ_ROLES)
        self.flush()
        _check_kind(kind)
        conds = [Cond("model", "=", kind)]
        if since:
            conds.append(Cond("at", ">=", since))
        if until:
            conds.append(Cond("at", "<", until))
        rows = [r for r in self.store.query(PREDICTIONS, tenant_id, conds, order_by="at", descending=True,
                                            limit=100_000) if r.get("shadowOutput") is not None]
        thr = threshold if threshold is not None else self.backend.decision_thresholds.get(kind)
        if not rows:
            return {"n": 0, "threshold": thr, "message": "no shadow-scored requests in this window"}
        a = np.asarray([r["output"] for r in rows], dtype=float)
        b = np.asarray([r["shadowOutput"] for r in rows], dtype=float)
        corr = float(np.corrcoef(a, b)[0, 1]) if len(a) > 1 and a.std() > 0 and b.std() > 0 else None
        flips = int(np.sum((a >= thr) != (b >= thr))) if thr is not None else None
        pairs = sorted({(r["version"], r["shadowVersion"]) for r in rows})
        return {
            "n": len(rows), "correlation": corr, "mean_abs_diff": float(np.mean(np.abs(a - b))),
            "mean_diff": float(np.mean(b - a)), "threshold": thr, "flips": flips,
            "flip_rate": None if flips is None else flips / len(rows),
            "champion_versions": sorted({p[0] for p in pairs}), "challenger_versions": sorted({p[1] for p in pairs}),
            "since": rows[-1]["at"], "until": rows[0]["at"],
        }

    # ---- drift ---------------------------------------------------------------------------------------------------
    def run_drift_check(self, principal: Principal, tenant_id: str, kind: str, start: str, end: str,
                        label: str | None = None, version: str | None = None) -> Doc:
        """Check the logged requests of ``[start, end)`` against the serving version's training data."""
        require(principal, tenant_id, WRITE_ROLES)
        self.flush()
        if _check_kind(kind) not in DRIFT_KINDS:
            raise Invalid(f"drift checks apply to per-request models ({', '.join(DRIFT_KINDS)}), not {kind}")
        if start >= end:
            raise Invalid("the drift window must end after it starts")
        rows = self.store.query(PREDICTIONS, tenant_id, [Cond("model", "=", kind), Cond("at", ">=", start),
                                                        Cond("at", "<", end)], limit=self.drift_max_rows)
        if not rows:
            raise Invalid(f"the drift window {start} .. {end} is empty: no {KIND_LABELS[kind]} predictions were "
                          "logged in it")
        version = version or self.backend.aliases(tenant_id, kind).get(CHAMPION)
        if version is None:
            raise NotFound(f"the {KIND_LABELS[kind]} model has no champion to compare against")
        frame_rows = [{**{k: (np.nan if v is None else v) for k, v in r["features"].items()},
                       "prediction": r["output"]} for r in rows]
        result = self.backend.drift_check(tenant_id, kind, version, frame_rows, max_rows=self.drift_max_rows,
                                          alert_share=self.drift_alert_share)
        at = clock.iso()
        check_id = f"{kind}-{_stamp(at)}-{uuid.uuid4().hex[:6]}"
        sample = frame_rows if len(frame_rows) <= REPORT_SAMPLE_ROWS else [
            frame_rows[i] for i in np.random.default_rng(0).choice(len(frame_rows), REPORT_SAMPLE_ROWS, replace=False)]
        blob = f"{tenant_id}/drift/{check_id}.json"
        import json

        self.blobs.put("models", blob, json.dumps(sample, default=_json_number).encode(), "application/json")
        doc = {
            "id": check_id, "tenantId": tenant_id, "model": kind, "at": at, "window": label or f"{start[:10]}",
            "windowStart": start, "windowEnd": end, "version": version,
            "features": [_clean(f) for f in result["features"]], "prediction": _clean(result.get("prediction")),
            "shareDrifted": result["share_drifted"], "datasetDrift": result["dataset_drift"],
            "alert": result["alert"], "alertShare": result["alert_share"], "currentRows": result["current_rows"],
            "sampledRows": result["sampled_rows"], "referenceRows": result["reference_rows"],
            "seconds": result["seconds"], "sampleBlob": blob, "checkedBy": principal.email,
        }
        self.store.create(DRIFT_CHECKS, doc)
        if doc["alert"]:
            drifted = [f["feature"] for f in doc["features"] if f.get("drifted")]
            pred = doc["prediction"] or {}
            self.audit.record(principal, tenant_id, "model.drift_alert", f"model:{kind}",
                              f"window {doc['window']}: {len(drifted)} drifted feature(s)"
                              + (", prediction drift" if pred.get("drifted") else ""),
                              after={"drifted": drifted, "checkId": check_id})
        return doc

    def drift_checks(self, principal: Principal, tenant_id: str, kind: str, limit: int = 60) -> list[Doc]:
        require(principal, tenant_id, READ_ROLES)
        return self.store.query(DRIFT_CHECKS, tenant_id, [Cond("model", "=", _check_kind(kind))], order_by="at",
                                descending=True, limit=limit)

    def drift_report_html(self, principal: Principal, tenant_id: str, kind: str, check_id: str) -> str:
        """Evidently's report for a stored check (rendered once from the stored window sample, then kept)."""
        require(principal, tenant_id, READ_ROLES)
        check = self.store.get(DRIFT_CHECKS, tenant_id, check_id)
        if check.get("model") != _check_kind(kind):
            raise NotFound(f"drift check {check_id} is not a check of the {KIND_LABELS[kind]} model")
        html_blob = f"{tenant_id}/drift/{check_id}.html"
        if self.blobs.exists("models", html_blob):
            return self.blobs.get("models", html_blob).decode()
        import json

        rows = json.loads(self.blobs.get("models", check["sampleBlob"]))
        html = self.backend.drift_report_html(tenant_id, kind, check["version"], rows)
        self.blobs.put("models", html_blob, html.encode(), "text/html")
        return html

    # ---- retraining ----------------------------------------------------------------------------------------------
    def request_retrain(self, principal: Principal, tenant_id: str, kind: str, reason: str) -> Doc:
        """Queue a retrain; refused while one of the same model is queued or running."""
        require(principal, tenant_id, WRITE_ROLES)
        if not reason.strip():
            raise Invalid("say why the model should be retrained")
        open_jobs = self._open_retrains(tenant_id, _check_kind(kind))
        if open_jobs:
            j = open_jobs[0]
            raise Conflict(f"a retrain of the {KIND_LABELS[kind]} model is already {j['status']} "
                           f"(job {j['id']}, requested by {j.get('requestedBy')}); wait for it to finish")
        return self.queue.enqueue(principal, QUEUE, RETRAIN_JOB, tenant_id, {"model": kind}, reason=reason,
                                  dedupe_key=f"{RETRAIN_JOB}:{kind}", max_attempts=3)

    def _open_retrains(self, tenant_id: str, kind: str) -> list[Doc]:
        jobs = self.store.query("jobs", tenant_id, [Cond("kind", "=", RETRAIN_JOB),
                                                    Cond("status", "in", list(OPEN_STATES))], limit=50)
        return [j for j in jobs if (j.get("payload") or {}).get("model") == kind]

    def retrain_jobs(self, principal: Principal, tenant_id: str, kind: str, limit: int = 10) -> list[Doc]:
        require(principal, tenant_id, READ_ROLES)
        jobs = self.store.query("jobs", tenant_id, [Cond("kind", "=", RETRAIN_JOB)], order_by="createdAt",
                                descending=True, limit=200)
        return [j for j in jobs if (j.get("payload") or {}).get("model") == _check_kind(kind)][:limit]

    def _acquire_lock(self, tenant_id: str, kind: str, holder: str) -> None:
        lock_id = f"retrain-lock-{kind}"
        now = clock.iso()

        def take(doc: Doc | None) -> Doc | None:
            if doc is not None and doc.get("holder") and doc.get("until", "") > now and doc["holder"] != holder:
                raise Conflict(f"another retrain of the {KIND_LABELS[kind]} model is running ({doc['holder']} "
                               f"since {doc.get('since')})")
            return {"kind": "retrain_lock", "holder": holder, "since": now,
                    "until": clock.iso_in(LOCK_TTL_SECONDS)}

        self.store.update(SETTINGS, tenant_id, lock_id, take)

    def _release_lock(self, tenant_id: str, kind: str, holder: str) -> None:
        def drop(doc: Doc | None) -> Doc | None:
            if doc is None or doc.get("holder") != holder:
                return None
            return {**doc, "holder": None, "until": ""}

        self.store.update(SETTINGS, tenant_id, f"retrain-lock-{kind}", drop)

    def retrain(self, principal: Principal, tenant_id: str, kind: str, *, reason: str = "",
                trained_by: str | None = None, holder: str | None = None,
                progress: Callable[[float, str], None] | None = None, window_end: str | None = None,
                seed: int = 0) -> dict[str, Any]:
        """Train a new version now (the queue handler calls this) and make it the challenger; gate recorded.

        Refused with ``Conflict`` while another retrain of the same model runs (the lock record).
        """
        require(principal, tenant_id, WRITE_ROLES)
        _check_kind(kind)
        holder = holder or f"{principal.email}:{uuid.uuid4().hex[:6]}"
        self._acquire_lock(tenant_id, kind, holder)
        try:
            records, synthetic = self._training_inputs(tenant_id)
            info = self.backend.train(tenant_id, kind, records, trained_by=trained_by or principal.email,
                                      synthetic=synthetic,
                                      window_end=window_end, seed=seed, progress=progress)
        finally:
            self._release_lock(tenant_id, kind, holder)
        self.audit.record(principal, tenant_id, "model.train", f"model:{kind}:v{info['version']}", reason,
                          after={"version": info["version"], "metrics": info["metrics"],
                                 "gate": (info.get("gate") or {}).get("passed")})
        aliases = self.backend.aliases(tenant_id, kind)
        self.backend.set_alias(tenant_id, kind, CHALLENGER, info["version"])
        self._record_move(principal, tenant_id, kind, CHALLENGER, info["version"], aliases.get(CHALLENGER),
                          "set_challenger", reason or "retrained", info.get("gate"))
        self._touch_settings(tenant_id, kind, lastTrainedAt=clock.iso(), lastVersion=info["version"])
        return info

    def _training_inputs(self, tenant_id: str) -> tuple[list[Doc], bool]:
        records = self.store.query("crm_records", tenant_id, [Cond("objectType", "=", "opportunity")], limit=500_000)
        tenant = self.store.get_or_none("tenants", tenant_id, tenant_id) or {}
        return records, bool(tenant.get("demo"))

    def revenue_history(self, principal: Principal, tenant_id: str) -> list[dict]:
        require(principal, tenant_id, READ_ROLES)
        records, synthetic = self._training_inputs(tenant_id)
        return self.backend.revenue_history(tenant_id, records, synthetic)

    def prune_predictions(self, tenant_id: str, keep_days: int = PREDICTION_RETENTION_DAYS,
                          batch: int = 5000) -> int:
        """Delete logged predictions older than ``keep_days`` (the worker's daily job); returns how many."""
        cutoff = clock.iso(clock.now() - timedelta(days=keep_days))
        old = self.store.query(PREDICTIONS, tenant_id, [Cond("at", "<", cutoff)], limit=batch)
        for doc in old:
            self.store.delete(PREDICTIONS, tenant_id, doc["id"])
        return len(old)

    # ---- schedule ------------------------------------------------------------------------------------------------
    def _touch_settings(self, tenant_id: str, kind: str, **fields: Any) -> Doc:
        def change(doc: Doc | None) -> Doc:
            doc = doc or {"kind": "model_settings", "model": kind, "retrainEveryDays": None}
            doc.update(fields)
            return doc

        out = self.store.update(SETTINGS, tenant_id, f"settings-{kind}", change)
        assert out is not None
        return out

    def schedule_settings(self, principal: Principal, tenant_id: str, kind: str) -> Doc:
        require(principal, tenant_id, READ_ROLES)
        return self.store.get_or_none(SETTINGS, tenant_id, f"settings-{_check_kind(kind)}") or {
            "model": kind, "retrainEveryDays": None}

    def set_schedule(self, principal: Principal, tenant_id: str, kind: str, every_days: int | None,
                     reason: str) -> Doc:
        """Retrain ``kind`` every ``every_days`` days (None: only on demand)."""
        require(principal, tenant_id, WRITE_ROLES)
        _check_kind(kind)
        if every_days is not None and not (1 <= int(every_days) <= 365):
            raise Invalid("retrain every 1 to 365 days, or turn the schedule off")
        if not reason.strip():
            raise Invalid("say why the schedule changes")
        before = self.schedule_settings(principal, tenant_id, kind).get("retrainEveryDays")
        doc = self._touch_settings(tenant_id, kind, retrainEveryDays=None if every_days is None else int(every_days))
        self.audit.record(principal, tenant_id, "model.schedule", f"model:{kind}", reason,
                          before={"retrainEveryDays": before}, after={"retrainEveryDays": doc["retrainEveryDays"]})
        return doc

    def due_retrains(self, tenant_ids: Sequence[str]) -> list[tuple[str, str]]:
        """(tenant, model) pairs whose schedule says a retrain is due now (for the scheduler)."""
        due = []
        now = clock.now()
        for tid in tenant_ids:
            for doc in self.store.query(SETTINGS, tid, [Cond("kind", "=", "model_settings")]):
                every = doc.get("retrainEveryDays")
                if not every:
                    continue
                last = doc.get("lastTrainedAt")
                if last is None or clock.parse(last) <= now - timedelta(days=float(every)):
                    due.append((tid, doc["model"]))
        return due

    # ---- feature facts for the overview and the alert evaluator --------------------------------------------------
    def _latest_checks(self, tenant_id: str) -> dict[str, Doc]:
        out = {}
        for kind in DRIFT_KINDS:
            rows = self.store.query(DRIFT_CHECKS, tenant_id, [Cond("model", "=", kind)], order_by="at",
                                    descending=True, limit=1)
            if rows:
                out[kind] = rows[0]
        return out

    def alert_facts(self, tenant_id: str) -> dict[str, Any]:
        """The ``model_drift`` fact: one subject per model whose latest drift check raised the alert."""
        subjects = {}
        for kind, check in self._latest_checks(tenant_id).items():
            drifted = [f["feature"] for f in check.get("features", []) if f.get("drifted")]
            pred = (check.get("prediction") or {}).get("drifted")
            subjects[kind] = {
                "value": 1.0 if check.get("alert") else 0.0,
                "label": f"{KIND_LABELS[kind]}: {len(drifted)} drifted feature(s)"
                         + (" and prediction drift" if pred else "") + f" in window {check.get('window')}",
                "link": f"models?tenant={tenant_id}&model={kind}",
            }
        return {"model_drift": subjects}

    def overview_figures(self, tenant_ids: Sequence[str]) -> dict[str, dict[str, Any]] | None:
        """Per tenant: ``models`` with a champion, ``drifted`` (latest check alerted), ``gate`` of the pending
        challenger (passed/failed), and ``model`` to link to. None when no tenant has models."""
        out: dict[str, dict[str, Any]] = {}
        for tid in tenant_ids:
            moves = self.store.query(ALIASES, tid, order_by="at", descending=True, limit=50)
            if not moves:
                continue
            champions = {m["model"] for m in moves if m.get("alias") == CHAMPION}
            latest = self._latest_checks(tid)
            drifting = [k for k, c in latest.items() if c.get("alert")]
            pending = [m for m in moves if m.get("alias") == CHALLENGER and m.get("action") == "set_challenger"]
            gate = None
            if pending and pending[0].get("gatePassed") is not None:
                gate = "passed" if pending[0]["gatePassed"] else "failed"
            out[tid] = {"models": len(champions), "drifted": len(drifting), "gate": gate,
                        "model": drifting[0] if drifting else (pending[0]["model"] if pending else None)}
        return out or None


def _stamp(at: str) -> str:
    """An ISO time as id and blob-name characters (no ':' or '.')."""
    return at.replace("-", "").replace(":", "").replace(".", "")


def _clean(value: Any) -> Any:
    """Drift results as JSON the store accepts everywhere (no NaN)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json_number(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__}")


# ---- demo --------------------------------------------------------------------------------------------------------


DEMO_WINDOWS = 7  # daily windows of logged requests; the last carries the planted drift
DEMO_REQUESTS_PER_WINDOW = 1000


def seed_models_demo(services: Any, tenant_id: str, actor: Principal) -> dict[str, Any]:
    """Demo hook: all three models trained for real, a challenger, a week of scored requests with
    shadow scores, and daily drift checks whose last window carries planted drift.

    Champions train on data up to 2025-01 and challengers on everything (to 2025-07), through
    the same service calls the screen and the worker use; then a week of requests (open deals
    generated for each day, the synced open opportunities on the first) is scored through the
    prediction service, and each day gets a drift check. The last day's requests come from a
    shifted population (bigger deals, less activity, more competitors): its check flags them.
    """
    svc: ModelService = services.models
    summary: dict[str, Any] = {"versions": {}, "drift_checks": [], "predictions": 0}
    reason = "demo seed"
    for kind in MODEL_KINDS:
        first = svc.retrain(actor, tenant_id, kind, reason=reason, window_end="2025-01-01")
        svc.promote(actor, tenant_id, kind, reason=f"{reason}: first version, gate checks the targets")
        second = svc.retrain(actor, tenant_id, kind, reason=f"{reason}: a newer data window", seed=1)
        summary["versions"][kind] = [first["version"], second["version"]]
    now = clock.now().replace(hour=0, minute=0, second=0, microsecond=0)
    synced = [r for r in (_open_synced(d) for d in svc.store.query("crm_records", tenant_id,
                                                                   [Cond("objectType", "=", "opportunity")],
                                                                   limit=5000)) if r is not None]
    for day in range(DEMO_WINDOWS):
        start = now - timedelta(days=DEMO_WINDOWS - day)
        end = start + timedelta(days=1)
        drifted = day == DEMO_WINDOWS - 1
        requests = svc.backend.demo_requests(tenant_id, DEMO_REQUESTS_PER_WINDOW, seed=1000 + day,
                                             as_of=start.strftime("%Y-%m-%d"), drifted=drifted)
        if day == 0 and synced:
            requests += synced
        for kind in DRIFT_KINDS:
            res = svc.predict(actor, tenant_id, kind, requests, observed_at=clock.iso(start + timedelta(hours=12)),
                              background=False)
            summary["predictions"] += res.logged
            check = svc.run_drift_check(actor, tenant_id, kind, clock.iso(start), clock.iso(end),
                                        label=start.strftime("%Y-%m-%d"))
            summary["drift_checks"].append({"model": kind, "window": check["window"], "alert": check["alert"]})
    history = svc.revenue_history(actor, tenant_id)
    res = svc.predict(actor, tenant_id, FORECAST, history, background=False)
    summary["forecast_next_month"] = res.values[0]
    return summary


def _open_synced(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    """A synced open opportunity as a scoring request (closed ones are history, not requests)."""
    data = dict(doc.get("data") or {})
    stage = str(data.get("stage") or "").lower()
    if not stage or stage.startswith("closed"):
        return None
    required = ("amount", "created_at", "close_date", "industry", "region")
    if any(not data.get(k) for k in required):
        return None
    data.setdefault("id", doc.get("sourceId"))
    data["as_of"] = data.get("updated_at") or data.get("created_at")
    return data
