"""The MLflow registry wrapper on a real SQLite tracking store: runs, versions, aliases, safe loading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import skops.io

from core.errors import Invalid, NotFound
from ml.registry import CHALLENGER, CHAMPION, TRUSTED_TYPES, ModelLoadError, ModelRegistry, registered_name
from ml.synthetic import generate_crm
from ml.training import predict, train_forecast, train_risk, train_win


@pytest.fixture(scope="module")
def trained() -> dict:
    c = generate_crm(4000, seed=21)
    hist = generate_crm(40_000, seed=22)
    return {"risk": train_risk(c.opportunities), "win": train_win(c.opportunities),
            "forecast": train_forecast(hist.opportunities, start=hist.start, end=hist.end)}


@pytest.fixture
def registry(tmp_path: Path, mlflow_template: Path) -> ModelRegistry:
    shutil.copy(mlflow_template, tmp_path / "mlflow.db")
    return ModelRegistry(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts", tmp_path / "cache")


@pytest.mark.parametrize("kind", ["risk", "win", "forecast"])
def test_each_kind_saves_with_our_trusted_types_only(trained: dict, kind: str) -> None:
    blob = skops.io.dumps(trained[kind].estimator)
    assert set(skops.io.get_untrusted_types(data=blob)) <= set(TRUSTED_TYPES)


def test_log_register_alias_and_load_round_trip(registry: ModelRegistry, trained: dict) -> None:
    infos = {k: registry.log_training("t1", m, trained_by="ana@example.com", source="test") for k, m in trained.items()}
    for kind, info in infos.items():
        assert info.name == registered_name("t1", kind) and info.version == "1"
        assert info.trained_by == "ana@example.com" and info.n_rows == trained[kind].n_rows
        assert info.metrics[{"risk": "r2", "win": "ece", "forecast": "mape"}[kind]] == pytest.approx(
            trained[kind].metrics[{"risk": "r2", "win": "ece", "forecast": "mape"}[kind]], abs=1e-6)
        loaded = registry.load(info.name, info.version)
        X = trained[kind].input_example
        np.testing.assert_allclose(predict(kind, loaded.estimator, X), predict(kind, trained[kind].estimator, X))
        assert loaded.feature_names == list(X.columns)
    names = registry.plot_names(infos["win"].name, "1")
    assert {"reliability.png", "residuals.png", "feature_importance.png"} <= set(names)
    assert registry.plot(infos["win"].name, "1", "reliability.png")[:8] == b"\x89PNG\r\n\x1a\n"
    assert "backtest.png" in registry.plot_names(infos["forecast"].name, "1")
    ev = registry.evaluation(infos["win"].name, "1")
    assert len(ev["selection"]) == 6 and len(ev["reliability"]) == 15
    prof = registry.reference_profile(infos["risk"].name, "1")
    assert "log_amount" in prof.columns and "prediction" in prof.columns
    with pytest.raises(NotFound, match="no drift reference"):
        registry.reference_profile(infos["forecast"].name, "1")

    second = registry.log_training("t1", trained["risk"], trained_by="bo@example.com")
    registry.set_alias(second.name, CHAMPION, "1")
    registry.set_alias(second.name, CHALLENGER, "2")
    assert registry.aliases(second.name) == {CHAMPION: "1", CHALLENGER: "2"}
    listed = registry.versions(second.name)
    assert [v.version for v in listed] == ["2", "1"] and listed[0].aliases == [CHALLENGER]
    with pytest.raises(Invalid):
        registry.set_alias(second.name, "production", "1")
    with pytest.raises(NotFound):
        registry.set_alias(second.name, CHAMPION, "9")


def test_signature_and_requirements_are_logged(registry: ModelRegistry, trained: dict, tmp_path: Path) -> None:
    info = registry.log_training("t2", trained["risk"], trained_by="x")
    model_dir = registry.cache_dir / info.name / "1" / "model"
    registry.load(info.name, "1")
    mlmodel = (model_dir / "MLmodel").read_text()
    assert "signature:" in mlmodel and "log_amount" in mlmodel and "serialization_format: skops" in mlmodel
    reqs = (model_dir / "requirements.txt").read_text()
    assert "scikit-learn==" in reqs and "skops==" in reqs


def test_tampered_artifact_is_refused_not_executed(registry: ModelRegistry, trained: dict) -> None:
    info = registry.log_training("t3", trained["risk"], trained_by="x")
    registry.load(info.name, "1")
    model_file = registry.cache_dir / info.name / "1" / "model" / "model.skops"
    # A skops file naming an untrusted callable: our allow-list refuses it even though MLmodel would trust it.
    model_file.write_bytes(skops.io.dumps({"f": np.save}))
    mlmodel = model_file.parent / "MLmodel"
    mlmodel.write_text(mlmodel.read_text() + "\n# skops_trusted_types: [numpy.save]\n")
    with pytest.raises(ModelLoadError, match="cannot be read"):
        registry.load(info.name, "1")
    model_file.write_bytes(b"\x00garbage")
    with pytest.raises(ModelLoadError):
        registry.load(info.name, "1")
    registry.drop_cache(info.name)
    assert registry.load(info.name, "1").kind == "risk"  # a fresh download from the artifact store is fine


def test_gate_tag_is_kept_with_the_version(registry: ModelRegistry, trained: dict) -> None:
    from ml.registry import evaluate_gate

    gate = evaluate_gate("win", trained["win"].metrics, {"brier": 0.0}, baseline_version="7")
    info = registry.log_training("t4", trained["win"], trained_by="x", gate=gate)
    assert info.gate is not None and info.gate["passed"] is False and info.gate["baseline_version"] == "7"
    raw = registry.client.get_model_version(info.name, "1").tags["gate"]
    assert json.loads(raw)["reasons"]
