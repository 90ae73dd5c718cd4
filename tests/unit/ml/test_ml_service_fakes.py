"""Model service logic against a fake backend: alias cache expiry, deployment before the alias, lock release."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from core.adapters.blobs import LocalBlobStore
from core.adapters.sqlite_store import SqliteStore
from core.errors import ConfigError, Invalid
from core.schema import CONTAINERS
from core.services.access import SYSTEM
from core.services.audit import AuditLog
from core.services.models import CHALLENGER, CHAMPION, ModelBackend, ModelService, Predictor
from core.services.work_queue import WorkQueue


class FakePredictor(Predictor):
    def __init__(self, kind: str, version: str) -> None:
        self.kind, self.version, self.feature_names = kind, version, ["x"]

    def features(self, records: Sequence[Mapping[str, Any]], as_of: object | None = None) -> np.ndarray:
        return np.asarray([[float(r["x"])] for r in records])

    def predict_features(self, X: np.ndarray) -> np.ndarray:
        return X[:, 0] * 0 + float(self.version)  # each version answers its own number


class FakeBackend(ModelBackend):
    kinds = ("risk", "win", "forecast")
    primary_metric = {"risk": "r2", "win": "brier", "forecast": "mape"}
    decision_thresholds = {"risk": 60.0, "win": 0.5}

    def __init__(self) -> None:
        self.alias: dict[str, dict[str, str]] = {}
        self.deploy_error: Exception | None = None
        self.deployed: list[str] = []
        self.trained = 0

    def model_name(self, tenant_id: str, kind: str) -> str:
        return f"{tenant_id}-{kind}"

    def aliases(self, tenant_id: str, kind: str) -> dict[str, str]:
        return dict(self.alias.get(kind, {}))

    def set_alias(self, tenant_id: str, kind: str, alias: str, version: str) -> None:
        self.alias.setdefault(kind, {})[alias] = version

    def delete_alias(self, tenant_id: str, kind: str, alias: str) -> None:
        self.alias.get(kind, {}).pop(alias, None)

    def gate(self, tenant_id: str, kind: str, version: str, champion: str | None) -> dict[str, Any]:
        return {"passed": True, "reasons": [], "checks": []}

    def load_predictor(self, tenant_id: str, kind: str, version: str) -> FakePredictor:
        return FakePredictor(kind, version)

    def versions(self, tenant_id: str, kind: str) -> list[dict[str, Any]]:
        return []

    def on_champion_changed(self, tenant_id: str, kind: str, version: str) -> list[dict[str, int]]:
        if self.deploy_error:
            raise self.deploy_error
        self.deployed.append(version)
        return [{"blue": 100}]

    def train(self, tenant_id: str, kind: str, records: Sequence[Mapping[str, Any]], *, trained_by: str,
              synthetic: bool = False, window_end: str | None = None, seed: int = 0,
              progress: Callable[[float, str], None] | None = None, source: str = "") -> dict[str, Any]:
        self.trained += 1
        raise Invalid("there are no opportunities to train on: sync a CRM connection first")


@pytest.fixture
def svc(tmp_path: Any) -> tuple[ModelService, FakeBackend, list[float]]:
    store = SqliteStore(tmp_path / "s.db")
    store.ensure_containers(CONTAINERS)
    blobs = LocalBlobStore(tmp_path / "blobs")
    blobs.ensure_containers()
    audit = AuditLog(store)
    backend = FakeBackend()
    clock_now = [0.0]
    service = ModelService(store, blobs, audit, WorkQueue(store, audit), backend, alias_ttl=10.0,
                           now=lambda: clock_now[0])
    return service, backend, clock_now


def test_alias_moved_elsewhere_is_picked_up_after_the_ttl(svc: tuple[ModelService, FakeBackend, list[float]]) -> None:
    service, backend, now = svc
    backend.set_alias("t", "risk", CHAMPION, "1")
    assert service.predict_one(SYSTEM, "t", "risk", {"x": 1}, background=False).version == "1"
    backend.set_alias("t", "risk", CHAMPION, "2")  # another process promoted v2
    now[0] = 5.0
    assert service.predict_one(SYSTEM, "t", "risk", {"x": 1}, background=False).version == "1"  # cached
    now[0] = 11.0
    res = service.predict_one(SYSTEM, "t", "risk", {"x": 1}, background=False)
    assert res.version == "2" and res.values == [2.0]


def test_failed_deployment_leaves_the_champion_in_place(svc: tuple[ModelService, FakeBackend, list[float]]) -> None:
    service, backend, _ = svc
    backend.set_alias("t", "win", CHAMPION, "1")
    backend.set_alias("t", "win", CHALLENGER, "2")
    backend.deploy_error = ConfigError("Azure ML rejected the deployment: quota")
    with pytest.raises(ConfigError, match="quota"):
        service.promote(SYSTEM, "t", "win", "ship it")
    assert backend.aliases("t", "win") == {CHAMPION: "1", CHALLENGER: "2"}
    backend.deploy_error = None
    move = service.promote(SYSTEM, "t", "win", "ship it")
    assert backend.deployed == ["2"] and move["deployment"] == [{"blue": 100}]
    assert backend.aliases("t", "win") == {CHAMPION: "2"}


def test_a_refused_training_releases_the_lock(svc: tuple[ModelService, FakeBackend, list[float]]) -> None:
    service, backend, _ = svc
    for _ in range(2):  # the second attempt would hit Conflict if the first had kept the lock
        with pytest.raises(Invalid, match="no opportunities"):
            service.retrain(SYSTEM, "t", "risk", reason="try")
    assert backend.trained == 2


def test_shadow_runs_in_the_background_and_flush_waits(svc: tuple[ModelService, FakeBackend, list[float]]) -> None:
    service, backend, _ = svc
    backend.set_alias("t", "win", CHAMPION, "1")
    backend.set_alias("t", "win", CHALLENGER, "3")
    results = [service.predict_one(SYSTEM, "t", "win", {"x": i, "id": f"r{i}"}) for i in range(50)]
    service.flush()
    assert all(r.values == [1.0] for r in results)
    assert all(r.shadow_values == [3.0] and r.shadow_version == "3" and r.logged == 1 for r in results)
    assert service.store.count("predictions", "t") == 50
