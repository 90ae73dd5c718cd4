"""Shared model-test environment: a migrated MLflow database template and one seeded data dir copied per test.

MLflow creates a new SQLite database by running its whole migration history (seconds on a
loaded machine), so the session migrates one empty database and every test copies it. The
demo seed itself runs once per session at test sizes; tests that change state get a copy.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.bootstrap import Services, build
from core.config import load_settings
from core.migrate import migrate
from core.services import models as model_service
from core.services.access import ADMIN, ML_ENGINEER, SYSTEM, Principal
from core.services.users import user_id_for
from ml.backend import MlflowModelBackend
from ml.registry import ModelRegistry
from tests.conftest import make_user

TEST_SIZES = {"history_rows": 100_000, "classifier_rows": 8_000}
TENANT, OTHER = "tenant-a", "tenant-b"


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("mlflow-template")
    ModelRegistry(f"sqlite:///{d / 'mlflow.db'}", d / "artifacts", d / "cache").client.search_experiments()
    return d / "mlflow.db"


def models_services(data_dir: Path, template: Path | None = None, **sizes: int) -> Services:
    """Services on ``data_dir`` with a model backend at test sizes (the MLflow DB copied from the template)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if template is not None and not (data_dir / "mlflow.db").exists():
        shutil.copy(template, data_dir / "mlflow.db")
    settings = load_settings(data_dir=data_dir)
    backend = MlflowModelBackend(settings.tracking_uri, settings.data_dir, **{**TEST_SIZES, **sizes})
    services = build(settings, model_backend=backend)
    migrate(services)
    return services


@pytest.fixture(scope="session")
def seeded_models(tmp_path_factory: pytest.TempPathFactory, mlflow_template: Path) -> Path:
    """tenant-a (a demo tenant, no CRM sync) seeded by the real demo hook; tenant-b empty."""
    data_dir = tmp_path_factory.mktemp("models-seeded") / "var"
    services = models_services(data_dir, mlflow_template)
    services.tenants.create(SYSTEM, TENANT, "Tenant A", demo=True, reason="test")
    services.tenants.create(SYSTEM, OTHER, "Tenant B", reason="test")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(model_service, "DEMO_WINDOWS", 3)
        mp.setattr(model_service, "DEMO_REQUESTS_PER_WINDOW", 1000)
        model_service.seed_models_demo(services, TENANT, SYSTEM)
    make_user(services, ADMIN, None, "root@example.com")
    make_user(services, ML_ENGINEER, TENANT, "ml@example.com")
    make_user(services, ML_ENGINEER, OTHER, "ml-b@example.com")
    services.store.close()
    return data_dir


@pytest.fixture
def models_env(seeded_models: Path, tmp_path: Path) -> Iterator[Services]:
    """A private copy of the seeded data dir with its own services."""
    data_dir = tmp_path / "var"
    shutil.copytree(seeded_models, data_dir)
    services = models_services(data_dir)
    yield services
    services.store.close()


@pytest.fixture
def people(models_env: Services) -> dict[str, Principal]:
    out = {}
    for key, email in (("admin", "root@example.com"), ("ml", "ml@example.com"), ("ml_b", "ml-b@example.com")):
        principal = models_env.users.current(user_id_for(email))
        assert principal is not None
        out[key] = principal
    return out
