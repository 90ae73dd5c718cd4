"""The model service on real MLflow and SQLite: serving, fallback, shadow, gate, promote/rollback, drift, retrain."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from core import clock
from core.adapters.store import Cond
from core.bootstrap import Services
from core.errors import Conflict, Forbidden, Invalid, NotFound
from core.services.access import SYSTEM, Principal
from core.services.models import (
    ALIASES,
    CHALLENGER,
    CHAMPION,
    DRIFT_CHECKS,
    PREDICTIONS,
    RETRAIN_JOB,
    ModelService,
)
from jobs.runner import Worker
from tests.integration.ml.ml_env import OTHER, TENANT, models_services

REQUEST = {
    "id": "opp-1", "amount": 42_000, "stage": "Proposal", "created_at": "2025-05-01T09:00:00Z",
    "close_date": "2025-08-15", "industry": "Software", "region": "EMEA", "segment": "mid_market",
    "lead_source": "referral", "product": "platform", "activity_count_30d": 14, "meetings_30d": 3,
    "days_in_stage": 9, "days_since_last_activity": 2, "contacts": 4, "competitor": 0, "discount_pct": 5.0,
    "close_date_pushes": 0,
}


def svc_of(services: Services) -> ModelService:
    return services.models


def test_seeded_state_has_champion_challenger_and_audited_history(models_env: Services,
                                                                  people: dict[str, Principal]) -> None:
    svc = svc_of(models_env)
    summaries = {m.kind: m for m in svc.models(people["ml"], TENANT)}
    assert set(summaries) == {"risk", "win", "forecast"}
    for m in summaries.values():
        assert m.champion == "1" and m.challenger == "2" and m.versions == 2
    moves = models_env.store.query(ALIASES, TENANT, [Cond("model", "=", "win")])
    assert {(m["action"], m["alias"], m["version"]) for m in moves} >= {("promote", CHAMPION, "1"),
                                                                          ("set_challenger", CHALLENGER, "2")}
    audit = models_env.audit.search(people["admin"], TENANT, action="model.promote").rows
    assert len(audit) == 3 and all(r["reason"] for r in audit)
    versions = svc.versions(people["ml"], TENANT, "risk")
    assert versions[0]["trained_by"] == SYSTEM.email and versions[0]["gate"] is not None
    assert versions[1]["data_window"][1] < versions[0]["data_window"][1]  # the challenger saw newer data


def test_other_tenants_user_cannot_read_or_act(models_env: Services, people: dict[str, Principal]) -> None:
    svc = svc_of(models_env)
    with pytest.raises(Forbidden):
        svc.versions(people["ml_b"], TENANT, "risk")
    with pytest.raises(Forbidden):
        svc.promote(people["ml_b"], TENANT, "risk", "mine now")


def test_single_prediction_is_logged_with_features_and_shadow(models_env: Services,
                                                              people: dict[str, Principal]) -> None:
    svc = svc_of(models_env)
    res = svc.predict_one(people["ml"], TENANT, "win", REQUEST, as_of="2025-06-01T00:00:00Z", background=False)
    assert res.version == "1" and not res.fallback and 0.0 < res.values[0] < 1.0
    assert res.shadow_version == "2" and res.shadow_values is not None
    logged = models_env.store.query(PREDICTIONS, TENANT, [Cond("recordId", "=", "opp-1")])
    assert len(logged) == 1
    doc = logged[0]
    assert doc["output"] == pytest.approx(res.values[0]) and doc["shadowOutput"] == pytest.approx(res.shadow_values[0])
    assert doc["features"]["stage_index"] == 3.0 and doc["features"]["log_amount"] == pytest.approx(np.log(42_000))
    risk = svc.predict_one(people["ml"], TENANT, "risk", REQUEST, as_of="2025-06-01T00:00:00Z")
    assert 0.0 <= risk.values[0] <= 100.0


def test_shadow_scoring_and_logging_happen_after_the_answer(models_env: Services,
                                                            people: dict[str, Principal]) -> None:
    svc = svc_of(models_env)
    before = models_env.store.count(PREDICTIONS, TENANT, [Cond("recordId", "=", "opp-bg")])
    results = [svc.predict_one(people["ml"], TENANT, "risk", {**REQUEST, "id": "opp-bg"}) for _ in range(20)]
    assert all(r.version == "1" for r in results)  # answered by the champion straight away
    svc.flush()
    docs = models_env.store.query(PREDICTIONS, TENANT, [Cond("recordId", "=", "opp-bg")])
    assert len(docs) == before + 20
    assert all(d["shadowVersion"] == "2" and d["shadowOutput"] is not None for d in docs)
    assert all(d["output"] == pytest.approx(results[0].values[0]) for d in docs)
    assert svc.background_failures == 0


def test_bad_request_is_refused_with_the_missing_field(models_env: Services, people: dict[str, Principal]) -> None:
    svc = svc_of(models_env)
    with pytest.raises(Invalid, match="close_date"):
        svc.predict_one(people["ml"], TENANT, "risk", {k: v for k, v in REQUEST.items() if k != "close_date"})
    with pytest.raises(Invalid, match="amount"):
        svc.predict_one(people["ml"], TENANT, "risk", {**REQUEST, "amount": None})


def test_corrupt_champion_artifact_falls_back_and_says_so(models_env: Services,
                                                          people: dict[str, Principal]) -> None:
    svc = svc_of(models_env)
    svc.predict_one(people["ml"], TENANT, "risk", REQUEST)  # loads v1 into the cache
    name = svc.backend.model_name(TENANT, "risk")
    model_file = models_env.settings.data_dir / "model_cache" / name / "1" / "model" / "model.skops"
    assert model_file.is_file()
    model_file.write_bytes(b"this is not a model")
    fresh = ModelService(models_env.store, models_env.blobs, models_env.audit, models_env.queue, svc.backend)
    res = fresh.predict_one(people["ml"], TENANT, "risk", REQUEST)
    fresh.flush()
    assert res.fallback and res.version == "2" and "v1 cannot be loaded" in res.fallback_reason
    status = fresh.serving_status(people["ml"], TENANT, "risk")
    assert status["fallback"] and status["champion"] == "1" and status["serving"] == "2"
    doc = models_env.store.query(PREDICTIONS, TENANT, [Cond("model", "=", "risk")], order_by="at",
                                 descending=True, limit=1)[0]
    assert doc["fallback"] is True and "cannot be loaded" in doc["fallbackReason"]


def test_missing_champion_artifact_with_no_other_version_is_not_found(tmp_path: Path, mlflow_template: Path) -> None:
    services = models_services(tmp_path / "var", mlflow_template)
    svc = svc_of(services)
    services.tenants.create(SYSTEM, "solo", "Solo", demo=True, reason="t")
    svc.retrain(SYSTEM, "solo", "forecast", reason="t")
    svc.promote(SYSTEM, "solo", "forecast", "first")
    name = svc.backend.model_name("solo", "forecast")
    svc.backend.registry.drop_cache(name)
    run_id = svc.backend.registry.version(name, "1").run_id
    artifacts = next(p for p in (tmp_path / "var" / "mlartifacts").rglob("model.skops") if run_id in str(p))
    artifacts.unlink()
    with pytest.raises(NotFound, match="cannot be loaded"):
        ModelService(services.store, services.blobs, services.audit, services.queue, svc.backend).predict(
            SYSTEM, "solo", "forecast", svc.revenue_history(SYSTEM, "solo"))


def test_promotion_blocked_by_gate_then_admin_override(models_env: Services, people: dict[str, Principal]) -> None:
    svc = svc_of(models_env)
    gate = svc.gate(people["ml"], TENANT, "risk")
    if gate["passed"]:
        pytest.skip("the seeded risk challenger happens to pass its gate")
    with pytest.raises(Conflict, match="gate blocks"):
        svc.promote(people["ml"], TENANT, "risk", "looks fine to me")
    with pytest.raises(Forbidden, match="admin"):
        svc.promote(people["ml"], TENANT, "risk", "looks fine to me", override=True)
    with pytest.raises(Invalid, match="reason"):
        svc.promote(people["admin"], TENANT, "risk", "  ", override=True)
    move = svc.promote(people["admin"], TENANT, "risk", "newer data window matters more", override=True)
    assert move["override"] and move["version"] == "2" and move["previous"] == "1" and move["gatePassed"] is False
    aliases = svc.backend.aliases(TENANT, "risk")
    assert aliases == {CHAMPION: "2"}
    assert svc.predict_one(people["ml"], TENANT, "risk", REQUEST).version == "2"  # the cache moved with the alias
    audit = models_env.audit.search(people["admin"], TENANT, action="model.promote_override").rows
    assert audit and audit[0]["reason"] == "newer data window matters more"


def test_rollback_restores_previous_champion_and_is_audited(models_env: Services,
                                                            people: dict[str, Principal]) -> None:
    svc = svc_of(models_env)
    with pytest.raises(Invalid, match="no earlier champion"):
        svc.rollback(people["ml"], TENANT, "forecast", "nothing to go back to")
    svc.promote(people["admin"], TENANT, "forecast", "try the newer one", override=True)
    assert svc.predict(people["ml"], TENANT, "forecast", svc.revenue_history(people["ml"], TENANT)).version == "2"
    move = svc.rollback(people["ml"], TENANT, "forecast", "v2 forecasts look off")
    assert move["version"] == "1" and move["previous"] == "2" and move["action"] == "rollback"
    assert svc.backend.aliases(TENANT, "forecast")[CHAMPION] == "1"
    assert svc.predict(people["ml"], TENANT, "forecast", svc.revenue_history(people["ml"], TENANT)).version == "1"
    rows = models_env.audit.search(people["admin"], TENANT, action="model.rollback").rows
    assert rows[0]["before"] == {CHAMPION: "2"} and rows[0]["after"]["champion"] == "1"


def test_drift_history_flags_the_planted_window(models_env: Services, people: dict[str, Principal]) -> None:
    svc = svc_of(models_env)
    checks = svc.drift_checks(people["ml"], TENANT, "win")
    assert len(checks) == 3
    latest, earlier = checks[0], checks[1:]
    assert latest["alert"] and not any(c["alert"] for c in earlier)
    drifted = {f["feature"] for f in latest["features"] if f["drifted"]}
    assert {"log_amount", "activity_count_30d", "meetings_30d", "competitor"} <= drifted
    assert latest["prediction"]["drifted"]
    facts = svc.alert_facts(TENANT)["model_drift"]
    assert facts["win"]["value"] == 1.0 and "models?tenant=tenant-a&model=win" in facts["win"]["link"]
    figures = svc.overview_figures([TENANT, OTHER])
    assert figures is not None and figures[TENANT]["drifted"] == 2 and OTHER not in figures


def test_evidently_report_for_a_stored_check(models_env: Services, people: dict[str, Principal]) -> None:
    svc = svc_of(models_env)
    check = svc.drift_checks(people["ml"], TENANT, "risk")[0]
    html = svc.drift_report_html(people["ml"], TENANT, "risk", check["id"])
    assert "<html" in html.lower() and "activity_count_30d" in html
    assert models_env.blobs.exists("models", f"{TENANT}/drift/{check['id']}.html")
    with pytest.raises(NotFound):
        svc.drift_report_html(people["ml"], TENANT, "win", check["id"])


def test_drift_check_on_an_empty_window_is_refused(models_env: Services, people: dict[str, Principal]) -> None:
    svc = svc_of(models_env)
    end = clock.now() + timedelta(days=30)
    with pytest.raises(Invalid, match="empty"):
        svc.run_drift_check(people["ml"], TENANT, "risk", clock.iso(end - timedelta(hours=1)), clock.iso(end))
    with pytest.raises(Invalid, match="per-request"):
        svc.run_drift_check(people["ml"], TENANT, "forecast", clock.iso(end - timedelta(hours=1)), clock.iso(end))
    assert len(models_env.store.query(DRIFT_CHECKS, TENANT, [Cond("model", "=", "risk")])) == 3


def test_shadow_agreement_matches_the_log(models_env: Services, people: dict[str, Principal]) -> None:
    svc = svc_of(models_env)
    rep = svc.shadow_agreement(people["ml"], TENANT, "win")
    rows = [r for r in models_env.store.query(PREDICTIONS, TENANT, [Cond("model", "=", "win")])
            if r.get("shadowOutput") is not None]
    a = np.asarray([r["output"] for r in rows])
    b = np.asarray([r["shadowOutput"] for r in rows])
    assert rep["n"] == len(rows) > 0
    assert rep["flips"] == int(np.sum((a >= 0.5) != (b >= 0.5)))
    assert rep["mean_abs_diff"] == pytest.approx(float(np.mean(np.abs(a - b))))
    assert 0.5 < rep["correlation"] <= 1.0 and rep["champion_versions"] == ["1"] and rep["challenger_versions"] == ["2"]


def test_two_retrains_of_one_model_one_runs_the_other_is_refused(models_env: Services,
                                                                 people: dict[str, Principal]) -> None:
    svc = svc_of(models_env)
    job = svc.request_retrain(people["ml"], TENANT, "forecast", "monthly refresh")
    with pytest.raises(Conflict, match="already queued"):
        svc.request_retrain(people["admin"], TENANT, "forecast", "me too")
    other = svc.request_retrain(people["ml"], TENANT, "risk", "a different model may queue")
    assert other["id"] != job["id"]
    # A retrain already holding the lock makes the worker's run wait (Conflict: the queue retries it later).
    svc._acquire_lock(TENANT, "forecast", "someone-else")
    with pytest.raises(Conflict, match="another retrain"):
        svc.retrain(people["ml"], TENANT, "forecast", reason="racing")
    svc._release_lock(TENANT, "forecast", "someone-else")
    worker = Worker(models_env, consumers=1, with_scheduler=False, queues=["models"])
    while worker.run_one():
        pass
    done = models_env.queue.get(people["ml"], TENANT, job["id"])
    assert done["status"] == "succeeded" and done["result"]["version"] == "3"
    assert svc.backend.aliases(TENANT, "forecast")[CHALLENGER] == "3"
    assert svc.versions(people["ml"], TENANT, "forecast")[0]["trained_by"] == "ml@example.com"
    assert done["progress"] == 1.0


def test_retrain_without_data_is_refused_and_registers_nothing(models_env: Services,
                                                               people: dict[str, Principal]) -> None:
    svc = svc_of(models_env)
    with pytest.raises(Invalid, match="no opportunities"):
        svc.retrain(people["admin"], OTHER, "win", reason="try")
    assert svc.versions(people["admin"], OTHER, "win") == []
    with pytest.raises(NotFound, match="no champion"):
        svc.predict_one(people["admin"], OTHER, "win", REQUEST)
    lock = models_env.store.get_or_none("model_settings", OTHER, "retrain-lock-win")
    assert lock is not None and lock["holder"] is None  # released after the refusal


def test_schedule_and_due_retrains(models_env: Services, people: dict[str, Principal]) -> None:
    svc = svc_of(models_env)
    assert svc.due_retrains([TENANT]) == []
    with pytest.raises(Invalid):
        svc.set_schedule(people["ml"], TENANT, "risk", 0, "off")
    svc.set_schedule(people["ml"], TENANT, "risk", 7, "weekly")
    assert svc.due_retrains([TENANT]) == []  # trained moments ago
    models_env.store.update("model_settings", TENANT, "settings-risk",
                            lambda d: {**d, "lastTrainedAt": clock.iso(clock.now() - timedelta(days=8))})
    assert svc.due_retrains([TENANT]) == [(TENANT, "risk")]
    from jobs.tasks.models import scheduled_retrains

    out = scheduled_retrains(models_env)
    assert out["queued"] == [f"{TENANT}/risk"]
    assert models_env.store.query("jobs", TENANT, [Cond("kind", "=", RETRAIN_JOB)])


def test_hourly_drift_job_checks_served_models_with_traffic(models_env: Services,
                                                            people: dict[str, Principal]) -> None:
    from jobs.tasks.models import drift_checks

    svc = svc_of(models_env)
    before = len(svc.drift_checks(people["ml"], TENANT, "win"))
    quiet = drift_checks(models_env)
    assert quiet["checked"] == [] and quiet["skipped"] >= 2  # no requests in the last hour
    hour = clock.now().replace(minute=0, second=0, microsecond=0) - timedelta(minutes=30)
    requests = svc.backend.demo_requests(TENANT, 300, seed=5, as_of=hour.strftime("%Y-%m-%d"))
    svc.predict(people["ml"], TENANT, "win", requests, observed_at=clock.iso(hour))
    out = drift_checks(models_env)
    assert [c["model"] for c in out["checked"] if c["tenant"] == TENANT] == ["win"]
    assert len(svc.drift_checks(people["ml"], TENANT, "win")) == before + 1


def test_old_prediction_logs_are_pruned(models_env: Services, people: dict[str, Principal]) -> None:
    svc = svc_of(models_env)
    old = clock.iso(clock.now() - timedelta(days=120))
    svc.predict_one(people["ml"], TENANT, "risk", {**REQUEST, "id": "ancient"}, observed_at=old, background=False)
    total = models_env.store.count(PREDICTIONS, TENANT)
    from jobs.tasks.models import prune_predictions

    assert prune_predictions(models_env)["deleted"] == 1
    assert models_env.store.count(PREDICTIONS, TENANT) == total - 1
    assert not models_env.store.query(PREDICTIONS, TENANT, [Cond("recordId", "=", "ancient")])
