"""Events -> rollups -> analysis -> decision, in memory: the simulator's planted truth is recovered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from core.experiments import stats
from core.experiments.analysis import ExperimentSpec, Guardrail, analyze
from core.experiments.assignment import Assigner
from core.experiments.decision import decide
from core.experiments.events import Ledger
from core.experiments.simulator import PLANTED, SimulationConfig, planted_lifts, simulate

START = datetime(2025, 3, 3, tzinfo=UTC)


def _spec(**kw: Any) -> ExperimentSpec:
    base: dict[str, Any] = dict(
        variants=["control", "treatment"], control="control", weights=[50.0, 50.0], primary="thumbs_up",
        secondary=["task_success", "tokens", "cost_usd"], guardrails=[Guardrail("latency_ms", 0.10)],
        min_runtime_days=14, started_at=START, planned_units_per_arm=16_000,
    )
    base.update(kw)
    return ExperimentSpec(**base)


def _run(config: SimulationConfig, spec: ExperimentSpec) -> Ledger:
    assigner = Assigner.from_weights(config.seed, config.variants, config.weights)
    ledger = Ledger(spec.variants, spec.metric_defs(), assigner.assign)
    report = ledger.ingest(simulate(config, assigner.assign))
    assert report.rejected == [] and report.duplicates == 0
    return ledger


@pytest.fixture(scope="module")
def demo() -> tuple[ExperimentSpec, Ledger]:
    spec = _spec()
    return spec, _run(SimulationConfig("exp-demo", "seed-demo", start=START), spec)


def test_planted_truth_is_recovered(demo: tuple[ExperimentSpec, Ledger]) -> None:
    spec, ledger = demo
    result = analyze(spec, ledger.rollup_list())
    lifts = planted_lifts()
    assert not result.srm.flagged
    primary = result.primary.comparison("treatment")
    assert primary is not None and primary.significant
    assert primary.lift_ci[0] < lifts["thumbs_up"] < primary.lift_ci[1]
    assert primary.seq_ci is not None and primary.seq_ci[0] > 0  # the always-valid interval excludes zero
    assert result.primary.cuped and result.primary.variance_reduction > 0
    tokens = result.metrics["tokens"].comparison("treatment")
    assert tokens is not None and tokens.lift_ci[0] < lifts["tokens"] < tokens.lift_ci[1]
    latency = result.metrics["latency_ms"]
    for v in latency.variants:
        assert v.ci_low < PLANTED[v.name]["latency_ms"] < v.ci_high
        assert v.p95 is not None and v.p95[0] > PLANTED[v.name]["latency_ms"]
    assert [g.status for g in result.guardrails] == ["pass"]  # +5.9% latency within the 10% tolerance

    decision = decide(result, START + timedelta(days=21))
    assert (decision.action, decision.variant) == ("ship", "treatment")
    assert any("significantly better" in r for r in decision.reasons)


def test_keep_running_before_minimum_runtime(demo: tuple[ExperimentSpec, Ledger]) -> None:
    spec, ledger = demo
    early = [r for r in ledger.rollup_list() if r["day"] <= "2025-03-05"]
    decision = decide(analyze(spec, early), START + timedelta(days=3))
    assert decision.action == "keep_running"
    assert "minimum runtime" in decision.headline
    assert decision.mde_rel is not None and decision.mde_rel > 0


def test_timeline_is_cumulative_and_sequential_matches_direct_computation(demo: tuple[ExperimentSpec, Ledger]) -> None:
    spec, ledger = demo
    result = analyze(spec, ledger.rollup_list())
    rows = [r for r in result.timeline if r["metric"] == "thumbs_up" and r["variant"] == "treatment"]
    assert len(rows) == 21 and [r["units"] for r in rows] == sorted(r["units"] for r in rows)
    tau2 = float(stats.mixture_tau2(2 * rows[-1]["pooled_var"] / spec.planned_units_per_arm))
    path = stats.sequential_path([r["diff"] for r in rows], [r["var_diff"] for r in rows], tau2)
    comp = result.primary.comparison("treatment")
    assert comp is not None and comp.seq_ci == (path.ci_low, path.ci_high)
    assert all(r["seq_low"] <= r["diff_low"] and r["seq_high"] >= r["diff_high"] for r in rows)


def test_srm_from_lost_exposures_blocks_the_decision() -> None:
    spec = _spec()
    cfg = SimulationConfig("exp-srm", "seed-srm", start=START, days=8, new_users_per_day=1500, srm_drop=0.08)
    result = analyze(spec, _run(cfg, spec).rollup_list())
    assert result.srm.flagged
    decision = decide(result, START + timedelta(days=8))
    assert decision.action == "keep_running" and decision.blocked_by_srm
    assert "Sample ratio mismatch" in decision.headline


def test_guardrail_harm_rolls_back() -> None:
    spec = _spec()
    truth = {k: dict(v) for k, v in PLANTED.items()}
    truth["treatment"]["latency_ms"] = 1100.0  # +29% latency against a 10% tolerance
    cfg = SimulationConfig("exp-slow", "seed-slow", start=START, days=5, new_users_per_day=800, truth=truth)
    result = analyze(spec, _run(cfg, spec).rollup_list())
    assert [g.status for g in result.guardrails] == ["fail"]
    decision = decide(result, START + timedelta(days=5))  # harm does not wait for the minimum runtime
    assert decision.action == "roll_back" and "guardrail" in decision.headline


def test_worse_treatment_rolls_back_and_null_effect_is_inconclusive() -> None:
    spec = _spec(guardrails=[], secondary=[], min_runtime_days=7)
    worse = {k: dict(v) for k, v in PLANTED.items()}
    worse["treatment"]["thumbs_up"] = 0.16
    cfg = SimulationConfig("exp-worse", "seed-worse", start=START, days=8, new_users_per_day=1500, truth=worse)
    decision = decide(analyze(spec, _run(cfg, spec).rollup_list()), START + timedelta(days=8))
    assert decision.action == "roll_back" and "worse" in decision.headline

    same = {k: dict(PLANTED["control"]) for k in PLANTED}
    cfg = SimulationConfig("exp-null", "seed-null", start=START, days=8, new_users_per_day=300, truth=same)
    decision = decide(analyze(spec, _run(cfg, spec).rollup_list()), START + timedelta(days=8))
    assert decision.action == "keep_running" and "detectable" in decision.reasons[0]


def test_rollups_equal_statistics_computed_from_raw_unit_values(demo: tuple[ExperimentSpec, Ledger]) -> None:
    spec, ledger = demo
    defs = {m.name: m for m in spec.metric_defs()}
    result = analyze(spec, ledger.rollup_list())
    for name in ("thumbs_up", "tokens"):
        for v in result.metrics[name].variants:
            values = [u.value(defs[name]) for u in ledger.units.values() if u.variant == v.name]
            values = np.array([x for x in values if x is not None])
            assert v.n == len(values)
            assert v.mean == pytest.approx(values.mean(), rel=1e-9)


def test_three_variants_are_corrected_for_multiple_comparisons() -> None:
    truth = {"control": dict(PLANTED["control"]), "a": dict(PLANTED["control"]), "b": dict(PLANTED["treatment"])}
    variants = ["control", "a", "b"]
    for correction in ("holm", "bh"):
        spec = _spec(variants=variants, weights=[34.0, 33.0, 33.0], correction=correction, sequential=False,
                     guardrails=[], secondary=["tokens"], min_runtime_days=1)
        cfg = SimulationConfig("exp-three", "seed-three", variants=variants, weights=[34, 33, 33], truth=truth,
                               start=START, days=6, new_users_per_day=3000, return_rate=0.0)
        result = analyze(spec, _run(cfg, spec).rollup_list())
        comps = {c.variant: c for c in result.primary.comparisons}
        assert set(comps) == {"a", "b"}
        raw = [comps["a"].p_value, comps["b"].p_value]
        assert [comps["a"].p_adjusted, comps["b"].p_adjusted] == pytest.approx(stats.adjust_p_values(raw, correction))
        assert all(c.p_adjusted >= c.p_value for c in comps.values())
        decision = decide(result, START + timedelta(days=6))
        assert decision.variant in (None, "b")  # never ships the arm with no effect
