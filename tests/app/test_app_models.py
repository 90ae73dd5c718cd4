"""Models page under AppTest: champion/challenger, versions, drift and its report, gate, promote, rollback, retrain."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.adapters.store import Cond
from core.bootstrap import build
from core.config import load_settings
from core.services.access import SUPPORT, Principal
from core.services.users import user_id_for
from tests.app.apptest_helpers import not_authorised, open_page, texts
from tests.conftest import make_user
from tests.integration.ml.ml_env import TENANT, mlflow_template, seeded_models  # noqa: F401

TIMEOUT = 120


@pytest.fixture
def app_dir(seeded_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:  # noqa: F811
    data_dir = tmp_path / "var"
    shutil.copytree(seeded_models, data_dir)
    monkeypatch.setenv("CASTIEL_DATA_DIR", str(data_dir))
    monkeypatch.delenv("CASTIEL_STORE", raising=False)
    monkeypatch.delenv("CASTIEL_BLOB", raising=False)
    yield data_dir


def who(data_dir: Path, email: str) -> Principal:
    services = build(load_settings(data_dir=data_dir))
    p = services.users.current(user_id_for(email))
    services.store.close()
    assert p is not None
    return p


def page(data_dir: Path, email: str, model: str = "risk") -> Any:
    """Open /models?model=<model> as a deep link does."""
    at = open_page("models", who(data_dir, email), tenant=TENANT, timeout=TIMEOUT)
    at.query_params["model"] = model
    at.run()
    return at


def button(at: Any, label: str) -> Any:
    for b in at.button:
        if b.label == label:
            return b
    raise AssertionError(f"no button {label!r}: {[b.label for b in at.button]}")


def text_input(at: Any, key: str) -> Any:
    return next(t for t in at.text_input if t.key == key)


def frame_with(at: Any, column: str) -> Any:
    for df in at.dataframe:
        if column in getattr(df.value, "columns", []):
            return df.value
    raise AssertionError(f"no table with {column!r}")


def test_ml_engineer_sees_champion_challenger_and_versions(app_dir: Path) -> None:
    at = page(app_dir, "ml@example.com", "win")
    assert not at.exception and not not_authorised(at)
    body = texts(at)
    assert "Champion (serving): v1" in body and "Challenger: v2" in body
    assert "castiel-tenant-a-win" in body and "ECE < 0.05" in body
    versions = frame_with(at, "gate reasons")
    assert list(versions["version"]) == [2, 1] and set(versions["aliases"]) == {"champion", "challenger"}
    assert {"AUC", "Brier", "ECE", "trained by", "data window"} <= set(versions.columns)
    history = frame_with(at, "override")
    assert {"promote", "set_challenger"} <= set(history["action"])
    compare = frame_with(at, "delta")
    assert "★ Brier" in set(compare["metric"])  # the primary metric is marked
    selection = frame_with(at, "imbalance")
    assert set(selection["calibration"]) == {"none", "isotonic", "sigmoid"}
    assert len(at.get("imgs")) >= 1 or len(at.get("image")) >= 1


def test_drift_alert_and_evidently_report(app_dir: Path) -> None:
    at = page(app_dir, "ml@example.com", "risk")
    body = texts(at)
    assert "Drift alert in window" in body and "log_amount" in body
    summary = frame_with(at, "prediction drift score")
    assert list(summary["alert"])[0] is True and not any(list(summary["alert"])[1:])
    button(at, "Show Evidently report").click().run()
    assert not at.exception and "Something went wrong" not in texts(at)
    assert at.get("iframe"), "the report is embedded in an iframe"
    services = build(load_settings(data_dir=app_dir))
    latest = services.store.query("drift_checks", TENANT, [Cond("model", "=", "risk")], order_by="at",
                                  descending=True, limit=1)[0]
    assert services.blobs.exists("models", f"{TENANT}/drift/{latest['id']}.html")
    services.store.close()


def test_gate_blocks_ml_engineer_and_admin_overrides_with_reason(app_dir: Path) -> None:
    at = page(app_dir, "ml@example.com", "risk")
    assert "Gate blocks v2" in texts(at)
    text_input(at, "models_promote_reason_risk").input("ship it")
    button(at, "Promote v2 to champion").click().run()
    assert "gate blocks this promotion" in texts(at)
    admin = page(app_dir, "root@example.com", "risk")
    next(c for c in admin.checkbox if c.key == "models_promote_override_risk").check()
    text_input(admin, "models_promote_reason_risk").input("the newer window is what we want")
    button(admin, "Promote v2 to champion").click().run()
    assert "v2 is the champion now (gate overridden)" in texts(admin)
    assert "Champion (serving): v2" in texts(admin)
    services = build(load_settings(data_dir=app_dir))
    rows = services.audit.search(who(app_dir, "root@example.com"), TENANT, action="model.promote_override").rows
    assert rows and rows[0]["reason"] == "the newer window is what we want"
    services.store.close()


def test_rollback_through_the_dialog(app_dir: Path) -> None:
    admin = page(app_dir, "root@example.com", "forecast")
    next(c for c in admin.checkbox if c.key == "models_promote_override_forecast").check()
    text_input(admin, "models_promote_reason_forecast").input("try v2")
    button(admin, "Promote v2 to champion").click().run()
    assert "Champion (serving): v2" in texts(admin)
    button(admin, "Roll back…").click().run()
    next(t for t in admin.text_area if t.key == "models_rollback_reason").input("v2 forecasts look off")
    button(admin, "Roll back").click().run()
    body = texts(admin)
    assert "Rolled back: v1 is the champion again (was v2)" in body and "Champion (serving): v1" in body


def test_retrain_is_queued_once_and_a_second_request_is_refused(app_dir: Path) -> None:
    at = page(app_dir, "ml@example.com", "win")
    text_input(at, "models_retrain_reason_win").input("new quarter")
    button(at, "Queue retrain").click().run()
    assert "Retrain queued" in texts(at)
    assert any("waiting for a worker" in (p.value if isinstance(p.value, str) else str(p.proto.text))
               for p in at.get("progress")) or "queued" in texts(at)
    text_input(at, "models_retrain_reason_win").input("again")
    button(at, "Queue retrain").click().run()
    assert "already queued" in texts(at)


def test_fallback_is_shown_when_the_champion_cannot_load(app_dir: Path) -> None:
    services = build(load_settings(data_dir=app_dir))
    name = services.models.backend.model_name(TENANT, "win")
    cache = app_dir / "model_cache" / name / "1"
    services.models.backend.registry.load(name, "1")  # download into the cache, then break it
    (cache / "model" / "model.skops").write_bytes(b"broken")
    services.store.close()
    at = page(app_dir, "ml@example.com", "win")
    assert "Serving a fallback: champion v1 cannot be loaded" in texts(at)


def test_roles_and_tenants_are_enforced(app_dir: Path) -> None:
    services = build(load_settings(data_dir=app_dir))
    support = make_user(services, SUPPORT, TENANT, "support@example.com")
    services.store.close()
    at = open_page("models", support, tenant=TENANT, timeout=TIMEOUT)
    assert not_authorised(at)
    outsider = page(app_dir, "ml-b@example.com")
    body = texts(outsider)
    # Either refused outright, or scoped to the user's own tenant: never tenant-a's models.
    assert not_authorised(outsider) or ("castiel-tenant-b-risk" in body and "castiel-tenant-a" not in body)
    assert "Champion (serving): v" not in body
