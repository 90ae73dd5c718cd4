"""The model registry: MLflow tracking and registered versions, aliases, safe loading, and the promotion gate.

One ``ModelRegistry`` talks to one tracking URI (``Settings.tracking_uri``: SQLite and local
artifacts under the data dir by default, an Azure ML workspace's MLflow URI in production).
Every training run logs params, metrics, plots (PNG), the evaluation data, the drift
reference and the model (skops format, with its signature and pinned requirements); the
model is registered as a new version of ``castiel-<tenant>-<kind>``, and the aliases
``champion`` and ``challenger`` name what serves and what waits (MLflow 3 has no stages).

Loading never trusts the artifact: the skops file is read with *our* allow-list of types
(``TRUSTED_TYPES``), not the list the model's own MLmodel file carries, so a tampered
artifact cannot smuggle in a callable. A missing or unreadable artifact raises
``ModelLoadError`` (a ``NotFound``), which the prediction service turns into a flagged fallback.

The gate (``evaluate_gate``) is a pure function: a challenger is promoted only if it beats
the champion's primary metric by the set margin and meets the platform's absolute targets.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.errors import Invalid, NotFound
from ml.drift import ReferenceProfile
from ml.features import CATEGORICAL_FEATURES, FEATURE_COLUMNS
from ml.plots import plots_for
from ml.training import FORECAST, KINDS, RISK, WIN, TrainedModel

CHAMPION, CHALLENGER = "champion", "challenger"
ALIASES = (CHAMPION, CHALLENGER)
# Types beyond skops' defaults that our three estimators contain (checked by a test per kind).
TRUSTED_TYPES: tuple[str, ...] = (
    "functools.partial",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.utils.validation.check_array",
)
REPORT_REFERENCE_ROWS = 5_000  # reference rows kept for Evidently's report (the fast check uses the full profile)
_REQUIREMENTS = ("scikit-learn", "skops", "numpy", "scipy", "pandas")
_NAME_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class ModelLoadError(NotFound):
    """The model's artifact is missing or cannot be read."""


# ---- gate --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricRule:
    metric: str
    greater_is_better: bool
    target: float | None  # the absolute target, strict (R² > 0.85, ECE < 0.05, MAPE < 0.10); None: compare only
    margin: float  # how much the challenger must beat the champion by (primary metric only)


# Primary metric first; the targets are the platform's plan.
GATE_RULES: dict[str, tuple[MetricRule, ...]] = {
    RISK: (MetricRule("r2", True, 0.85, 0.005),),
    WIN: (MetricRule("brier", False, None, 0.001), MetricRule("ece", False, 0.05, 0.0)),
    FORECAST: (MetricRule("mape", False, 0.10, 0.005),),
}
PRIMARY_METRIC = {k: rules[0].metric for k, rules in GATE_RULES.items()}


@dataclass
class GateResult:
    passed: bool
    reasons: list[str]
    checks: list[dict[str, Any]]
    baseline_version: str | None = None
    baseline_source: str = ""  # "same holdout" or "recorded metrics"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fmt(v: float) -> str:
    return f"{v:.4f}"


def evaluate_gate(kind: str, challenger: Mapping[str, float], champion: Mapping[str, float] | None,
                  margins: Mapping[str, float] | None = None, baseline_version: str | None = None,
                  baseline_source: str = "recorded metrics") -> GateResult:
    """Whether ``challenger`` may replace ``champion``: absolute targets, then the primary metric's margin."""
    if kind not in GATE_RULES:
        raise Invalid(f"unknown model kind {kind!r}")
    checks: list[dict[str, Any]] = []
    reasons: list[str] = []
    for i, rule in enumerate(GATE_RULES[kind]):
        value = challenger.get(rule.metric)
        if value is None or not np.isfinite(value):
            reasons.append(f"{rule.metric} is missing from the challenger's evaluation")
            checks.append({"check": f"{rule.metric} target", "passed": False})
            continue
        sign = ">" if rule.greater_is_better else "<"
        if rule.target is not None:
            ok = value > rule.target if rule.greater_is_better else value < rule.target
            checks.append({"check": f"{rule.metric} {sign} {rule.target}", "value": value, "passed": bool(ok)})
            if not ok:
                reasons.append(f"{rule.metric} {_fmt(value)} misses the target ({rule.metric} {sign} {rule.target})")
        if i == 0 and champion is not None and champion.get(rule.metric) is not None:
            margin = (margins or {}).get(rule.metric, rule.margin)
            base = float(champion[rule.metric])
            needed = base + margin if rule.greater_is_better else base - margin
            better = value >= needed if rule.greater_is_better else value <= needed
            checks.append({"check": f"{rule.metric} beats champion by {margin}", "value": value, "champion": base,
                           "needed": needed, "passed": bool(better)})
            if not better:
                direction = "at least" if rule.greater_is_better else "at most"
                reasons.append(
                    f"{rule.metric} {_fmt(value)} does not beat the champion's {_fmt(base)} by the margin {margin} "
                    f"(needs {direction} {_fmt(needed)})"
                )
    return GateResult(passed=not reasons, reasons=reasons, checks=checks, baseline_version=baseline_version,
                      baseline_source=baseline_source if champion is not None else "no champion")


# ---- registry ----------------------------------------------------------------------------------------------------


@dataclass
class VersionInfo:
    name: str
    version: str
    kind: str
    run_id: str
    created_at: float  # epoch seconds
    aliases: list[str]
    metrics: dict[str, float]
    trained_by: str
    data_window: tuple[str, str]
    n_rows: int
    gate: dict[str, Any] | None
    params: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    description: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LoadedModel:
    name: str
    version: str
    kind: str
    estimator: Any
    feature_names: list[str]
    run_id: str


def registered_name(tenant_id: str, kind: str) -> str:
    if kind not in KINDS:
        raise Invalid(f"unknown model kind {kind!r}; use one of {', '.join(KINDS)}")
    return f"castiel-{_NAME_SAFE.sub('-', tenant_id)}-{kind}"


def pinned_requirements() -> list[str]:
    """Exact versions of what the model needs (passing them skips MLflow's slow inference of them)."""
    out = []
    for pkg in _REQUIREMENTS:
        try:
            out.append(f"{pkg}=={metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            out.append(pkg)
    return out


class ModelRegistry:
    """MLflow behind a small interface; MLflow is imported lazily (it takes seconds)."""

    def __init__(self, tracking_uri: str, artifact_root: Path | str, cache_dir: Path | str,
                 experiment_prefix: str = "castiel") -> None:
        self.tracking_uri = tracking_uri
        self.artifact_root = Path(artifact_root)
        self.cache_dir = Path(cache_dir)
        self.experiment_prefix = experiment_prefix
        self._client: Any = None
        self._lock = threading.Lock()
        self._experiments: dict[str, str] = {}
        self._profiles: dict[tuple[str, str], ReferenceProfile] = {}

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                import os

                # Artifact downloads draw a progress bar on stderr otherwise; the console logs are no terminal.
                os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
                from mlflow.tracking import MlflowClient

                if self.tracking_uri.startswith("sqlite:///"):
                    Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
                self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
            return self._client

    # experiments and runs ---------------------------------------------------------------------------------------------
    def _experiment_id(self, tenant_id: str) -> str:
        if tenant_id in self._experiments:
            return self._experiments[tenant_id]
        name = f"{self.experiment_prefix}/{tenant_id}"
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            from mlflow.exceptions import MlflowException

            # A local tracking store keeps artifacts under the data dir; a tracking server (Azure ML) keeps its own.
            artifact_location = None
            if self.tracking_uri.startswith(("sqlite:", "file:")) or "://" not in self.tracking_uri:
                location = (self.artifact_root / _NAME_SAFE.sub("-", tenant_id)).resolve()
                location.mkdir(parents=True, exist_ok=True)
                artifact_location = location.as_uri()
            try:
                exp_id = self.client.create_experiment(name, artifact_location=artifact_location)
            except MlflowException:  # created by a concurrent trainer
                exp = self.client.get_experiment_by_name(name)
                if exp is None:
                    raise
                exp_id = exp.experiment_id
        else:
            exp_id = exp.experiment_id
        self._experiments[tenant_id] = exp_id
        return exp_id

    def log_training(
        self,
        tenant_id: str,
        trained: TrainedModel,
        *,
        trained_by: str,
        gate: GateResult | None = None,
        source: str = "",
        description: str = "",
        extra_tags: Mapping[str, str] | None = None,
    ) -> VersionInfo:
        """Log one training run (params, metrics, plots, evaluation, drift reference, model) and register it."""
        import mlflow.sklearn
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.models import infer_signature

        name = registered_name(tenant_id, trained.kind)
        client = self.client
        exp_id = self._experiment_id(tenant_id)
        now_ms = int(time.time() * 1000)
        run = client.create_run(exp_id, run_name=f"{trained.kind}-{time.strftime('%Y%m%d-%H%M%S')}",
                                tags={"castiel.kind": trained.kind, "castiel.tenant": tenant_id,
                                      "castiel.trained_by": trained_by, "castiel.source": source})
        run_id = run.info.run_id
        try:
            metrics = {k: float(v) for k, v in trained.metrics.items() if v is not None and np.isfinite(v)}
            metrics.update({f"time_{k}": float(v) for k, v in trained.timings.items()})
            params = {k: str(v)[:500] for k, v in trained.params.items()}
            params.update({"data_window_start": trained.data_window[0], "data_window_end": trained.data_window[1],
                           "n_rows": str(trained.n_rows)})
            client.log_batch(
                run_id,
                metrics=[Metric(k, v, now_ms, 0) for k, v in metrics.items()],
                params=[Param(k, v) for k, v in params.items()],
                tags=[RunTag(k, str(v)) for k, v in (extra_tags or {}).items()],
            )
            with tempfile.TemporaryDirectory(prefix="castiel-run-") as tmp:
                root = Path(tmp)
                (root / "plots").mkdir()
                for fname, png in plots_for(trained.kind, trained.evaluation).items():
                    (root / "plots" / fname).write_bytes(png)
                (root / "evaluation.json").write_text(json.dumps(_jsonable(trained.evaluation)))
                (root / "castiel.json").write_text(json.dumps({
                    "kind": trained.kind, "feature_names": trained.feature_names,
                    "categorical_features": [c for c in CATEGORICAL_FEATURES if c in trained.feature_names],
                    "metrics": metrics, "params": params, "trained_by": trained_by,
                }))
                if trained.reference is not None:
                    types = {c: ("categorical" if c in CATEGORICAL_FEATURES else "numerical")
                             for c in trained.reference.columns}
                    profile = ReferenceProfile.build(trained.reference, types)
                    np.savez_compressed(root / "drift_reference.npz", **profile.to_npz())
                    trained.reference.head(REPORT_REFERENCE_ROWS).to_csv(root / "reference_sample.csv.gz", index=False)
                example = trained.input_example
                signature = infer_signature(example, _predict_for_signature(trained, example))
                mlflow.sklearn.save_model(
                    trained.estimator, str(root / "model"), serialization_format="skops",
                    skops_trusted_types=list(TRUSTED_TYPES), signature=signature,
                    pip_requirements=pinned_requirements(),
                )
                client.log_artifacts(run_id, str(root))
            client.set_terminated(run_id, "FINISHED")
        except Exception:
            client.set_terminated(run_id, "FAILED")
            raise
        self._ensure_registered_model(name, tenant_id, trained.kind)
        tags = {
            "kind": trained.kind, "tenant": tenant_id, "trained_by": trained_by,
            "data_window": f"{trained.data_window[0]}..{trained.data_window[1]}", "n_rows": str(trained.n_rows),
            "metrics": json.dumps({k: round(v, 6) for k, v in metrics.items() if not k.startswith("time_")}),
            "params": json.dumps(params)[:4900], "source": source,
        }
        if gate is not None:
            tags["gate"] = json.dumps(_jsonable(gate.as_dict()))[:4900]
        mv = client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run_id, tags=tags,
                                         description=description or None)
        return self.version(name, str(mv.version))

    def _ensure_registered_model(self, name: str, tenant_id: str, kind: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException:
            try:
                self.client.create_registered_model(name, tags={"tenant": tenant_id, "kind": kind})
            except MlflowException:  # a concurrent trainer created it first
                self.client.get_registered_model(name)

    # versions and aliases -----------------------------------------------------------------------------------------
    def _info(self, mv: Any) -> VersionInfo:
        tags = dict(mv.tags or {})
        window = tags.get("data_window", "..").split("..")
        gate = json.loads(tags["gate"]) if tags.get("gate") else None
        return VersionInfo(
            name=mv.name, version=str(mv.version), kind=tags.get("kind", ""), run_id=mv.run_id or "",
            created_at=(mv.creation_timestamp or 0) / 1000.0, aliases=list(mv.aliases or []),
            metrics=json.loads(tags.get("metrics", "{}")), trained_by=tags.get("trained_by", ""),
            data_window=(window[0], window[-1]), n_rows=int(tags.get("n_rows", "0") or 0), gate=gate,
            params=json.loads(tags.get("params", "{}")) if tags.get("params", "").endswith("}") else {},
            source=tags.get("source", ""), description=mv.description or "",
        )

    def version(self, name: str, version: str) -> VersionInfo:
        from mlflow.exceptions import MlflowException

        try:
            return self._info(self.client.get_model_version(name, str(version)))
        except MlflowException:
            raise NotFound(f"model {name} has no version {version}") from None

    def versions(self, name: str) -> list[VersionInfo]:
        """Every version of a registered model, newest first (empty if the model has none yet)."""
        mvs = self.client.search_model_versions(f"name='{name}'")
        infos = sorted((self._info(mv) for mv in mvs), key=lambda v: int(v.version), reverse=True)
        # Search results carry no aliases; the registered model has them all.
        by_version: dict[str, list[str]] = {}
        for alias, version in self.aliases(name).items():
            by_version.setdefault(version, []).append(alias)
        for info in infos:
            info.aliases = sorted(by_version.get(info.version, []))
        return infos

    def aliases(self, name: str) -> dict[str, str]:
        """Alias -> version for a registered model (empty when it does not exist yet)."""
        from mlflow.exceptions import MlflowException

        try:
            return {a: str(v) for a, v in (self.client.get_registered_model(name).aliases or {}).items()}
        except MlflowException:
            return {}

    def alias_version(self, name: str, alias: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            return None

    def set_alias(self, name: str, alias: str, version: str) -> None:
        if alias not in ALIASES:
            raise Invalid(f"alias must be one of {', '.join(ALIASES)}")
        self.version(name, version)  # NotFound for a version that does not exist
        self.client.set_registered_model_alias(name, alias, str(version))

    def delete_alias(self, name: str, alias: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.delete_registered_model_alias(name, alias)
        except MlflowException:
            pass

    def set_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.client.set_model_version_tag(name, str(version), key, value[:4900])

    # artifacts -------------------------------------------------------------------------------------------------------
    def _run_dir(self, name: str, version: str) -> Path:
        """The version's run artifacts in the local cache, downloaded once."""
        info = self.version(name, version)
        target = self.cache_dir / name / str(version)
        marker = target / ".complete"
        if not marker.exists():
            tmp = target.with_name(f"{version}.part-{threading.get_ident()}")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True, exist_ok=True)
            try:
                self.client.download_artifacts(info.run_id, "", str(tmp))
            except Exception as e:  # any artifact-store failure means the model cannot be served
                shutil.rmtree(tmp, ignore_errors=True)
                raise ModelLoadError(f"cannot download the artifacts of {name} v{version}: {e}") from e
            (tmp / ".complete").write_text("ok")
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
        return target

    def drop_cache(self, name: str, version: str | None = None) -> None:
        shutil.rmtree(self.cache_dir / name / str(version) if version else self.cache_dir / name, ignore_errors=True)
        self._profiles = {k: v for k, v in self._profiles.items() if k[0] != name or (version and k[1] != version)}

    def load(self, name: str, version: str) -> LoadedModel:
        """The fitted estimator of one version, read with our skops allow-list."""
        import skops.io

        root = self._run_dir(name, version)
        model_file = root / "model" / "model.skops"
        meta_file = root / "castiel.json"
        if not model_file.is_file() or not meta_file.is_file():
            raise ModelLoadError(f"{name} v{version} has no model artifact")
        try:
            meta = json.loads(meta_file.read_text())
            estimator = skops.io.load(model_file, trusted=list(TRUSTED_TYPES))
        except Exception as e:  # a corrupt file fails in many ways (zip, json, untrusted type)
            raise ModelLoadError(f"the model artifact of {name} v{version} cannot be read: {e}") from e
        if not hasattr(estimator, "predict"):
            raise ModelLoadError(f"the model artifact of {name} v{version} is not a model")
        return LoadedModel(name=name, version=str(version), kind=meta["kind"], estimator=estimator,
                           feature_names=list(meta["feature_names"]), run_id=self.version(name, version).run_id)

    def evaluation(self, name: str, version: str) -> dict[str, Any]:
        path = self._run_dir(name, version) / "evaluation.json"
        if not path.is_file():
            raise NotFound(f"{name} v{version} has no evaluation record")
        return dict(json.loads(path.read_text()))

    def plot(self, name: str, version: str, filename: str) -> bytes:
        if "/" in filename or filename.startswith("."):
            raise Invalid("plot names are plain file names")
        path = self._run_dir(name, version) / "plots" / filename
        if not path.is_file():
            raise NotFound(f"{name} v{version} has no plot {filename}")
        return path.read_bytes()

    def plot_names(self, name: str, version: str) -> list[str]:
        d = self._run_dir(name, version) / "plots"
        return sorted(p.name for p in d.glob("*.png")) if d.is_dir() else []

    def reference_profile(self, name: str, version: str) -> ReferenceProfile:
        key = (name, str(version))
        if key not in self._profiles:
            path = self._run_dir(name, version) / "drift_reference.npz"
            if not path.is_file():
                raise NotFound(f"{name} v{version} has no drift reference (forecast models have none)")
            with np.load(path, allow_pickle=False) as data:
                self._profiles[key] = ReferenceProfile.from_npz({k: data[k] for k in data.files})
        return self._profiles[key]

    def reference_sample(self, name: str, version: str) -> pd.DataFrame:
        path = self._run_dir(name, version) / "reference_sample.csv.gz"
        if not path.is_file():
            raise NotFound(f"{name} v{version} has no reference sample")
        return pd.read_csv(path)


def _predict_for_signature(trained: TrainedModel, example: pd.DataFrame) -> np.ndarray:
    from ml.training import predict

    return predict(trained.kind, trained.estimator, example)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


__all__ = ["ALIASES", "CHALLENGER", "CHAMPION", "FEATURE_COLUMNS", "GATE_RULES", "GateResult", "LoadedModel",
           "ModelLoadError", "ModelRegistry", "PRIMARY_METRIC", "TRUSTED_TYPES", "VersionInfo", "evaluate_gate",
           "pinned_requirements", "registered_name"]
