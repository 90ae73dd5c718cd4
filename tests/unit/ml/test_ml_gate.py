"""The promotion gate: absolute targets and the champion margin, with reasons a person can act on."""

from __future__ import annotations

from ml.registry import evaluate_gate


def test_first_version_only_needs_the_targets() -> None:
    ok = evaluate_gate("risk", {"r2": 0.9}, None)
    assert ok.passed and ok.reasons == [] and ok.baseline_source == "no champion"
    bad = evaluate_gate("risk", {"r2": 0.8}, None)
    assert not bad.passed and "r2 0.8000 misses the target (r2 > 0.85)" in bad.reasons


def test_challenger_must_beat_champion_by_margin() -> None:
    r = evaluate_gate("risk", {"r2": 0.903}, {"r2": 0.9})
    assert not r.passed and "margin 0.005" in r.reasons[0]
    assert evaluate_gate("risk", {"r2": 0.906}, {"r2": 0.9}).passed


def test_lower_is_better_metrics_and_all_reasons_listed() -> None:
    r = evaluate_gate("win", {"brier": 0.170, "ece": 0.06}, {"brier": 0.1705, "ece": 0.02})
    assert not r.passed
    assert any("ece 0.0600 misses the target" in x for x in r.reasons)
    assert any("brier 0.1700 does not beat the champion's 0.1705" in x for x in r.reasons)
    assert evaluate_gate("win", {"brier": 0.168, "ece": 0.02}, {"brier": 0.1705}).passed
    f = evaluate_gate("forecast", {"mape": 0.11}, None)
    assert not f.passed and "mape" in f.reasons[0]


def test_missing_metric_blocks() -> None:
    r = evaluate_gate("win", {"brier": 0.1}, None)
    assert not r.passed and "ece is missing" in r.reasons[0]
