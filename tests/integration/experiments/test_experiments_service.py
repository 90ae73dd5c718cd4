"""Experiments on SQLite: validation, lifecycle, events API and import, rollups, promotion and rollback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.bootstrap import Services
from core.errors import Conflict, Forbidden, Invalid, NotFound
from core.experiments.analysis import ExperimentSpec, analyze
from core.experiments.assignment import Assigner
from core.experiments.events import Ledger
from core.experiments.simulator import SimulationConfig, simulate
from core.services.access import ML_ENGINEER, Principal
from core.services.experiments import ROLLUPS, UNITS, expected_shares
from tests.conftest import make_user
from tests.integration.experiments.conftest import new_experiment

START = datetime.now(UTC) - timedelta(days=6)


def _exposure(eid: str, unit: str, variant: str | None = None) -> dict[str, object]:
    ev: dict[str, object] = {"eventId": eid, "type": "exposure", "unitId": unit, "at": START.isoformat()}
    if variant:
        ev["variant"] = variant
    return ev


def test_create_rejects_bad_input_with_every_reason(seeded: Services, admin: Principal) -> None:
    with pytest.raises(Invalid) as e:
        new_experiment(seeded, admin, variants=[{"name": "control", "version": 1, "weight": 60},
                                                {"name": "treatment", "version": 9, "weight": 30}],
                       primary_metric="happiness", target_tenants=["nope"])
    msg = e.value.message
    assert "sum to 100" in msg
    assert "refers to prompt version v9 of intent_classification, which does not exist" in msg
    assert "unknown metric 'happiness'" in msg
    assert "targeted tenant 'nope' does not exist" in msg
    with pytest.raises(Invalid, match="does not exist"):
        new_experiment(seeded, admin, slot="no_such_slot")
    tenant_ml = make_user(seeded, ML_ENGINEER, "tenant-a", "ml-a@example.com")
    with pytest.raises(Forbidden, match="platform-wide"):
        new_experiment(seeded, tenant_ml)


def test_lifecycle_transitions_and_overlap(seeded: Services, ml: Principal) -> None:
    exp = new_experiment(seeded, ml)
    assert exp["status"] == "draft"
    svc = seeded.experiments
    with pytest.raises(Conflict, match="can move to"):
        svc.stop(ml, exp["id"], "not started")
    assert svc.start(ml, exp["id"], "go")["status"] == "running"
    other = new_experiment(seeded, ml, name="Other")
    with pytest.raises(Conflict, match="already running"):
        svc.start(ml, other["id"], "go")
    assert svc.stop(ml, exp["id"], "pause")["status"] == "stopped"
    assert svc.assign(ml, "tenant-a", exp["id"], "u1").variant == "control"  # stopped serves control
    assert svc.start(ml, exp["id"], "resume")["status"] == "running"
    assert svc.conclude(ml, exp["id"], "done")["status"] == "concluded"
    with pytest.raises(Conflict, match="concluded"):
        svc.start(ml, exp["id"], "again")
    assert [r["action"] for r in seeded.audit.search(ml, action="experiment.running").rows]


def test_events_api_dedupes_rejects_and_rolls_up(seeded: Services, ml: Principal) -> None:
    svc = seeded.experiments
    exp = new_experiment(seeded, ml)
    with pytest.raises(Invalid, match="draft"):
        svc.record_events(ml, "tenant-a", exp["id"], [_exposure("e0", "u0")])
    svc.start(ml, exp["id"], "go")
    with pytest.raises(NotFound, match="does not exist"):
        svc.record_events(ml, "tenant-a", "exp-missing", [_exposure("e1", "u1")])
    with pytest.raises(Invalid, match="does not target tenant tenant-b"):
        svc.record_events(ml, "tenant-b", exp["id"], [_exposure("e1", "u1")])
    events = [
        _exposure("e1", "u1", "treatment"),
        _exposure("e1", "u1", "treatment"),  # duplicate in the same call
        _exposure("e2", "u2", "mystery"),  # unknown variant
        {"eventId": "e3", "type": "outcome", "unitId": "u1", "metric": "thumbs_up", "value": 1},
        {"eventId": "e4", "type": "outcome", "unitId": "ghost", "metric": "thumbs_up", "value": 1},
        {"eventId": "e5", "type": "outcome", "unitId": "u1", "metrics": {"latency_ms": 900, "tokens": 400}},
    ]
    report = svc.record_events(ml, "tenant-a", exp["id"], events)
    assert (report.accepted, report.duplicates) == (3, 1)
    assert [r for r, _ in report.rejected] == [3, 5]
    again = svc.record_events(ml, "tenant-a", exp["id"], events[:1] + events[3:4])  # replay: counted once
    assert (again.accepted, again.duplicates) == (0, 2)
    rollups = seeded.store.query(ROLLUPS, "tenant-a", {"experimentId": exp["id"]})
    assert len(rollups) == 1 and rollups[0]["variant"] == "treatment" and rollups[0]["units"] == 1
    assert rollups[0]["metrics"]["thumbs_up"]["s"] == 1
    assert rollups[0]["metrics"]["tokens"]["s"] == 400
    # a re-exposure naming another variant is refused, the unit stays where it is
    moved = svc.record_events(ml, "tenant-a", exp["id"], [_exposure("e6", "u1", "control")])
    assert moved.rejected and "assigned to treatment" in moved.rejected[0][1]
    # stopped: no new exposures, late outcomes still count
    svc.stop(ml, exp["id"], "pause")
    late = svc.record_events(ml, "tenant-a", exp["id"], [
        _exposure("e7", "u9"), {"eventId": "e8", "type": "outcome", "unitId": "u1", "metric": "task_success",
                                "value": 1}])
    assert late.accepted == 1 and "stopped" in late.rejected[0][1]


def test_import_reports_malformed_rows_by_line_and_imports_the_rest(seeded: Services, ml: Principal) -> None:
    svc = seeded.experiments
    exp = new_experiment(seeded, ml)
    svc.start(ml, exp["id"], "go")
    csv_text = (
        "event_id,type,unit_id,variant,metric,value,at,covariate_thumbs_up\n"
        "a1,exposure,u1,control,,,2025-02-01T10:00:00Z,0.3\n"
        "a2,outcome,u1,,thumbs_up,1,2025-02-01T10:05:00Z,\n"
        "a3,outcome,u1,,thumbs_up,yes,2025-02-01T10:06:00Z,\n"  # line 4: not a number
        "a4,exposure,u2,,,,not-a-date,\n"  # line 5: bad time
        "a5,exposure,u3,treatment,,,2025-02-01T11:00:00Z,,extra\n"  # line 6: too many cells
        "a1,exposure,u1,control,,,2025-02-01T10:00:00Z,0.3\n"  # line 7: duplicate
        ",exposure,u4,,,,,\n"  # line 8: no event id
    )
    report = svc.import_events(ml, "tenant-a", exp["id"], csv_text.encode(), "events.csv")
    assert (report.accepted, report.duplicates) == (2, 1)
    assert [r for r, _ in report.rejected] == [4, 5, 6, 8]
    jsonl = '{"eventId": "j1", "type": "exposure", "unitId": "u5"}\n{not json}\n[1, 2]\n'
    report = svc.import_events(ml, "tenant-a", exp["id"], jsonl, "events.jsonl")
    assert report.accepted == 1 and [r for r, _ in report.rejected] == [2, 3]
    with pytest.raises(Invalid, match=".csv file"):
        svc.import_events(ml, "tenant-a", exp["id"], b"x", "events.xlsx")
    unit = seeded.store.find_one(UNITS, "tenant-a", {"unitId": "u1"})
    assert unit is not None and unit["covariates"] == {"thumbs_up": 0.3}
    assert seeded.audit.search(ml, tenant_id="tenant-a", action="experiment.events.import").rows


def test_sticky_assignment_survives_reweighting(seeded: Services, ml: Principal) -> None:
    svc = seeded.experiments
    exp = new_experiment(seeded, ml)
    svc.start(ml, exp["id"], "go")
    units = [f"user-{i}" for i in range(300)]
    before = {u: svc.assign(ml, "tenant-a", exp["id"], u).variant for u in units}
    svc.reweight(ml, exp["id"], [10, 90], "ramp up")
    after = {u: svc.assign(ml, "tenant-a", exp["id"], u).variant for u in units}
    assert after == before
    fresh = [svc.assign(ml, "tenant-a", exp["id"], f"new-{i}").variant for i in range(400)]
    assert fresh.count("treatment") / len(fresh) > 0.8
    # a unit assigned before its exposure arrives is enrolled in the variant it was served
    served = before[units[0]]
    svc.record_events(ml, "tenant-a", exp["id"], [_exposure("x1", units[0])])
    unit = seeded.store.find_one(UNITS, "tenant-a", {"unitId": units[0]})
    assert unit is not None and unit["variant"] == served and unit["day"]
    with pytest.raises(Invalid, match="sum to 100"):
        svc.reweight(ml, exp["id"], [50, 60], "bad")
    updated = svc.get(ml, exp["id"])
    assert [h["weights"] for h in updated["weightsHistory"]] == [[50.0, 50.0], [10.0, 90.0]]


def test_rollup_analysis_equals_in_memory_analysis_of_the_same_events(seeded: Services, ml: Principal) -> None:
    svc = seeded.experiments
    exp = new_experiment(seeded, ml, secondary_metrics=["tokens", "task_success"])
    svc.start(ml, exp["id"], "go")
    exp = svc.get(ml, exp["id"])
    cfg = SimulationConfig(exp["id"], exp["seed"], days=4, new_users_per_day=150, start=START)
    events = list(simulate(cfg, svc.assigner(exp).assign))
    report = svc.record_events(ml, "tenant-a", exp["id"], events)
    assert report.accepted == len(events) and not report.rejected
    spec = ExperimentSpec.from_record(exp)
    ledger = Ledger(spec.variants, spec.metric_defs(), Assigner.from_weights(exp["seed"], spec.variants, [50, 50])
                    .assign)
    ledger.ingest(events)
    stored = svc.analysis(ml, exp["id"])
    memory = analyze(spec, ledger.rollup_list(), expected_shares(exp, ledger.rollup_list()))
    for name in ("thumbs_up", "tokens", "task_success", "latency_ms"):
        a, b = stored.metrics[name].comparisons[0], memory.metrics[name].comparisons[0]
        assert a.p_value == pytest.approx(b.p_value, rel=1e-9, abs=1e-12)
        assert a.diff_ci == pytest.approx(b.diff_ci, rel=1e-9)
    assert stored.units == memory.units


def _srm_experiment(seeded: Services, ml: Principal) -> str:
    svc = seeded.experiments
    exp = new_experiment(seeded, ml)
    svc.start(ml, exp["id"], "go")
    exp = svc.get(ml, exp["id"])
    cfg = SimulationConfig(exp["id"], exp["seed"], days=3, new_users_per_day=1200, start=START, srm_drop=0.25,
                           return_rate=0.0)
    svc.record_events(ml, "tenant-a", exp["id"], simulate(cfg, svc.assigner(exp).assign))
    return str(exp["id"])


def test_promotion_is_blocked_by_srm_unless_an_admin_overrides(seeded: Services, ml: Principal,
                                                                admin: Principal) -> None:
    exp_id = _srm_experiment(seeded, ml)
    svc = seeded.experiments
    result = svc.analysis(ml, exp_id)
    assert result.srm.flagged
    with pytest.raises(Conflict, match="sample ratio mismatch"):
        svc.promote(ml, exp_id, "looks good", variant="treatment")
    with pytest.raises(Forbidden, match="only an admin"):
        svc.promote(ml, exp_id, "looks good", variant="treatment", override_srm_reason="I know")
    done = svc.promote(admin, exp_id, "ship anyway", variant="treatment",
                       override_srm_reason="logging bug only dropped treatment exposures, verified in raw logs")
    assert done["status"] == "concluded" and done["outcome"]["srmOverride"].startswith("logging bug")
    assert seeded.prompts.resolve(admin, "intent_classification")["version"] == 2
    history = seeded.prompts.label_history(admin, "intent_classification", "production")
    assert history[0]["experimentId"] == exp_id and history[0]["action"] == "promote"


def test_promote_then_roll_back_restores_the_previous_label(seeded: Services, ml: Principal) -> None:
    svc = seeded.experiments
    exp = new_experiment(seeded, ml)
    svc.start(ml, exp["id"], "go")
    with pytest.raises(Invalid, match="no winner"):
        svc.promote(ml, exp["id"], "no data yet")
    svc.promote(ml, exp["id"], "v2 is better", variant="treatment")
    assert seeded.prompts.resolve(ml, "intent_classification")["version"] == 2
    rolled = svc.roll_back(ml, exp["id"], "complaints from sales")
    assert rolled["outcome"]["action"] == "rolled_back" and rolled["outcome"]["restoredVersion"] == 1
    assert seeded.prompts.resolve(ml, "intent_classification")["version"] == 1
    with pytest.raises(Conflict, match="nothing to roll back"):
        svc.roll_back(ml, exp["id"], "again")
    actions = {r["action"] for r in seeded.audit.search(ml, action="experiment.promote").rows}
    actions |= {r["action"] for r in seeded.audit.search(ml, action="experiment.roll_back").rows}
    assert actions == {"experiment.promote", "experiment.roll_back"}

    # rolling back a running experiment concludes it and keeps production where it was
    other = new_experiment(seeded, ml, name="second")
    svc.start(ml, other["id"], "go")
    out = svc.roll_back(ml, other["id"], "not worth it")
    assert out["status"] == "concluded" and out["outcome"]["restoredVersion"] == 1


def test_serve_prompt_uses_the_experiment_for_targeted_tenants(seeded: Services, ml: Principal) -> None:
    svc = seeded.experiments
    exp = new_experiment(seeded, ml, variants=[{"name": "control", "version": 1, "weight": 0},
                                               {"name": "treatment", "version": 3, "weight": 100}])
    svc.start(ml, exp["id"], "go")
    served = svc.serve_prompt(ml, "tenant-a", "intent_classification", "u1")
    assert (served.variant, served.version["version"]) == ("treatment", 3)
    other = svc.serve_prompt(ml, "tenant-b", "intent_classification", "u1")
    assert other.experiment_id is None and other.version["version"] == 1


def test_concurrent_writers_of_the_same_events_count_each_once(seeded: Services, ml: Principal) -> None:
    import threading

    svc = seeded.experiments
    exp = new_experiment(seeded, ml)
    svc.start(ml, exp["id"], "go")
    exp = svc.get(ml, exp["id"])
    cfg = SimulationConfig(exp["id"], exp["seed"], days=2, new_users_per_day=150, start=START)
    events = list(simulate(cfg, svc.assigner(exp).assign))
    reports = []
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            reports.append(svc.record_events(ml, "tenant-a", exp["id"], events))
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=writer) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sum(r.accepted for r in reports) == len(events)  # every event applied exactly once overall
    assert sum(r.accepted + r.duplicates for r in reports) == 3 * len(events)
    units = {e["unitId"] for e in events if e["type"] == "exposure"}
    rollups = seeded.store.query(ROLLUPS, "tenant-a", {"experimentId": exp["id"]})
    assert sum(r["units"] for r in rollups) == len(units)
    thumbs = sum(1 for e in events if "thumbs_up" in (e.get("metrics") or {}))
    assert sum(r["metrics"]["thumbs_up"].get("s", 0) for r in rollups) == thumbs
