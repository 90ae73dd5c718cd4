"""The ML side of the model service: training, registry, serving, drift and demo data behind one small object.

``core.services.models.ModelService`` talks to a ``ModelBackend`` (the protocol defined
there) and never imports MLflow or scikit-learn; ``MlflowModelBackend`` is that backend,
built in ``core.bootstrap`` from settings. Everything crossing the boundary is plain data
(dicts, lists of records, floats), except ``Predictor`` objects, which the service caches.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.errors import Invalid, NotFound
from ml import drift as D
from ml.azureml import AzureMLClient, AzureMLSettings, stage_code, training_job
from ml.features import (
    CATEGORICAL_FEATURES,
    DRIFT_FEATURES,
    FEATURE_COLUMNS,
    FORECAST_FEATURES,
    feature_matrix,
    forecast_frame,
    opportunities_from_records,
)
from ml.registry import (
    CHAMPION,
    GATE_RULES,
    PRIMARY_METRIC,
    GateResult,
    ModelLoadError,
    ModelRegistry,
    VersionInfo,
    evaluate_gate,
    registered_name,
)
from ml.synthetic import DriftSpec, generate_crm, generate_window
from ml.training import FORECAST, KINDS, RISK, WIN, TrainedModel, evaluate, limited_threads, predict, train

# The demo's planted drift: bigger deals, less activity, more competitors.
DEMO_DRIFT = DriftSpec(amount_scale=1.8, activity_scale=0.5, competitor_rate=0.7)
DECISION_THRESHOLDS = {RISK: 60.0, WIN: 0.5}  # business thresholds for "decision flips" in shadow mode


def train_and_register(
    registry: ModelRegistry,
    tenant_id: str,
    kind: str,
    rows: pd.DataFrame,
    *,
    trained_by: str,
    seed: int = 0,
    source: str = "",
    margins: Mapping[str, float] | None = None,
    progress: Callable[[float, str], None] | None = None,
    **train_kwargs: Any,
) -> VersionInfo:
    """Train, gate against the current champion on the same held-out rows, log and register a new version."""
    note = progress or (lambda f, m: None)
    note(0.05, f"training the {kind} model on {len(rows):,} rows")
    trained = train(kind, rows, seed=seed, **train_kwargs)
    note(0.75, "scoring the champion on the same held-out rows")
    gate = _gate_against_champion(registry, tenant_id, trained, margins)
    note(0.85, "logging the run and registering the version")
    info = registry.log_training(tenant_id, trained, trained_by=trained_by, gate=gate, source=source)
    note(1.0, f"registered version {info.version}")
    return info


def _gate_against_champion(registry: ModelRegistry, tenant_id: str, trained: TrainedModel,
                           margins: Mapping[str, float] | None) -> GateResult:
    name = registered_name(tenant_id, trained.kind)
    champion = registry.alias_version(name, CHAMPION)
    if champion is None:
        return evaluate_gate(trained.kind, trained.metrics, None, margins)
    if trained.holdout is not None:
        try:
            loaded = registry.load(name, champion)
            X, y = trained.holdout
            baseline = evaluate(trained.kind, loaded.estimator, X, y)
            return evaluate_gate(trained.kind, trained.metrics, baseline, margins, baseline_version=champion,
                                 baseline_source="same holdout")
        except (ModelLoadError, Invalid, ValueError):
            pass  # fall back to the champion's recorded metrics
    recorded = registry.version(name, champion).metrics
    return evaluate_gate(trained.kind, trained.metrics, recorded, margins, baseline_version=champion)


def gate_for(info: VersionInfo) -> dict[str, Any]:
    return info.gate or {"passed": False, "reasons": ["no gate was recorded for this version"], "checks": []}


class Predictor:
    """A loaded model version ready to score: the shared feature builder, then the estimator."""

    def __init__(self, kind: str, version: str, estimator: Any, feature_names: Sequence[str]) -> None:
        self.kind, self.version, self.estimator = kind, str(version), estimator
        self.feature_names = list(feature_names)

    def features(self, records: Sequence[Mapping[str, Any]], as_of: object | None = None) -> np.ndarray:
        """Feature rows for raw records (opportunities; for the forecast, monthly revenue history)."""
        if self.kind == FORECAST:
            return _forecast_features(records)
        return feature_matrix(list(records), as_of=as_of)

    def predict_features(self, X: np.ndarray) -> np.ndarray:
        with limited_threads():
            return predict(self.kind, self.estimator, X)


def _forecast_features(history: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """The next month's forecast features from ``[{"month": "2025-01", "revenue": ...}, ...]``."""
    if not history:
        raise Invalid("a revenue forecast needs the monthly revenue history: [{month, revenue}, ...]")
    try:
        series = pd.Series({pd.Period(str(r["month"]), "M"): float(r["revenue"]) for r in history}).sort_index()
    except (KeyError, ValueError, TypeError):
        raise Invalid("each history row needs a 'month' (YYYY-MM) and a numeric 'revenue'") from None
    series = series.reindex(pd.period_range(series.index[0], series.index[-1], freq="M"))
    if series.isna().any() or len(series) < 12:
        raise Invalid("the revenue history must cover at least 12 consecutive months")
    frame = forecast_frame(series, horizon=1)
    return frame.iloc[[-1]][list(FORECAST_FEATURES)].to_numpy(float)


class MlflowModelBackend:
    """``ModelBackend`` on MLflow (tracking URI from settings) and scikit-learn."""

    kinds: tuple[str, ...] = KINDS
    primary_metric = PRIMARY_METRIC
    decision_thresholds = DECISION_THRESHOLDS
    feature_names = list(FEATURE_COLUMNS)

    def __init__(self, tracking_uri: str, data_dir: Path | str, *, history_rows: int = 100_000,
                 classifier_rows: int = 20_000, margins: Mapping[str, float] | None = None,
                 azure: AzureMLSettings | None = None) -> None:
        data_dir = Path(data_dir)
        self.data_dir = data_dir
        self.azure = azure or AzureMLSettings()
        self.registry = ModelRegistry(tracking_uri, data_dir / "mlartifacts", data_dir / "model_cache")
        self.history_rows = history_rows
        self.classifier_rows = classifier_rows
        self.margins = dict(margins or {})
        self._synthetic: dict[tuple[str, int, int], pd.DataFrame] = {}
        self._history_start: dict[str, pd.Timestamp] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Any) -> MlflowModelBackend:
        azure = AzureMLSettings(
            subscription_id=getattr(settings, "azureml_subscription_id", None),
            resource_group=getattr(settings, "azureml_resource_group", None),
            workspace=getattr(settings, "azureml_workspace", None),
            compute=getattr(settings, "azureml_compute", "cpu-cluster"),
            instance_type=getattr(settings, "azureml_instance_type", "Standard_DS3_v2"),
        )
        return cls(settings.tracking_uri, settings.data_dir, azure=azure)

    # naming -------------------------------------------------------------------------------------------------------
    def model_name(self, tenant_id: str, kind: str) -> str:
        return registered_name(tenant_id, kind)

    def gate_rules(self, kind: str) -> list[dict[str, Any]]:
        return [{"metric": r.metric, "greater_is_better": r.greater_is_better, "target": r.target,
                 "margin": self.margins.get(r.metric, r.margin) if i == 0 else None}
                for i, r in enumerate(GATE_RULES[kind])]

    # training data ------------------------------------------------------------------------------------------------
    def synthetic_history(self, tenant_id: str, rows: int | None = None, seed: int | None = None) -> pd.DataFrame:
        """The demo tenant's generated CRM history (cached: several models train on it)."""
        n = rows or self.history_rows
        s = seed if seed is not None else _tenant_seed(tenant_id)
        key = (tenant_id, n, s)
        with self._lock:
            if key not in self._synthetic:
                crm = generate_crm(n, seed=s, tenant_id=tenant_id)
                self._synthetic = {key: crm.opportunities}  # one tenant's history at a time: 100k rows each
                self._history_start[tenant_id] = crm.start  # revenue before it is the generator's ramp-up
            return self._synthetic[key]

    def training_frame(self, tenant_id: str, records: Sequence[Mapping[str, Any]], synthetic: bool,
                       synthetic_rows: int | None = None) -> pd.DataFrame:
        """Synced opportunities (crm_records), plus the generated history for demo tenants."""
        parts = []
        synced = opportunities_from_records(records) if records else pd.DataFrame()
        if not synced.empty:
            parts.append(synced)
        if synthetic:
            parts.append(self.synthetic_history(tenant_id, synthetic_rows))
        if not parts:
            raise Invalid("there are no opportunities to train on: sync a CRM connection first")
        frame = pd.concat(parts, ignore_index=True, sort=False)
        return frame

    def _window(self, kind: str, frame: pd.DataFrame, window_end: str | None,
                start: pd.Timestamp | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
        if kind == FORECAST:
            end = pd.Timestamp(window_end).replace(day=1) if window_end else None
            if end is None and "closed_at" in frame.columns:
                latest = pd.to_datetime(frame["closed_at"], errors="coerce").max()
                end = (latest + pd.offsets.MonthBegin(1)).normalize() if pd.notna(latest) else None
            return frame, {"end": end, "start": start}
        as_of = pd.to_datetime(frame["as_of"], utc=True, errors="coerce", format="ISO8601").dt.tz_localize(None)
        keep = as_of.notna()
        if window_end:
            keep &= as_of < pd.Timestamp(window_end)
        if kind == WIN and "status" in frame.columns:
            keep &= frame["status"] != "open"
        chosen = frame[keep.to_numpy()]
        order = as_of[keep].sort_values(kind="stable").index
        chosen = chosen.loc[order[-self.classifier_rows:]]
        return chosen, {}

    def train(self, tenant_id: str, kind: str, records: Sequence[Mapping[str, Any]], *, trained_by: str,
              synthetic: bool = False, window_end: str | None = None, seed: int = 0,
              progress: Callable[[float, str], None] | None = None, source: str = "") -> dict[str, Any]:
        if kind not in KINDS:
            raise Invalid(f"unknown model kind {kind!r}; use one of {', '.join(KINDS)}")
        note = progress or (lambda f, m: None)
        note(0.01, "assembling the training data")
        frame = self.training_frame(tenant_id, records, synthetic)
        rows, extra = self._window(kind, frame, window_end, self._history_start.get(tenant_id) if synthetic else None)
        origin = [f"{len(records)} synced records"] + (["generated history"] if synthetic else [])
        if self.azure.configured:
            return self._train_on_azure(tenant_id, kind, rows, trained_by=trained_by, seed=seed, progress=note)
        info = train_and_register(
            self.registry, tenant_id, kind, rows, trained_by=trained_by, seed=seed,
            source=source or " + ".join(origin), margins=self.margins, progress=note, **extra,
        )
        return info.as_dict()

    def _train_on_azure(self, tenant_id: str, kind: str, rows: pd.DataFrame, *, trained_by: str, seed: int,
                        progress: Callable[[float, str], None]) -> dict[str, Any]:
        """Run the training as an Azure ML command job; it registers the version in the workspace's MLflow.

        The tracking URI must be the workspace's, so the version the job registers is the one read back.
        """
        import tempfile
        import time

        client = AzureMLClient(self.azure)
        name = registered_name(tenant_id, kind)
        before = {v.version for v in self.registry.versions(name)}
        with tempfile.TemporaryDirectory(prefix="castiel-azureml-") as tmp:
            data = Path(tmp) / "opportunities.csv"
            rows.to_csv(data, index=False)
            job = training_job(self.azure, tenant_id=tenant_id, kind=kind, data=str(data),
                               code_dir=stage_code(Path(tmp) / "code"), trained_by=trained_by, seed=seed)
            job_name = client.submit_training(job)  # uploads the code and the data, then queues on the cluster
        progress(0.1, f"Azure ML job {job_name} submitted")
        while True:
            status = str(client.ml.jobs.get(job_name).status)
            if status in ("Completed", "Failed", "Canceled", "NotResponding"):
                break
            progress(0.5, f"Azure ML job {job_name}: {status}")
            time.sleep(15)
        if status != "Completed":
            raise Invalid(f"the Azure ML training job {job_name} ended {status}; see its logs in the workspace")
        new = [v for v in self.registry.versions(name) if v.version not in before]
        if not new:
            raise NotFound(f"the Azure ML job {job_name} finished but registered no version of {name}")
        return new[0].as_dict()

    def on_champion_changed(self, tenant_id: str, kind: str, version: str) -> list[dict[str, int]]:
        """With a workspace configured, deploy the new champion blue/green; returns the traffic plan."""
        if not self.azure.configured or kind == FORECAST:
            return []
        import tempfile

        with tempfile.TemporaryDirectory(prefix="castiel-azureml-") as tmp:
            return AzureMLClient(self.azure).deploy(tenant_id=tenant_id, kind=kind, model_version=version,
                                                    code_dir=stage_code(Path(tmp) / "code"))

    # registry -----------------------------------------------------------------------------------------------------
    def versions(self, tenant_id: str, kind: str) -> list[dict[str, Any]]:
        return [v.as_dict() for v in self.registry.versions(registered_name(tenant_id, kind))]

    def version(self, tenant_id: str, kind: str, version: str) -> dict[str, Any]:
        return self.registry.version(registered_name(tenant_id, kind), version).as_dict()

    def aliases(self, tenant_id: str, kind: str) -> dict[str, str]:
        return self.registry.aliases(registered_name(tenant_id, kind))

    def set_alias(self, tenant_id: str, kind: str, alias: str, version: str) -> None:
        self.registry.set_alias(registered_name(tenant_id, kind), alias, version)

    def delete_alias(self, tenant_id: str, kind: str, alias: str) -> None:
        self.registry.delete_alias(registered_name(tenant_id, kind), alias)

    def gate(self, tenant_id: str, kind: str, version: str, champion: str | None) -> dict[str, Any]:
        """The gate of ``version`` against ``champion``: as recorded when trained against that same champion
        (scored on the same holdout), else recomputed from both versions' recorded metrics."""
        name = registered_name(tenant_id, kind)
        info = self.registry.version(name, version)
        stored = info.gate or {}
        if stored and (stored.get("baseline_version") == champion or (champion is None and
                                                                       stored.get("baseline_version") is None)):
            return stored
        baseline = self.registry.version(name, champion).metrics if champion else None
        return evaluate_gate(kind, info.metrics, baseline, self.margins, baseline_version=champion).as_dict()

    def load_predictor(self, tenant_id: str, kind: str, version: str) -> Predictor:
        loaded = self.registry.load(registered_name(tenant_id, kind), version)
        return Predictor(loaded.kind, loaded.version, loaded.estimator, loaded.feature_names)

    def evaluation(self, tenant_id: str, kind: str, version: str) -> dict[str, Any]:
        return self.registry.evaluation(registered_name(tenant_id, kind), version)

    def plot(self, tenant_id: str, kind: str, version: str, filename: str) -> bytes:
        return self.registry.plot(registered_name(tenant_id, kind), version, filename)

    def plot_names(self, tenant_id: str, kind: str, version: str) -> list[str]:
        return self.registry.plot_names(registered_name(tenant_id, kind), version)

    def drop_cache(self, tenant_id: str, kind: str, version: str | None = None) -> None:
        self.registry.drop_cache(registered_name(tenant_id, kind), version)

    # drift --------------------------------------------------------------------------------------------------------
    def drift_check(self, tenant_id: str, kind: str, version: str, rows: Sequence[Mapping[str, Any]], *,
                    max_rows: int = D.DEFAULT_MAX_ROWS, alert_share: float = 0.2) -> dict[str, Any]:
        """Drift of logged feature rows (with their ``prediction``) against the version's training reference."""
        if not rows:
            raise Invalid("the drift window is empty: no predictions were logged in it")
        profile = self.registry.reference_profile(registered_name(tenant_id, kind), version)
        current = pd.DataFrame(list(rows))
        result = D.check_drift(profile, current, columns=[c for c in DRIFT_FEATURES if c in profile.columns],
                               max_rows=max_rows, alert_share=alert_share)
        return result.as_dict()

    def drift_report_html(self, tenant_id: str, kind: str, version: str,
                          rows: Sequence[Mapping[str, Any]]) -> str:
        """Evidently's report for a stored window sample against the version's reference sample."""
        if not rows:
            raise Invalid("the drift window is empty: there is nothing to report on")
        reference = self.registry.reference_sample(registered_name(tenant_id, kind), version)
        current = pd.DataFrame(list(rows))
        cols = [c for c in [*FEATURE_COLUMNS, "prediction"] if c in reference.columns and c in current.columns]
        types = {c: (D.CATEGORICAL if c in CATEGORICAL_FEATURES else D.NUMERICAL) for c in cols}
        return D.evidently_report_html(reference[cols], current[cols].astype(float), types)

    # demo ---------------------------------------------------------------------------------------------------------
    def demo_requests(self, tenant_id: str, n: int, *, seed: int, as_of: str, drifted: bool = False) -> list[dict]:
        """Open opportunities as live scoring requests would carry them (ISO strings, no labels)."""
        window = generate_window(n, seed=seed, as_of=as_of, tenant_id=tenant_id,
                                 drift=DEMO_DRIFT if drifted else None)
        cols = ["id", "amount", "stage", "created_at", "close_date", "as_of", "industry", "region", "segment",
                "lead_source", "product", "discount_pct", "contacts", "competitor", "stage_entered_at",
                "close_date_pushes", "activity_count_30d", "meetings_30d", "last_activity_at"]
        out = window[cols].copy()
        for c in ("created_at", "close_date", "as_of", "stage_entered_at", "last_activity_at"):
            out[c] = out[c].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        return out.to_dict("records")

    def demo_drift_features(self) -> list[str]:
        """The feature columns the demo's planted drift moves."""
        moved = set(DEMO_DRIFT.features)
        out = []
        if "amount" in moved:
            out.append("log_amount")
        out += [c for c in ("activity_count_30d", "meetings_30d", "competitor") if c in moved]
        return out

    def revenue_history(self, tenant_id: str, records: Sequence[Mapping[str, Any]], synthetic: bool) -> list[dict]:
        """Monthly won revenue (the forecast model's input) from the same data the forecast trains on."""
        from ml.features import monthly_revenue

        frame = self.training_frame(tenant_id, records, synthetic)
        _, extra = self._window(FORECAST, frame, None, self._history_start.get(tenant_id) if synthetic else None)
        series = monthly_revenue(frame, extra.get("start"), extra.get("end"))
        return [{"month": str(m), "revenue": float(v)} for m, v in series.items()]


def _tenant_seed(tenant_id: str) -> int:
    return int(hashlib.sha256(tenant_id.encode()).hexdigest()[:8], 16)


__all__ = ["DECISION_THRESHOLDS", "DEMO_DRIFT", "MlflowModelBackend", "NotFound", "Predictor", "gate_for",
           "train_and_register"]
