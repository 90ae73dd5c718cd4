"""The demo seed at its real size: every champion meets the platform's targets, the planted drift is flagged.

Slow (it trains six versions on 100,000 generated opportunities plus the shipped CRM export).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from core.services.access import SYSTEM
from core.services.integrations import seed_integrations_demo
from core.services.models import DEMO_WINDOWS, seed_models_demo
from tests.integration.ml.ml_env import models_services


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_demo_seed_meets_targets_and_flags_planted_drift(tmp_path: Path, mlflow_template: Path) -> None:
    services = models_services(tmp_path / "var", mlflow_template, history_rows=100_000, classifier_rows=20_000)
    services.tenants.create(SYSTEM, "acme-demo", "Acme (demo)", demo=True, reason="test")
    seed_integrations_demo(services, "acme-demo", SYSTEM)  # the shipped CRM export, synced for real
    t0 = time.perf_counter()
    summary = seed_models_demo(services, "acme-demo", SYSTEM)
    print(f"seed_models_demo took {time.perf_counter() - t0:.1f} s")
    svc = services.models
    models = {m.kind: m for m in svc.models(SYSTEM, "acme-demo")}
    assert models["risk"].champion_metrics["r2"] > 0.85
    assert models["win"].champion_metrics["ece"] < 0.05
    assert models["forecast"].champion_metrics["mape"] < 0.10
    for m in models.values():
        assert m.challenger is not None and m.challenger != m.champion
    versions = svc.versions(SYSTEM, "acme-demo", "win")
    assert "synced records" in versions[0]["source"] and not versions[0]["source"].startswith("0 synced")
    for kind in ("risk", "win"):
        checks = svc.drift_checks(SYSTEM, "acme-demo", kind)
        assert len(checks) == DEMO_WINDOWS
        assert checks[0]["alert"] and not any(c["alert"] for c in checks[1:]), [c["window"] for c in checks
                                                                               if c["alert"]]
        rep = svc.shadow_agreement(SYSTEM, "acme-demo", kind)
        assert rep["n"] > 0 and rep["correlation"] is not None
    assert summary["forecast_next_month"] > 0
