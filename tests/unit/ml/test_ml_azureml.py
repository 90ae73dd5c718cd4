"""Azure ML specifications: built by the same code in every mode and validated offline by the SDK's schemas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import skops.io

from core.errors import ConfigError, Invalid
from ml import azureml as az
from ml.synthetic import generate_crm

CFG = az.AzureMLSettings(subscription_id="00000000-0000-0000-0000-000000000000", resource_group="rg",
                         workspace="ws", compute="cpu-cluster", instance_type="Standard_DS3_v2")


@pytest.fixture(scope="module")
def code_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return az.stage_code(tmp_path_factory.mktemp("code"))


def test_staged_code_holds_the_packages_the_job_and_scorer_import(code_dir: Path) -> None:
    for rel in ("ml/train_job.py", "ml/azure_score.py", "ml/features.py", "core/errors.py"):
        assert (code_dir / rel).is_file(), rel
    assert not list(code_dir.rglob("__pycache__"))


def test_training_job_validates_offline(code_dir: Path) -> None:
    job = az.training_job(CFG, tenant_id="acme-demo", kind="win", data="azureml://datastores/blob/paths/opps.csv",
                          code_dir=code_dir, trained_by="ana@example.com")
    loaded = az.validate_spec(job, code_dir)
    assert loaded.compute == "cpu-cluster"
    assert "python -m ml.train_job" in loaded.command and "--kind ${{inputs.kind}}" in loaded.command
    assert job.inputs["kind"] == "win" and loaded.experiment_name == "castiel-acme-demo"
    assert str(loaded.inputs["data"].path).endswith("opps.csv")
    pins = json.dumps(job.environment.conda_file)
    assert "scikit-learn==" in pins and "azureml-mlflow" in pins


def test_endpoint_and_deployment_validate_offline(code_dir: Path) -> None:
    ep = az.online_endpoint(CFG, tenant_id="acme-demo", kind="risk", traffic={"blue": 90, "green": 10})
    assert az.validate_spec(ep).traffic == {"blue": 90, "green": 10}
    dep = az.online_deployment(CFG, tenant_id="acme-demo", kind="risk", model_version="3", color="green",
                               code_dir=code_dir)
    loaded = az.validate_spec(dep, code_dir)
    assert loaded.name == "green" and loaded.endpoint_name == ep.name
    assert str(loaded.model).endswith("castiel-acme-demo-risk:3")
    assert loaded.code_configuration.scoring_script == "ml/azure_score.py"
    assert loaded.environment_variables["CASTIEL_MODEL_KIND"] == "risk"


def test_bad_specs_are_refused(code_dir: Path) -> None:
    with pytest.raises(Invalid, match="add up to 100"):
        az.online_endpoint(CFG, tenant_id="t", kind="risk", traffic={"blue": 60, "green": 30})
    with pytest.raises(Invalid, match="colour"):
        az.online_deployment(CFG, tenant_id="t", kind="risk", model_version="1", color="red", code_dir=code_dir)
    with pytest.raises(Invalid, match="version"):
        az.online_deployment(CFG, tenant_id="t", kind="risk", model_version="latest", color="blue", code_dir=code_dir)
    with pytest.raises(Invalid, match="kind"):
        az.training_job(CFG, tenant_id="t", kind="churn", data="x.csv", code_dir=code_dir, trained_by="a")
    job = az.training_job(CFG, tenant_id="t", kind="risk", data="azureml://datastores/b/paths/x.csv",
                          code_dir=code_dir, trained_by="a")
    job.command = None  # a job without a command is not a job
    with pytest.raises(Invalid, match="Azure ML rejects"):
        az.validate_spec(job, code_dir)


def test_endpoint_names_fit_azures_rules() -> None:
    name = az.endpoint_name("a-very-long-tenant-name-for-testing", "forecast")
    assert len(name) <= 32 and name.endswith("-forecast") and az._ENDPOINT_NAME.match(name)
    assert az.endpoint_name("acme", "win") == "castiel-acme-win"


def test_blue_green_rollout_plan() -> None:
    assert az.next_color({}) == "blue" and az.rollout_plan({}, "blue") == [{"blue": 100}]
    assert az.next_color({"blue": 100}) == "green"
    assert az.rollout_plan({"blue": 100}, "green") == [{"green": 10, "blue": 90}, {"green": 50, "blue": 50},
                                                       {"green": 100, "blue": 0}]
    assert az.live_color({"blue": 10, "green": 90}) == "green"


def test_client_needs_a_workspace() -> None:
    with pytest.raises(ConfigError):
        az.AzureMLClient(az.AzureMLSettings())


def test_scoring_script_scores_raw_records_like_the_console(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ml import azure_score
    from ml.features import feature_matrix
    from ml.training import predict, train_risk

    c = generate_crm(2500, seed=3)
    model = train_risk(c.opportunities)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.skops").write_bytes(skops.io.dumps(model.estimator))
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("CASTIEL_MODEL_KIND", "risk")
    azure_score.init()
    rows = c.opportunities.head(3).copy()
    for col in ("created_at", "close_date", "as_of", "stage_entered_at", "last_activity_at"):
        rows[col] = rows[col].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    records = rows.drop(columns=["closed_at"]).to_dict("records")
    out = azure_score.run(json.dumps({"records": records}, default=str))
    expected = predict("risk", model.estimator, feature_matrix(records))
    assert out["predictions"] == pytest.approx(list(expected))
    assert "error" in azure_score.run(json.dumps({"records": [{"amount": 5}]}))
